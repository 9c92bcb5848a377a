"""Rebuilds factorized layers for `from_pretrained` (`low_rank` ranks,
`embedding_factorization`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...architectures.base import get_adapter
from ...checkpoint.rebuild import (
    register_rebuild,
    replace_recorded_linears,
)
from .layers import FactorizedEmbedding, LowRankLinear

if TYPE_CHECKING:
    from transformers import PreTrainedModel


# Rebuild on load -------------------------------------------------------------------------------
@register_rebuild("low_rank", order=50)
def _rebuild_low_rank(model: PreTrainedModel, ranks: dict[str, int]) -> None:
    """Replaces the recorded Linears by empty `LowRankLinear`s of the recorded ranks (weights load
    next)."""
    replace_recorded_linears(
        model,
        "low_rank",
        ranks,
        build=lambda linear, rank: LowRankLinear(
            linear.in_features,
            linear.out_features,
            int(rank),
            linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        ),
        rebuilt=lambda module, rank: isinstance(module, LowRankLinear) and module.rank == rank,
    )


@register_rebuild("embedding_factorization", order=50)
def _rebuild_embedding(model: PreTrainedModel, factor_dim: int) -> None:
    adapter = get_adapter(model)
    embedding = adapter.embeddings(model)
    vocab, hidden = embedding.weight.shape
    weight = embedding.weight
    module = FactorizedEmbedding(
        vocab,
        hidden,
        int(factor_dim),
        embedding.padding_idx,
        device=weight.device,
        dtype=weight.dtype,
    )
    adapter.set(model.base_model, adapter.word_embeddings, module)
