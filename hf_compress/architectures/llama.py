"""The Llama layout in transformers 5, shared by Mistral, Qwen2 and Qwen3 (and SmolLM2, a Llama):
q/k/v/o projections with grouped-query attention and a SwiGLU FFN (gate, up, down)."""

from __future__ import annotations

from .base import ArchitectureAdapter, register_adapter

LLAMA = register_adapter(
    ArchitectureAdapter(
        layout="llama",
        layers="layers",
        attention="self_attn",
        query="self_attn.q_proj",
        key="self_attn.k_proj",
        value="self_attn.v_proj",
        attention_output="self_attn.o_proj",
        ffn_in="mlp.up_proj",
        ffn_out="mlp.down_proj",
        word_embeddings="embed_tokens",
        # The attention module keeps no head count: it reshapes with -1, so narrowed
        # projections and its query-per-key ratio (`num_key_value_groups`) are all it needs.
        heads_attr=None,
        all_head_size_attr=None,
        config_heads="num_attention_heads",
        config_layers="num_hidden_layers",
        config_ffn="intermediate_size",
        config_hidden="hidden_size",
        ffn_gate="mlp.gate_proj",
        config_kv_heads="num_key_value_heads",
        config_head_dim="head_dim",
        causal=True,
        groups_attr="num_key_value_groups",
        attention_norm="input_layernorm",
        ffn_norm="post_attention_layernorm",
    )
)
