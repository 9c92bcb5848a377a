"""Unstructured magnitude pruning (Han et al. 2015), one-shot or gradual (Zhu & Gupta 2017).

`magnitude_pruning` zeroes the smallest-magnitude weights of the targeted Linear layers (default:
the Linear layers inside the encoder's transformer layers; embeddings, pooler and classifier are
left alone) until `sparsity` of them are zero, ranking each layer on its own (`scope: layer`,
the same sparsity everywhere) or all targeted weights together (`scope: global`).

- One-shot (the stage has `epochs: 0`, or `start == end`): pruned in `on_initialize`.
- Gradual (a training stage with `start < end`): the sparsity follows the cubic schedule from the
  targets' current sparsity to `sparsity` between `start` and `end` of the stage, re-ranking every
  `update_every` optimizer steps. Masks only grow, and are re-applied after every optimizer step so
  pruned weights stay exactly zero whatever the optimizer (momentum, weight decay) does.

Han et al.'s prune -> retrain -> prune iterations are a recipe with several stages: a later
`magnitude_pruning` continues from the earlier zeros.

At `on_finalize` every pruned layer becomes a `SparseLinear` (packed bitmask + non-zero values,
see `hf_compress.sparse_storage`), so the checkpoint's bytes fall with sparsity. Its kept values
stay trainable, so later training stages keep the zeros without any mask bookkeeping. The module
list is recorded in `compression_config["sparse_linear"]` (`{module name: non-zero count}`) and
rebuilt by `from_pretrained`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ..adapters import get_adapter
from ..checkpoint import get_structure, record_method, record_structure, register_rebuild
from ..errors import RecipeError
from ..registry import register_modifier
from ..schema import option
from ..sparse_storage import SparseLinear
from .base import Modifier, ModifierConfig, StageContext, cubic_schedule, set_submodule

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

_STRUCTURED = ("head_pruning", "ffn_pruning")


@dataclass(frozen=True, kw_only=True)
class MagnitudePruningConfig(ModifierConfig):
    """Recipe keys of `magnitude_pruning`."""

    sparsity: float = option(
        help="final fraction of the targeted weights that are zero", range=(0, 1), exclusive=(True, True)
    )
    scope: str = option(
        "layer",
        help="rank weights within each layer (`layer`: the same sparsity everywhere) or across all targets (`global`)",
        choices=("layer", "global"),
    )
    update_every: int = option(
        10, help="gradual mode: recompute the masks every N optimizer steps (Zhu & Gupta's delta t)", range=(1, None)
    )


def smallest_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of exactly `k` lowest entries of the 1-D `scores` (ties broken by position).

    Uses `kthvalue` (linear time) instead of a full sort: global ranking over an encoder's ~10M
    weights runs at every schedule update.
    """
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= scores.numel():
        return torch.ones_like(scores, dtype=torch.bool)
    threshold = torch.kthvalue(scores.cpu() if scores.device.type == "mps" else scores, k).values.to(scores.device)
    below = scores < threshold
    ties = torch.nonzero(scores == threshold).flatten()
    mask = below.clone()
    mask[ties[: k - int(below.sum())]] = True
    return mask


def _count(fraction: float, numel: int) -> int:
    # Round half up, like the structured pruners (Python's round() rounds half to even).
    return int(fraction * numel + 0.5)


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


