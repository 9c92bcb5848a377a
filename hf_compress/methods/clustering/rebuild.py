"""Rebuilds `ClusteredLinear` layers for `from_pretrained` (`compression_config["clustered"]`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...checkpoint.rebuild import (
    register_rebuild,
    replace_recorded_linears,
)
from .layers import ClusteredLinear

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@register_rebuild("clustered", order=60)
def _rebuild_clustered(model: PreTrainedModel, layers: dict[str, int]) -> None:
    """Replaces the recorded Linears by empty `ClusteredLinear`s (codebook and indices load
    next)."""
    replace_recorded_linears(
        model,
        "clustered",
        layers,
        build=lambda linear, bits: ClusteredLinear(
            linear.in_features,
            linear.out_features,
            int(bits),
            linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        ),
        rebuilt=lambda module, bits: isinstance(module, ClusteredLinear) and module.bits == bits,
    )
