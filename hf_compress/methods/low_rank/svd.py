"""Truncated SVD of a weight, the rank choice (fixed, a ratio, or kept energy), and the Fisher row
weighting that makes the SVD favour what the loss is sensitive to."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ...errors import RecipeError
from ..modifier import StageContext
from .layers import LowRankLinear

if TYPE_CHECKING:
    from transformers import PreTrainedModel


# Factorization maths ---------------------------------------------------------------------------
def choose_rank(
    singular_values: torch.Tensor,
    in_features: int,
    out_features: int,
    rank: int | None = None,
    rank_ratio: float | None = None,
    energy: float | None = None,
) -> int:
    """The rank for one layer from exactly one of `rank`, `rank_ratio`, `energy`.

    Args:
        singular_values: the layer's singular values, descending.
        in_features: input size.
        out_features: output size.
        rank: a fixed rank (capped at min(in, out)).
        rank_ratio: fraction of min(in, out), rounded, at least 1.
        energy: smallest rank whose squared singular values reach this fraction of the total.
    """
    full = min(in_features, out_features)
    if rank is not None:
        return min(rank, full)
    if rank_ratio is not None:
        return max(1, min(full, round(rank_ratio * full)))
    if energy is not None:
        power = singular_values.double() ** 2
        total = power.sum()
        if total <= 0:
            return 1
        kept = torch.cumsum(power, 0) / total
        # First index where the kept fraction reaches `energy`; the small tolerance keeps
        # energy=1.0 from missing the last value by a rounding error.
        reached = torch.nonzero(kept >= energy - 1e-12)
        return int(reached[0].item()) + 1 if len(reached) else full
    raise ValueError("one of rank, rank_ratio or energy is required")


def saves_parameters(rank: int, in_features: int, out_features: int) -> bool:
    """Whether a rank-`rank` factorization has fewer weights than the dense in x out matrix."""
    return rank * (in_features + out_features) < in_features * out_features


def svd_factors(
    weight: torch.Tensor, row_importance: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U, S, Vh) of `weight` (out x in) or, with `row_importance` I, of diag(I) @ weight.

    With importance, U is returned already multiplied by diag(I)^-1, so U[:, :r] S[:r] Vh[:r]
    approximates `weight` itself for any r.
    """
    matrix = weight.detach().float()
    if row_importance is not None:
        importance = row_importance.float().to(matrix.device)
        matrix = importance[:, None] * matrix
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    if row_importance is not None:
        u = u / importance[:, None]
    return u, s, vh


def factorize_linear(
    linear: nn.Linear, rank: int, u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor
) -> LowRankLinear:
    """A `LowRankLinear` holding the rank-`rank` truncation of `linear`'s SVD factors."""
    weight = linear.weight
    module = LowRankLinear(
        linear.in_features,
        linear.out_features,
        rank,
        bias=linear.bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        module.down.weight.copy_(vh[:rank])
        module.up.weight.copy_(u[:, :rank] * s[:rank])
        if linear.bias is not None:
            module.up.bias.copy_(linear.bias)
    return module


def fisher_row_importance(
    model: PreTrainedModel, linears: dict[str, nn.Linear], ctx: StageContext, num_batches: int
) -> dict[str, torch.Tensor]:
    """Row importance sqrt(sum_j sum_batches grad_ij^2) of every Linear in `linears` (FWSVD).

    Gradients of the task loss are taken in eval mode (no dropout), so the estimate depends on
    the data only; they are averaged over processes so every rank factorizes the same way.

    Raises:
        RecipeError: no training batches are available, or they carry no labels.
    """
    was_training = model.training
    saved_requires_grad = {name: lin.weight.requires_grad for name, lin in linears.items()}
    fisher = {
        name: torch.zeros_like(lin.weight, dtype=torch.float32) for name, lin in linears.items()
    }
    model.eval()
    try:
        for lin in linears.values():
            lin.weight.requires_grad_(True)
        batches = ctx.first_training_batches(
            num_batches, "low_rank: fisher: true", "to measure importance", "set fisher: false"
        )
        for batch in batches:
            model.zero_grad(set_to_none=True)
            with torch.enable_grad():
                loss = model(**batch).loss
                if loss is None:
                    raise RecipeError(
                        "low_rank: fisher: true needs labelled batches (the model returned no loss)"
                    )
                loss.backward()
            for name, lin in linears.items():
                if lin.weight.grad is not None:
                    fisher[name] += lin.weight.grad.detach().float() ** 2
    finally:
        model.zero_grad(set_to_none=True)
        for name, lin in linears.items():
            lin.weight.requires_grad_(saved_requires_grad[name])
        model.train(was_training)
    importance = {}
    for name, values in fisher.items():
        values = ctx.all_reduce_mean(values)
        row = values.sum(dim=1).sqrt()
        # A row with no gradient at all (e.g. a dead unit) would make diag(I) singular; give it
        # the smallest positive importance seen so it is still reconstructed, just cheaply.
        positive = row[row > 0]
        floor = positive.min() if len(positive) else torch.tensor(1.0, device=row.device)
        importance[name] = torch.where(row > 0, row, floor)
    return importance
