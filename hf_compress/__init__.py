"""hf-compress: compress Hugging Face transformers models, and keep them loadable.

`import hf_compress` registers the compressed checkpoint format with transformers' Auto
classes, so `AutoModelForSequenceClassification.from_pretrained(compressed_dir)` rebuilds a
pruned / factorized / quantized model exactly as it was saved.
"""

import logging as _logging

import torch as _torch  # noqa: F401  (first: torch configures its own loggers on import)

# Importing transformers' quantizers pulls in torchao and bitsandbytes, which log warnings about
# optional CUDA / kernel-hub extensions on every CPU-only import: noise to our users.
for _name in ("torchao", "torch.utils._pytree", "bitsandbytes.backends.cpu.ops"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)

# Importing these registers the architecture maps, the compressed_* model types (with the Auto
# classes) and every technique with its rebuilders.
from . import architectures, checkpoint, methods  # noqa: E402, F401
from .api import compress  # noqa: E402
from .errors import (  # noqa: E402
    CheckpointError,
    DataError,
    HfCompressError,
    RecipeError,
    UnsupportedModelError,
)
from .recipe import Recipe, Stage, register_modifier  # noqa: E402
from .training import CompressionTrainer  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = [
    "CheckpointError",
    "CompressionTrainer",
    "DataError",
    "HfCompressError",
    "Recipe",
    "RecipeError",
    "Stage",
    "UnsupportedModelError",
    "__version__",
    "compress",
    "register_modifier",
]
