"""SmoothQuant (Xiao et al. 2023): before int8 quantization, move activation outliers into the
weights. Decoder activations have a few input channels far larger than the rest (the input of
`down_proj` most of all); one dynamic scale per input tensor then leaves the other channels a
handful of int8 steps. Dividing each input channel j by s_j and multiplying the weights' column j
by s_j computes the same product, with s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) balancing the
two ranges. The division is folded into what produces the input (the pre-attention / pre-FFN
norm's weight and bias, or the rows of `up_proj` for `down_proj`), so the smoothed float model is
exactly the model before (up to float rounding), is saved as ordinary weights and needs nothing to
reload. Written here because no kept library smooths a transformers model in place on CPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ...architectures.base import get_adapter
from ...errors import UnsupportedModelError

_EPSILON = 1e-5


def smoothing_groups(model: nn.Module) -> list[tuple[nn.Module, str, list[nn.Linear]]]:
    """(owner, how, consumers) per place to smooth: `how` is "norm" (divide a norm's weight and
    bias) or "rows" (divide the rows of a Linear layer, `up_proj` before `down_proj`); the
    consumers are the Linear layers reading that output. Shared layers appear once."""
    adapter = get_adapter(model)
    if adapter.attention_norm is None and adapter.ffn_norm is None:
        raise UnsupportedModelError(
            f"quantization smoothing: the {adapter.layout} layout has no normalization in front "
            "of its projections to fold scales into (post-norm encoders quantize well without "
            "it); set smoothing: 0"
        )
    groups: list[tuple[nn.Module, str, list[nn.Linear]]] = []
    seen: set[int] = set()
    for layer in adapter.layer_list(model):
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        places = []
        if adapter.attention_norm is not None:
            consumers = [adapter.query, adapter.key, adapter.value]
            places.append((adapter.attention_norm, "norm", consumers))
        if adapter.ffn_norm is not None:
            places.append((adapter.ffn_norm, "norm", list(adapter.ffn_rows())))
        if adapter.ffn_gate is not None:  # SwiGLU: act(gate) * up feeds down, linear in up
            places.append((adapter.ffn_in, "rows", [adapter.ffn_out]))
        for owner_path, how, paths in places:
            owner = adapter.get(layer, owner_path)
            consumers = [adapter.get(layer, path) for path in paths]
            if all(type(c) is nn.Linear for c in consumers) and _can_scale(owner, how):
                groups.append((owner, how, consumers))
    return groups


def _can_scale(owner: nn.Module, how: str) -> bool:
    if how == "rows":
        return type(owner) is nn.Linear
    return isinstance(getattr(owner, "weight", None), torch.Tensor)


@torch.no_grad()
def input_maxima(
    model: nn.Module, groups: list[tuple[nn.Module, str, list[nn.Linear]]], batches: Iterable[Any]
) -> list[torch.Tensor]:
    """The largest |input| per channel of each group's consumers over `batches`."""
    maxima: list[torch.Tensor | None] = [None] * len(groups)

    def hook(index: int) -> Any:
        def record(module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach()
            amax = x.reshape(-1, x.shape[-1]).abs().amax(0).float()
            current = maxima[index]
            maxima[index] = amax if current is None else torch.maximum(current, amax)

        return record

    handles = [
        consumers[0].register_forward_pre_hook(hook(i))
        for i, (_, _, consumers) in enumerate(groups)
    ]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            model(**batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [
        m if m is not None else torch.ones(groups[i][2][0].in_features)
        for i, m in enumerate(maxima)
    ]


@torch.no_grad()
def smooth(
    groups: list[tuple[nn.Module, str, list[nn.Linear]]],
    maxima: list[torch.Tensor],
    alpha: float,
) -> None:
    """Applies the scales in place: owners divided, consumers' columns multiplied."""
    for (owner, how, consumers), x_max in zip(groups, maxima):
        w_max = torch.stack([c.weight.detach().abs().amax(0).float() for c in consumers]).amax(0)
        scale = x_max.to(w_max.device).clamp(min=_EPSILON).pow(alpha) / w_max.clamp(
            min=_EPSILON
        ).pow(1 - alpha)
        scale = scale.clamp(min=_EPSILON)
        if how == "norm":
            owner.weight.div_(scale.to(owner.weight.dtype))
            if getattr(owner, "bias", None) is not None:
                owner.bias.div_(scale.to(owner.bias.dtype))
        else:
            owner.weight.div_(scale.to(owner.weight.dtype)[:, None])
            if owner.bias is not None:
                owner.bias.div_(scale.to(owner.bias.dtype))
        for consumer in consumers:
            consumer.weight.mul_(scale.to(consumer.weight.dtype)[None, :])
