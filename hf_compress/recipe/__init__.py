"""Recipes: the YAML format, its validation, and the registry of modifier types.

recipe = Recipe.from_yaml("recipes/quickstart.yaml", overrides=["training.learning_rate=3e-5"])
"""

from .fields import DataConfig, FinetuneBase, ModifierConfig, PushToHub
from .recipe import ModifierSpec, Recipe, Stage
from .registry import (
    MODIFIERS,
    get_modifier_class,
    register_modifier,
    registered_modifier_types,
)
from .yaml_io import apply_overrides

__all__ = [
    "MODIFIERS",
    "DataConfig",
    "FinetuneBase",
    "ModifierConfig",
    "ModifierSpec",
    "PushToHub",
    "Recipe",
    "Stage",
    "apply_overrides",
    "get_modifier_class",
    "register_modifier",
    "registered_modifier_types",
]
