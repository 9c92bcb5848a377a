"""Recipe keys of `weight_clustering`."""

from __future__ import annotations

from dataclasses import dataclass

from ...recipe.fields import ModifierConfig
from ...recipe.registry import recipe_type
from ...recipe.schema import option


@recipe_type("weight_clustering")
@dataclass(frozen=True)
class WeightClusteringConfig(ModifierConfig):
    """Keys of `type: weight_clustering`. Default targets: the Linears of the transformer layers."""

    bits: int = option(
        4, help="bits per weight index: each layer keeps 2^bits shared values", range=(1, 8)
    )
    max_iter: int = option(
        300, help="k-means (Lloyd) iterations per layer at most", range=(1, 100000)
    )
