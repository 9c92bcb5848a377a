"""Every compression technique, one module each. Importing this package registers them all."""

from . import (  # noqa: F401  (importing a technique registers its modifiers and rebuilders)
    distillation,
    embedding_quantization,
    layer_sharing,
    low_rank,
    magnitude_pruning,
    quantization,
    structured_pruning,
    vocab_pruning,
    weight_clustering,
)
from .base import Modifier, ModifierConfig, StageContext

__all__ = ["Modifier", "ModifierConfig", "StageContext"]
