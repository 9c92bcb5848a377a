"""hf-compress: compress Hugging Face transformers models, and keep them loadable.

`import hf_compress` registers the compressed checkpoint format with transformers' Auto
classes, so `AutoModelForSequenceClassification.from_pretrained(compressed_dir)` rebuilds a
pruned / factorized / quantized model exactly as it was saved.

The public names (`compress`, `CompressionTrainer`, `Recipe`, ...) are imported on first use.
The `hf-compress` command starts without torch and transformers (its entry point sets
`HF_COMPRESS_LAZY_IMPORT=1`), so `--help` and argument errors answer at once; each command then
calls `load_all()`.
"""

import importlib as _importlib
import os as _os

from .recipe import registry as _registry
from .version import __version__

# public name -> the module it lives in
_PUBLIC = {
    "compress": "api",
    "CompressionTrainer": "training",
    "Recipe": "recipe",
    "Stage": "recipe",
    "register_modifier": "recipe",
    "CheckpointError": "errors",
    "DataError": "errors",
    "HfCompressError": "errors",
    "RecipeError": "errors",
    "UnsupportedModelError": "errors",
}

__all__ = ["__version__", "load_all", *sorted(_PUBLIC)]


def load_all() -> None:
    """Registers the compressed checkpoint format with transformers' Auto classes, the
    architecture maps and every technique (what `import hf_compress` does; idempotent)."""
    import logging

    import torch  # noqa: F401  (first: torch configures its own loggers on import)

    # Importing transformers' quantizers pulls in torchao and bitsandbytes, which log warnings
    # about optional CUDA / kernel-hub extensions on every CPU-only import: noise to our users.
    for name in ("torchao", "torch.utils._pytree", "bitsandbytes.backends.cpu.ops"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from . import architectures, checkpoint  # noqa: F401  (registering is importing)
    from .methods import load_techniques

    load_techniques()


def _register_builtin_recipe_types() -> None:
    from .methods import load_configs

    load_configs()


def __getattr__(name: str) -> object:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'hf_compress' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


# The recipe layer reads the built-in types' keys and rules (torch-free) on its first lookup.
_registry.set_builtin_loader(_register_builtin_recipe_types)

if _os.environ.pop("HF_COMPRESS_LAZY_IMPORT", "") != "1":
    load_all()
