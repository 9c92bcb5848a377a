"""GLUE data from a local folder in the original TSV layout, or from the Hub (`nyu-mll/glue`).

Local files are read with Python's csv module, tab-separated and without quote handling
(GLUE's TSVs contain unbalanced quotes), with the BOM that MRPC's header carries stripped, and
CoLA read header-less. Both sources give the same columns: the task's `text_fields` and `label`.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import Any

from datasets import Dataset

from ..errors import DataError
from .glue_tasks import GlueTask, get_task

GLUE_DIR_ENV = "HF_COMPRESS_GLUE_DIR"


def default_glue_dir() -> Path | None:
    """The folder named by `HF_COMPRESS_GLUE_DIR`, else None (meaning: the Hub)."""
    env = os.environ.get(GLUE_DIR_ENV)
    return Path(env) if env else None


def _split_file(task: GlueTask, split: str, glue_dir: Path) -> Path:
    stem = (
        "train"
        if split == "train"
        else (task.dev_splits[1] if split == "validation_mismatched" else task.dev_splits[0])
    )
    return glue_dir / task.directory / f"{stem}.tsv"


def read_tsv(path: Path) -> list[list[str]]:
    # Raise the csv field limit: a few GLUE rows (MNLI parses) are longer than the 128 KiB default.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def load_local_split(task: GlueTask, split: str, glue_dir: str | os.PathLike) -> Dataset:
    """Reads one split of `task` from a GLUE folder.

    Raises:
        DataError: the file is missing or a column is absent; names the path looked at.
    """
    glue_dir = Path(glue_dir)
    path = _split_file(task, split, glue_dir)
    if not path.is_file():
        raise DataError(
            f"GLUE {task.name} {split}: {path} not found. Put the original GLUE files there "
            f"({task.directory}/train.tsv, {task.directory}/{task.dev_splits[0]}.tsv), point "
            f"--glue-dir or {GLUE_DIR_ENV} at a folder that has them, or unset it to download "
            "nyu-mll/glue from the Hub."
        )
    rows = read_tsv(path)
    if task.has_header:
        header, rows = rows[0], rows[1:]
        try:
            indices = [header.index(c) if isinstance(c, str) else c for c in task.tsv_columns]
        except ValueError as exc:
            raise DataError(
                f"{path}: expected columns {list(task.tsv_columns)}, found {header}"
            ) from exc
    else:
        indices = list(task.tsv_columns)
    columns: dict[str, list[Any]] = {name: [] for name in (*task.text_fields, "label")}
    *text_indices, label_index = indices
    for line_no, row in enumerate(rows, start=2 if task.has_header else 1):
        if not row:
            continue
        try:
            for name, index in zip(task.text_fields, text_indices):
                columns[name].append(row[index])
            columns["label"].append(task.label_id(row[label_index]))
        except (IndexError, KeyError, ValueError) as exc:
            raise DataError(
                f"{path}:{line_no}: malformed row ({exc!r}); is this the original GLUE file?"
            ) from exc
    return Dataset.from_dict(columns)


def load_hub_split(task: GlueTask, split: str) -> Dataset:
    """One split of `nyu-mll/glue` from the Hub (needs network or a populated datasets cache)."""
    from datasets import load_dataset

    hub_split = (
        "train"
        if split == "train"
        else (split if split.startswith("validation_") else task.hub_validation_split)
    )
    try:
        dataset = load_dataset("nyu-mll/glue", task.name, split=hub_split)
    except Exception as exc:  # datasets raises many types for "offline" / "not cached"
        raise DataError(
            f"could not load GLUE {task.name} ({hub_split}) from the Hub: {exc}. Offline? Point "
            f"--glue-dir or {GLUE_DIR_ENV} at a folder in the original GLUE layout "
            f"({task.directory}/train.tsv, ...)."
        ) from exc
    keep = [*task.text_fields, "label"]
    return dataset.remove_columns([c for c in dataset.column_names if c not in keep])


def load_task_split(
    task_name: str, split: str, glue_dir: str | os.PathLike | None = None
) -> Dataset:
    """Loads `split` ("train", "validation", or MNLI's "validation_mismatched") of a GLUE task.

    Args:
        task_name: one of cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli.
        split: "train" or "validation".
        glue_dir: a local GLUE folder; default `default_glue_dir()`, and the Hub when that is None.
    """
    task = get_task(task_name)
    folder = Path(glue_dir) if glue_dir is not None else default_glue_dir()
    if folder is not None:
        return load_local_split(task, split, folder)
    return load_hub_split(task, split)


def calibration_texts(
    task_name: str, count: int, glue_dir: str | os.PathLike | None = None, seed: int = 0
) -> list[str | tuple[str, str]]:
    """`count` texts drawn at random (`seed`) from the task's training split, as a model reads
    them: one sentence, or a pair for two-sentence tasks. For calibrating quantizers."""
    task = get_task(task_name)
    if not isinstance(task, GlueTask):
        raise DataError(f"calibration texts come from a GLUE task, not {task_name!r}")
    train = load_task_split(task.name, "train", glue_dir)
    rows = train.shuffle(seed=seed).select(range(min(count, len(train))))
    columns = [rows[field] for field in task.text_fields]
    return [texts[0] if len(texts) == 1 else tuple(texts) for texts in zip(*columns)]
