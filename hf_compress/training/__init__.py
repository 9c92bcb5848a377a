"""Training: `CompressionTrainer`, its callback, the stage lifecycle and the recipe runner.

`CompressionTrainer` is imported on first use, so the recipe checks (`preflight`) load without
the Trainer's imports."""

from __future__ import annotations

__all__ = ["CompressionTrainer"]


def __getattr__(name: str) -> object:
    if name == "CompressionTrainer":
        from .trainer import CompressionTrainer

        return CompressionTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
