"""`SharedLayerList`: a layer list in which several positions hold the same module."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from ...errors import UnsupportedModelError


class SharedLayerList(nn.ModuleList):
    """A `ModuleList` in which several positions may hold the same layer.

    Each distinct module is registered once, under the index of its first position, so
    `state_dict()`, `parameters()` and `named_modules()` see it once; indexing, iteration and
    `len()` follow the positions, so the encoder's `for layer in self.layer` runs a shared layer
    at each of its positions.

    Args:
        layers: the module at every position (the same object at shared positions).
    """

    def __init__(self, layers: Iterable[nn.Module] | None = None, first_position: int = 0) -> None:
        nn.Module.__init__(self)
        self._slots: list[str] = []
        self._first_position = first_position
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
            start, _, step = index.indices(len(self))
            return SharedLayerList(
                self._positions()[index], self._first_position + start if step == 1 else 0
            )
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
        for position, module in enumerate(self._positions()):
            _stamp_position(module, self._first_position + position)
            yield module

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


def _stamp_position(layer: nn.Module, position: int) -> None:
    """Sets `layer_idx` (the key of a decoder's key/value cache entry) of `layer`'s attention to
    the position it runs at: a layer shared by positions 0 and 1 must write and read the cache
    entry of the position it is running as, or generation with a cache reads the wrong keys."""
    for module in layer.modules():
        if isinstance(getattr(module, "layer_idx", None), int):
            module.layer_idx = position


def share_layers(
    layer_list: nn.ModuleList, groups: list[list[int]], init: str = "first"
) -> SharedLayerList:
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
    from ..low_rank.layers import LowRankLinear

    # The mean of two layers' SVD factors is not a factorization of their mean weight, and the mean
    # of integer storage (cluster indices, int8 weights) means nothing: refuse instead of averaging.
    if any(isinstance(sub, LowRankLinear) for m in modules for sub in m.modules()):
        raise UnsupportedModelError(
            f"layer_sharing: layers {group} are low-rank factorized, and averaging factors does "
            "not average the weights; share layers before low_rank, or use init: first"
        )
    states = [m.state_dict() for m in modules]
    for name, value in target.state_dict(keep_vars=True).items():
        others = [state.get(name) for state in states]
        if any(o is None or o.shape != value.shape for o in others):
            raise UnsupportedModelError(
                f"layer_sharing: layers {group} differ in structure at {name!r} (pruned or "
                "factorized differently); share layers before pruning them, or group layers of the "
                "same shape"
            )
        if value.is_floating_point():
            with torch.no_grad():
                value.copy_(torch.stack([o.to(value.dtype) for o in others]).mean(dim=0))
        elif not all(torch.equal(o, value) for o in others):
            raise UnsupportedModelError(
                f"layer_sharing: layers {group} hold different integer tensors at {name!r} "
                "(clustered or quantized storage), which cannot be averaged; share layers before "
                "clustering / quantizing, or use init: first"
            )
