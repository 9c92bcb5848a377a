"""Families whose modules are converted before compression (GPT-2's `Conv1D` to `nn.Linear`,
see `architectures/gpt2.py`): the conversion, recorded as `compression_config["layout"]`, and
its replay when such a checkpoint is rebuilt."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..architectures.base import get_adapter
from ..errors import CheckpointError, UnsupportedModelError
from .format import get_structure, record_structure
from .rebuild import register_rebuild

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def prepare_layout(model: PreTrainedModel) -> None:
    """Converts `model` into its architecture map's layout when the family needs it, once, and
    records that; other models (and unsupported ones, which the techniques refuse themselves)
    are left alone."""
    try:
        adapter = get_adapter(model)
    except UnsupportedModelError:
        return
    if adapter.prepare is None or get_structure(model, "layout") == adapter.layout:
        return
    adapter.prepare(model)
    record_structure(model, "layout", adapter.layout)


@register_rebuild("layout", order=0)  # first: every other rebuild expects the converted modules
def _rebuild_layout(model: PreTrainedModel, layout: str) -> None:
    adapter = get_adapter(model)
    if adapter.layout != layout or adapter.prepare is None:
        raise CheckpointError(
            f"compression_config['layout'] is {layout!r}, but {type(model).__name__} has the "
            f"{adapter.layout!r} layout; the checkpoint's config.json was edited or is corrupt"
        )
    adapter.prepare(model)
