"""Tokenized GLUE datasets for training and evaluation (dynamic padding happens in the collator)."""

from __future__ import annotations

import os
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
