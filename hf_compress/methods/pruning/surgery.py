"""Physically removing attention heads and FFN neurons: narrowing the Linear layers around them
through the family's architecture map."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers.pytorch_utils import prune_linear_layer

from ...architectures.base import get_adapter
from ...errors import UnsupportedModelError
from .layers import EmptyAttention

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from ...architectures.base import ArchitectureAdapter


# Module surgery -----------------------------------------------------------------------------------
def narrow_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """`linear` keeping only rows (`dim=0`) or input columns (`dim=1`) `index`, same dtype and
    flags."""
    with warnings.catch_warnings():
        # An attention block losing every head gets a zero-input projection; torch warns that
        # initialising its empty weight is a no-op, which is expected here.
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        new = prune_linear_layer(linear, index.to(torch.long), dim=dim)
    # prune_linear_layer builds the new layer in the default dtype; keep the model's dtype.
    new = new.to(dtype=linear.weight.dtype)
    new.weight.requires_grad_(linear.weight.requires_grad)
    if new.bias is not None:
        new.bias.requires_grad_(linear.bias.requires_grad)
    new.train(linear.training)
    return new


def _inner_out_name(adapter: ArchitectureAdapter) -> str | None:
    """The output projection's path inside the attention module, when it lives there."""
    prefix = adapter.attention + "."
    return (
        adapter.attention_output[len(prefix) :]
        if adapter.attention_output.startswith(prefix)
        else None
    )


def _require_linear(
    adapter: ArchitectureAdapter,
    layer: nn.Module,
    paths: tuple[str, ...],
    technique: str,
    index: int,
) -> None:
    for path in paths:
        module = adapter.get(layer, path)
        if type(module) is not nn.Linear:
            raise UnsupportedModelError(
                f"{technique} needs plain nn.Linear layers, but layer {index}'s `{path}` is "
                f"{type(module).__name__}; run structured pruning in a stage before magnitude "
                "pruning, low-rank factorization or quantization."
            )


def _channels(heads: list[int], size: int) -> torch.Tensor:
    return torch.tensor([h * size + c for h in heads for c in range(size)], dtype=torch.long)


def remove_heads(model: PreTrainedModel, index: int, keep: list[int]) -> None:
    """Physically keeps only the key/value groups `keep` (sorted) of layer `index`: each group's
    key and value head and the query heads that share it (one query head per group without
    grouped-query attention), so the attention's query-per-key ratio stays what it was."""
    adapter = get_adapter(model)
    layer = adapter.layer(model, index)
    size = adapter.head_size(model.config)
    per_group = adapter.query_heads_per_kv_head_at(model, index)
    queries = _channels([g * per_group + q for g in keep for q in range(per_group)], size)
    out = narrow_linear(adapter.get(layer, adapter.attention_output), queries, dim=1)
    if not keep:
        inner = _inner_out_name(adapter)
        adapter.set(layer, adapter.attention, EmptyAttention(inner, out if inner else None))
        if inner is None:
            adapter.set(layer, adapter.attention_output, out)
    else:
        keys = _channels(keep, size)
        for path, channels in (
            (adapter.query, queries),
            (adapter.key, keys),
            (adapter.value, keys),
        ):
            adapter.set(layer, path, narrow_linear(adapter.get(layer, path), channels, dim=0))
        adapter.set(layer, adapter.attention_output, out)
    adapter.set_num_heads(model, index, len(keep) * per_group, len(keep))


def remove_query_heads(model: PreTrainedModel, index: int, keep: list[int]) -> None:
    """Physically keeps only the query heads `keep` (sorted) of layer `index`, every key/value
    head staying. Each key/value group must keep the same number of query heads (at least
    one): the attention repeats each key/value head that many times."""
    adapter = get_adapter(model)
    layer = adapter.layer(model, index)
    per_group = adapter.query_heads_per_kv_head_at(model, index)
    kv_heads = adapter.num_kv_heads(model, index)
    counts = [sum(1 for h in keep if h // per_group == g) for g in range(kv_heads)]
    if len(set(counts)) != 1 or counts[0] == 0:
        raise ValueError(
            f"layer {index}: every key/value group must keep the same number (>= 1) of query "
            f"heads, got {counts}"
        )
    queries = _channels(keep, adapter.head_size(model.config))
    query = narrow_linear(adapter.get(layer, adapter.query), queries, dim=0)
    out = narrow_linear(adapter.get(layer, adapter.attention_output), queries, dim=1)
    adapter.set(layer, adapter.query, query)
    adapter.set(layer, adapter.attention_output, out)
    adapter.set_num_heads(model, index, len(keep), kv_heads)


def remove_neurons(model: PreTrainedModel, index: int, keep: list[int]) -> None:
    """Physically keeps only FFN neurons `keep` (sorted) of layer `index`."""
    adapter = get_adapter(model)
    layer = adapter.layer(model, index)
    channels = torch.tensor(keep, dtype=torch.long)
    for path in adapter.ffn_rows():  # up (and gate, for SwiGLU): the neurons' rows
        adapter.set(layer, path, narrow_linear(adapter.get(layer, path), channels, dim=0))
    adapter.set(
        layer, adapter.ffn_out, narrow_linear(adapter.get(layer, adapter.ffn_out), channels, dim=1)
    )
