"""BERT (and MiniLM, which is a BERT) layout in transformers 5."""

from __future__ import annotations

from .base import ArchitectureAdapter, register_adapter

BERT = register_adapter(
    ArchitectureAdapter(
        layout="bert",
        layers="encoder.layer",
        attention="attention.self",
        query="attention.self.query",
        key="attention.self.key",
        value="attention.self.value",
        attention_output="attention.output.dense",
        ffn_in="intermediate.dense",
        ffn_out="output.dense",
        word_embeddings="embeddings.word_embeddings",
        heads_attr="num_attention_heads",
        all_head_size_attr="all_head_size",
        config_heads="num_attention_heads",
        config_layers="num_hidden_layers",
        config_ffn="intermediate_size",
        config_hidden="hidden_size",
    )
)
