"""Recipes: the YAML format, its validation, and the registry of modifier types.

recipe = Recipe.from_yaml("recipes/quickstart.yaml", overrides=["training.learning_rate=3e-5"])
"""

from .fields import DataConfig, FinetuneBase, ModifierConfig, PushToHub
from .recipe import ModifierSpec, Recipe, Stage
from .registry import (
    CONFIGS,
    MODIFIERS,
    get_config_class,
    get_modifier_class,
    recipe_type,
    register_modifier,
    registered_modifier_types,
)
from .yaml_io import apply_overrides

__all__ = [
    "CONFIGS",
    "MODIFIERS",
    "DataConfig",
    "FinetuneBase",
    "ModifierConfig",
    "ModifierSpec",
    "PushToHub",
    "Recipe",
    "Stage",
    "apply_overrides",
    "get_config_class",
    "get_modifier_class",
    "recipe_type",
    "register_modifier",
    "registered_modifier_types",
]
