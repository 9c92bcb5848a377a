"""The modifiers' runtime state (masks, scores, schedules) saved beside a Trainer checkpoint, so
an interrupted stage resumes with it: tensors to safetensors, the rest to JSON (never pickle)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..methods.modifier import Modifier

logger = logging.getLogger(__name__)

MODIFIER_STATE_FILE = "hf_compress_modifiers"


def save_modifier_states(modifiers: list[Modifier], directory: str) -> None:
    """Writes the modifiers' runtime state beside a Trainer checkpoint: tensors to safetensors,
    everything else to JSON (never pickle)."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {}
    for i, modifier in enumerate(modifiers):
        state = modifier.state_dict()
        plain[str(i)] = {"type": modifier.type_name, "values": {}}
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{i}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain[str(i)]["values"][key] = value
    os.makedirs(directory, exist_ok=True)
    save_file(tensors, os.path.join(directory, MODIFIER_STATE_FILE + ".safetensors"))
    with open(os.path.join(directory, MODIFIER_STATE_FILE + ".json"), "w") as handle:
        json.dump(plain, handle)


def load_modifier_states(modifiers: list[Modifier], directory: str) -> None:
    """Restores what `save_modifier_states` wrote (a checkpoint without the files is left as is)."""
    json_path = os.path.join(directory, MODIFIER_STATE_FILE + ".json")
    if not os.path.isfile(json_path):
        return
    with open(json_path) as handle:
        plain = json.load(handle)
    tensors = load_file(os.path.join(directory, MODIFIER_STATE_FILE + ".safetensors"))
    for i, modifier in enumerate(modifiers):
        entry = plain.get(str(i))
        if entry is None or entry["type"] != modifier.type_name:
            raise RuntimeError(
                f"{directory}: saved modifier state does not match the recipe's stage; was the "
                "recipe changed?"
            )
        state = dict(entry["values"])
        state.update(
            {k.split(".", 1)[1]: v for k, v in tensors.items() if k.split(".", 1)[0] == str(i)}
        )
        modifier.load_state_dict(state)


def last_complete_checkpoint(directory: str, remove_incomplete: bool) -> str | None:
    """The newest `checkpoint-N` in `directory` that was written to the end, or None.

    The Trainer writes a checkpoint's `trainer_state.json` last (the modifiers' state comes
    before it), so a folder without one was being written when the run was killed; with
    `remove_incomplete` such folders newer than the one returned are removed (they cannot be
    resumed from, and would be taken for the newest otherwise).
    """
    if not os.path.isdir(directory):
        return None
    numbered = []
    for name in os.listdir(directory):
        prefix, _, number = name.rpartition("-")
        if prefix == PREFIX_CHECKPOINT_DIR and number.isdigit():
            numbered.append((int(number), os.path.join(directory, name)))
    for _, path in sorted(numbered, reverse=True):
        if os.path.isfile(os.path.join(path, TRAINER_STATE_NAME)):
            return path
        logger.warning("%s was not written to the end (killed while saving); skipped", path)
        if remove_incomplete:
            shutil.rmtree(path, ignore_errors=True)
    return None
