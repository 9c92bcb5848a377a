"""Every compression technique, one module each. Importing this package registers them all."""

from . import distillation  # noqa: F401  (distillation, layer_dropping)
from . import embedding_quantization, magnitude_pruning, structured_pruning, vocab_pruning  # noqa: F401
from . import layer_sharing, low_rank, weight_clustering  # noqa: F401
from .base import Modifier, ModifierConfig, StageContext

__all__ = ["Modifier", "ModifierConfig", "StageContext"]
