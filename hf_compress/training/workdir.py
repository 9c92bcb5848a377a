"""`<output_dir>.work`: what an interrupted run needs to resume (fine-tuned base, the model after
each completed stage, `progress.json`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import HfCompressError, OutputExistsError
from ..recipe.recipe import Recipe

logger = logging.getLogger(__name__)


def _is_main_process() -> bool:
    """Whether this is the process that writes (rank 0), from the launcher's environment
    (`torchrun` and `accelerate launch` set RANK). Asking accelerate's `PartialState` here would
    create its shared state before `TrainingArguments` sets it up for CPU processes."""
    return int(os.environ.get("RANK", "0")) == 0


class WorkDir:
    """`<output_dir>.work`: what an interrupted run needs to resume (see `run_recipe`).

    Only the main process writes; every process reads. A work directory left by a run of a
    different recipe is never resumed from.
    """

    def __init__(self, path: Path, recipe: Recipe, resume: bool, overwrite: bool = False) -> None:
        self.path = path
        self.fingerprint = hashlib.sha256(
            json.dumps(recipe.to_dict(), sort_keys=True, default=str).encode()
        ).hexdigest()[:16]
        self.progress: dict[str, Any] = {}
        progress_file = path / "progress.json"
        if resume and progress_file.is_file():
            saved = json.loads(progress_file.read_text())
            if saved.get("fingerprint") != self.fingerprint:
                raise HfCompressError(
                    f"{path} holds an interrupted run of a different recipe; remove it, or resume "
                    "with the same recipe"
                )
            self.progress = saved
        elif resume:
            logger.warning("nothing to resume in %s: starting from the beginning", path)
        elif path.exists() and not overwrite:
            raise OutputExistsError(
                f"{path} holds the unfinished work of an earlier run of this output; pass --resume "
                "to continue it, or --overwrite to discard it and start over"
            )
        elif path.exists() and _is_main_process():
            logger.info("discarding the unfinished work of an earlier run in %s", path)
            shutil.rmtree(path)
        _barrier()
        path.mkdir(parents=True, exist_ok=True)
        self.progress.setdefault("fingerprint", self.fingerprint)

    def has_model(self, name: str) -> bool:
        return (
            name in self.progress.get("models", []) and (self.path / name / "config.json").is_file()
        )

    def save_model(self, name: str, model: Any, tokenizer: Any) -> None:
        if _is_main_process():
            staging = self.path / f"{name}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            shutil.rmtree(self.path / name, ignore_errors=True)
            staging.rename(self.path / name)
            self.update(models=sorted({*self.progress.get("models", []), name}))
        _barrier()

    def remove(self, name: str) -> None:
        if _is_main_process() and (self.path / name).exists():
            shutil.rmtree(self.path / name, ignore_errors=True)
            self.progress["models"] = [m for m in self.progress.get("models", []) if m != name]

    def update(self, **values: Any) -> None:
        self.progress.update(values)
        if _is_main_process():
            tmp = self.path / "progress.json.tmp"
            tmp.write_text(json.dumps(self.progress, indent=2, default=str))
            tmp.replace(self.path / "progress.json")

    def remove_all(self) -> None:
        if _is_main_process():
            shutil.rmtree(self.path, ignore_errors=True)


def _barrier() -> None:
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes > 1:
        state.wait_for_everyone()
