"""Checks of a recipe against its base model that need the model's config but not its weights,
run by `hf-compress validate` and at the start of `hf-compress run`, before anything is trained
or measured."""

from __future__ import annotations

from ..checkpoint.format import check_supported
from ..checkpoint.loading import load_checked_config
from ..checkpoint.sources import resolve_model_source
from ..recipe.recipe import Recipe


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
