"""Training: `CompressionTrainer`, its callback, the stage lifecycle and the recipe runner."""

from .trainer import CompressionTrainer

__all__ = ["CompressionTrainer"]
