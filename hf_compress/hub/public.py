"""What may be published: the copies of report.json, recipe.yaml and the model card that leave
the machine carry no secret and no local path.

- A local path (the base model, the output directory, a GLUE folder, a teacher) becomes the
  folder's name, or the Hub id of a packaged model; Hub ids stay as they are.
- Values of token-like recipe keys are redacted, and any text that looks like a Hugging Face
  token (`hf_` and 30 or more letters and digits) is refused before an upload.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from ..checkpoint.sources import PACKAGED_MODELS

TOKEN_PATTERN = re.compile(rb"hf_[A-Za-z0-9]{30,}")
_SECRET_KEY = re.compile(r"(token|password|secret|api_key)", re.IGNORECASE)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Recipe keys (at any depth) that hold local paths.
_PATH_KEYS = ("base_model", "teacher", "output_dir", "glue_dir", "cache_dir", "extra_text_files")


def is_hub_id(name: str) -> bool:
    """Whether `name` reads as a Hub repository id rather than a local path."""
    return bool(_HUB_ID.match(name)) and not os.path.isabs(name) and not name.startswith(".")


def public_name(name: Any) -> Any:
    """A Hub id as is; a local path as the Hub id of the packaged model it is, else its folder's
    name. Anything that is not a string (None) as is."""
    if not isinstance(name, str) or not name or is_hub_id(name):
        return name
    path = Path(name).expanduser()
    for packaged in PACKAGED_MODELS:
        directory = packaged.directory()
        if directory is not None and path.resolve() == directory.resolve():
            return packaged.hub_ids[0]
    return path.name or name


def public_recipe_yaml(recipe_yaml: str) -> str:
    """The recipe text with local paths reduced to names and token-like values redacted; the
    text as it is when there is nothing to change (comments and order kept)."""
    changed = False

    def clean(key: Any, value: Any) -> Any:
        nonlocal changed
        if isinstance(key, str) and _SECRET_KEY.search(key) and value not in (None, "", False):
            changed = True
            return "<redacted>"
        if key in _PATH_KEYS:
            new = [public_name(v) for v in value] if isinstance(value, list) else public_name(value)
            changed = changed or new != value
            return new
        return walk(value)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: clean(key, value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    cleaned = walk(yaml.safe_load(recipe_yaml or "") or {})
    return yaml.safe_dump(cleaned, sort_keys=False) if changed else (recipe_yaml or "")


def public_report(report: dict[str, Any]) -> dict[str, Any]:
    """report.json with its local paths reduced to names."""
    return {
        **report,
        "base_model": public_name(report.get("base_model")),
        "output_dir": public_name(report.get("output_dir")),
    }


def find_token(data: bytes) -> str | None:
    """A Hugging Face token found in `data`, masked for the message, or None."""
    match = TOKEN_PATTERN.search(data)
    if match is None:
        return None
    token = match.group().decode()
    return f"{token[:5]}...{token[-2:]}"
