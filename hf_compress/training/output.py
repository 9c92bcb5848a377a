"""A run's output directory: one run at a time, nothing replaced without `--overwrite`, and a final
swap that a kill at any moment leaves recoverable.

- `<output_dir>.lock` holds the running owner's process id and host. A second run on the same
  output refuses to start while the owner is alive; a lock whose process is gone is stale and
  taken over.
- Everything is written into `<output_dir>.partial-<id>` and renamed into place at the end. An
  existing output (only with `--overwrite`) is first renamed to `<output_dir>.old-<id>`. A kill
  between the two renames leaves both; the next run on that output (holding the lock, so no
  owner is alive) finishes the swap when the staging directory is complete, else puts the old
  output back, before anything else.
- Staging and old directories are removed only by the run that holds the lock.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from ..errors import HfCompressError, OutputExistsError

logger = logging.getLogger(__name__)

# Written last into a staging directory (the model card): its presence means the output is complete.
COMPLETE_MARKER = "README.md"


class OutputBusyError(HfCompressError, RuntimeError):
    """Another live run is writing to the same output directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class OutputLock:
    """`<output_dir>.lock`: held by one run of `output_dir` at a time (see the module docstring)."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self.path = output_dir.with_name(output_dir.name + ".lock")
        self.held = False

    def acquire(self) -> None:
        """Takes the lock, or raises `OutputBusyError` naming the live owner."""
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        # The lock sits beside the output, so its folder (e.g. `outputs/`) must exist first.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and self._is_live(holder):
                    raise OutputBusyError(
                        f"{self.output_dir} is being written by another run (process "
                        f"{holder.get('pid')} on {holder.get('host')}); wait for it to finish, or "
                        "choose another output_dir (--set output_dir=...)"
                    ) from None
                logger.info(
                    "removing the stale lock %s of a run that is no longer alive", self.path
                )
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(owner, handle)
            self.held = True
            return
        raise OutputBusyError(
            f"{self.path}: could not take the lock; remove it if no run is using it"
        )

    def _holder(self) -> dict[str, Any] | None:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # unreadable: written by a run killed while taking it
        return holder if isinstance(holder, dict) else None

    @staticmethod
    def _is_live(holder: dict[str, Any]) -> bool:
        pid = holder.get("pid")
        if not isinstance(pid, int):
            return False
        if holder.get("host") != socket.gethostname():
            return True  # another machine's process: cannot tell, so assume it runs
        return _alive(pid)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _siblings(output_dir: Path, kind: str) -> list[Path]:
    """`<output_dir>.<kind>-*` directories, newest first."""
    found = [p for p in output_dir.parent.glob(f"{output_dir.name}.{kind}-*") if p.is_dir()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def recover_interrupted_swap(output_dir: Path) -> None:
    """Finishes (or undoes) a final swap that a kill interrupted; call while holding the lock."""
    if output_dir.exists():
        return
    complete = [p for p in _siblings(output_dir, "partial") if (p / COMPLETE_MARKER).is_file()]
    olds = _siblings(output_dir, "old")
    if complete:
        complete[0].rename(output_dir)
        logger.warning(
            "%s: finished the move of a complete output a killed run had left", output_dir
        )
        for old in olds:
            shutil.rmtree(old, ignore_errors=True)
    elif olds:
        olds[0].rename(output_dir)
        logger.warning("%s: put back the output a killed run was replacing", output_dir)


def prepare_output_dir(output_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Checks `output_dir` may be written, before any work; call while holding the lock.

    Raises:
        OutputExistsError: `output_dir` holds files and `overwrite` is False.
    """
    path = Path(output_dir)
    recover_interrupted_swap(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise OutputExistsError(
            f"{path} already exists and is not empty; choose another output_dir "
            "(--set output_dir=...) or pass --overwrite to replace it"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Left by killed runs of this output: no owner is alive while we hold the lock.
    for stale in _siblings(path, "partial") + _siblings(path, "old"):
        shutil.rmtree(stale, ignore_errors=True)
    return path


def staging_dir(output_dir: Path) -> Path:
    """A fresh staging directory name beside `output_dir`."""
    return output_dir.with_name(f"{output_dir.name}.partial-{uuid.uuid4().hex[:8]}")


def move_into_place(staging: Path, output_dir: Path, overwrite: bool) -> None:
    """Renames the complete `staging` to `output_dir`. An existing `output_dir` is replaced only
    with `overwrite`: moved aside first, removed after the rename succeeded.

    Raises:
        OutputExistsError: `output_dir` appeared meanwhile and `overwrite` is False.
    """
    old = None
    if output_dir.exists():
        if not overwrite:
            raise OutputExistsError(
                f"{output_dir} was created while this run was working; the result stays in "
                f"{staging}: move it yourself, or run again with --overwrite"
            )
        old = output_dir.with_name(f"{output_dir.name}.old-{uuid.uuid4().hex[:8]}")
        output_dir.rename(old)
    staging.rename(output_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
