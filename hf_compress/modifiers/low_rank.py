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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..adapters import get_adapter
from ..checkpoint import get_structure, record_method, record_structure, register_rebuild
from ..checkpoint.structure import replace_recorded_linears
from ..errors import RecipeError, UnsupportedModelError
from ..registry import register_modifier
from ..schema import option
from .base import Modifier, ModifierConfig, StageContext, set_submodule

if TYPE_CHECKING:
    from transformers import PreTrainedModel

_RANK_KEYS = ("rank", "rank_ratio", "energy")


@dataclass(frozen=True)
class LowRankConfig(ModifierConfig):
    """Keys of `type: low_rank`. Give exactly one of `rank`, `rank_ratio`, `energy` (or only
    `factorize_embeddings` to factorize the embedding alone)."""

    rank: int | None = option(None, help="the same rank for every targeted Linear", range=(1, None))
    rank_ratio: float | None = option(
        None,
        help="rank as a fraction of min(in_features, out_features) per layer",
        range=(0, 1),
        exclusive=(True, False),
    )
    energy: float | None = option(
        None,
        help="per layer, the smallest rank keeping this fraction of the squared singular values",
        range=(0, 1),
        exclusive=(True, False),
    )
    fisher: bool = option(False, help="weight the SVD by gradient-based row importance (FWSVD, Hsu et al. 2022)")
    calibration_batches: int = option(
        8, help="training batches used to estimate the Fisher importance", range=(1, None)
    )
    factorize_embeddings: int | None = option(
        None,
        help="factorize the word embedding into vocab x E and E x hidden (ALBERT); null = keep it",
        range=(1, None),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        given = [key for key in _RANK_KEYS if getattr(self, key) is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of rank, rank_ratio or energy, not {' and '.join(given)}")
        if not given and self.factorize_embeddings is None:
            raise ValueError("set one of rank, rank_ratio or energy (or factorize_embeddings for the embedding alone)")
        if self.fisher and not given:
            raise ValueError("fisher: true weights the Linear factorization; also set rank, rank_ratio or energy")


class LowRankLinear(nn.Module):
    """A Linear factorized as `up(down(x))`: `down` is in -> rank without bias, `up` is rank -> out.

    Args:
        in_features: input size of the original Linear.
        out_features: output size of the original Linear.
        rank: inner size.
        bias: whether `up` carries a bias (the original Linear's).
        device: where to create the weights.
        dtype: their dtype.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.down = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.up = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(hidden))

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight the two factors stand for (out x in); computed, for inspection."""
        return self.up.weight @ self.down.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.up.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class FactorizedEmbedding(nn.Module):
    """A word embedding factorized as `projection(embedding(ids))` (ALBERT).

    Args:
        num_embeddings: vocabulary size.
        embedding_dim: the model's hidden size (the output size).
        factor_dim: the inner size E.
        padding_idx: the padding token id of the original embedding.
        device: where to create the weights.
        dtype: their dtype.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        factor_dim: int,
        padding_idx: int | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.factor_dim = factor_dim
        self.padding_idx = padding_idx
        self.embedding = nn.Embedding(num_embeddings, factor_dim, padding_idx=padding_idx, device=device, dtype=dtype)
        self.projection = nn.Linear(factor_dim, embedding_dim, bias=False, device=device, dtype=dtype)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.projection(self.embedding(input_ids))

    @property
    def weight(self) -> torch.Tensor:
        """The dense vocab x hidden table the factors stand for; computed, for inspection."""
        return self.embedding.weight @ self.projection.weight.T

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, factor_dim={self.factor_dim}"


# Factorization maths ---------------------------------------------------------------------------
def choose_rank(
    singular_values: torch.Tensor,
    in_features: int,
    out_features: int,
    rank: int | None = None,
    rank_ratio: float | None = None,
    energy: float | None = None,
) -> int:
    """The rank for one layer from exactly one of `rank`, `rank_ratio`, `energy`.

    Args:
        singular_values: the layer's singular values, descending.
        in_features: input size.
        out_features: output size.
        rank: a fixed rank (capped at min(in, out)).
        rank_ratio: fraction of min(in, out), rounded, at least 1.
        energy: smallest rank whose squared singular values reach this fraction of the total.
    """
    full = min(in_features, out_features)
    if rank is not None:
        return min(rank, full)
    if rank_ratio is not None:
        return max(1, min(full, round(rank_ratio * full)))
    if energy is not None:
        power = singular_values.double() ** 2
        total = power.sum()
        if total <= 0:
            return 1
        kept = torch.cumsum(power, 0) / total
        # First index where the kept fraction reaches `energy`; the small tolerance keeps
        # energy=1.0 from missing the last value by a rounding error.
        reached = torch.nonzero(kept >= energy - 1e-12)
        return int(reached[0].item()) + 1 if len(reached) else full
    raise ValueError("one of rank, rank_ratio or energy is required")


def saves_parameters(rank: int, in_features: int, out_features: int) -> bool:
    """Whether a rank-`rank` factorization has fewer weights than the dense in x out matrix."""
    return rank * (in_features + out_features) < in_features * out_features


def svd_factors(
    weight: torch.Tensor, row_importance: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U, S, Vh) of `weight` (out x in) or, with `row_importance` I, of diag(I) @ weight.

    With importance, U is returned already multiplied by diag(I)^-1, so U[:, :r] S[:r] Vh[:r]
    approximates `weight` itself for any r.
    """
    matrix = weight.detach().float()
    if row_importance is not None:
        importance = row_importance.float().to(matrix.device)
        matrix = importance[:, None] * matrix
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    if row_importance is not None:
        u = u / importance[:, None]
    return u, s, vh


def factorize_linear(linear: nn.Linear, rank: int, u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor) -> LowRankLinear:
    """A `LowRankLinear` holding the rank-`rank` truncation of `linear`'s SVD factors."""
    weight = linear.weight
    module = LowRankLinear(
        linear.in_features,
        linear.out_features,
        rank,
        bias=linear.bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        module.down.weight.copy_(vh[:rank])
        module.up.weight.copy_(u[:, :rank] * s[:rank])
        if linear.bias is not None:
            module.up.bias.copy_(linear.bias)
    return module


def fisher_row_importance(
    model: PreTrainedModel, linears: dict[str, nn.Linear], ctx: StageContext, num_batches: int
) -> dict[str, torch.Tensor]:
    """Row importance sqrt(sum_j sum_batches grad_ij^2) of every Linear in `linears` (FWSVD).

    Gradients of the task loss are taken in eval mode (no dropout), so the estimate depends on
    the data only; they are averaged over processes so every rank factorizes the same way.

    Raises:
        RecipeError: no training batches are available, or they carry no labels.
    """
    was_training = model.training
    saved_requires_grad = {name: lin.weight.requires_grad for name, lin in linears.items()}
    fisher = {name: torch.zeros_like(lin.weight, dtype=torch.float32) for name, lin in linears.items()}
    model.eval()
    try:
        for lin in linears.values():
            lin.weight.requires_grad_(True)
        batches = ctx.first_training_batches(
            num_batches, "low_rank: fisher: true", "to measure importance", "set fisher: false"
        )
        for batch in batches:
            model.zero_grad(set_to_none=True)
            with torch.enable_grad():
                loss = model(**batch).loss
                if loss is None:
                    raise RecipeError("low_rank: fisher: true needs labelled batches (the model returned no loss)")
                loss.backward()
            for name, lin in linears.items():
                if lin.weight.grad is not None:
                    fisher[name] += lin.weight.grad.detach().float() ** 2
    finally:
        model.zero_grad(set_to_none=True)
        for name, lin in linears.items():
            lin.weight.requires_grad_(saved_requires_grad[name])
        model.train(was_training)
    importance = {}
    for name, values in fisher.items():
        values = ctx.all_reduce_mean(values)
        row = values.sum(dim=1).sqrt()
        # A row with no gradient at all (e.g. a dead unit) would make diag(I) singular; give it
        # the smallest positive importance seen so it is still reconstructed, just cheaply.
        positive = row[row > 0]
        floor = positive.min() if len(positive) else torch.tensor(1.0, device=row.device)
        importance[name] = torch.where(row > 0, row, floor)
    return importance


# Modifier -------------------------------------------------------------------------------------
def _encoder_linear_ids(model: nn.Module) -> set[int]:
    """ids of the plain Linears inside the transformer layers (not embeddings, pooler, classifier)."""
    layers = get_adapter(model).layer_list(model)
    return {id(m) for m in layers.modules() if isinstance(m, nn.Linear)}


def _inside_factorized_ids(model: nn.Module) -> set[int]:
    """ids of the Linears that are already the factors of a `LowRankLinear` (never factorized again)."""
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
                ctx.notes.append(f"low_rank: left {name} as is ({type(module).__name__} is not a plain float Linear)")
                continue
            linears[name] = module
        if not linears:
            raise RecipeError(
                "low_rank: no Linear layer matched (targets/ignore); with no targets it factorizes the "
                "transformer layers' Linears"
            )
        importance = fisher_row_importance(model, linears, ctx, config.calibration_batches) if config.fisher else {}
        for name, linear in linears.items():
            u, s, vh = svd_factors(linear.weight, importance.get(name))
            rank = choose_rank(
                s, linear.in_features, linear.out_features, config.rank, config.rank_ratio, config.energy
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
                f"low_rank: kept {len(self.kept_dense)} layer(s) dense where the rank would not save parameters"
            )
        if self.ranks:
            recorded = dict(get_structure(model, "low_rank") or {})
            recorded.update(self.ranks)
            record_structure(model, "low_rank", recorded)

    def _factorize_embedding(self, model: PreTrainedModel, ctx: StageContext) -> None:
        factor_dim = self.config.factorize_embeddings
        adapter = get_adapter(model)
        if get_structure(model, "embedding_factorization") is not None:
            raise RecipeError("low_rank: the word embedding is already factorized; drop factorize_embeddings here")
        output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if output is not None:
            raise UnsupportedModelError(
                f"low_rank: factorize_embeddings does not support {type(model).__name__}, whose output layer is "
                "tied to the word embedding; use a task head without a language-model head (e.g. "
                "ForSequenceClassification)"
            )
        embedding = adapter.embeddings(model)
        if type(embedding) is not nn.Embedding:
            raise UnsupportedModelError(
                f"low_rank: factorize_embeddings needs a plain nn.Embedding, found {type(embedding).__name__}"
            )
        vocab, hidden = embedding.weight.shape
        if factor_dim >= hidden or not saves_parameters(factor_dim, vocab, hidden):
            largest = min(hidden - 1, (vocab * hidden - 1) // (vocab + hidden))
            raise RecipeError(
                f"low_rank: factorize_embeddings={factor_dim} would not shrink the {vocab} x {hidden} embedding; "
                f"use at most {largest}"
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


# Rebuild on load -------------------------------------------------------------------------------
@register_rebuild("low_rank", order=50)
def _rebuild_low_rank(model: PreTrainedModel, ranks: dict[str, int]) -> None:
    """Replaces the recorded Linears by empty `LowRankLinear`s of the recorded ranks (weights load next)."""
    replace_recorded_linears(
        model,
        "low_rank",
        ranks,
        build=lambda linear, rank: LowRankLinear(
            linear.in_features, linear.out_features, int(rank), linear.bias is not None,
            device=linear.weight.device, dtype=linear.weight.dtype,
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
        vocab, hidden, int(factor_dim), embedding.padding_idx, device=weight.device, dtype=weight.dtype
    )
    adapter.set(model.base_model, adapter.word_embeddings, module)
