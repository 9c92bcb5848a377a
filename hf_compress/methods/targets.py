"""Matching module names against a modifier's `targets` / `ignore` patterns (plain names or
`re:` regexes), with DDP / accelerate / compile / peft wrapper prefixes stripped."""

from __future__ import annotations

import re

# Prefixes that wrappers (DDP, accelerate, torch.compile, peft) add to module names.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "base_model.model.")


def strip_wrapper_prefix(name: str) -> str:
    """Removes DDP / accelerate / compile / peft wrapper prefixes from a module name."""
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
    return name


def name_matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether module `name` matches any pattern: `re:<regex>` (searched) or a plain name.

    A plain pattern matches the module itself or any module whose dotted name ends with it, so
    `classifier` and `bert.pooler.dense` both work.
    """
    name = strip_wrapper_prefix(name)
    for pattern in patterns:
        if pattern.startswith("re:"):
            if re.search(pattern[3:], name):
                return True
        elif name == pattern or name.endswith("." + pattern):
            return True
    return False
