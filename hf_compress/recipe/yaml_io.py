"""Reading recipe YAML safely and applying `--set KEY.PATH=VALUE` overrides.

The loader is `yaml.SafeLoader` without aliases (how "billion laughs" bombs blow up memory),
with a bound on size and nesting, and with YAML 1.2 floats (`3e-5` is a number).
"""

from __future__ import annotations

import datetime
import re
from typing import Any

import yaml

from ..errors import RecipeError
from .schema import show_value

# Recipes are small (a few kB); a larger file is a mistake (or a YAML bomb), refuse before parsing
# it. The YAML parser is pure Python (~100 kB/s on a busy 2-core machine), so the limit also bounds
# the time a bad file can cost; 128 kB leaves room for long `targets` lists.
MAX_RECIPE_BYTES = 1 << 17

# Recipes nest about 5 levels deep; PyYAML composes nodes recursively, so a file of 5000 `[`
# would otherwise end in a RecursionError instead of a clear message.
MAX_RECIPE_DEPTH = 32

# What `yaml.safe_load` produces. A dict built in Python may hold anything; refusing the rest
# keeps every valid recipe savable as recipe.yaml.
_PLAIN_TYPES = (str, int, float, bool, type(None), bytes, datetime.date)


def _check_plain(value: Any, where: str, depth: int = 0) -> None:
    """Checks that `value` is YAML data: plain types, at most `MAX_RECIPE_DEPTH` levels deep
    (a deeper Python structure would end in a RecursionError) and 64-bit integers (a
    5000-digit int cannot even be printed)."""
    from .schema import _join

    if depth > MAX_RECIPE_DEPTH:
        raise RecipeError(
            f"{where}: nested deeper than {MAX_RECIPE_DEPTH} levels; recipes nest a few levels"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, where, depth + 1)
            _check_plain(
                item, _join(where, key if isinstance(key, str) else show_value(key)), depth + 1
            )
    elif isinstance(value, (list, tuple, set, frozenset)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]", depth + 1)
    elif not isinstance(value, _PLAIN_TYPES):
        raise RecipeError(
            f"{where}: a recipe holds YAML values (mapping, list, string, number, bool, null), got "
            f"{type(value).__name__}"
        )
    elif isinstance(value, int) and value.bit_length() > 64:
        raise RecipeError(
            f"{where}: {show_value(value)} is too large; integers in a recipe fit in 64 bits"
        )


class _NoAliasSafeLoader(yaml.SafeLoader):
    """`yaml.safe_load` without anchors/aliases: a recipe never needs them, and aliases are how
    "billion laughs" YAML bombs blow up memory. Nesting is limited to `MAX_RECIPE_DEPTH`, and a
    key given twice in one mapping is an error (PyYAML keeps the last one silently)."""

    _depth = 0

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:  # type: ignore[override]
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class reports it
                break
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"key {key!r} is given twice (first on line {first.start_mark.line + 1}); "
                    "keep one",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not allowed in recipes", event.start_mark
            )
        if self._depth >= MAX_RECIPE_DEPTH:
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_RECIPE_DEPTH} levels", mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# YAML 1.1 (PyYAML) reads `3e-5` as a string; recipes are full of learning rates written that
# way, so floats follow YAML 1.2's pattern (exponent without a dot) here.
_NoAliasSafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


class _RecipeDumper(yaml.SafeDumper):
    """`yaml.safe_dump` that knows the loader's extra float pattern, so a string such as
    `"1e-05"` (a stage name) is written quoted and reads back as a string."""


_RecipeDumper.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _one_line(exc: yaml.YAMLError) -> str:
    """A YAML error as one line: what is wrong and where (PyYAML's own text spans several lines,
    with the offending source lines quoted)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        context = f"{exc.context}: " if exc.context else ""
        return f"{context}{exc.problem}{where}"
    return " ".join(str(exc).split())


def _safe_load(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_NoAliasSafeLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{source}: not valid YAML: {_one_line(exc)}") from exc
    except (ValueError, OverflowError) as exc:
        # SafeConstructor calls int() / datetime() on scalars: a 5000-digit integer or a
        # `!!timestamp 2020-13-45` raises these instead of a YAMLError.
        raise RecipeError(f"{source}: not valid YAML: a value cannot be read ({exc})") from exc


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Applies `a.b.c=value` overrides (value parsed as YAML; list items as `stages.0.epochs=2`)."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RecipeError(
                f"--set {item!r}: expected KEY.PATH=VALUE, e.g. training.learning_rate=3e-5"
            )
        value = _safe_load(raw, f"--set {key}")
        parts = key.split(".")
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            node = _descend(node, part, ".".join(parts[: depth + 1]), item)
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise RecipeError(
                    f"--set {item!r}: {key} is not an index of a {len(node)}-item list"
                )
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise RecipeError(f"--set {item!r}: cannot set a key inside a {type(node).__name__}")
    return data


def _descend(node: Any, part: str, shown: str, item: str) -> Any:
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise RecipeError(f"--set {item!r}: {shown} is not an index of a {len(node)}-item list")
        return node[int(part)]
    if isinstance(node, dict):
        if node.get(part) is None:
            node[part] = {}
        return node[part]
    raise RecipeError(f"--set {item!r}: {shown} is not a mapping or list")
