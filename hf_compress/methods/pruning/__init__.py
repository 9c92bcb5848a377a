"""Pruning: whole attention heads (`head_pruning`), FFN neurons (`ffn_pruning`) and single
weights by magnitude (`magnitude_pruning`, stored as a bitmask plus the kept values)."""

from . import rebuild  # noqa: F401  (registers the rebuilders)
from .config import HeadPruningConfig, MagnitudePruningConfig, StructuredPruningConfig
from .layers import SparseLinear
from .modifier import FfnPruning, HeadPruning, MagnitudePruning

__all__ = [
    "FfnPruning",
    "HeadPruning",
    "HeadPruningConfig",
    "MagnitudePruning",
    "MagnitudePruningConfig",
    "SparseLinear",
    "StructuredPruningConfig",
]
