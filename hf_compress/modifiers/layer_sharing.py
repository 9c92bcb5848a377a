"""Cross-layer parameter sharing (ALBERT, Lan et al. 2020).

Groups of transformer layers become one module referenced at several positions of the layer
list, so they run the same weights, train as one (each position's gradient adds into the shared
parameters) and are stored once. Groups are given as `groups: [[0, 1], [2, 3], [4, 5]]` or
`share: all`; the shared weights start from the mean of the group's layers (`init: mean`) or its
first layer (`init: first`).

Storage: the layer list becomes a `SharedLayerList`, a `ModuleList` that registers each distinct
layer once (under the index of its first position) and maps positions to layers. Its state dict
therefore holds every shared tensor exactly once, with no aliased keys: safetensors (which
refuses aliased tensors) saves it, and `from_pretrained` fills each shared module once and finds
no missing keys. The obvious alternative, an ordinary ModuleList holding one module at two
positions, was probed in transformers 5.24: `save_pretrained` raises a RuntimeError about shared
tensors unless every alias is declared in the model's `_tied_weights_keys`, a class-level mapping
that `post_init` also expands into weight tying (gated by `config.tie_word_embeddings`), so it
cannot be set per instance safely.

Recipe keys (`type: layer_sharing`): `groups` | `share`, `init`. Checkpoint entry:
`compression_config["shared_layers"] = [[0, 1], [2, 3], [4, 5]]`, rebuilt at order 25: after
layer selection (20, which may renumber layers) and before per-layer reshaping (30, 40), so the
weights load into the shared modules.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..adapters import get_adapter
from ..checkpoint import record_method, record_structure, register_rebuild
from ..errors import CheckpointError, RecipeError, UnsupportedModelError
from ..registry import register_modifier
from ..schema import option
from .base import Modifier, ModifierConfig, StageContext

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class LayerSharingConfig(ModifierConfig):
    """Keys of `type: layer_sharing`. Give exactly one of `groups` and `share`."""

    groups: tuple[tuple[int, ...], ...] | None = option(
        None, help="lists of layer indices that share one set of weights, e.g. [[0, 1], [2, 3]]"
    )
    share: str | None = option(None, help="`all`: every layer shares one set of weights", choices=("all",))
    init: str = option(
        "mean", help="shared weights start from the group's mean or its first layer", choices=("mean", "first")
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.groups is None) == (self.share is None):
            raise ValueError("give exactly one of groups (e.g. [[0, 1], [2, 3]]) or share: all")
        if self.targets or self.ignore:
            raise ValueError("layer_sharing picks layers with groups / share, not targets / ignore")
        if self.groups is not None:
            if not self.groups:
                raise ValueError("groups is empty; list at least one group of two or more layers")
            seen: set[int] = set()
            for group in self.groups:
                if len(group) < 2:
                    raise ValueError(
                        f"group {list(group)} has fewer than two layers; a group shares weights between layers"
                    )
                for index in group:
                    if index < 0:
                        raise ValueError(f"layer index {index} is negative; layers are numbered from 0")
                    if index in seen:
                        raise ValueError(
                            f"layer {index} appears in two groups (or twice in one); groups must not overlap"
                        )
                    seen.add(index)


class SharedLayerList(nn.ModuleList):
    """A `ModuleList` in which several positions may hold the same layer.

    Each distinct module is registered once, under the index of its first position, so
    `state_dict()`, `parameters()` and `named_modules()` see it once; indexing, iteration and
    `len()` follow the positions, so the encoder's `for layer in self.layer` runs a shared layer
    at each of its positions.

    Args:
        layers: the module at every position (the same object at shared positions).
    """

    def __init__(self, layers: Iterable[nn.Module] | None = None) -> None:
        nn.Module.__init__(self)
        self._slots: list[str] = []
        self._assign(list(layers or []))

    def _assign(self, layers: list[nn.Module]) -> None:
        for key in list(self._modules):
            del self._modules[key]
        first_position: dict[int, str] = {}
        slots = []
        for position, layer in enumerate(layers):
            key = first_position.setdefault(id(layer), str(position))
            if key == str(position):
                self.add_module(key, layer)
            slots.append(key)
        self._slots = slots

    def _positions(self) -> list[nn.Module]:
        return [self._modules[key] for key in self._slots]

    def groups(self) -> list[list[int]]:
        """Positions that share a module, one list per module held at two or more positions."""
        by_key: dict[str, list[int]] = {}
        for position, key in enumerate(self._slots):
            by_key.setdefault(key, []).append(position)
        return [positions for positions in by_key.values() if len(positions) > 1]

    def __getitem__(self, index: int | slice) -> nn.Module:  # type: ignore[override]
        if isinstance(index, slice):
            return SharedLayerList(self._positions()[index])
        return self._modules[self._slots[index]]

    def __setitem__(self, index: int, module: nn.Module) -> None:  # type: ignore[override]
        layers = self._positions()
        layers[index] = module
        self._assign(layers)

    def __delitem__(self, index: int | slice) -> None:  # type: ignore[override]
        layers = self._positions()
        del layers[index]
        self._assign(layers)

    def __len__(self) -> int:
        return len(self._slots)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self._positions())

    def __iadd__(self, modules: Iterable[nn.Module]) -> SharedLayerList:  # type: ignore[override]
        return self.extend(modules)

    def __add__(self, other: Iterable[nn.Module]) -> SharedLayerList:  # type: ignore[override]
        return SharedLayerList([*self._positions(), *other])

    def append(self, module: nn.Module) -> SharedLayerList:  # type: ignore[override]
        self._assign([*self._positions(), module])
        return self

    def extend(self, modules: Iterable[nn.Module]) -> SharedLayerList:  # type: ignore[override]
        self._assign([*self._positions(), *modules])
        return self

    def insert(self, index: int, module: nn.Module) -> None:  # type: ignore[override]
        layers = self._positions()
        layers.insert(index, module)
        self._assign(layers)

    def pop(self, index: int = -1) -> nn.Module:  # type: ignore[override]
        layers = self._positions()
        module = layers.pop(index)
        self._assign(layers)
        return module

    def extra_repr(self) -> str:
        return f"positions={len(self._slots)}, shared={self.groups()}"


def share_layers(layer_list: nn.ModuleList, groups: list[list[int]], init: str = "first") -> SharedLayerList:
    """A `SharedLayerList` in which every group's positions hold one module.

    Args:
        layer_list: the current layers (a `SharedLayerList` keeps its existing sharing).
        groups: lists of positions to share.
        init: `first` keeps the group's first layer's weights; `mean` sets them to the average
            over the group's distinct layers.

    Raises:
        UnsupportedModelError: layers of a group differ in structure (e.g. pruned differently).
    """
    layers = list(layer_list)
    for group in groups:
        distinct: list[nn.Module] = []
        for position in group:
            if all(layers[position] is not m for m in distinct):
                distinct.append(layers[position])
        target = distinct[0]
        if init == "mean" and len(distinct) > 1:
            _average_into(target, distinct, group)
        for position, layer in enumerate(layers):
            if any(layer is m for m in distinct):
                layers[position] = target
    return SharedLayerList(layers)


def _average_into(target: nn.Module, modules: list[nn.Module], group: list[int]) -> None:
    from .low_rank import LowRankLinear

    # The mean of two layers' SVD factors is not a factorization of their mean weight, and the mean
    # of integer storage (cluster indices, int8 weights) means nothing: refuse instead of averaging.
    if any(isinstance(sub, LowRankLinear) for m in modules for sub in m.modules()):
        raise UnsupportedModelError(
            f"layer_sharing: layers {group} are low-rank factorized, and averaging factors does not average the "
            "weights; share layers before low_rank, or use init: first"
        )
    states = [m.state_dict() for m in modules]
    for name, value in target.state_dict(keep_vars=True).items():
        others = [state.get(name) for state in states]
        if any(o is None or o.shape != value.shape for o in others):
            raise UnsupportedModelError(
                f"layer_sharing: layers {group} differ in structure at {name!r} (pruned or factorized differently); "
                "share layers before pruning them, or group layers of the same shape"
            )
        if value.is_floating_point():
            with torch.no_grad():
                value.copy_(torch.stack([o.to(value.dtype) for o in others]).mean(dim=0))
        elif not all(torch.equal(o, value) for o in others):
            raise UnsupportedModelError(
                f"layer_sharing: layers {group} hold different integer tensors at {name!r} (clustered or quantized "
                "storage), which cannot be averaged; share layers before clustering / quantizing, or use init: first"
            )


def _check_groups(groups: list[list[int]], num_layers: int, where: str) -> None:
    for group in groups:
        bad = [i for i in group if i >= num_layers]
        if bad:
            raise RecipeError(
                f"{where}: layer index {bad[0]} is out of range; this model has {num_layers} layers (0..{num_layers - 1})"
            )


@register_modifier("layer_sharing")
class LayerSharingModifier(Modifier):
    """Makes groups of transformer layers share one set of weights (ALBERT).

    Applied in `on_initialize`; in a training stage the shared layers are fine-tuned as one.
    """

    config_class = LayerSharingConfig

    def __init__(self, config: LayerSharingConfig) -> None:
        super().__init__(config)
        self.config: LayerSharingConfig = config
        self.groups: list[list[int]] = []
        self.layers_before = 0
        self.layers_after = 0

    def on_initialize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        adapter = get_adapter(model)
        layer_list = adapter.layer_list(model)
        num_layers = len(layer_list)
        if self.config.share == "all":
            requested = [list(range(num_layers))]
        else:
            requested = [list(group) for group in self.config.groups or ()]
            _check_groups(requested, num_layers, "layer_sharing.groups")
        self.layers_before = len({id(layer) for layer in layer_list})
        shared = share_layers(layer_list, requested, self.config.init)
        adapter.set(model.base_model, adapter.layers, shared)
        self.groups = shared.groups()
        self.layers_after = len({id(layer) for layer in shared})
        record_structure(model, "shared_layers", self.groups)
        record_method(model, "layer_sharing")
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "groups": self.groups,
            "distinct_layers_before": self.layers_before,
            "distinct_layers_after": self.layers_after,
            "init": self.config.init,
        }


@register_rebuild("shared_layers", order=25)
def _rebuild_shared_layers(model: PreTrainedModel, groups: list[list[int]]) -> None:
    """Makes the recorded positions share one layer module again (weights load into it next)."""
    adapter = get_adapter(model)
    layer_list = adapter.layer_list(model)
    try:
        _check_groups(groups, len(layer_list), "compression_config['shared_layers']")
    except RecipeError as exc:
        raise CheckpointError(str(exc)) from exc
    adapter.set(model.base_model, adapter.layers, share_layers(layer_list, [list(g) for g in groups], init="first"))
