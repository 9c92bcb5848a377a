"""`head_pruning`: whole key/value groups or query heads inside them (see `HeadPruning`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...architectures.base import get_adapter
from ...checkpoint.format import get_structure, record_structure
from ...errors import RecipeError
from ...recipe.registry import register_modifier
from ..modifier import StageContext
from .config import HeadPruningConfig
from .structured import StructuredPruning
from .surgery import remove_heads, remove_query_heads

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from ...architectures.base import ArchitectureAdapter

logger = logging.getLogger(__name__)


@register_modifier("head_pruning")
class HeadPruning(StructuredPruning):
    """Removes the least important attention heads and narrows q/k/v and the output projection.

    With grouped-query attention the unit is a whole key/value group (`unit: kv_group`: a
    key/value head and the query heads sharing it, so the query-per-key ratio stays valid) or a
    query "rank" inside the groups (`unit: query_head`): removing one removes the weakest live
    query head of every group of the layer, so each group keeps the same number and the key/value
    heads all stay. Query heads are scored one by one (the gate sits on each head's context); a
    rank's score is the sum over the groups of their r-th best head's score.

    Recipe keys: see `HeadPruningConfig` (`sparsity` | `count`, `unit`, `importance`, `scope`,
    `calibration_batches`, `normalize`, `update_every`, `allow_empty_layers`, `start`, `end`,
    `targets`, `ignore`).
    """

    config_class = HeadPruningConfig
    description = "structured pruning of attention heads"
    hub_tags = ("pruned", "structured-pruning")
    unit_name = "head"

    def __init__(self, config: HeadPruningConfig) -> None:
        super().__init__(config)
        self.config: HeadPruningConfig = config
        self.inside_groups = False
        self.grouped = False
        self.kv_heads: dict[int, int] = {}
        self.head_alive: dict[int, torch.Tensor] = {}  # per query head, with `unit: query_head`

    @property
    def min_keep(self) -> int:
        return 0 if self.config.allow_empty_layers else 1

    def on_initialize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        adapter = get_adapter(model)
        if self.config.allow_empty_layers and adapter.causal:
            raise RecipeError(
                "head_pruning: allow_empty_layers is for encoders; a decoder layer without "
                "attention breaks the KV cache. Remove whole layers with layer_dropping instead"
            )
        # Without grouped-query attention a group is one head: `query_head` is `kv_group`.
        self.grouped = adapter.query_heads_per_kv_head(model.config) > 1
        self.inside_groups = self.config.unit == "query_head" and self.grouped
        self.kv_heads = {
            i: adapter.num_kv_heads(model, i) for i in range(adapter.num_layers(model))
        }
        return super().on_initialize(model, ctx)

    def _units(self, model: PreTrainedModel, index: int) -> int:
        adapter = get_adapter(model)
        if self.inside_groups:
            return adapter.query_heads_per_kv_head_at(model, index)
        return adapter.num_kv_heads(model, index)

    def _gate_units(self, model: PreTrainedModel, index: int) -> int:
        adapter = get_adapter(model)
        if self.inside_groups:
            return adapter.num_heads(model, index)
        return adapter.num_kv_heads(model, index)

    def _group(self, model: PreTrainedModel, index: int) -> int:
        adapter = get_adapter(model)
        size = adapter.head_size(model.config)
        return (
            size if self.inside_groups else size * adapter.query_heads_per_kv_head_at(model, index)
        )

    def _consumer(self, model: PreTrainedModel, index: int) -> nn.Module:
        adapter = get_adapter(model)
        return adapter.get(adapter.layer(model, index), adapter.attention_output)

    def _linear_paths(self, adapter: ArchitectureAdapter) -> tuple[str, ...]:
        return (adapter.query, adapter.key, adapter.value, adapter.attention_output)

    def _magnitude(self, model: PreTrainedModel, index: int) -> torch.Tensor:
        adapter = get_adapter(model)
        layer = adapter.layer(model, index)
        size = adapter.head_size(model.config)
        units = self.gate_units[index]
        out = adapter.get(layer, adapter.attention_output).weight.detach().float()
        out_norm = out.reshape(out.shape[0], units, -1).norm(dim=(0, 2))
        # A query head shares its value with its group: its query rows tell it apart.
        source = adapter.query if self.inside_groups else adapter.value
        rows = adapter.get(layer, source).weight.detach().float().reshape(units, size, -1)
        return rows.norm(dim=(1, 2)) * out_norm

    # Query heads inside the groups: a unit is a rank (see the class docstring) -----------------
    def _by_group(self, index: int, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and liveness of layer `index`'s query heads as (groups, heads per group)."""
        groups = self.kv_heads[index]
        alive = self.head_alive.setdefault(index, torch.ones(raw.numel(), dtype=torch.bool))
        return raw.float().reshape(groups, -1), alive.reshape(groups, -1)

    def _unit_scores(self, index: int, raw: torch.Tensor) -> torch.Tensor:
        if not self.inside_groups:
            return raw
        scores, alive = self._by_group(index, raw)
        ranked = scores.masked_fill(~alive, float("-inf")).sort(dim=1, descending=True).values
        live = int(self.alive[index].sum())
        ranks = torch.zeros(self.units_before[index])
        ranks[:live] = ranked[:, :live].sum(dim=0)
        return ranks

    def _after_choice(self, raw: dict[int, torch.Tensor]) -> None:
        if not self.inside_groups:
            return
        for i, layer_raw in raw.items():
            live = int(self.alive[i].sum())
            self.alive[i] = torch.arange(self.units_before[i]) < live  # the weakest ranks go
            scores, alive = self._by_group(i, layer_raw)
            order = scores.masked_fill(~alive, float("-inf")).argsort(dim=1, descending=True)
            keep = torch.zeros_like(alive)
            keep.scatter_(1, order[:, :live], True)
            self.head_alive[i] = (keep & alive).flatten()

    def _gate_keep(self, index: int) -> torch.Tensor:
        if not self.inside_groups:
            return self.alive[index].float()
        return self.head_alive.setdefault(
            index, torch.ones(self.gate_units[index], dtype=torch.bool)
        ).float()

    def _kept(self, index: int) -> list[int]:
        if not self.inside_groups:
            return super()._kept(index)
        alive = self.head_alive.get(index, torch.ones(self.gate_units[index], dtype=torch.bool))
        return torch.nonzero(alive).flatten().tolist()

    def _removed_text(self) -> str:
        if not self.inside_groups:
            text = super()._removed_text()
            return text.replace(" heads", " key/value groups") if self.grouped else text
        kept = sum(int(self._gate_keep(i).sum()) for i in self.layers)
        total = sum(self.gate_units.values())
        return f"{total - kept} of {total} query heads (every key/value head kept)"

    def _remove(self, model: PreTrainedModel, index: int, keep: list[int]) -> None:
        (remove_query_heads if self.inside_groups else remove_heads)(model, index, keep)

    def _record(self, model: PreTrainedModel) -> None:
        adapter = get_adapter(model)
        layers = range(adapter.num_layers(model))
        record_structure(model, "heads", {str(i): adapter.num_heads(model, i) for i in layers})
        # Once a group lost query heads, its key/value count no longer follows from `heads`.
        if self.inside_groups or get_structure(model, "kv_heads"):
            record_structure(
                model, "kv_heads", {str(i): adapter.num_kv_heads(model, i) for i in layers}
            )

    def summary(self) -> dict[str, Any]:
        summary = super().summary()
        summary["unit"] = "query_head" if self.inside_groups else "kv_group"
        if self.inside_groups:
            summary["query_heads_after"] = {
                str(i): int(a.sum()) for i, a in sorted(self.head_alive.items())
            }
        return summary

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["head_alive"] = {str(i): a.tolist() for i, a in self.head_alive.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head_alive = {
            int(i): torch.tensor(a, dtype=torch.bool)
            for i, a in state.get("head_alive", {}).items()
        }
        super().load_state_dict(state)
