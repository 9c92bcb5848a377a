"""Low-rank factorization of Linear layers (Denil et al. 2013) and of the word embedding (ALBERT).

Each targeted `nn.Linear` (W, out x in) becomes a `LowRankLinear`: two Linears built from the
truncated SVD W ~ U_r S_r V_r^T, first V_r^T (in -> r) and then U_r S_r (r -> out, carrying the
original bias). The rank is chosen per layer by exactly one of `rank`, `rank_ratio` or `energy`,
and a layer stays dense when r * (in + out) >= in * out, since factorizing it would not save
anything.

`fisher: true` weights the SVD by how much each output row matters to the task loss (FWSVD, Hsu
et al. 2022): squared gradients of every weight are summed over a few training batches, the row
importance is I_i = sqrt(sum_j F_ij), and the SVD factorizes diag(I) W, whose best rank-r
approximation minimises the importance-weighted reconstruction error; diag(I)^-1 is folded back
into the second factor.

`factorize_embeddings: E` replaces the vocab x hidden word embedding by a vocab x E embedding
followed by an E x hidden projection (ALBERT's factorized embedding parameterization), also
initialised from the SVD.

Recipe keys (`type: low_rank`): `rank` | `rank_ratio` | `energy`, `fisher`, `calibration_batches`,
`factorize_embeddings`, `targets`, `ignore`. Checkpoint entries: `compression_config["low_rank"]
= {"module.name": rank}` and `compression_config["embedding_factorization"] = E`, both rebuilt at
order 50 before the weights load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...architectures.base import get_adapter
from ...checkpoint.format import get_structure, record_method, record_structure
from ...checkpoint.rebuild import (
    set_submodule,
)
from ...errors import RecipeError, UnsupportedModelError
from ...recipe.registry import register_modifier
from ..modifier import Modifier, StageContext
from .config import _RANK_KEYS, LowRankConfig
from .layers import FactorizedEmbedding, LowRankLinear
from .svd import (
    choose_rank,
    factorize_linear,
    fisher_row_importance,
    saves_parameters,
    svd_factors,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel


# Modifier -------------------------------------------------------------------------------------
def _encoder_linear_ids(model: nn.Module) -> set[int]:
    """ids of the plain Linears inside the transformer layers (not embeddings, pooler,
    classifier)."""
    layers = get_adapter(model).layer_list(model)
    return {id(m) for m in layers.modules() if isinstance(m, nn.Linear)}


def _inside_factorized_ids(model: nn.Module) -> set[int]:
    """ids of the Linears that are already the factors of a `LowRankLinear` (never factorized
    again)."""
    return {
        id(child)
        for m in model.modules()
        if isinstance(m, (LowRankLinear, FactorizedEmbedding))
        for child in m.children()
    }


@register_modifier("low_rank")
class LowRankModifier(Modifier):
    """Replaces Linear layers (and optionally the word embedding) by truncated-SVD factorizations.

    Applied in `on_initialize`, so in a training stage the factors are fine-tuned afterwards.
    """

    config_class = LowRankConfig
    description = "low-rank factorization of Linear layers"
    hub_tags = ("low-rank",)

    def __init__(self, config: LowRankConfig) -> None:
        super().__init__(config)
        self.config: LowRankConfig = config
        self.ranks: dict[str, int] = {}
        self.kept_dense: list[str] = []
        self.params_before = 0
        self.params_after = 0
        self.embedding_dim: int | None = None

    def on_initialize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        config = self.config
        if any(getattr(config, key) is not None for key in _RANK_KEYS):
            self._factorize_linears(model, ctx)
        if config.factorize_embeddings is not None:
            self._factorize_embedding(model, ctx)
        record_method(model, "low_rank")
        return None

    def _factorize_linears(self, model: PreTrainedModel, ctx: StageContext) -> None:
        config = self.config
        encoder = _encoder_linear_ids(model)
        already = _inside_factorized_ids(model)
        chosen = self.target_modules(model, lambda name, module: id(module) in encoder)
        linears: dict[str, nn.Linear] = {}
        for name, module in chosen:
            if id(module) in already:
                continue
            if type(module) is not nn.Linear or not module.weight.is_floating_point():
                # Subclasses (quantized, QAT, bitsandbytes) have their own forward and storage.
                ctx.notes.append(
                    f"low_rank: left {name} as is ({type(module).__name__} is not a plain float "
                    "Linear)"
                )
                continue
            linears[name] = module
        if not linears:
            raise RecipeError(
                "low_rank: no Linear layer matched (targets/ignore); with no targets it factorizes "
                "the transformer layers' Linears"
            )
        importance = (
            fisher_row_importance(model, linears, ctx, config.calibration_batches)
            if config.fisher
            else {}
        )
        for name, linear in linears.items():
            u, s, vh = svd_factors(linear.weight, importance.get(name))
            rank = choose_rank(
                s,
                linear.in_features,
                linear.out_features,
                config.rank,
                config.rank_ratio,
                config.energy,
            )
            dense = linear.in_features * linear.out_features
            self.params_before += dense
            if not saves_parameters(rank, linear.in_features, linear.out_features):
                self.kept_dense.append(name)
                self.params_after += dense
                continue
            set_submodule(model, name, factorize_linear(linear, rank, u, s, vh))
            self.ranks[name] = rank
            self.params_after += rank * (linear.in_features + linear.out_features)
        if self.kept_dense:
            ctx.notes.append(
                f"low_rank: kept {len(self.kept_dense)} layer(s) dense where the rank would not "
                "save parameters"
            )
        if self.ranks:
            recorded = dict(get_structure(model, "low_rank") or {})
            recorded.update(self.ranks)
            record_structure(model, "low_rank", recorded)

    def _factorize_embedding(self, model: PreTrainedModel, ctx: StageContext) -> None:
        factor_dim = self.config.factorize_embeddings
        adapter = get_adapter(model)
        if get_structure(model, "embedding_factorization") is not None:
            raise RecipeError(
                "low_rank: the word embedding is already factorized; drop factorize_embeddings here"
            )
        output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if output is not None:
            raise UnsupportedModelError(
                f"low_rank: factorize_embeddings does not support {type(model).__name__}, whose "
                "output layer is tied to the word embedding; use a task head without a "
                "language-model head (e.g. ForSequenceClassification)"
            )
        embedding = adapter.embeddings(model)
        if type(embedding) is not nn.Embedding:
            raise UnsupportedModelError(
                "low_rank: factorize_embeddings needs a plain nn.Embedding, found "
                f"{type(embedding).__name__}"
            )
        vocab, hidden = embedding.weight.shape
        if factor_dim >= hidden or not saves_parameters(factor_dim, vocab, hidden):
            largest = min(hidden - 1, (vocab * hidden - 1) // (vocab + hidden))
            raise RecipeError(
                f"low_rank: factorize_embeddings={factor_dim} would not shrink the {vocab} x "
                f"{hidden} embedding; use at most {largest}"
            )
        u, s, vh = svd_factors(embedding.weight)
        module = FactorizedEmbedding(
            vocab,
            hidden,
            factor_dim,
            embedding.padding_idx,
            device=embedding.weight.device,
            dtype=embedding.weight.dtype,
        )
        with torch.no_grad():
            module.embedding.weight.copy_(u[:, :factor_dim] * s[:factor_dim])
            module.projection.weight.copy_(vh[:factor_dim].T)
        adapter.set(model.base_model, adapter.word_embeddings, module)
        self.embedding_dim = factor_dim
        record_structure(model, "embedding_factorization", factor_dim)

    def summary(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "factorized_layers": len(self.ranks),
            "kept_dense": self.kept_dense,
            "ranks": dict(self.ranks),
            "linear_params_before": self.params_before,
            "linear_params_after": self.params_after,
            "embedding_factor_dim": self.embedding_dim,
            "fisher": self.config.fisher,
        }
