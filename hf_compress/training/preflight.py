"""Checks of a recipe that need the file system, transformers or the models' configs but no
weights, run by `hf-compress validate` and at the start of `hf-compress run`, before anything is
trained or measured: the text files a language-model recipe names, the `TrainingArguments`
transformers will build, the base model's architecture and classification head, pruning counts
against the model's size, and the teacher's existence."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..checkpoint.format import check_supported
from ..checkpoint.loading import load_checked_config
from ..checkpoint.sources import resolve_model_source
from ..data.glue_tasks import get_task
from ..errors import RecipeError
from ..recipe.recipe import Recipe
from .arguments import check_training_arguments

if TYPE_CHECKING:
    from transformers import PretrainedConfig

# Structured pruning types and the config fields giving their units per layer.
_UNITS = {"head_pruning": "head_units", "ffn_pruning": "ffn_size"}


def check_recipe(recipe: Recipe) -> None:
    """Every check of this module (see its docstring).

    Raises:
        HfCompressError: one line naming the problem and the fix (`HubUnreachableError` when a
            Hub id cannot be checked offline).
    """
    recipe.check_text_files()
    check_training_arguments(recipe)
    config = load_checked_config(check_base_model(recipe))
    check_classification_head(recipe, config)
    check_pruning_counts(recipe, config)
    if recipe.teacher not in ("none", "base", "finetuned-base"):
        load_checked_config(resolve_model_source(recipe.teacher))


def check_base_model(recipe: Recipe) -> str:
    """Resolves the recipe's base model and checks that hf-compress supports its architecture.

    Returns:
        Where the model is read from (a local folder or a Hub id).

    Raises:
        HfCompressError: the model cannot be found, its config is broken, or its architecture is
            not supported (`UnsupportedModelError`).
    """
    source = resolve_model_source(recipe.base_model)
    check_supported(load_checked_config(source))
    return source


def check_classification_head(recipe: Recipe, config: PretrainedConfig) -> None:
    """A base model saved with a classification head must have as many labels as the task,
    unless the recipe asks for a fresh head (`reinit_head: true`)."""
    architectures = getattr(config, "architectures", None) or []
    has_head = any(a.endswith("ForSequenceClassification") for a in architectures)
    if recipe.reinit_head or not has_head:
        return
    task = get_task(recipe.task)
    if config.num_labels != task.num_labels:
        raise RecipeError(
            f"{recipe.source}: base_model {recipe.base_model} has a classification head with "
            f"{config.num_labels} labels, but {task.name} needs {task.num_labels}; set "
            "`reinit_head: true` to start from a fresh head, or use a base model without one"
        )


def check_pruning_counts(recipe: Recipe, config: PretrainedConfig) -> None:
    """A structured pruning `count` must leave every layer at least one unit (the exact bound,
    with `targets` and earlier stages, is checked again when the stage runs)."""
    from ..architectures import get_adapter

    adapter = get_adapter(config)
    layers = getattr(config, adapter.config_layers)
    for i, stage in enumerate(recipe.stages):
        for j, spec in enumerate(stage.modifiers):
            count = getattr(spec.config, "count", None)
            if spec.type not in _UNITS or count is None:
                continue
            units = getattr(adapter, _UNITS[spec.type])(config)
            keep = 0 if getattr(spec.config, "allow_empty_layers", False) else 1
            most = units - keep if spec.config.scope == "layer" else layers * (units - keep)
            if count > most:
                scope = "in each layer" if spec.config.scope == "layer" else "in total"
                raise RecipeError(
                    f"{recipe.source}: stages[{i}].modifiers[{j}] ({spec.type}).count: {count}, "
                    f"but {recipe.base_model} has {layers} layers of {units}, so at most {most} "
                    f"can go {scope}; lower `count`"
                )
