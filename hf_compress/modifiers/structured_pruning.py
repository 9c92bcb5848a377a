"""Structured pruning: remove whole attention heads (`head_pruning`) and FFN neurons (`ffn_pruning`).

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
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from transformers.pytorch_utils import prune_linear_layer

from ..adapters import get_adapter
from ..checkpoint import record_method, record_structure, register_rebuild
from ..errors import RecipeError, UnsupportedModelError
from ..registry import register_modifier
from ..schema import option
from .base import Modifier, ModifierConfig, StageContext, cubic_schedule, name_matches

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from ..adapters.base import ArchitectureAdapter

logger = logging.getLogger(__name__)


# Config ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StructuredPruningConfig(ModifierConfig):
    """Recipe keys shared by `head_pruning` and `ffn_pruning`."""

    sparsity: float | None = option(
        None,
        help="fraction of the units (heads / neurons) to remove; exclusive with `count`",
        range=(0, 1),
        exclusive=(False, True),
    )
    count: int | None = option(
        None,
        help="number of units to remove: in total with `scope: global`, in every layer with `scope: layer`; exclusive with `sparsity`",
        range=(1, None),
    )
    importance: str = option("taylor", help="how units are scored", choices=("taylor", "magnitude"))
    scope: str = option(
        "global",
        help="rank units across all layers (`global`) or within each layer (`layer`)",
        choices=("global", "layer"),
    )
    calibration_batches: int = option(8, help="`taylor`: training batches scored for one-shot pruning", range=(1, None))
    normalize: bool = option(
        True, help="`scope: global`: scale each layer's scores to unit L2 norm before ranking (Michel et al. 2019)"
    )
    update_every: int = option(
        10, help="gradual mode: re-rank and prune every N optimizer steps (Zhu & Gupta's delta t)", range=(1, None)
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.sparsity is None) == (self.count is None):
            raise ValueError(
                "set exactly one of `sparsity` (fraction of units to remove, e.g. 0.5) or `count` (number of units to remove)"
            )


@dataclass(frozen=True)
class HeadPruningConfig(StructuredPruningConfig):
    allow_empty_layers: bool = option(
        False,
        help="let pruning remove every head of a layer (the attention block then only adds its output bias); "
        "default keeps at least one head per layer",
    )


# Unit gates (masking and Taylor scores) -----------------------------------------------------------
class UnitGate:
    """A forward pre-hook on the Linear that consumes a layer's units (heads' context, FFN activations).

    It multiplies each unit's channels by `keep` (0 for masked units, gradual mode) and, while
    `collect` is on and autograd is recording, by a fresh per-example gate of ones whose gradient
    is the Taylor importance `dL/dg` of every unit for every example.

    Args:
        module: the Linear fed by the units.
        units: number of units in the layer.
        group: channels per unit (`head_size` for heads, 1 for neurons).
    """

    def __init__(self, module: nn.Module, units: int, group: int) -> None:
        self.units = units
        self.group = group
        self.device = next(module.parameters()).device
        self.keep: torch.Tensor | None = None
        self.collect = False
        self.gates: list[torch.Tensor] = []
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        x = args[0]
        scale = None if self.keep is None else self.keep.to(device=x.device, dtype=x.dtype)
        if self.collect and torch.is_grad_enabled():
            shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (self.units,)
            gate = torch.ones(shape, device=x.device, dtype=x.dtype, requires_grad=True)
            self.gates.append(gate)
            scale = gate if scale is None else gate * scale
        if scale is None:
            return None
        if self.group > 1:
            scale = scale.repeat_interleave(self.group, dim=-1)
        return (x * scale, *args[1:])

    def consume(self) -> tuple[torch.Tensor, int]:
        """Sum over examples of `|dL/dg|` since the last call, and the number of examples."""
        total = torch.zeros(self.units, dtype=torch.float32)
        examples = 0
        for gate in self.gates:
            if gate.grad is not None:
                grad = gate.grad.detach().abs().float().reshape(-1, self.units)
                total += grad.sum(dim=0).cpu()
                examples += grad.shape[0]
        self.gates = []
        return total, examples

    def remove(self) -> None:
        self.handle.remove()
        self.gates = []


# Module surgery ------------------------------------------------------------------------------------
def narrow_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """`linear` keeping only rows (`dim=0`) or input columns (`dim=1`) `index`, same dtype and flags."""
    with warnings.catch_warnings():
        # An attention block losing every head gets a zero-input projection; torch warns that
        # initialising its empty weight is a no-op, which is expected here.
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        new = prune_linear_layer(linear, index.to(torch.long), dim=dim)
    # prune_linear_layer builds the new layer in the default dtype; keep the model's dtype.
    new = new.to(dtype=linear.weight.dtype)
    new.weight.requires_grad_(linear.weight.requires_grad)
    if new.bias is not None:
        new.bias.requires_grad_(linear.bias.requires_grad)
    new.train(linear.training)
    return new


class EmptyAttention(nn.Module):
    """Self-attention with every head removed: its context has zero channels.

    Stands in for the family's self-attention module, so the layer's residual path and layer
    norm run unchanged and the attention block adds only its output bias. When the family's
    output projection lives inside the attention module (DistilBERT's `out_lin`) it is kept
    here under the same name, so the state-dict keys do not change.

    Args:
        out_name: attribute name of the inner output projection, or None (BERT: it is outside).
        out_proj: that projection, narrowed to zero input features.
    """

    def __init__(self, out_name: str | None = None, out_proj: nn.Module | None = None) -> None:
        super().__init__()
        self.out_name = out_name
        if out_name is not None:
            self.add_module(out_name, out_proj)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        context = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
        if self.out_name is not None:
            context = getattr(self, self.out_name)(context)
        return context, None


def _inner_out_name(adapter: ArchitectureAdapter) -> str | None:
    """The output projection's path inside the attention module, when it lives there."""
    prefix = adapter.attention + "."
    return adapter.attention_output[len(prefix) :] if adapter.attention_output.startswith(prefix) else None


def _require_linear(
    adapter: ArchitectureAdapter, layer: nn.Module, paths: tuple[str, ...], technique: str, index: int
) -> None:
    for path in paths:
        module = adapter.get(layer, path)
        if type(module) is not nn.Linear:
            raise UnsupportedModelError(
                f"{technique} needs plain nn.Linear layers, but layer {index}'s `{path}` is {type(module).__name__}; "
                "run structured pruning in a stage before magnitude pruning, low-rank factorization or quantization."
            )


def remove_heads(model: PreTrainedModel, index: int, keep: list[int]) -> None:
    """Physically keeps only heads `keep` (sorted) of layer `index`."""
    adapter = get_adapter(model)
    layer = adapter.layer(model, index)
    size = adapter.head_size(model.config)
    channels = torch.tensor([h * size + c for h in keep for c in range(size)], dtype=torch.long)
    out = narrow_linear(adapter.get(layer, adapter.attention_output), channels, dim=1)
    if not keep:
        inner = _inner_out_name(adapter)
        adapter.set(layer, adapter.attention, EmptyAttention(inner, out if inner else None))
        if inner is None:
            adapter.set(layer, adapter.attention_output, out)
    else:
        for path in (adapter.query, adapter.key, adapter.value):
            adapter.set(layer, path, narrow_linear(adapter.get(layer, path), channels, dim=0))
        adapter.set(layer, adapter.attention_output, out)
    adapter.set_num_heads(model, index, len(keep))


def remove_neurons(model: PreTrainedModel, index: int, keep: list[int]) -> None:
    """Physically keeps only FFN neurons `keep` (sorted) of layer `index`."""
    adapter = get_adapter(model)
    layer = adapter.layer(model, index)
    channels = torch.tensor(keep, dtype=torch.long)
    adapter.set(layer, adapter.ffn_in, narrow_linear(adapter.get(layer, adapter.ffn_in), channels, dim=0))
    adapter.set(layer, adapter.ffn_out, narrow_linear(adapter.get(layer, adapter.ffn_out), channels, dim=1))


def _fresh_linear(like: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        return nn.Linear(
            in_features, out_features, bias=like.bias is not None, dtype=like.weight.dtype, device=like.weight.device
        )


@register_rebuild("heads", order=30)
def rebuild_heads(model: PreTrainedModel, value: dict[str, int]) -> None:
    """Rebuilds per-layer head counts `{"<layer>": heads}` before the weights load."""
    adapter = get_adapter(model)
    size = adapter.head_size(model.config)
    for key, heads in value.items():
        index, heads = int(key), int(heads)
        if heads == adapter.num_heads(model, index):
            continue
        layer = adapter.layer(model, index)
        old_out = adapter.get(layer, adapter.attention_output)
        out = _fresh_linear(old_out, heads * size, old_out.out_features)
        if heads == 0:
            inner = _inner_out_name(adapter)
            adapter.set(layer, adapter.attention, EmptyAttention(inner, out if inner else None))
            if inner is None:
                adapter.set(layer, adapter.attention_output, out)
        else:
            for path in (adapter.query, adapter.key, adapter.value):
                old = adapter.get(layer, path)
                adapter.set(layer, path, _fresh_linear(old, old.in_features, heads * size))
            adapter.set(layer, adapter.attention_output, out)
        adapter.set_num_heads(model, index, heads)


@register_rebuild("ffn_width", order=40)
def rebuild_ffn_width(model: PreTrainedModel, value: dict[str, int]) -> None:
    """Rebuilds per-layer FFN widths `{"<layer>": neurons}` before the weights load."""
    adapter = get_adapter(model)
    for key, width in value.items():
        index, width = int(key), int(width)
        if width == adapter.ffn_width(model, index):
            continue
        layer = adapter.layer(model, index)
        old_in, old_out = adapter.get(layer, adapter.ffn_in), adapter.get(layer, adapter.ffn_out)
        adapter.set(layer, adapter.ffn_in, _fresh_linear(old_in, old_in.in_features, width))
        adapter.set(layer, adapter.ffn_out, _fresh_linear(old_out, width, old_out.out_features))


# Selection -----------------------------------------------------------------------------------------
def _round(x: float) -> int:
    # Round half up (Python's round() rounds half to even, which makes 2.5 heads -> 2).
    return int(math.floor(x + 0.5))


def choose_units(
    scores: dict[int, torch.Tensor],
    alive: dict[int, torch.Tensor],
    target: int | dict[int, int],
    min_keep: int,
    normalize: bool = False,
) -> dict[int, torch.Tensor]:
    """Marks the lowest-scoring live units as pruned until `target` units are pruned.

    Args:
        scores: per layer, one score per unit (higher = more important).
        alive: per layer, a boolean tensor of the units not pruned yet; never revived.
        target: total number of pruned units across layers (global ranking), or a number per
            layer (per-layer ranking).
        min_keep: units every layer keeps.
        normalize: global ranking: divide each layer's scores by their L2 norm over live units.

    Returns:
        The new `alive` tensors.
    """
    new = {i: a.clone() for i, a in alive.items()}
    if isinstance(target, dict):
        for i, wanted in target.items():
            need = wanted - int((~new[i]).sum())
            order = [u for u in torch.argsort(scores[i].float(), stable=True).tolist() if new[i][u]]
            for unit in order[: max(0, min(need, int(new[i].sum()) - min_keep))]:
                new[i][unit] = False
        return new
    need = target - sum(int((~a).sum()) for a in new.values())
    candidates = []
    for i, layer_scores in scores.items():
        layer_scores = layer_scores.float()
        if normalize:
            norm = layer_scores[new[i]].norm()
            layer_scores = layer_scores / norm if norm > 0 else layer_scores
        candidates += [(float(layer_scores[u]), i, u) for u in range(len(layer_scores)) if new[i][u]]
    candidates.sort()
    for _, i, u in candidates:
        if need <= 0:
            break
        if int(new[i].sum()) > min_keep:
            new[i][u] = False
            need -= 1
    return new


# Modifiers -----------------------------------------------------------------------------------------
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
                _require_linear(adapter, adapter.layer(model, i), self._linear_paths(adapter), self.type_name, i)
                self.layers.append(i)
        if not self.layers:
            raise RecipeError(
                f"{self.type_name}: no layer left to prune (targets={list(self.config.targets)}, "
                f"ignore={list(self.config.ignore)}); layer names look like {adapter.layer_prefix(model, 0)!r}"
            )
        self.units_before = {i: self._units(model, i) for i in self.layers}
        self.alive = {i: torch.ones(n, dtype=torch.bool) for i, n in self.units_before.items()}
        self.final = self._final_target()
        ctx.notes.extend(f"{self.type_name}: {note}" for note in self.notes)
        self.gradual = bool(ctx.stage is not None and ctx.stage.trains and self.config.end > self.config.start)
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
                        f"{self.type_name}: count {wanted} removes too many {noun}s from layer {i}, which has {n} "
                        f"(at most {n - self.min_keep} can go); lower `count`"
                    )
                if wanted > n - self.min_keep:
                    self.notes.append(f"layer {i}: kept {self.min_keep} {noun}(s) of {n} instead of {n - wanted}")
                target[i] = min(wanted, n - self.min_keep)
            return target
        total = sum(self.units_before.values())
        most = total - self.min_keep * len(self.units_before)
        wanted = config.count if config.count is not None else _round(config.sparsity * total)
        if config.count is not None and wanted > most:
            raise RecipeError(
                f"{self.type_name}: count {wanted} is more than the {most} {noun}s that can be removed from the "
                f"{total} in the targeted layers (keeping {self.min_keep} per layer); lower `count`"
            )
        if wanted > most:
            self.notes.append(f"removed {most} {noun}s instead of {wanted}: every layer keeps {self.min_keep}")
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

    # Scoring and pruning ---------------------------------------------------------------------------
    def _prune_towards(self, model: PreTrainedModel, ctx: StageContext, target: int | dict[int, int]) -> None:
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
        return dict(zip(self.layers, stacked.cpu().split([self.units_before[i] for i in self.layers])))

    def _collect_training_scores(self) -> None:
        examples = 0
        for i, gate in self.gates.items():
            total, examples = gate.consume()
            self.taylor_sum[i] = self.taylor_sum.get(i, torch.zeros_like(total)) + total
        self.taylor_examples += examples

    def _taylor_on_calibration(self, model: PreTrainedModel, ctx: StageContext) -> dict[int, torch.Tensor]:
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
                        f"{self.type_name}: importance `taylor` needs batches with `labels`; add them or use "
                        "`importance: magnitude`"
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
            "%s: removed %d of %d %ss", self.type_name, removed, sum(self.units_before.values()), self.unit_name
        )

    # Reporting and resume ----------------------------------------------------------------------------
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
        self.alive = {int(i): torch.tensor(a, dtype=torch.bool) for i, a in state.get("alive", {}).items()}
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
    unit_name = "head"

    @property
    def min_keep(self) -> int:
        return 0 if self.config.allow_empty_layers else 1

    def _units(self, model: PreTrainedModel, index: int) -> int:
        return get_adapter(model).num_heads(model, index)

    def _group(self, model: PreTrainedModel) -> int:
        return get_adapter(model).head_size(model.config)

    def _consumer(self, model: PreTrainedModel, index: int) -> nn.Module:
        adapter = get_adapter(model)
        return adapter.get(adapter.layer(model, index), adapter.attention_output)

    def _linear_paths(self, adapter: ArchitectureAdapter) -> tuple[str, ...]:
        return (adapter.query, adapter.key, adapter.value, adapter.attention_output)

    def _magnitude(self, model: PreTrainedModel, index: int) -> torch.Tensor:
        adapter = get_adapter(model)
        layer = adapter.layer(model, index)
        heads, size = self._units(model, index), self._group(model)
        value = adapter.get(layer, adapter.value).weight.detach().float().reshape(heads, size, -1)
        out = adapter.get(layer, adapter.attention_output).weight.detach().float().reshape(-1, heads, size)
        return value.norm(dim=(1, 2)) * out.norm(dim=(0, 2))

    def _remove(self, model: PreTrainedModel, index: int, keep: list[int]) -> None:
        remove_heads(model, index, keep)

    def _record(self, model: PreTrainedModel) -> None:
        adapter = get_adapter(model)
        record_structure(
            model, "heads", {str(i): adapter.num_heads(model, i) for i in range(adapter.num_layers(model))}
        )


