"""Every compression technique, one module each. Importing this package registers them all."""

from . import distillation  # noqa: F401  (distillation, layer_dropping)
from .base import Modifier, ModifierConfig, StageContext

__all__ = ["Modifier", "ModifierConfig", "StageContext"]
