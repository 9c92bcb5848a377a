"""Strict conversion of parsed YAML into frozen config dataclasses.

Every config dataclass in hf-compress declares its recipe keys as fields. Field metadata adds
what type hints cannot say: `help` (documentation), `choices`, and `range` (inclusive or
exclusive bounds). `build(cls, data, where)` checks unknown keys, types, choices and ranges and
raises `RecipeError` naming the key path and the allowed values.

Written by hand because the dataclass validators on PyPI (pydantic, dacite) either need their
own model classes or do not report key paths with the allowed values the way recipes need.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from dataclasses import MISSING, field
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from ..errors import RecipeError

T = TypeVar("T")


def option(
    default: Any = MISSING,
    *,
    help: str,
    choices: typing.Sequence[Any] | None = None,
    range: tuple[float | None, float | None] | None = None,
    exclusive: tuple[bool, bool] = (False, False),
    default_factory: Any = MISSING,
) -> Any:
    """A dataclass field that is a recipe key.

    Args:
        default: default value (omit for a required key).
        help: one-line documentation shown by `hf-compress validate --explain` and the docs.
        choices: allowed values.
        range: (low, high) bounds for numbers; `None` for an open side.
        exclusive: whether each bound is exclusive.
        default_factory: factory for mutable defaults.
    """
    metadata = {"help": help, "choices": choices, "range": range, "exclusive": exclusive}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# Values are echoed in error messages; a fuzzed or mistaken recipe can hold a 100 kB string, a
# 5000-digit int (whose repr raises ValueError) or a deeply nested list (RecursionError), so
# messages show a bounded repr.
_REPR = reprlib.Repr()

_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 80

_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 3, 8, 8, 8


def show_value(value: Any) -> str:
    """`repr(value)`, shortened for error messages (never raises)."""
    try:
        return _REPR.repr(value)
    except Exception:  # noqa: BLE001  (huge ints, broken __repr__: a message must still come out)
        return f"<a {type(value).__name__} too large to show>"


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (list, tuple):
        return f"list of {_type_name(get_args(tp)[0])}" if get_args(tp) else "list"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Checks `value` against type hint `tp`; returns it converted (lists to tuples, dicts to
    dataclasses)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        # null for an optional section means "none"; trying the dataclass first would turn it
        # into a section full of defaults (build() reads None as an empty mapping).
        if value is None and type(None) in options:
            return None
        errors = []
        for option_tp in options:
            try:
                return _convert(option_tp, value, where)
            except RecipeError as exc:
                errors.append(exc)
        # A mapping given for an optional section: the section's own error is the useful one.
        sections = [i for i, o in enumerate(options) if dataclasses.is_dataclass(o)]
        if isinstance(value, dict) and len(sections) == 1:
            raise errors[sections[0]]
        raise RecipeError(f"{where}: expected {_type_name(tp)}, got {show_value(value)}")
    if tp is type(None):
        if value is None:
            return None
        raise RecipeError(f"{where}: expected null, got {show_value(value)}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise RecipeError(
            f"{where}: got {show_value(value)}; allowed values: "
            f"{', '.join(map(repr, get_args(tp)))}"
        )
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected {_type_name(tp)}, got {show_value(value)}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return tuple(_convert(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {show_value(value)}")
        key_tp, val_tp = get_args(tp) or (Any, Any)
        return {
            _convert(key_tp, k, where): _convert(
                val_tp, v, _join(where, k if isinstance(k, str) else show_value(k))
            )
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(f"{where}: expected true or false, got {show_value(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise RecipeError(f"{where}: expected an integer, got {show_value(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int beyond float range (e.g. 10**400) is no usable number
                raise RecipeError(
                    f"{where}: {show_value(value)} is too large for a number"
                ) from None
            if not math.isfinite(number):
                raise RecipeError(f"{where}: expected a finite number, got {show_value(value)}")
            return number
        raise RecipeError(f"{where}: expected a number, got {show_value(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise RecipeError(f"{where}: expected a string, got {show_value(value)}")
    raise TypeError(
        f"unsupported type hint {tp!r} at {where}"
    )  # a bug in a config class, not user input


def _check_metadata(f: dataclasses.Field, value: Any, where: str) -> None:
    choices = f.metadata.get("choices")
    if choices is not None and value is not None and value not in choices:
        raise RecipeError(
            f"{where}: got {show_value(value)}; allowed values: {', '.join(map(str, choices))}"
        )
    bounds = f.metadata.get("range")
    if bounds is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        (low, high), (low_open, high_open) = bounds, f.metadata.get("exclusive", (False, False))
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            shown = (
                f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
            )
            raise RecipeError(f"{where}: {show_value(value)} is out of range; allowed: {shown}")


def _join(where: str, name: str) -> str:
    if not where:
        return name
    return f"{where} {name}" if where.endswith(":") else f"{where}.{name}"


def build(cls: type[T], data: Any, where: str = "") -> T:
    """Builds dataclass `cls` from a mapping, strictly.

    Args:
        cls: the config dataclass.
        data: the parsed YAML mapping (`None` means an empty mapping).
        where: key path used in error messages, e.g. `recipes/a.yaml: stages[0].modifiers[1]`.

    Raises:
        RecipeError: unknown key, missing required key, wrong type, bad choice or out of range.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{where or 'recipe'}: expected a mapping, got {show_value(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise RecipeError(
            f"{where or 'recipe'}: unknown key {show_value(unknown[0])}; allowed keys: "
            f"{', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, f in fields.items():
        key_where = _join(where, name)
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise RecipeError(
                    f"{key_where}: required key is missing ({f.metadata.get('help', '')})"
                )
            continue
        value = _convert(hints[name], data[name], key_where)
        _check_metadata(f, value, key_where)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except RecipeError:
        raise
    except (TypeError, ValueError) as exc:  # __post_init__ cross-field checks
        prefix = where or "recipe:"
        raise RecipeError(f"{prefix}{' ' if prefix.endswith(':') else ': '}{exc}") from exc


def to_dict(obj: Any) -> Any:
    """Converts a config dataclass back to plain YAML-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) for every recipe key of `cls`: the source of the docs tables."""
    hints = get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = (
            f.default
            if f.default is not MISSING
            else ("required" if f.default_factory is MISSING else "[]")
        )
        rows.append((f.name, _type_name(hints[f.name]), default, f.metadata.get("help", "")))
    return rows
