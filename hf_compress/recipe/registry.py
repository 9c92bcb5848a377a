"""The one registry that maps a recipe modifier `type` to its implementation.

Each technique decorates its modifier class with `@register_modifier("name")`; the class
carries its config dataclass as `config_class`. There is no enum to keep in sync: importing
`hf_compress` imports every technique folder under `hf_compress/methods/`, which registers it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from ..methods.modifier import Modifier

M = TypeVar("M", bound="type[Modifier]")

MODIFIERS: dict[str, type[Modifier]] = {}


def register_modifier(name: str) -> Callable[[M], M]:
    """Class decorator registering a `Modifier` subclass under recipe type `name`."""

    def decorator(cls: M) -> M:
        if name in MODIFIERS and MODIFIERS[name] is not cls:
            raise ValueError(
                f"modifier type {name!r} is registered twice ({MODIFIERS[name]} and {cls})"
            )
        cls.type_name = name
        MODIFIERS[name] = cls
        return cls

    return decorator


def get_modifier_class(name: str) -> type[Modifier]:
    """The modifier class registered as `name`."""
    return MODIFIERS[name]


def registered_modifier_types() -> list[str]:
    """Every registered recipe modifier type, sorted."""
    return sorted(MODIFIERS)
