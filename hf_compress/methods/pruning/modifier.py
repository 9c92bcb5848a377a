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
from ..targets import name_matches
from .config import HeadPruningConfig, MagnitudePruningConfig, StructuredPruningConfig
from .importance import UnitGate, _round, choose_units, smallest_mask
from .layers import SparseLinear
from .surgery import _require_linear, remove_heads, remove_neurons

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from ...architectures.base import ArchitectureAdapter

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


# Modifiers ----------------------------------------------------------------------------------------
class StructuredPruning(Modifier):
    """Shared machinery of `head_pruning` and `ffn_pruning` (see the module docstring)."""

    config_class: ClassVar[type[ModifierConfig]] = StructuredPruningConfig
    unit_name: ClassVar[str] = "unit"

    def __init__(self, config: StructuredPruningConfig) -> None:
        super().__init__(config)
        self.config: StructuredPruningConfig = config
        self.layers: list[int] = []
        self.units_before: dict[int, int] = {}
        self.alive: dict[int, torch.Tensor] = {}
        self.final: int | dict[int, int] = 0
        self.gates: dict[int, UnitGate] = {}
        self.gradual = False
        self.taylor_sum: dict[int, torch.Tensor] = {}
        self.taylor_examples = 0
        self.history: list[tuple[int, int]] = []  # (step, units pruned so far)
        self.notes: list[str] = []

    # Per-technique hooks (implemented by the subclasses) ---------------------------------------
    def _units(self, model: PreTrainedModel, index: int) -> int:
        raise NotImplementedError

    def _group(self, model: PreTrainedModel) -> int:
        raise NotImplementedError

    def _consumer(self, model: PreTrainedModel, index: int) -> nn.Module:
        """The Linear whose input is the layer's units."""
        raise NotImplementedError

    def _linear_paths(self, adapter: ArchitectureAdapter) -> tuple[str, ...]:
        raise NotImplementedError

    def _magnitude(self, model: PreTrainedModel, index: int) -> torch.Tensor:
        raise NotImplementedError

    def _remove(self, model: PreTrainedModel, index: int, keep: list[int]) -> None:
        raise NotImplementedError

    def _record(self, model: PreTrainedModel) -> None:
        raise NotImplementedError

    @property
    def min_keep(self) -> int:
        return 1

    # Lifecycle --------------------------------------------------------------------------------
    def on_initialize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        adapter = get_adapter(model)
        for i in range(adapter.num_layers(model)):
            name = adapter.layer_prefix(model, i)
            wanted = name_matches(name, self.config.targets) if self.config.targets else True
            if wanted and not name_matches(name, self.config.ignore) and self._units(model, i) > 0:
                _require_linear(
                    adapter, adapter.layer(model, i), self._linear_paths(adapter), self.type_name, i
                )
                self.layers.append(i)
        if not self.layers:
            raise RecipeError(
                f"{self.type_name}: no layer left to prune (targets={list(self.config.targets)}, "
                f"ignore={list(self.config.ignore)}); layer names look like "
                f"{adapter.layer_prefix(model, 0)!r}"
            )
        self.units_before = {i: self._units(model, i) for i in self.layers}
        self.alive = {i: torch.ones(n, dtype=torch.bool) for i, n in self.units_before.items()}
        self.final = self._final_target()
        ctx.notes.extend(f"{self.type_name}: {note}" for note in self.notes)
        self.gradual = bool(
            ctx.stage is not None and ctx.stage.trains and self.config.end > self.config.start
        )
        if self.gradual:
            group = self._group(model)
            for i in self.layers:
                self.gates[i] = UnitGate(self._consumer(model, i), self.units_before[i], group)
                self.gates[i].collect = self.config.importance == "taylor"
            self.history.append((0, 0))
        else:
            self._prune_towards(model, ctx, self.final)
            self._apply_removal(model)
        return None

    def on_step_end(self, model: PreTrainedModel, ctx: StageContext) -> None:
        if not self.gradual:
            return
        if self.config.importance == "taylor":
            self._collect_training_scores()
        due = ctx.step % self.config.update_every == 0 or ctx.progress >= self.config.end
        if not due:
            return
        target = self._scheduled_target(ctx.progress)
        if self._pruned(target) > self._pruned_now():
            self._prune_towards(model, ctx, target)
            self.history.append((ctx.step, self._pruned_now()))

    def on_finalize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        if not self.gradual:
            return None
        if self.config.importance == "taylor":
            self._collect_training_scores()
        if self._pruned(self.final) > self._pruned_now():  # training stopped before `end`
            self._prune_towards(model, ctx, self.final)
            self.history.append((ctx.step, self._pruned_now()))
        for gate in self.gates.values():
            gate.remove()
        self.gates = {}
        self._apply_removal(model)
        return None

    # Targets ----------------------------------------------------------------------------------
    def _final_target(self) -> int | dict[int, int]:
        config, noun = self.config, self.unit_name
        if config.scope == "layer":
            target = {}
            for i, n in self.units_before.items():
                wanted = config.count if config.count is not None else _round(config.sparsity * n)
                if config.count is not None and wanted > n - self.min_keep:
                    raise RecipeError(
                        f"{self.type_name}: count {wanted} removes too many {noun}s from layer "
                        f"{i}, which has {n} (at most {n - self.min_keep} can go); lower `count`"
                    )
                if wanted > n - self.min_keep:
                    self.notes.append(
                        f"layer {i}: kept {self.min_keep} {noun}(s) of {n} instead of {n - wanted}"
                    )
                target[i] = min(wanted, n - self.min_keep)
            return target
        total = sum(self.units_before.values())
        most = total - self.min_keep * len(self.units_before)
        wanted = config.count if config.count is not None else _round(config.sparsity * total)
        if config.count is not None and wanted > most:
            raise RecipeError(
                f"{self.type_name}: count {wanted} is more than the {most} {noun}s that can be "
                f"removed from the {total} in the targeted layers (keeping {self.min_keep} per "
                "layer); lower `count`"
            )
        if wanted > most:
            self.notes.append(
                f"removed {most} {noun}s instead of {wanted}: every layer keeps {self.min_keep}"
            )
        return min(wanted, most)

    def _scheduled_target(self, progress: float) -> int | dict[int, int]:
        fraction = cubic_schedule(progress, self.config.start, self.config.end, final=1.0)
        if isinstance(self.final, dict):
            return {i: _round(fraction * n) for i, n in self.final.items()}
        return _round(fraction * self.final)

    @staticmethod
    def _pruned(target: int | dict[int, int]) -> int:
        return sum(target.values()) if isinstance(target, dict) else target

    def _pruned_now(self) -> int:
        return sum(int((~a).sum()) for a in self.alive.values())

    # Scoring and pruning --------------------------------------------------------------------------
    def _prune_towards(
        self, model: PreTrainedModel, ctx: StageContext, target: int | dict[int, int]
    ) -> None:
        scores = self._scores(model, ctx)
        normalize = self.config.normalize and self.config.scope == "global"
        self.alive = choose_units(scores, self.alive, target, self.min_keep, normalize=normalize)
        for i, gate in self.gates.items():
            gate.keep = self.alive[i].float().to(gate.device)

    def _scores(self, model: PreTrainedModel, ctx: StageContext) -> dict[int, torch.Tensor]:
        if self.config.importance == "magnitude":
            scores = {i: self._magnitude(model, i).float().cpu() for i in self.layers}
        elif self.taylor_examples > 0:  # gradual: the training batches since the last update
            scores = {i: s / self.taylor_examples for i, s in self.taylor_sum.items()}
            self.taylor_sum, self.taylor_examples = {}, 0
        else:
            scores = self._taylor_on_calibration(model, ctx)
        # Every process must remove the same units: average the scores over processes.
        stacked = ctx.all_reduce_mean(torch.cat([scores[i] for i in self.layers]).to(ctx.device))
        return dict(
            zip(self.layers, stacked.cpu().split([self.units_before[i] for i in self.layers]))
        )

    def _collect_training_scores(self) -> None:
        examples = 0
        for i, gate in self.gates.items():
            total, examples = gate.consume()
            self.taylor_sum[i] = self.taylor_sum.get(i, torch.zeros_like(total)) + total
        self.taylor_examples += examples

    def _taylor_on_calibration(
        self, model: PreTrainedModel, ctx: StageContext
    ) -> dict[int, torch.Tensor]:
        group = self._group(model)
        temporary = {
            i: UnitGate(self._consumer(model, i), self.units_before[i], group)
            for i in self.layers
            if i not in self.gates
        }
        gates = {**self.gates, **temporary}
        for gate in self.gates.values():
            gate.consume()  # drop stale gates
        was_training = model.training
        grad_flags = [(p, p.requires_grad) for p in model.parameters()]
        totals = {i: torch.zeros(self.units_before[i]) for i in self.layers}
        examples = 0
        try:
            # Eval mode (no dropout) for a deterministic score; only the gates need gradients,
            # so the parameters' .grad (which the next optimizer step would use) stays untouched.
            model.eval()
            model.requires_grad_(False)
            for gate in gates.values():
                gate.collect = True
            for batch in ctx.first_training_batches(
                self.config.calibration_batches,
                f"{self.type_name}: importance `taylor`",
                f"with labels to score {self.unit_name}s on",
                "use `importance: magnitude`",
            ):
                if "labels" not in batch:
                    raise RecipeError(
                        f"{self.type_name}: importance `taylor` needs batches with `labels`; add "
                        "them or use `importance: magnitude`"
                    )
                with torch.enable_grad():
                    loss = model(**batch).loss
                    loss.backward()
                for i, gate in gates.items():
                    total, examples_here = gate.consume()
                    totals[i] += total
                examples += examples_here
        finally:
            for gate in temporary.values():
                gate.remove()
            for gate in self.gates.values():
                gate.collect = self.config.importance == "taylor"
            for param, flag in grad_flags:
                param.requires_grad_(flag)
            model.train(was_training)
        return {i: t / max(examples, 1) for i, t in totals.items()}

    def _apply_removal(self, model: PreTrainedModel) -> None:
        for i in self.layers:
            if not bool(self.alive[i].all()):
                self._remove(model, i, torch.nonzero(self.alive[i]).flatten().tolist())
        self._record(model)
        record_method(model, self.type_name)
        removed = self._pruned_now()
        logger.info(
            "%s: removed %d of %d %ss",
            self.type_name,
            removed,
            sum(self.units_before.values()),
            self.unit_name,
        )

    # Reporting and resume -------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        before = {str(i): n for i, n in self.units_before.items()}
        after = {str(i): int(a.sum()) for i, a in self.alive.items()}
        total = sum(self.units_before.values())
        return {
            "type": self.type_name,
            "importance": self.config.importance,
            "scope": self.config.scope,
            "mode": "gradual" if self.gradual else "one-shot",
            f"{self.unit_name}s_before": before,
            f"{self.unit_name}s_after": after,
            "removed": self._pruned_now(),
            "sparsity": self._pruned_now() / total if total else 0.0,
            "schedule": [list(x) for x in self.history],
            "notes": list(self.notes),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "alive": {str(i): a.tolist() for i, a in self.alive.items()},
            "history": [list(x) for x in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alive = {
            int(i): torch.tensor(a, dtype=torch.bool) for i, a in state.get("alive", {}).items()
        }
        self.history = [tuple(x) for x in state.get("history", [])]
        for i, gate in self.gates.items():
            gate.keep = self.alive[i].float().to(gate.device)


@register_modifier("head_pruning")
class HeadPruning(StructuredPruning):
    """Removes the least important attention heads and narrows q/k/v and the output projection.

    Recipe keys: see `HeadPruningConfig` (`sparsity` | `count`, `importance`, `scope`,
    `calibration_batches`, `normalize`, `update_every`, `allow_empty_layers`, `start`, `end`,
    `targets`, `ignore`).
    """

    config_class = HeadPruningConfig
    description = "structured pruning of attention heads"
    hub_tags = ("pruned", "structured-pruning")
    unit_name = "head"

    @property
    def min_keep(self) -> int:
        return 0 if self.config.allow_empty_layers else 1

    def on_initialize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        if self.config.allow_empty_layers and get_adapter(model).causal:
            raise RecipeError(
                "head_pruning: allow_empty_layers is for encoders; a decoder layer without "
                "attention breaks the KV cache. Remove whole layers with layer_dropping instead"
            )
        return super().on_initialize(model, ctx)

    # The unit is a key/value group: a key/value head and the query heads that share it (one
    # query head per group without grouped-query attention), so the group ratio stays valid.
    def _units(self, model: PreTrainedModel, index: int) -> int:
        return get_adapter(model).num_kv_heads(model, index)

    def _group(self, model: PreTrainedModel) -> int:
        adapter = get_adapter(model)
        return adapter.head_size(model.config) * adapter.query_heads_per_kv_head(model.config)

    def _consumer(self, model: PreTrainedModel, index: int) -> nn.Module:
        adapter = get_adapter(model)
        return adapter.get(adapter.layer(model, index), adapter.attention_output)

    def _linear_paths(self, adapter: ArchitectureAdapter) -> tuple[str, ...]:
        return (adapter.query, adapter.key, adapter.value, adapter.attention_output)

    def _magnitude(self, model: PreTrainedModel, index: int) -> torch.Tensor:
        adapter = get_adapter(model)
        layer = adapter.layer(model, index)
        groups, size = self._units(model, index), adapter.head_size(model.config)
        value = adapter.get(layer, adapter.value).weight.detach().float().reshape(groups, size, -1)
        out = (
            adapter.get(layer, adapter.attention_output)
            .weight.detach()
            .float()
            .reshape(-1, groups, self._group(model))
        )
        return value.norm(dim=(1, 2)) * out.norm(dim=(0, 2))

    def _remove(self, model: PreTrainedModel, index: int, keep: list[int]) -> None:
        remove_heads(model, index, keep)

    def _record(self, model: PreTrainedModel) -> None:
        adapter = get_adapter(model)
        record_structure(
            model,
            "heads",
            {str(i): adapter.num_heads(model, i) for i in range(adapter.num_layers(model))},
        )


@register_modifier("ffn_pruning")
class FfnPruning(StructuredPruning):
    """Removes the least important FFN neurons and narrows both FFN Linear layers.

    Recipe keys: see `StructuredPruningConfig` (`sparsity` | `count`, `importance`, `scope`,
    `calibration_batches`, `normalize`, `update_every`, `start`, `end`, `targets`, `ignore`).
    Every layer keeps at least one neuron.
    """

    config_class = StructuredPruningConfig
    description = "structured pruning of feed-forward (FFN) neurons"
    hub_tags = ("pruned", "structured-pruning")
    unit_name = "neuron"

    def _units(self, model: PreTrainedModel, index: int) -> int:
        return get_adapter(model).ffn_width(model, index)

    def _group(self, model: PreTrainedModel) -> int:
        return 1

    def _consumer(self, model: PreTrainedModel, index: int) -> nn.Module:
        adapter = get_adapter(model)
        return adapter.get(adapter.layer(model, index), adapter.ffn_out)

    def _linear_paths(self, adapter: ArchitectureAdapter) -> tuple[str, ...]:
        return (*adapter.ffn_rows(), adapter.ffn_out)

    def _magnitude(self, model: PreTrainedModel, index: int) -> torch.Tensor:
        adapter = get_adapter(model)
        layer = adapter.layer(model, index)
        score = adapter.get(layer, adapter.ffn_out).weight.detach().float().norm(dim=0)
        for path in adapter.ffn_rows():  # up (and gate): a neuron is as strong as all its weights
            score = score * adapter.get(layer, path).weight.detach().float().norm(dim=1)
        return score

    def _remove(self, model: PreTrainedModel, index: int, keep: list[int]) -> None:
        remove_neurons(model, index, keep)

    def _record(self, model: PreTrainedModel) -> None:
        adapter = get_adapter(model)
        record_structure(
            model,
            "ffn_width",
            {str(i): adapter.ffn_width(model, i) for i in range(adapter.num_layers(model))},
        )
