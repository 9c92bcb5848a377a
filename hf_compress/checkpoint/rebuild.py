"""`compression_config`: the structural facts a compressed checkpoint needs to rebuild itself.

`config.compression_config` is a plain, versioned dict saved in config.json:

    {"version": 1, "ffn_width": {"0": 768, ...}, "heads": {"0": 6, ...}, "int8_linear": [...], ...}

Each technique that changes the module tree registers a rebuilder for its key with
`@register_rebuild(key, order)`. When a compressed model class is constructed (which
`from_pretrained` does before loading weights) `apply_structure` calls the rebuilders in
`order` (reshaping first, module replacements after), so the state dict fits exactly. A
technique records what it did with `record_structure(model, key, value)`, which also turns the
model into its family's compressed class so `save_pretrained` writes the right `model_type`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import CheckpointError

if TYPE_CHECKING:
    from transformers import PreTrainedModel


FORMAT_VERSION = 1


@dataclass(frozen=True)
class Rebuilder:
    key: str
    order: int
    fn: Callable[[Any, Any], None]


REBUILDERS: dict[str, Rebuilder] = {}


def register_rebuild(
    key: str, order: int
) -> Callable[[Callable[[Any, Any], None]], Callable[[Any, Any], None]]:
    """Registers `fn(model, value)` that rebuilds modules for `compression_config[key]`."""

    def decorator(fn: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
        REBUILDERS[key] = Rebuilder(key, order, fn)
        return fn

    return decorator


def apply_structure(model: PreTrainedModel, compression_config: dict[str, Any] | None) -> None:
    """Rebuilds the compressed module tree of a freshly constructed model.

    Raises:
        CheckpointError: the config is newer than this hf-compress or names an unknown structure.
    """
    if not compression_config:
        return
    if not isinstance(compression_config, dict):
        raise CheckpointError(
            f"compression_config must be a mapping, got {type(compression_config).__name__}; the "
            "checkpoint's config.json is corrupt or was edited by hand."
        )

    version = compression_config.get("version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(
            f"compression_config version {version!r} is not a format version (expected "
            f"1..{FORMAT_VERSION})"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"compression_config version {version!r} is newer than this hf-compress understands "
            f"({FORMAT_VERSION}); upgrade with `pip install -U hf-compress`."
        )
    unknown = [
        k for k in compression_config if k not in REBUILDERS and k not in ("version", "methods")
    ]
    if unknown:
        raise CheckpointError(
            f"compression_config has unknown entries {unknown}; this checkpoint was written by a "
            f"newer or different hf-compress. Known entries: {sorted(REBUILDERS)}."
        )
    for rebuilder in sorted(REBUILDERS.values(), key=lambda r: r.order):
        if rebuilder.key in compression_config:
            try:
                rebuilder.fn(model, compression_config[rebuilder.key])
            except CheckpointError:
                raise
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
                raise CheckpointError(
                    f"compression_config[{rebuilder.key!r}] does not fit this model ({exc}); the "
                    "checkpoint's config.json is corrupt or was edited by hand."
                ) from exc


def replace_recorded_linears(
    model: PreTrainedModel,
    key: str,
    entries: dict[str, Any],
    build: Callable[[Any, Any], Any],
    rebuilt: Callable[[Any, Any], bool],
) -> None:
    """The common rebuild of techniques that swap whole `nn.Linear`s for their own storage module.

    For every `name: value` in `entries`, replaces the `nn.Linear` at `name` by
    `build(linear, value)` (an empty module of the right shapes; the weights load next). A module
    for which `rebuilt(module, value)` already holds is skipped: layers shared by `layer_sharing`
    are reached once per position.

    Raises:
        CheckpointError: a name points at something other than an `nn.Linear`.
    """
    from torch import nn

    for name, value in entries.items():
        module = model.get_submodule(name)
        if rebuilt(module, value):
            continue
        if not isinstance(module, nn.Linear):
            raise CheckpointError(
                f"compression_config[{key!r}] names {name}, which is a {type(module).__name__}"
            )
        set_submodule(model, name, build(module, value))


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    """Replaces the submodule at dotted `name` by `module`."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def float_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A plain `nn.Linear` holding copies of `weight` (out x in) and `bias`: what a storage layer's
    `to_float()` returns."""
    out_features, in_features = weight.shape
    linear = nn.Linear(
        in_features, out_features, bias is not None, device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias.to(weight.dtype))
    return linear
