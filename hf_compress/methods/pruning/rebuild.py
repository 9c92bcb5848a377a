"""Rebuilds pruned structure for `from_pretrained`: per-layer head counts (`heads`, `kv_heads`),
FFN widths (`ffn_width`) and sparse Linear storage (`sparse_linear`)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from torch import nn

from ...architectures.base import get_adapter
from ...checkpoint.rebuild import register_rebuild, set_submodule
from ...errors import CheckpointError
from .layers import EmptyAttention, SparseLinear
from .surgery import _inner_out_name

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def _resolve(model: nn.Module, name: str) -> str:
    """`name` as a submodule path of `model`, also when a task model's names meet its base model."""
    try:
        model.get_submodule(name)
        return name
    except AttributeError:
        prefix = getattr(model, "base_model_prefix", "") + "."
        if name.startswith(prefix):
            return name[len(prefix) :]
        raise


@register_rebuild("sparse_linear", order=60)
def rebuild_sparse_linear(model: PreTrainedModel, value: dict[str, int]) -> None:
    """Replaces each recorded Linear by an empty `SparseLinear` of the recorded non-zero count."""
    for name, nnz in value.items():
        path = _resolve(model, name)
        linear = model.get_submodule(path)
        if isinstance(linear, SparseLinear):
            continue
        sparse = SparseLinear(
            linear.in_features,
            linear.out_features,
            int(nnz),
            bias=linear.bias is not None,
            dtype=linear.weight.dtype,
            device=linear.weight.device,
        )
        set_submodule(model, path, sparse)


def _fresh_linear(like: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        return nn.Linear(
            in_features,
            out_features,
            bias=like.bias is not None,
            dtype=like.weight.dtype,
            device=like.weight.device,
        )


def _kv_heads_of(model: PreTrainedModel, index: int, heads: int, per_group: int) -> int:
    """Layer `index`'s key/value heads: recorded in `kv_heads` when query heads were removed
    inside the groups, else whole groups were removed and they follow from `heads`."""
    recorded = (getattr(model.config, "compression_config", None) or {}).get("kv_heads") or {}
    if str(index) in recorded:
        return int(recorded[str(index)])
    if heads % per_group:
        raise CheckpointError(
            f"compression_config['heads'] gives layer {index} {heads} query heads, not a "
            f"multiple of the {per_group} that share each key/value head"
        )
    return heads // per_group


@register_rebuild("heads", order=30)
def rebuild_heads(model: PreTrainedModel, value: dict[str, int]) -> None:
    """Rebuilds per-layer query head counts `{"<layer>": heads}` before the weights load, with
    the key/value heads of `kv_heads` (or, when a layer has no entry there, whole groups)."""
    adapter = get_adapter(model)
    size = adapter.head_size(model.config)
    per_group = adapter.query_heads_per_kv_head(model.config)
    for key, heads in value.items():
        index, heads = int(key), int(heads)
        kv = _kv_heads_of(model, index, heads, per_group)
        if heads == adapter.num_heads(model, index) and kv == adapter.num_kv_heads(model, index):
            continue
        if (kv == 0) != (heads == 0) or (kv and heads % kv):
            raise CheckpointError(
                f"compression_config gives layer {index} {heads} query heads for {kv} key/value "
                "heads; each key/value head must be shared by the same number of query heads"
            )
        layer = adapter.layer(model, index)
        old_out = adapter.get(layer, adapter.attention_output)
        out = _fresh_linear(old_out, heads * size, old_out.out_features)
        if heads == 0:
            inner = _inner_out_name(adapter)
            adapter.set(layer, adapter.attention, EmptyAttention(inner, out if inner else None))
            if inner is None:
                adapter.set(layer, adapter.attention_output, out)
        else:
            for path, count in ((adapter.query, heads), (adapter.key, kv), (adapter.value, kv)):
                old = adapter.get(layer, path)
                adapter.set(layer, path, _fresh_linear(old, old.in_features, count * size))
            adapter.set(layer, adapter.attention_output, out)
        adapter.set_num_heads(model, index, heads, kv)


@register_rebuild("kv_heads", order=31)
def check_kv_heads(model: PreTrainedModel, value: dict[str, int]) -> None:
    """`kv_heads` is read by `rebuild_heads`; this checks every recorded layer got its count."""
    adapter = get_adapter(model)
    for key, kv in value.items():
        if adapter.num_kv_heads(model, int(key)) != int(kv):
            raise CheckpointError(
                f"compression_config['kv_heads'] gives layer {key} {kv} key/value heads, but "
                "`heads` has no entry for it; the checkpoint's config.json was edited by hand"
            )


@register_rebuild("ffn_width", order=40)
def rebuild_ffn_width(model: PreTrainedModel, value: dict[str, int]) -> None:
    """Rebuilds per-layer FFN widths `{"<layer>": neurons}` before the weights load."""
    adapter = get_adapter(model)
    for key, width in value.items():
        index, width = int(key), int(width)
        if width == adapter.ffn_width(model, index):
            continue
        layer = adapter.layer(model, index)
        for path in adapter.ffn_rows():
            old = adapter.get(layer, path)
            adapter.set(layer, path, _fresh_linear(old, old.in_features, width))
        old_out = adapter.get(layer, adapter.ffn_out)
        adapter.set(layer, adapter.ffn_out, _fresh_linear(old_out, width, old_out.out_features))
