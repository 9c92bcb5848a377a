"""Low-rank factorization (`low_rank`): Linear layers (and optionally the word embeddings) as
products of two thin matrices from a truncated SVD (Denil et al. 2013)."""

from . import rebuild  # noqa: F401  (registers the rebuilders)
from .config import LowRankConfig
from .layers import FactorizedEmbedding, LowRankLinear
from .modifier import LowRankModifier

__all__ = ["FactorizedEmbedding", "LowRankConfig", "LowRankLinear", "LowRankModifier"]
