"""Structured pruning: remove whole attention heads (`head_pruning`) and FFN neurons
(`ffn_pruning`).

Both score "units" (a head: `head_size` consecutive channels of the attention context; a neuron:
one channel of the FFN activation), remove the least important ones and physically narrow the
Linear layers around them, so the model really gets smaller and faster:

- heads: the output rows of query / key / value and the input columns of the attention output
  projection; the attention module's head count is updated through the family adapter;
- neurons: the output rows of the FFN's first Linear and the input columns of its second.

Importance:
- `taylor` (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"): a gate `g = 1`
  multiplies every unit's output on its way into the next Linear; the score is the mean over
  examples of `|dL/dg|`, i.e. the first-order estimate of the loss change when the unit is
  removed, measured on `calibration_batches` training batches (one-shot) or on the training
  batches themselves (gradual).
- `magnitude`: the norm of the weights that carry the unit's output: for a head
  `||W_value[head]|| * ||W_out[:, head]||` (the head's output is a convex mix of its value
  vectors projected by its output slice; query/key only decide where it looks), for a neuron
  `||W_in[neuron]|| * ||W_out[:, neuron]||`.

Targets are a fraction (`sparsity`) or a number (`count`) of units, ranked across all layers
(`scope: global`, scores normalised per layer as in Michel et al.) or in each layer
(`scope: layer`). `targets` / `ignore` select layers by name (e.g. `re:layer\\.[0-2]$`).

One-shot (the stage has `epochs: 0`, or `start == end`): units are removed in `on_initialize`,
before the stage's optimizer exists. Gradual (a training stage with `start < end`): a growing
fraction is masked on the cubic schedule of Zhu & Gupta (2017), re-ranking every `update_every`
steps; masked units are removed physically in `on_finalize`, which gives exactly the same
outputs (a masked unit contributes nothing), so the saved model is the smaller one.

Uneven head counts and FFN widths are recorded in `compression_config` (`heads`, `ffn_width`:
`{"<layer>": n}`) and rebuilt by `from_pretrained` through the rebuilders below.

Unstructured magnitude pruning (`magnitude_pruning`, Han et al. 2015; gradual as in Zhu & Gupta
2017) zeroes the smallest-magnitude weights of the targeted Linear layers (default: those inside
the transformer layers) until `sparsity` of them are zero, per layer (`scope: layer`) or across
all targets (`scope: global`). One-shot it prunes in `on_initialize`; gradually the masks only
grow along the cubic schedule and are re-applied after every optimizer step. Han et al.'s prune
-> retrain -> prune iterations are a recipe with several stages. At `on_finalize` every pruned
layer becomes a `SparseLinear` (packed bitmask + non-zero values), so the checkpoint's bytes
fall with sparsity; `compression_config["sparse_linear"]` records the layers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ...architectures.base import get_adapter
from ...checkpoint.format import get_structure, record_method, record_structure
from ...checkpoint.rebuild import set_submodule
from ...errors import RecipeError
from ...recipe.fields import ModifierConfig
from ...recipe.registry import register_modifier
from ..modifier import Modifier, StageContext, cubic_schedule
from .config import MagnitudePruningConfig
from .importance import smallest_mask
from .layers import SparseLinear

if TYPE_CHECKING:
    from transformers import PreTrainedModel


logger = logging.getLogger(__name__)


def _count(fraction: float, numel: int) -> int:
    # Round half up, like the structured pruners (Python's round() rounds half to even).
    return int(fraction * numel + 0.5)


@register_modifier("magnitude_pruning")
class MagnitudePruning(Modifier):
    """Unstructured magnitude pruning of Linear weights (see the module docstring).

    Recipe keys: `sparsity` (required), `scope`, `update_every`, `start`, `end`, `targets`,
    `ignore`.
    """

    config_class: ClassVar[type[ModifierConfig]] = MagnitudePruningConfig
    description = "unstructured magnitude pruning (sparse weights)"
    hub_tags = ("pruned", "sparse")

    def __init__(self, config: MagnitudePruningConfig) -> None:
        super().__init__(config)
        self.config: MagnitudePruningConfig = config
        self.modules: dict[str, nn.Linear] = {}
        self.pruned: dict[
            str, torch.Tensor
        ] = {}  # name -> boolean, True where the weight is zeroed
        self.gradual = False
        self.initial = 0.0
        self.current = 0.0
        self.history: list[tuple[int, float]] = []
        self.layer_sparsity: dict[str, float] = {}

    # Lifecycle --------------------------------------------------------------------------------
    def on_initialize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        default = (
            (lambda name, module: False) if self.config.targets else self._default_target(model)
        )
        targets = self.target_modules(model, default, kind=(nn.Linear, SparseLinear))
        if not targets:
            example = next((n for n, m in model.named_modules() if isinstance(m, nn.Linear)), "")
            raise RecipeError(
                f"magnitude_pruning: no Linear layer matches targets={list(self.config.targets)} "
                f"ignore={list(self.config.ignore)}; names look like {example!r}"
            )
        record = dict(get_structure(model, "sparse_linear", {}) or {})
        for name, module in targets:
            if isinstance(
                module, SparseLinear
            ):  # pruned by an earlier stage: continue from its zeros
                pruned = ~module.mask()
                module = module.to_float()
                set_submodule(model, name, module)
                record.pop(name, None)
            else:
                pruned = torch.zeros_like(module.weight, dtype=torch.bool)
            self.modules[name] = module
            self.pruned[name] = pruned.to(module.weight.device)
        if record != (get_structure(model, "sparse_linear", {}) or {}):
            # Dense again until on_finalize: a checkpoint saved mid-stage must not claim sparse
            # storage.
            record_structure(model, "sparse_linear", record)
        # Already-pruned weights (an earlier stage) are the schedule's starting point; a target at
        # or below it prunes nothing more and only keeps the zeros through this stage's training.
        self.initial = self.current = self._sparsity()
        self.gradual = bool(
            ctx.stage is not None and ctx.stage.trains and self.config.end > self.config.start
        )
        if self.gradual:
            self.history.append((0, self.current))
        else:
            self._prune_to(self.config.sparsity)
            self.history.append((0, self.current))
        self._apply_masks()
        return None

    def on_step_end(self, model: PreTrainedModel, ctx: StageContext) -> None:
        if self.gradual and (
            ctx.step % self.config.update_every == 0 or ctx.progress >= self.config.end
        ):
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
        logger.info(
            "magnitude_pruning: %d layers at %.1f%% sparsity", len(self.modules), 100 * self.current
        )
        self.modules, self.pruned = {}, {}
        return None

    # Schedule and masks ------------------------------------------------------------------------
    def scheduled_sparsity(self, progress: float) -> float:
        """Sparsity the schedule asks for at `progress` (fraction of the stage's steps)."""
        return cubic_schedule(
            progress, self.config.start, self.config.end, self.config.sparsity, initial=self.initial
        )

    def _default_target(self, model: PreTrainedModel):
        adapter = get_adapter(model)
        prefixes = tuple(
            adapter.layer_prefix(model, i) + "." for i in range(adapter.num_layers(model))
        )
        return lambda name, module: name.startswith(prefixes)

    def _sparsity(self) -> float:
        total = sum(p.numel() for p in self.pruned.values())
        return sum(int(p.sum()) for p in self.pruned.values()) / total if total else 0.0

    def _prune_to(self, sparsity: float) -> None:
        """Grows the masks until `sparsity` of the targeted weights are pruned; pruned ones stay
        pruned."""
        scores = {}
        for name, linear in self.modules.items():
            score = linear.weight.detach().abs().float()
            scores[name] = score.masked_fill(
                self.pruned[name], -1.0
            ).flatten()  # already pruned go first
        if self.config.scope == "global":
            flat = torch.cat([s.to(scores[next(iter(scores))].device) for s in scores.values()])
            mask = smallest_mask(flat, _count(sparsity, flat.numel()))
            for name, part in zip(scores, mask.split([s.numel() for s in scores.values()])):
                self.pruned[name] = self.pruned[name] | part.to(self.pruned[name].device).view_as(
                    self.pruned[name]
                )
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
        return {
            "current": self.current,
            "initial": self.initial,
            "history": [list(x) for x in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.initial = state.get("initial", self.initial)
        self.history = [tuple(x) for x in state.get("history", [])]
        for name, linear in self.modules.items():
            self.pruned[name] = linear.weight.detach() == 0
        self.current = self._sparsity()


# Registered on import: `load_techniques` imports this module only.
from .heads import HeadPruning  # noqa: E402
from .structured import FfnPruning, StructuredPruning  # noqa: E402

__all__ = ["FfnPruning", "HeadPruning", "MagnitudePruning", "StructuredPruning"]
