"""Recipe keys of `head_pruning`, `ffn_pruning` and `magnitude_pruning`."""

from __future__ import annotations

from dataclasses import dataclass

from ...recipe.fields import ModifierConfig
from ...recipe.registry import recipe_type
from ...recipe.schema import option


@recipe_type("magnitude_pruning")
@dataclass(frozen=True, kw_only=True)
class MagnitudePruningConfig(ModifierConfig):
    """Recipe keys of `magnitude_pruning`."""

    exclusive_with = ("head_pruning", "ffn_pruning")
    exclusive_reason = "structured pruning reshapes the layers it masks"

    sparsity: float = option(
        help="final fraction of the targeted weights that are zero",
        range=(0, 1),
        exclusive=(True, True),
    )
    scope: str = option(
        "layer",
        help="rank weights within each layer (`layer`: the same sparsity everywhere) or across all "
        "targets (`global`)",
        choices=("layer", "global"),
    )
    update_every: int = option(
        10,
        help="gradual mode: recompute the masks every N optimizer steps (Zhu & Gupta's delta t)",
        range=(1, None),
    )


# Config ---------------------------------------------------------------------------------------
@recipe_type("ffn_pruning")
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
        help="number of units to remove: in total with `scope: global`, in every layer with "
        "`scope: layer`; exclusive with `sparsity`",
        range=(1, None),
    )
    importance: str = option("taylor", help="how units are scored", choices=("taylor", "magnitude"))
    scope: str = option(
        "global",
        help="rank units across all layers (`global`) or within each layer (`layer`)",
        choices=("global", "layer"),
    )
    calibration_batches: int = option(
        8, help="`taylor`: training batches scored for one-shot pruning", range=(1, None)
    )
    normalize: bool = option(
        True,
        help="`scope: global`: scale each layer's scores to unit L2 norm before ranking (Michel et "
        "al. 2019)",
    )
    update_every: int = option(
        10,
        help="gradual mode: re-rank and prune every N optimizer steps (Zhu & Gupta's delta t)",
        range=(1, None),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.sparsity is None) == (self.count is None):
            raise ValueError(
                "set exactly one of `sparsity` (fraction of units to remove, e.g. 0.5) or `count` "
                "(number of units to remove)"
            )


@recipe_type("head_pruning")
@dataclass(frozen=True)
class HeadPruningConfig(StructuredPruningConfig):
    allow_empty_layers: bool = option(
        False,
        help="let pruning remove every head of a layer (the attention block then only adds its "
        "output bias); default keeps at least one head per layer",
    )
    unit: str = option(
        "kv_group",
        help="what is removed with grouped-query attention: whole key/value groups (`kv_group`: a "
        "key/value head and the query heads sharing it) or query heads inside the groups "
        "(`query_head`: the same number from every group of a layer, each keeping at least one; "
        "`count` / `sparsity` then count query heads per group). Without grouped-query attention "
        "both remove whole heads",
        choices=("kv_group", "query_head"),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.unit == "query_head" and self.allow_empty_layers:
            raise ValueError(
                "`unit: query_head` keeps every key/value group, so no layer can lose all its "
                "heads; drop `allow_empty_layers` or use `unit: kv_group`"
            )
