"""Layer-reduced students, built from a teacher as in DistilBERT (Sanh et al. 2019).

A student keeps a subset of the teacher's transformer layers (by default every other one:
`[0, 2, 4]` of 6) and starts from those layers' weights. The reduction changes only the layer
list and the config's layer count, so a plain model saves and reloads with `from_pretrained` as
a normal model of its family; a model that is already compressed (uneven heads / FFN widths in
`compression_config`) has its per-layer entries re-keyed to the kept layers.

    student = make_student(teacher, num_layers=3)        # a new model, layers [0, 2, 4]
    keep_layers(model, [0, 3])                           # in place
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...architectures.base import get_adapter
from ...checkpoint.format import is_compressed, record_method
from ...errors import RecipeError, UnsupportedModelError
from .config import check_layer_choice

if TYPE_CHECKING:
    from transformers import PreTrainedModel


# compression_config entries keyed by layer index (as a string). Techniques that add such an
# entry add its key here so layer reduction re-keys it; entries that name modules (e.g.
# "bert.encoder.layer.3.attention.self.query") are renamed without registration.
LAYER_INDEXED_KEYS: set[str] = {"heads", "kv_heads", "ffn_width"}

# Entries whose layer bookkeeping cannot be re-keyed (positions sharing one module).
_UNREDUCIBLE_KEYS = {"shared_layers": "layer_sharing"}

# Which teacher layer each student layer was copied from; a plain attribute (not config) because
# it only matters while the model object lives (default hidden-state mapping in distillation).
_ORIGIN_ATTR = "hf_compress_layer_origin"


def select_layers(
    total: int, num_layers: int | None = None, layers: Sequence[int] | None = None
) -> list[int]:
    """The layer indices a student keeps out of `total`.

    Args:
        total: the number of layers of the model being reduced.
        num_layers: keep this many, evenly spaced from the first: `i * total // num_layers`,
            which is every other layer when `num_layers` is half of `total` (DistilBERT).
        layers: keep exactly these indices.

    Raises:
        RecipeError: the choice does not fit a `total`-layer model.
    """
    try:
        check_layer_choice(num_layers, layers)
    except ValueError as exc:
        raise RecipeError(f"student layers: {exc}") from exc
    if layers is not None:
        if max(layers) >= total:
            raise RecipeError(
                f"student layers {list(layers)}: the model has {total} layers (indices "
                f"0..{total - 1}); choose indices below that"
            )
        return list(layers)
    assert num_layers is not None
    if num_layers > total:
        raise RecipeError(
            f"student num_layers {num_layers}: the model has only {total} layers; choose 1..{total}"
        )
    return [i * total // num_layers for i in range(num_layers)]


def layer_origin(model: PreTrainedModel) -> list[int] | None:
    """The original layer index of each of `model`'s layers, if it was reduced in this process."""
    origin = getattr(model, _ORIGIN_ATTR, None)
    return list(origin) if origin is not None else None


def keep_layers(model: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """Reduces `model` in place to the given transformer layers, in the given order.

    The kept layers keep their weights (no copy); the config's layer count is updated; in a
    compressed model, `compression_config` entries of dropped layers are removed and those of
    kept layers re-keyed to their new index.

    Args:
        model: a model of a supported family (BERT, RoBERTa, DistilBERT), any head.
        layers: increasing layer indices to keep.

    Returns:
        The same model object.

    Raises:
        RecipeError: an index is out of range, repeated or unsorted.
        UnsupportedModelError: the family has no adapter, or its layers are shared (layer_sharing).
    """
    adapter = get_adapter(model)
    layers = select_layers(adapter.num_layers(model), layers=list(layers))
    structure = getattr(model.config, "compression_config", None) or {}
    for key, technique in _UNREDUCIBLE_KEYS.items():
        if key in structure:
            raise UnsupportedModelError(
                f"this model's layers are shared ({technique}), so layers cannot be dropped from "
                "it; reduce the layers first (distillation `student` or layer_dropping) and run "
                f"{technique} in a later stage"
            )
    old_list = adapter.layer_list(model)
    new_list = nn.ModuleList([old_list[i] for i in layers])
    parent_path, _, child = adapter.layers.rpartition(".")
    parent = model.base_model.get_submodule(parent_path) if parent_path else model.base_model
    setattr(parent, child, new_list)
    # DistilBERT's Transformer keeps its own copy of the layer count.
    if hasattr(parent, adapter.config_layers):
        setattr(parent, adapter.config_layers, len(layers))
    for new_index, layer in enumerate(new_list):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):  # cache bookkeeping of BERT/RoBERTa attention
                module.layer_idx = new_index
    setattr(model.config, adapter.config_layers, len(layers))
    if isinstance(getattr(model.config, "layer_types", None), list):  # Qwen, Mistral: per layer
        model.config.layer_types = [model.config.layer_types[i] for i in layers]
    if is_compressed(model):
        model.config.compression_config = _rekey_structure(
            model.config.compression_config, layers, adapter.layers
        )
        record_method(model, "layer_dropping")
    previous = layer_origin(model)
    setattr(model, _ORIGIN_ATTR, [previous[i] for i in layers] if previous else list(layers))
    return model


