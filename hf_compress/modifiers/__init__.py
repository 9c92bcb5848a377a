"""Every compression technique, one module each. Importing this package registers them all."""

from .base import Modifier, ModifierConfig, StageContext

__all__ = ["Modifier", "ModifierConfig", "StageContext"]
