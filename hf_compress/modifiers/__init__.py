"""Every compression technique, one module each. Importing this package registers them all."""

from . import (  # noqa: F401  # noqa: F401
    distillation,  # noqa: F401  (distillation, layer_dropping)
    embedding_quantization,
    layer_sharing,
    low_rank,
    magnitude_pruning,
    structured_pruning,
    vocab_pruning,
    weight_clustering,
)
from .base import Modifier, ModifierConfig, StageContext

__all__ = ["Modifier", "ModifierConfig", "StageContext"]
