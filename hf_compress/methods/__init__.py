"""Every compression technique, one folder each, all of the same shape.

`methods/<technique>/` holds:
- `config.py`: the recipe keys, as frozen dataclasses (documented once, with a `help` text);
- `modifier.py`: the `Modifier` subclass(es), registered with `@register_modifier("<type>")`;
- `layers.py`: the storage layers the technique saves in a checkpoint (when it has any), each
  with a `to_float()` method giving the plain float module it stands for;
- `rebuild.py`: the functions that rebuild those layers for `from_pretrained`, registered
  with `@register_rebuild("<compression_config key>", order)` (when the technique changes the
  module tree);
- helpers named for what they do (`importance.py`, `svd.py`, `kmeans.py`, ...).

Importing this package registers every technique.
"""

from . import (  # noqa: F401  (importing a technique registers its modifiers and rebuilders)
    clustering,
    distillation,
    low_rank,
    pruning,
    quantization,
    sharing,
    vocabulary,
)
from .modifier import Modifier, StageContext

__all__ = ["Modifier", "StageContext"]
