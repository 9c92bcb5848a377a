"""hf-compress: compress Hugging Face transformers models, and keep them loadable.

`import hf_compress` registers the compressed checkpoint format with transformers' Auto
classes, so `AutoModelForSequenceClassification.from_pretrained(compressed_dir)` rebuilds a
pruned / factorized / quantized model exactly as it was saved.
"""

from . import (
    adapters,  # noqa: F401  (registers architecture families)
    checkpoint,  # noqa: F401  (registers compressed_* model types with the Auto classes)
    modifiers,  # noqa: F401  (registers every technique)
)
from .api import compress
from .errors import CheckpointError, DataError, HfCompressError, RecipeError, UnsupportedModelError
from .recipe import Recipe, Stage
from .registry import register_modifier
from .trainer import CompressionTrainer

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "CompressionTrainer",
    "DataError",
    "HfCompressError",
    "Recipe",
    "RecipeError",
    "Stage",
    "UnsupportedModelError",
    "compress",
    "register_modifier",
    "__version__",
]
