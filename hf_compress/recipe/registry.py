"""The one registry that maps a recipe modifier `type` to its two halves:

- its config class (`ModifierConfig` subclass): the recipe keys and the recipe rules (needs a
  teacher, freezes the weights, ...), torch-free, so a recipe is checked without loading any
  implementation. Each technique decorates its configs in `methods/<technique>/config.py` with
  `@recipe_type("name")`; the registry imports those files on first use.
- its `Modifier` class: the implementation, registered with `@register_modifier("name")` when
  the technique's `modifier.py` is imported (`hf_compress.load_all()`, which `import
  hf_compress` runs). The class carries its config class as `config_class`.

A plugin registers its `Modifier` class only; its config class is registered with it. There is
no enum to keep in sync: the technique folders are listed once, in `hf_compress.methods`, and
`import hf_compress` hands the registry the function that imports their config files
(`set_builtin_loader`), as the recipe layer does not import the techniques.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from ..methods.modifier import Modifier
    from .fields import ModifierConfig

M = TypeVar("M", bound="type[Modifier]")
C = TypeVar("C", bound="type[ModifierConfig]")

MODIFIERS: dict[str, type[Modifier]] = {}
CONFIGS: dict[str, type[ModifierConfig]] = {}
_builtin_loader: Callable[[], None] | None = None


def _register_config(name: str, config_class: type[ModifierConfig]) -> None:
    known = CONFIGS.get(name)
    if known is not None and known is not config_class:
        raise ValueError(f"modifier type {name!r} is registered twice ({known} and {config_class})")
    CONFIGS[name] = config_class


def recipe_type(name: str) -> Callable[[C], C]:
    """Class decorator registering a `ModifierConfig` subclass as recipe type `name`'s keys."""

    def decorator(cls: C) -> C:
        _register_config(name, cls)
        return cls

    return decorator


def register_modifier(name: str) -> Callable[[M], M]:
    """Class decorator registering a `Modifier` subclass under recipe type `name` (with its
    `config_class`)."""

    def decorator(cls: M) -> M:
        if name in MODIFIERS and MODIFIERS[name] is not cls:
            raise ValueError(
                f"modifier type {name!r} is registered twice ({MODIFIERS[name]} and {cls})"
            )
        _register_config(name, cls.config_class)
        cls.type_name = name
        MODIFIERS[name] = cls
        return cls

    return decorator


def set_builtin_loader(loader: Callable[[], None]) -> None:
    """`loader` registers the built-in types' configs; it runs once, on the registry's first
    lookup."""
    global _builtin_loader
    _builtin_loader = loader


def _load_builtin_configs() -> None:
    global _builtin_loader
    loader, _builtin_loader = _builtin_loader, None
    if loader is not None:
        loader()


def get_config_class(name: str) -> type[ModifierConfig]:
    """The config class of recipe type `name` (KeyError when no such type is registered)."""
    _load_builtin_configs()
    return CONFIGS[name]


def get_modifier_class(name: str) -> type[Modifier]:
    """The modifier class registered as `name` (built-in ones: once `hf_compress.load_all()` ran,
    as `import hf_compress` does)."""
    return MODIFIERS[name]


def registered_modifier_types() -> list[str]:
    """Every registered recipe modifier type, sorted."""
    _load_builtin_configs()
    return sorted(CONFIGS)
