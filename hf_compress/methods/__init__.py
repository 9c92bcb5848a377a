"""Every compression technique, one folder each, all of the same shape.

`methods/<technique>/` holds:
- `config.py`: the recipe keys and the recipe rules of its types, as frozen dataclasses
  registered with `@recipe_type("<type>")` (documented once, with a `help` text; torch-free, so
  `hf-compress validate` checks a recipe before torch loads);
- `modifier.py`: the `Modifier` subclass(es), registered with `@register_modifier("<type>")`;
- `layers.py`: the storage layers the technique saves in a checkpoint (when it has any), each
  with a `to_float()` method giving the plain float module it stands for;
- `rebuild.py`: the functions that rebuild those layers for `from_pretrained`, registered
  with `@register_rebuild("<compression_config key>", order)` (when the technique changes the
  module tree);
- helpers named for what they do (`importance.py`, `svd.py`, `kmeans.py`, ...).

Importing this package (or a technique's folder) loads nothing heavy; `load_techniques()`
(called by `hf_compress.load_all()`) registers every technique's modifiers and rebuilders.
"""

from __future__ import annotations

import importlib
import importlib.util

# The technique folders: the only list of them.
TECHNIQUES = (
    "clustering",
    "distillation",
    "low_rank",
    "pruning",
    "quantization",
    "sharing",
    "vocabulary",
)


def load_configs() -> None:
    """Imports every technique's `config.py` (torch-free), which registers its recipe types."""
    for technique in TECHNIQUES:
        importlib.import_module(f"{__name__}.{technique}.config")


def load_techniques() -> None:
    """Imports every technique's `modifier.py` and `rebuild.py`, which registers them."""
    for technique in TECHNIQUES:
        for part in ("modifier", "rebuild"):
            name = f"{__name__}.{technique}.{part}"
            if importlib.util.find_spec(name) is not None:
                importlib.import_module(name)
