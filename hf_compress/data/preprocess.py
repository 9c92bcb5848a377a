"""Tokenized GLUE datasets for training and evaluation (dynamic padding happens in the collator)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from datasets import Dataset

from .glue import load_task_split
from .glue_tasks import GlueTask


def tokenize_dataset(
    dataset: Dataset, task: GlueTask, tokenizer: Any, max_seq_length: int
) -> Dataset:
    """Tokenizes the task's text fields (truncated, unpadded) and keeps `labels`."""

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        texts = [batch[field] for field in task.text_fields]
        encoded = tokenizer(*texts, truncation=True, max_length=max_seq_length)
        encoded["labels"] = (
            [float(x) for x in batch["label"]] if task.is_regression else batch["label"]
        )
        return encoded

    return dataset.map(
        encode, batched=True, remove_columns=dataset.column_names, desc=f"tokenizing {task.name}"
    )


def load_task_datasets(
    task: GlueTask,
    tokenizer: Any,
    max_seq_length: int = 128,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    glue_dir: str | os.PathLike | None = None,
    seed: int = 42,
    with_train: bool = True,
) -> tuple[Dataset | None, Dataset]:
    """(train, validation) tokenized datasets. The train slice is a seeded random sample."""
    train = None
    if with_train:
        raw_train = load_task_split(task.name, "train", glue_dir)
        if max_train_samples is not None and max_train_samples < len(raw_train):
            raw_train = raw_train.shuffle(seed=seed).select(range(max_train_samples))
        train = tokenize_dataset(raw_train, task, tokenizer, max_seq_length)
    raw_eval = load_task_split(task.name, "validation", glue_dir)
    if max_eval_samples is not None and max_eval_samples < len(raw_eval):
        raw_eval = raw_eval.select(range(max_eval_samples))
    return train, tokenize_dataset(raw_eval, task, tokenizer, max_seq_length)


@dataclass(frozen=True)
class TaskData:
    """Which examples of a GLUE task a run uses, and how they are tokenized.

    Args:
        task: the GLUE task.
        max_seq_length: truncate inputs to this many tokens.
        max_train_samples: a seeded random sample of the training set (None: all of it).
        max_eval_samples: the first examples of the dev set (None: all of it).
        glue_dir: local GLUE folder (None: `HF_COMPRESS_GLUE_DIR`, else the Hub).
        seed: the seed of the training sample.
    """

    task: GlueTask
    max_seq_length: int = 128
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    glue_dir: str | os.PathLike | None = None
    seed: int = 42

    def train_and_dev(self, tokenizer: Any) -> tuple[Dataset, Dataset]:
        """The training slice and the dev set, tokenized by `tokenizer`."""
        return load_task_datasets(
            self.task,
            tokenizer,
            self.max_seq_length,
            self.max_train_samples,
            self.max_eval_samples,
            self.glue_dir,
            self.seed,
        )

    def dev(self, tokenizer: Any) -> Dataset:
        """The dev set alone, tokenized by `tokenizer`."""
        return load_task_datasets(
            self.task,
            tokenizer,
            self.max_seq_length,
            max_eval_samples=self.max_eval_samples,
            glue_dir=self.glue_dir,
            with_train=False,
        )[1]
