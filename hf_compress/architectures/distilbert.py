"""DistilBERT layout in transformers 5 (`distilbert.transformer.layer`, q_lin/k_lin/v_lin)."""

from __future__ import annotations

from .base import ArchitectureAdapter, register_adapter

DISTILBERT = register_adapter(
    ArchitectureAdapter(
        layout="distilbert",
        layers="transformer.layer",
        attention="attention",
        query="attention.q_lin",
        key="attention.k_lin",
        value="attention.v_lin",
        attention_output="attention.out_lin",
        ffn_in="ffn.lin1",
        ffn_out="ffn.lin2",
        word_embeddings="embeddings.word_embeddings",
        heads_attr="n_heads",
        all_head_size_attr=None,
        config_heads="n_heads",
        config_layers="n_layers",
        config_ffn="hidden_dim",
        config_hidden="dim",
    )
)
