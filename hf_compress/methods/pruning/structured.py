"""The shared machinery of structured pruning (`head_pruning`, `ffn_pruning`): targets, Taylor
or magnitude scores, the one-shot or gradual schedule, physical removal; `ffn_pruning` itself.
`modifier.py`'s docstring describes the techniques."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ...architectures.base import get_adapter
from ...checkpoint.format import record_method, record_structure
from ...errors import RecipeError
from ...recipe.fields import ModifierConfig
from ...recipe.registry import register_modifier
from ..modifier import Modifier, StageContext, cubic_schedule
from ..targets import name_matches
from .config import StructuredPruningConfig
from .importance import UnitGate, _round, choose_units
from .surgery import _require_linear, remove_neurons

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from ...architectures.base import ArchitectureAdapter

logger = logging.getLogger(__name__)


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
        self.gate_units: dict[int, int] = {}
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

    def _group(self, model: PreTrainedModel, index: int) -> int:
        """Channels per scored unit at the consumer's input."""
        raise NotImplementedError

    def _gate_units(self, model: PreTrainedModel, index: int) -> int:
        """What the gates and `_magnitude` score per layer: the units themselves by default."""
        return self._units(model, index)

    def _unit_scores(self, index: int, raw: torch.Tensor) -> torch.Tensor:
        """One score per unit from the gates' scores (the same thing by default)."""
        return raw

    def _after_choice(self, raw: dict[int, torch.Tensor]) -> None:
        """Called after `alive` changed, with the gates' scores (nothing to do by default)."""

    def _gate_keep(self, index: int) -> torch.Tensor:
        """Which gated units pass (1) or are masked (0)."""
        return self.alive[index].float()

    def _kept(self, index: int) -> list[int]:
        """The gated units layer `index` keeps when pruning is applied."""
        return torch.nonzero(self.alive[index]).flatten().tolist()

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
        self.gate_units = {i: self._gate_units(model, i) for i in self.layers}
        self.alive = {i: torch.ones(n, dtype=torch.bool) for i, n in self.units_before.items()}
        self.final = self._final_target()
        ctx.notes.extend(f"{self.type_name}: {note}" for note in self.notes)
        self.gradual = bool(
            ctx.stage is not None and ctx.stage.trains and self.config.end > self.config.start
        )
        if self.gradual:
            for i in self.layers:
                self.gates[i] = UnitGate(
                    self._consumer(model, i), self.gate_units[i], self._group(model, i)
                )
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
        raw = self._scores(model, ctx)
        scores = {i: self._unit_scores(i, r) for i, r in raw.items()}
        normalize = self.config.normalize and self.config.scope == "global"
        self.alive = choose_units(scores, self.alive, target, self.min_keep, normalize=normalize)
        self._after_choice(raw)
        for i, gate in self.gates.items():
            gate.keep = self._gate_keep(i).to(gate.device)

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
            zip(self.layers, stacked.cpu().split([self.gate_units[i] for i in self.layers]))
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
        temporary = {
            i: UnitGate(self._consumer(model, i), self.gate_units[i], self._group(model, i))
            for i in self.layers
            if i not in self.gates
        }
        gates = {**self.gates, **temporary}
        for gate in self.gates.values():
            gate.consume()  # drop stale gates
        was_training = model.training
        grad_flags = [(p, p.requires_grad) for p in model.parameters()]
        totals = {i: torch.zeros(self.gate_units[i]) for i in self.layers}
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
            kept = self._kept(i)
            if len(kept) < self.gate_units[i]:
                self._remove(model, i, kept)
        self._record(model)
        record_method(model, self.type_name)
        logger.info("%s: removed %s", self.type_name, self._removed_text())

    def _removed_text(self) -> str:
        return f"{self._pruned_now()} of {sum(self.units_before.values())} {self.unit_name}s"

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
            gate.keep = self._gate_keep(i).to(gate.device)


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

    def _group(self, model: PreTrainedModel, index: int) -> int:
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
