"""Which Linear layers lose the most when made int8: the measurement behind `fp32_fallback`.

Post-training int8 of a fine-tuned MiniLM loses much of its accuracy in one layer, layer 0's
FFN output projection (`layer.0.output.dense`), which this measurement ranks first; keeping that
one layer in float recovers most of the loss at 2% more bytes than all-int8 (BENCHMARKS.md).

The sensitivity of a layer is how far the model's output moves when that layer alone is int8
and every other stays float, on a few training batches: the mean KL divergence between the
float and the perturbed softmax (classification), or the mean squared difference of the outputs
(regression, or a model without logits: its last hidden state). The end effect is what counts;
each layer's own relative output error ranks other layers first, and keeping those in float
gains much less.

Written here because no library of the stack ranks layers for our `Int8Linear`: Intel Neural
Compressor's fallback search and NVIDIA ModelOpt's sensitivity analysis each work on their own
quantized formats and are not dependencies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...checkpoint.rebuild import set_submodule
from ..modifier import StageContext


def calibration_inputs(ctx: StageContext, count: int) -> list[dict[str, Any]]:
    """The first `count` training batches of the stage, without labels.

    Raises:
        RecipeError: the stage has no training data (or it is empty).
    """
    batches = ctx.first_training_batches(
        count,
        "quantization (int8_dynamic, fp32_fallback)",
        "to measure which layers to keep in float",
        "set fp32_fallback: 0",
    )
    return [{k: v for k, v in batch.items() if k != "labels"} for batch in batches]


def _output(model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, bool]:
    """(output tensor, whether it holds class logits)."""
    out = model(**batch)
    logits = getattr(out, "logits", None)
    if logits is not None:
        return logits.float(), logits.shape[-1] > 1
    return out.last_hidden_state.float(), False


def _divergence(reference: torch.Tensor, perturbed: torch.Tensor, classes: bool) -> torch.Tensor:
    """Summed over the examples (the first dimension) of one batch."""
    if classes:
        ref, new = F.log_softmax(reference, -1), F.log_softmax(perturbed, -1)
        return F.kl_div(new, ref, log_target=True, reduction="sum")
    return (reference - perturbed).pow(2).flatten(1).mean(1).sum()


@torch.no_grad()
def layer_sensitivity(
    model: nn.Module,
    names: Iterable[str],
    batches: list[dict[str, Any]],
    quantize: Callable[[nn.Module], nn.Module],
    ctx: StageContext | None = None,
) -> dict[str, float]:
    """For each layer in `names`: the output divergence when only it is replaced by
    `quantize(layer)`.

    The model is put back as it was (same module objects, same train/eval mode). Scores are
    averaged over processes (`ctx`), so every rank ranks the layers alike.
    """
    names = list(names)
    was_training = model.training
    model.eval()
    try:
        reference = [_output(model, batch) for batch in batches]
        examples = sum(out.shape[0] for out, _ in reference)
        scores = []
        for name in names:
            original = model.get_submodule(name)
            set_submodule(model, name, quantize(original))
            try:
                total = sum(
                    _divergence(ref, _output(model, batch)[0], classes)
                    for (ref, classes), batch in zip(reference, batches, strict=True)
                )
            finally:
                set_submodule(model, name, original)
            scores.append(float(total) / examples)
    finally:
        model.train(was_training)
    averaged = torch.tensor(scores, dtype=torch.float64)
    if ctx is not None:  # on the processes' device: NCCL reduces CUDA tensors only
        averaged = ctx.all_reduce_mean(averaged.to(ctx.device)).cpu()
    return dict(zip(names, averaged.tolist(), strict=True))


def most_sensitive(scores: dict[str, float], count: int) -> list[str]:
    """The `count` names with the highest scores, highest first (ties: the earlier layer)."""
    return sorted(scores, key=lambda name: -scores[name])[:count]  # sorted() is stable
