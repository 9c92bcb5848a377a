"""Rebuilds shared layers for `from_pretrained` (`compression_config["shared_layers"]`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...architectures.base import get_adapter
from ...checkpoint.rebuild import register_rebuild
from ...errors import CheckpointError, RecipeError
from .config import _check_groups
from .layers import share_layers

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@register_rebuild("shared_layers", order=25)
def _rebuild_shared_layers(model: PreTrainedModel, groups: list[list[int]]) -> None:
    """Makes the recorded positions share one layer module again (weights load into it next)."""
    adapter = get_adapter(model)
    layer_list = adapter.layer_list(model)
    try:
        _check_groups(groups, len(layer_list), "compression_config['shared_layers']")
    except RecipeError as exc:
        raise CheckpointError(str(exc)) from exc
    adapter.set(
        model.base_model,
        adapter.layers,
        share_layers(layer_list, [list(g) for g in groups], init="first"),
    )