@register_modifier("magnitude_pruning")
class MagnitudePruning(Modifier):
    """Unstructured magnitude pruning of Linear weights (see the module docstring).

    Recipe keys: `sparsity` (required), `scope`, `update_every`, `start`, `end`, `targets`, `ignore`.
    """

    config_class: ClassVar[type[ModifierConfig]] = MagnitudePruningConfig

    def __init__(self, config: MagnitudePruningConfig) -> None:
        super().__init__(config)
        self.config: MagnitudePruningConfig = config
        self.modules: dict[str, nn.Linear] = {}
        self.pruned: dict[str, torch.Tensor] = {}  # name -> boolean, True where the weight is zeroed
        self.gradual = False
        self.initial = 0.0
        self.current = 0.0
        self.history: list[tuple[int, float]] = []
        self.layer_sparsity: dict[str, float] = {}

    # Lifecycle --------------------------------------------------------------------------------
    def on_initialize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        if ctx.stage is not None and any(spec.type in _STRUCTURED for spec in ctx.stage.modifiers):
            raise RecipeError(
                f"stage {ctx.stage.name!r}: magnitude_pruning cannot share a stage with head_pruning / ffn_pruning "
                "(they reshape the layers it masks); put structured pruning in an earlier stage"
            )
        default = (lambda name, module: False) if self.config.targets else self._default_target(model)
        targets = self.target_modules(model, default, kind=(nn.Linear, SparseLinear))
        if not targets:
            example = next((n for n, m in model.named_modules() if isinstance(m, nn.Linear)), "")
            raise RecipeError(
                f"magnitude_pruning: no Linear layer matches targets={list(self.config.targets)} "
                f"ignore={list(self.config.ignore)}; names look like {example!r}"
            )
        record = dict(get_structure(model, "sparse_linear", {}) or {})
        for name, module in targets:
            if isinstance(module, SparseLinear):  # pruned by an earlier stage: continue from its zeros
                pruned = ~module.mask()
                module = module.to_linear()
                set_submodule(model, name, module)
                record.pop(name, None)
            else:
                pruned = torch.zeros_like(module.weight, dtype=torch.bool)
            self.modules[name] = module
            self.pruned[name] = pruned.to(module.weight.device)
        if record != (get_structure(model, "sparse_linear", {}) or {}):
            # Dense again until on_finalize: a checkpoint saved mid-stage must not claim sparse storage.
            record_structure(model, "sparse_linear", record)
        # Already-pruned weights (an earlier stage) are the schedule's starting point; a target at or
        # below it prunes nothing more and only keeps the zeros through this stage's training.
        self.initial = self.current = self._sparsity()
        self.gradual = bool(ctx.stage is not None and ctx.stage.trains and self.config.end > self.config.start)
        if self.gradual:
            self.history.append((0, self.current))
        else:
            self._prune_to(self.config.sparsity)
            self.history.append((0, self.current))
        self._apply_masks()
        return None

    def on_step_end(self, model: PreTrainedModel, ctx: StageContext) -> None:
        if self.gradual and (ctx.step % self.config.update_every == 0 or ctx.progress >= self.config.end):
            target = self.scheduled_sparsity(ctx.progress)
            if target > self.current:
                self._prune_to(target)
                self.history.append((ctx.step, self.current))
        # After the optimizer step: the step moved pruned weights off zero (momentum, weight decay).
        self._apply_masks()

    def on_finalize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        if self.current < self.config.sparsity:  # training stopped before `end`
            self._prune_to(self.config.sparsity)
            self.history.append((ctx.step, self.current))
        self._apply_masks()
        record = dict(get_structure(model, "sparse_linear", {}) or {})
        for name, linear in self.modules.items():
            sparse = SparseLinear.from_linear(linear, mask=~self.pruned[name])
            set_submodule(model, name, sparse)
            record[name] = sparse.nnz
            self.layer_sparsity[name] = sparse.sparsity
        record_structure(model, "sparse_linear", record)
        record_method(model, "magnitude_pruning")
        logger.info("magnitude_pruning: %d layers at %.1f%% sparsity", len(self.modules), 100 * self.current)
        self.modules, self.pruned = {}, {}
        return None

    # Schedule and masks ------------------------------------------------------------------------
    def scheduled_sparsity(self, progress: float) -> float:
        """Sparsity the schedule asks for at `progress` (fraction of the stage's steps)."""
        return cubic_schedule(progress, self.config.start, self.config.end, self.config.sparsity, initial=self.initial)

    def _default_target(self, model: PreTrainedModel):
        adapter = get_adapter(model)
        prefixes = tuple(adapter.layer_prefix(model, i) + "." for i in range(adapter.num_layers(model)))
        return lambda name, module: name.startswith(prefixes)

    def _sparsity(self) -> float:
        total = sum(p.numel() for p in self.pruned.values())
        return sum(int(p.sum()) for p in self.pruned.values()) / total if total else 0.0

    def _prune_to(self, sparsity: float) -> None:
        """Grows the masks until `sparsity` of the targeted weights are pruned; pruned ones stay pruned."""
        scores = {}
        for name, linear in self.modules.items():
            score = linear.weight.detach().abs().float()
            scores[name] = score.masked_fill(self.pruned[name], -1.0).flatten()  # already pruned go first
        if self.config.scope == "global":
            flat = torch.cat([s.to(scores[next(iter(scores))].device) for s in scores.values()])
            mask = smallest_mask(flat, _count(sparsity, flat.numel()))
            for name, part in zip(scores, mask.split([s.numel() for s in scores.values()])):
                self.pruned[name] = self.pruned[name] | part.to(self.pruned[name].device).view_as(self.pruned[name])
        else:
            for name, score in scores.items():
                mask = smallest_mask(score, _count(sparsity, score.numel()))
                self.pruned[name] = self.pruned[name] | mask.view_as(self.pruned[name])
        self.current = self._sparsity()

    @torch.no_grad()
    def _apply_masks(self) -> None:
        for name, linear in self.modules.items():
            linear.weight.masked_fill_(self.pruned[name], 0.0)

    # Reporting and resume ----------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        layers = self.layer_sparsity or {n: float(p.float().mean()) for n, p in self.pruned.items()}
        return {
            "type": self.type_name,
            "scope": self.config.scope,
            "mode": "gradual" if self.gradual else "one-shot",
            "target_sparsity": self.config.sparsity,
            "sparsity": self.current,
            "layer_sparsity": {name: round(value, 6) for name, value in layers.items()},
            "schedule": [[step, round(value, 6)] for step, value in self.history],
        }

    def state_dict(self) -> dict[str, Any]:
        # The masks are the zeros of the weights themselves, which the Trainer checkpoint holds.
        return {"current": self.current, "initial": self.initial, "history": [list(x) for x in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.initial = state.get("initial", self.initial)
        self.history = [tuple(x) for x in state.get("history", [])]
        for name, linear in self.modules.items():
            self.pruned[name] = linear.weight.detach() == 0
        self.current = self._sparsity()