def make_student(
    teacher: PreTrainedModel, layers: Sequence[int] | None = None, num_layers: int | None = None
) -> PreTrainedModel:
    """A new layer-reduced student initialised from `teacher`'s layers (the teacher is not changed).

    Args:
        teacher: the model to copy (BERT, RoBERTa or DistilBERT family, any head).
        layers: keep exactly these layer indices, e.g. `[0, 2, 4]`.
        num_layers: keep this many layers, evenly spaced (every other layer for half the depth).
            Default when neither is given: half the layers (rounded up), as in DistilBERT.

    Returns:
        A deep copy of `teacher` with only the chosen layers.

    Raises:
        RecipeError: the layer choice does not fit the teacher.
    """
    total = get_adapter(teacher).num_layers(teacher)
    if layers is None and num_layers is None:
        num_layers = (total + 1) // 2
    chosen = select_layers(total, num_layers=num_layers, layers=layers)
    student = copy.deepcopy(teacher)
    return keep_layers(student, chosen)


def _rekey_structure(
    structure: dict[str, Any], layers: list[int], layers_path: str
) -> dict[str, Any]:
    """`compression_config` with per-layer entries moved to the kept layers' new indices."""
    new_index = {old: new for new, old in enumerate(layers)}
    pattern = re.compile(rf"(^|\.){re.escape(layers_path)}\.(\d+)(?=\.|$)")

    def rename(name: str) -> str | None:  # None: the name belongs to a dropped layer
        match = pattern.search(name)
        if match is None:
            return name
        old = int(match.group(2))
        if old not in new_index:
            return None
        return f"{name[: match.start(2)]}{new_index[old]}{name[match.end(2) :]}"

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            renamed = {}
            for key, item in value.items():
                new_key = rename(key) if isinstance(key, str) else key
                if new_key is not None:
                    renamed[new_key] = walk(item)
            return renamed
        if isinstance(value, list):
            return [walk(v) for v in value if not (isinstance(v, str) and rename(v) is None)]
        if isinstance(value, str):
            return rename(value) or value
        return value

    result: dict[str, Any] = {}
    for key, value in structure.items():
        if key in ("version", "methods"):
            result[key] = value
        elif key in LAYER_INDEXED_KEYS and isinstance(value, dict):
            result[key] = {
                str(new_index[int(k)]): v for k, v in value.items() if int(k) in new_index
            }
        else:
            result[key] = walk(value)
    return result


@torch.no_grad()
def block_influence(model: PreTrainedModel, batches: Iterable[dict[str, Any]]) -> list[float]:
    """How much each transformer layer changes its input: one minus the mean cosine similarity of
    its input and output hidden states over the batches' tokens (padding left out); the layers
    with the least influence are the ones to drop (ShortGPT's Block Influence, Men et al. 2024).
    """
    adapter = get_adapter(model)
    layers = adapter.layer_list(model)
    sums = torch.zeros(len(layers), dtype=torch.float64)
    count = 0
    mask: torch.Tensor | None = None

    def hook(index: int) -> Any:
        def record(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
        ) -> None:
            before = args[0] if args else kwargs.get("hidden_states")
            after = output[0] if isinstance(output, (tuple, list)) else output
            if before is None or not torch.is_tensor(after) or after.shape != before.shape:
                return
            cosine = nn.functional.cosine_similarity(before.float(), after.float(), dim=-1)
            weights = mask if mask is not None and mask.shape == cosine.shape else None
            if weights is None:
                sums[index] += float((1 - cosine).sum())
            else:
                sums[index] += float(((1 - cosine) * weights).sum())

        return record

    handles = [
        layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)
    ]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            attention = inputs.get("attention_mask")
            mask = attention.float() if attention is not None else None
            count += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return (sums / max(count, 1)).tolist()
