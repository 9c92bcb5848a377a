"""`compress(model, recipe)`: one-shot application of a recipe's modifiers, without training."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from transformers import PreTrainedModel

from .errors import RecipeError
from .methods.modifier import StageContext
from .recipe.recipe import ModifierSpec, Recipe, Stage, _build_stage
from .recipe.registry import get_config_class, registered_modifier_types
from .training.stages import StageRun


def compress(
    model: PreTrainedModel,
    recipe: Recipe | Stage | Iterable[ModifierSpec | dict[str, Any]],
    calibration_data: Iterable[dict[str, torch.Tensor]]
    | Callable[[], Iterator[dict[str, torch.Tensor]]]
    | None = None,
    teacher: PreTrainedModel | None = None,
    tokenizer: Any = None,
    return_tokenizer: bool = False,
) -> PreTrainedModel | tuple[PreTrainedModel, Any]:
    """Applies post-training modifiers to `model` and returns the compressed model.

    Args:
        model: the model to compress (changed in place where the technique allows).
        recipe: a `Recipe` whose stages are all one-shot (`epochs: 0`), one `Stage`, or a list
            of modifier dicts such as `[{"type": "ffn_pruning", "sparsity": 0.5}]`.
        calibration_data: batches (dicts of tensors with labels) for techniques that score
            importance or calibrate on data (e.g. Taylor importance). Without it, modifiers given
            as dicts that rank by importance and do not say how use `importance: magnitude`
            (the weights alone), so `compress(model, [{"type": "ffn_pruning", "sparsity": 0.5}])`
            works on any model.
        teacher: a teacher model, for techniques that use one.
        tokenizer: the tokenizer, for techniques that rewrite it (vocabulary pruning).
        return_tokenizer: return `(model, tokenizer)`; required when a technique replaces the
            tokenizer, since the old one no longer matches the model's token ids.

    Raises:
        RecipeError: a stage trains (use `CompressionTrainer`), or the tokenizer was replaced and
            `return_tokenizer` is False.
    """
    stages = _as_stages(recipe, has_data=calibration_data is not None)
    for stage in stages:
        if stage.trains:
            raise RecipeError(
                f"stage {stage.name!r} trains (epochs={stage.epochs}); `compress` applies one-shot "
                "stages only. Use CompressionTrainer (or `hf-compress run`) for training stages."
            )
    renumbering = [
        spec.type for stage in stages for spec in stage.modifiers if spec.config.changes_vocabulary
    ]
    if renumbering and not return_tokenizer:
        raise RecipeError(
            f"{renumbering[0]} replaces the tokenizer (the model's token ids change): pass the "
            "tokenizer and return_tokenizer=True, and use the (model, tokenizer) it returns"
        )
    device = next(model.parameters()).device
    loader = (
        calibration_data
        if callable(calibration_data) or calibration_data is None
        else (lambda: iter(calibration_data))
    )
    ctx = StageContext(teacher=teacher, tokenizer=tokenizer, train_dataloader=loader, device=device)
    for index, stage in enumerate(stages):
        run = StageRun(stage, index, ctx)
        model = run.finalize(run.initialize(model))
    return (model, ctx.tokenizer) if return_tokenizer else model


def _as_stages(
    recipe: Recipe | Stage | Iterable[ModifierSpec | dict[str, Any]], has_data: bool
) -> tuple[Stage, ...]:
    if isinstance(recipe, Recipe):
        return recipe.stages
    if isinstance(recipe, Stage):
        return (recipe,)
    entries = list(recipe)
    if all(isinstance(e, ModifierSpec) for e in entries):
        return (Stage(name="compress", modifiers=tuple(entries)),)
    if not all(isinstance(e, dict) for e in entries):
        raise RecipeError("compress(): give modifier dicts or ModifierSpec objects, not both")
    if not has_data:
        entries = [_without_data(e) for e in entries]
    return (_build_stage({"name": "compress", "modifiers": entries}, "compress()"),)


def _without_data(entry: dict[str, Any]) -> dict[str, Any]:
    """`entry` with `importance: magnitude` when its technique ranks by Taylor importance (the
    default of head and FFN pruning, which needs labelled batches) and the entry names none."""
    kind = entry.get("type")
    if not (isinstance(kind, str) and kind in registered_modifier_types()):
        return entry  # an unknown type: _build_stage says so
    defaults = {f.name: f.default for f in dataclasses.fields(get_config_class(kind))}
    if defaults.get("importance") == "taylor" and "importance" not in entry:
        return {**entry, "importance": "magnitude"}
    return entry
