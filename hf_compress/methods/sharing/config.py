"""Recipe keys of `layer_sharing`, and the check of its groups."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import RecipeError
from ...recipe.fields import ModifierConfig
from ...recipe.registry import recipe_type
from ...recipe.schema import option


@recipe_type("layer_sharing")
@dataclass(frozen=True)
class LayerSharingConfig(ModifierConfig):
    """Keys of `type: layer_sharing`. Give exactly one of `groups` and `share`."""

    groups: tuple[tuple[int, ...], ...] | None = option(
        None, help="lists of layer indices that share one set of weights, e.g. [[0, 1], [2, 3]]"
    )
    share: str | None = option(
        None, help="`all`: every layer shares one set of weights", choices=("all",)
    )
    init: str = option(
        "mean",
        help="shared weights start from the group's mean or its first layer",
        choices=("mean", "first"),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.groups is None) == (self.share is None):
            raise ValueError("give exactly one of groups (e.g. [[0, 1], [2, 3]]) or share: all")
        if self.targets or self.ignore:
            raise ValueError("layer_sharing picks layers with groups / share, not targets / ignore")
        if self.groups is not None:
            if not self.groups:
                raise ValueError("groups is empty; list at least one group of two or more layers")
            seen: set[int] = set()
            for group in self.groups:
                if len(group) < 2:
                    raise ValueError(
                        f"group {list(group)} has fewer than two layers; a group shares weights "
                        "between layers"
                    )
                for index in group:
                    if index < 0:
                        raise ValueError(
                            f"layer index {index} is negative; layers are numbered from 0"
                        )
                    if index in seen:
                        raise ValueError(
                            f"layer {index} appears in two groups (or twice in one); groups must "
                            "not overlap"
                        )
                    seen.add(index)


def _check_groups(groups: list[list[int]], num_layers: int, where: str) -> None:
    for group in groups:
        bad = [i for i in group if i >= num_layers]
        if bad:
            raise RecipeError(
                f"{where}: layer index {bad[0]} is out of range; this model has {num_layers} "
                f"layers (0..{num_layers - 1})"
            )
