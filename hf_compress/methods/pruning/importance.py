"""Scoring and choosing what to prune: Taylor gates on heads and neurons, the per-layer or
global choice of units, and magnitude masks."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def smallest_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of exactly `k` lowest entries of the 1-D `scores` (ties broken by position).

    Uses `kthvalue` (linear time) instead of a full sort: global ranking over an encoder's ~10M
    weights runs at every schedule update.
    """
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= scores.numel():
        return torch.ones_like(scores, dtype=torch.bool)
    threshold = torch.kthvalue(
        scores.cpu() if scores.device.type == "mps" else scores, k
    ).values.to(scores.device)
    below = scores < threshold
    ties = torch.nonzero(scores == threshold).flatten()
    mask = below.clone()
    mask[ties[: k - int(below.sum())]] = True
    return mask


# Unit gates (masking and Taylor scores) -----------------------------------------------------------
class UnitGate:
    """A forward pre-hook on the Linear that consumes a layer's units (heads' context, FFN
    activations).

    It multiplies each unit's channels by `keep` (0 for masked units, gradual mode) and, while
    `collect` is on and autograd is recording, by a fresh per-example gate of ones whose gradient
    is the Taylor importance `dL/dg` of every unit for every example.

    Args:
        module: the Linear fed by the units.
        units: number of units in the layer.
        group: channels per unit (`head_size` for heads, 1 for neurons).
    """

    def __init__(self, module: nn.Module, units: int, group: int) -> None:
        self.units = units
        self.group = group
        self.device = next(module.parameters()).device
        self.keep: torch.Tensor | None = None
        self.collect = False
        self.gates: list[torch.Tensor] = []
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        x = args[0]
        scale = None if self.keep is None else self.keep.to(device=x.device, dtype=x.dtype)
        if self.collect and torch.is_grad_enabled():
            shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (self.units,)
            gate = torch.ones(shape, device=x.device, dtype=x.dtype, requires_grad=True)
            self.gates.append(gate)
            scale = gate if scale is None else gate * scale
        if scale is None:
            return None
        if self.group > 1:
            scale = scale.repeat_interleave(self.group, dim=-1)
        return (x * scale, *args[1:])

    def consume(self) -> tuple[torch.Tensor, int]:
        """Sum over examples of `|dL/dg|` since the last call, and the number of examples."""
        total = torch.zeros(self.units, dtype=torch.float32)
        examples = 0
        for gate in self.gates:
            if gate.grad is not None:
                grad = gate.grad.detach().abs().float().reshape(-1, self.units)
                total += grad.sum(dim=0).cpu()
                examples += grad.shape[0]
        self.gates = []
        return total, examples

    def remove(self) -> None:
        self.handle.remove()
        self.gates = []


# Selection ----------------------------------------------------------------------------------------
def _round(x: float) -> int:
    # Round half up (Python's round() rounds half to even, which makes 2.5 heads -> 2).
    return int(math.floor(x + 0.5))


def choose_units(
    scores: dict[int, torch.Tensor],
    alive: dict[int, torch.Tensor],
    target: int | dict[int, int],
    min_keep: int,
    normalize: bool = False,
) -> dict[int, torch.Tensor]:
    """Marks the lowest-scoring live units as pruned until `target` units are pruned.

    Args:
        scores: per layer, one score per unit (higher = more important).
        alive: per layer, a boolean tensor of the units not pruned yet; never revived.
        target: total number of pruned units across layers (global ranking), or a number per
            layer (per-layer ranking).
        min_keep: units every layer keeps.
        normalize: global ranking: divide each layer's scores by their L2 norm over live units.

    Returns:
        The new `alive` tensors.
    """
    new = {i: a.clone() for i, a in alive.items()}
    if isinstance(target, dict):
        for i, wanted in target.items():
            need = wanted - int((~new[i]).sum())
            order = [u for u in torch.argsort(scores[i].float(), stable=True).tolist() if new[i][u]]
            for unit in order[: max(0, min(need, int(new[i].sum()) - min_keep))]:
                new[i][unit] = False
        return new
    need = target - sum(int((~a).sum()) for a in new.values())
    candidates = []
    for i, layer_scores in scores.items():
        layer_scores = layer_scores.float()
        if normalize:
            norm = layer_scores[new[i]].norm()
            layer_scores = layer_scores / norm if norm > 0 else layer_scores
        candidates += [
            (float(layer_scores[u]), i, u) for u in range(len(layer_scores)) if new[i][u]
        ]
    candidates.sort()
    for _, i, u in candidates:
        if need <= 0:
            break
        if int(new[i].sum()) > min_keep:
            new[i][u] = False
            need -= 1
    return new
