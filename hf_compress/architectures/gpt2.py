"""The GPT-2 layout, after `to_linear_layout`: GPT-2 keeps its projections in `Conv1D` modules
(weights stored input x output) and fuses query, key and value into one `c_attn`. Every technique
here works on `nn.Linear` layers with separate q/k/v, so before the first modifier runs the
model is converted once, losslessly: each `Conv1D` becomes the equivalent `nn.Linear`, and
`c_attn` becomes a `QueryKeyValue` holding three `nn.Linear`s whose outputs it concatenates, which
is what GPT-2's attention splits again. The conversion is recorded (`compression_config["layout"]`)
and repeated when the checkpoint reloads, before the weights load.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import ArchitectureAdapter, register_adapter


class QueryKeyValue(nn.Module):
    """GPT-2's fused `c_attn` as three projections: `forward` returns `[q(x), k(x), v(x)]`
    concatenated on the last dimension, as the fused layer did, so the attention's
    `split(split_size)` (kept equal to each projection's width) still separates them."""

    def __init__(self, query: nn.Linear, key: nn.Linear, value: nn.Linear) -> None:
        super().__init__()
        self.query, self.key, self.value = query, key, value

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.query(hidden_states), self.key(hidden_states), self.value(hidden_states)],
            dim=-1,
        )


def _linear_from_conv1d(conv: nn.Module, rows: slice | None = None) -> nn.Linear:
    """The `nn.Linear` computing what the `Conv1D` `conv` computes (its output columns `rows`)."""
    weight = conv.weight.detach().t()  # Conv1D keeps (in, out); Linear keeps (out, in)
    bias = conv.bias.detach()
    if rows is not None:
        weight, bias = weight[rows], bias[rows]
    linear = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
    if weight.device.type != "meta":
        with torch.no_grad():
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
    linear.weight.requires_grad_(conv.weight.requires_grad)
    linear.bias.requires_grad_(conv.bias.requires_grad)
    return linear


def to_linear_layout(model: nn.Module) -> None:
    """Converts a GPT-2 model's blocks in place to the layout `GPT2` describes (a no-op on any
    other model and on blocks already converted)."""
    from transformers.pytorch_utils import Conv1D

    blocks = getattr(getattr(model, "base_model", model), "h", None)
    if not isinstance(blocks, nn.ModuleList):
        return
    for block in blocks:
        attention, mlp = block.attn, block.mlp
        if isinstance(attention.c_attn, Conv1D):
            width = attention.split_size
            attention.c_attn = QueryKeyValue(
                *(_linear_from_conv1d(attention.c_attn, slice(i * width, (i + 1) * width))
                  for i in range(3))
            )  # fmt: skip
        for owner, name in ((attention, "c_proj"), (mlp, "c_fc"), (mlp, "c_proj")):
            if isinstance(getattr(owner, name), Conv1D):
                setattr(owner, name, _linear_from_conv1d(getattr(owner, name)))


GPT2 = register_adapter(
    ArchitectureAdapter(
        layout="gpt2",
        layers="h",
        attention="attn",
        query="attn.c_attn.query",
        key="attn.c_attn.key",
        value="attn.c_attn.value",
        attention_output="attn.c_proj",
        ffn_in="mlp.c_fc",
        ffn_out="mlp.c_proj",
        word_embeddings="wte",
        heads_attr="num_heads",
        # The attention splits c_attn's output every `split_size` channels: heads x head size.
        all_head_size_attr="split_size",
        config_heads="num_attention_heads",
        config_layers="num_hidden_layers",
        config_ffn="n_inner",
        config_hidden="hidden_size",
        causal=True,
        attention_norm="ln_1",
        ffn_norm="ln_2",
        prepare=to_linear_layout,
    )
)
