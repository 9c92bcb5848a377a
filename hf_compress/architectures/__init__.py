"""Architecture maps: where each model family keeps its layers, heads, FFN and embeddings."""

from . import bert, distilbert, gpt2, llama  # noqa: F401  (register the layouts)
from .base import (
    ADAPTERS,
    ArchitectureAdapter,
    family_of,
    get_adapter,
    register_adapter,
)

__all__ = ["ADAPTERS", "ArchitectureAdapter", "family_of", "get_adapter", "register_adapter"]
