"""Architecture maps: where each model family keeps its layers, heads, FFN and embeddings."""

from . import bert, distilbert, roberta  # noqa: F401  (register the families)
from .base import (
    ADAPTERS,
    ArchitectureAdapter,
    family_of,
    get_adapter,
    register_adapter,
)

__all__ = ["ADAPTERS", "ArchitectureAdapter", "family_of", "get_adapter", "register_adapter"]
