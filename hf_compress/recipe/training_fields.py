"""The fields of transformers' `TrainingArguments` and their type hints, read from transformers'
source file without importing it.

Why by hand: importing `transformers.training_args` imports torch, accelerate and peft (seconds
on a small machine), and transformers offers no torch-free description of these fields; a
recipe's `training:` keys are checked when the recipe is parsed, before anything heavy loads.
`hf-compress validate` and `run` still build the real `TrainingArguments` afterwards
(`training/arguments.py`), so what this reader cannot see is caught there. When the source does
not have the expected shape, `training_argument_hints` returns None and the caller imports
transformers instead.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib.util
import typing
from pathlib import Path
from typing import Any

# Names an annotation may use that the reader resolves itself; any other name (an enum such as
# `IntervalStrategy`) becomes a placeholder class, which the schema leaves unchecked, as it
# leaves the real enum classes.
_KNOWN_NAMES = {
    **{name: getattr(builtins, name) for name in ("int", "float", "str", "bool", "dict", "list")},
    "tuple": tuple,
    **{name: getattr(typing, name) for name in ("Any", "Literal", "Optional", "Union")},
}


class _Names(dict):
    """Annotation namespace: known names resolve, unknown ones become placeholder classes."""

    def __missing__(self, name: str) -> type:
        return type(name, (), {})


@functools.lru_cache(maxsize=1)
def training_argument_hints() -> dict[str, Any] | None:
    """`{field: type hint}` of every `TrainingArguments.__init__` argument (None: unreadable)."""
    spec = importlib.util.find_spec("transformers")  # finds the package without importing it
    if spec is None or spec.origin is None:
        return None
    try:
        tree = ast.parse((Path(spec.origin).parent / "training_args.py").read_text("utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    cls = next(
        (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TrainingArguments"),
        None,
    )
    if cls is None:
        return None
    hints = {}
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        if _is_class_var(node.annotation) or not _is_init_argument(node.value):
            continue
        hints[node.target.id] = _evaluate(node.annotation)
    return hints or None


def _evaluate(annotation: ast.expr) -> Any:
    try:
        return eval(  # noqa: S307 (an annotation of transformers' source, no builtins)
            compile(ast.Expression(annotation), "<annotation>", "eval"),
            {"__builtins__": {}},
            _Names(_KNOWN_NAMES),
        )
    except Exception:  # noqa: BLE001  (an annotation this reader cannot evaluate: unchecked)
        return Any


def _is_class_var(annotation: ast.expr) -> bool:
    target = annotation.value if isinstance(annotation, ast.Subscript) else annotation
    return isinstance(target, (ast.Name, ast.Attribute)) and ast.unparse(target).endswith(
        "ClassVar"
    )


def _is_init_argument(value: ast.expr | None) -> bool:
    """False for `field(init=False, ...)`."""
    if not (isinstance(value, ast.Call) and ast.unparse(value.func).endswith("field")):
        return True
    return not any(
        k.arg == "init" and isinstance(k.value, ast.Constant) and k.value.value is False
        for k in value.keywords
    )