@register_modifier("ffn_pruning")
class FfnPruning(StructuredPruning):
    """Removes the least important FFN neurons and narrows both FFN Linear layers.

    Recipe keys: see `StructuredPruningConfig` (`sparsity` | `count`, `importance`, `scope`,
    `calibration_batches`, `normalize`, `update_every`, `start`, `end`, `targets`, `ignore`).
    Every layer keeps at least one neuron.
    """

    config_class = StructuredPruningConfig
    unit_name = "neuron"

    def _units(self, model: PreTrainedModel, index: int) -> int:
        return get_adapter(model).ffn_width(model, index)

    def _group(self, model: PreTrainedModel) -> int:
        return 1

    def _consumer(self, model: PreTrainedModel, index: int) -> nn.Module:
        adapter = get_adapter(model)
        return adapter.get(adapter.layer(model, index), adapter.ffn_out)

    def _linear_paths(self, adapter: ArchitectureAdapter) -> tuple[str, ...]:
        return (adapter.ffn_in, adapter.ffn_out)

    def _magnitude(self, model: PreTrainedModel, index: int) -> torch.Tensor:
        adapter = get_adapter(model)
        layer = adapter.layer(model, index)
        w_in = adapter.get(layer, adapter.ffn_in).weight.detach().float()
        w_out = adapter.get(layer, adapter.ffn_out).weight.detach().float()
        return w_in.norm(dim=1) * w_out.norm(dim=0)

    def _remove(self, model: PreTrainedModel, index: int, keep: list[int]) -> None:
        remove_neurons(model, index, keep)

    def _record(self, model: PreTrainedModel) -> None:
        adapter = get_adapter(model)
        record_structure(
            model, "ffn_width", {str(i): adapter.ffn_width(model, i) for i in range(adapter.num_layers(model))}
        )
