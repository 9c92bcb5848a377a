"""The causal language-modelling task: plain text packed into fixed-length token blocks.

    data = TextData(text_files=("corpus.txt",), max_seq_length=256, max_eval_samples=64)
    train, dev = data.train_and_dev(tokenizer)      # columns: input_ids, attention_mask, labels

Text comes from UTF-8 files (one text per line, blank lines skipped; `.jsonl`: one JSON object per
line with a `text` field) or a dataset (`datasets.load_dataset`: a Hub id or a local path). The
texts are tokenized, joined with the tokenizer's EOS token between texts and cut into blocks of
exactly `max_seq_length` tokens (the last partial block is dropped), as Hugging Face's causal-LM
examples do. `labels` equal `input_ids`: the model shifts them to predict each next token.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from ..errors import DataError

JSONL_SUFFIXES = (".jsonl", ".ndjson")
# Dataset splits used as held-out text when a dataset has one, in order of preference.
HELD_OUT_SPLITS = ("validation", "test")
_TOKENIZE_CHUNK = 1000
# `datasets` builders of single data files given as data.dataset, by suffix (else the suffix).
_FILE_BUILDERS = {".jsonl": "json", ".ndjson": "json", ".txt": "text", ".tsv": "csv"}


@dataclass(frozen=True)
class LanguageModelingTask:
    """The causal-LM task, with the attribute names of `GlueTask` so code written for GLUE tasks
    can hold it (its metric is perplexity, lower is better; it has no labels)."""

    name: str = "causal_lm"
    main_metric: str = "perplexity"
    metrics: tuple[str, ...] = ("perplexity",)
    lower_is_better: bool = True
    is_regression: bool = False
    num_labels: int | None = None
    directory: str = "causal_lm"
    labels: tuple[str, ...] = ()
    text_fields: tuple[str, ...] = ("text",)


LANGUAGE_MODELING = LanguageModelingTask()


def read_texts(path: str | os.PathLike, text_field: str = "text") -> list[str]:
    """The texts of one file: its non-blank lines, or the `text_field` of each `.jsonl` line.

    Raises:
        DataError: the file is missing, not UTF-8, holds no text, or a `.jsonl` line is not a JSON
            object with a string `text_field` (one line naming the file, the line and the fix).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(
            f"{path}: no such text file; check the path (data.text_files / --text-file)"
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    jsonl = path.suffix.lower() in JSONL_SUFFIXES
    texts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if not jsonl:
            texts.append(line)
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise DataError(
                f"{path}:{number}: not a JSON object ({exc}); write one JSON object per line, "
                f'e.g. {{"{text_field}": "..."}}'
            ) from exc
        text = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise DataError(
                f"{path}:{number}: no {text_field!r} string field; write one JSON object per "
                f'line with the text under "{text_field}"'
            )
        if text.strip():
            texts.append(text)
    if not texts:
        raise DataError(
            f"{path}: empty (no non-blank lines); give a UTF-8 file with one text per line"
        )
    return texts


def load_text_dataset(name: str, text_column: str = "text") -> dict[str, list[str]]:
    """The texts of every split of a dataset, by split name.

    Args:
        name: a Hub id or a local path `datasets.load_dataset` reads (a folder of data files, a
            data file, or a folder written by `save_to_disk`).
        text_column: the column that holds the text.

    Raises:
        DataError: the dataset cannot be loaded, or has no `text_column`.
    """
    import datasets

    path = Path(name).expanduser()
    try:
        if path.is_dir() and any(
            (path / marker).is_file() for marker in ("dataset_dict.json", "state.json")
        ):
            loaded = datasets.load_from_disk(str(path))
        elif path.is_file():
            suffix = path.suffix.lower()
            builder = _FILE_BUILDERS.get(suffix, suffix[1:])
            loaded = datasets.load_dataset(builder, data_files=str(path))
        else:
            loaded = datasets.load_dataset(name)
    except Exception as exc:  # noqa: BLE001  (datasets raises many kinds: offline, missing, bad)
        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        raise DataError(
            f"dataset {name!r} cannot be loaded ({type(exc).__name__}: {first[:200]}); give a Hub "
            "id reachable from here or a local path (data.dataset / --dataset)"
        ) from exc
    splits = {"train": loaded} if isinstance(loaded, Dataset) else dict(loaded)
    texts = {}
    for split, part in splits.items():
        if text_column not in part.column_names:
            raise DataError(
                f"dataset {name!r} split {split!r} has no column {text_column!r} (columns: "
                f"{', '.join(part.column_names)}); set data.text_column"
            )
        texts[split] = [t for t in part[text_column] if isinstance(t, str) and t.strip()]
    return texts


def token_stream(texts: Sequence[str], tokenizer: Any) -> np.ndarray:
    """The texts tokenized (no special tokens) and joined with EOS between texts, as one array."""
    eos = tokenizer.eos_token_id
    if eos is None:
        eos = getattr(tokenizer, "sep_token_id", None)
    if eos is None:
        raise DataError(
            f"the tokenizer ({type(tokenizer).__name__}) has no EOS token to separate texts; set "
            "tokenizer.eos_token (and save it beside the model)"
        )
    pieces: list[np.ndarray] = []
    separator = np.array([eos], dtype=np.int64)
    for start in range(0, len(texts), _TOKENIZE_CHUNK):
        chunk = list(texts[start : start + _TOKENIZE_CHUNK])
        encoded = tokenizer(chunk, add_special_tokens=False, verbose=False)["input_ids"]
        for ids in encoded:
            if pieces:
                pieces.append(separator)
            pieces.append(np.asarray(ids, dtype=np.int64))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


def pack_blocks(ids: np.ndarray, block_size: int) -> np.ndarray:
    """`ids` cut into rows of exactly `block_size` tokens (the last partial block dropped)."""
    count = len(ids) // block_size
    return ids[: count * block_size].reshape(count, block_size)


def blocks_dataset(blocks: np.ndarray) -> Dataset:
    """A dataset of packed blocks: `input_ids`, `attention_mask` (all ones), `labels`."""
    rows = blocks.tolist()
    return Dataset.from_dict(
        {
            "input_ids": rows,
            "attention_mask": np.ones_like(blocks).tolist(),
            "labels": rows,
        }
    )


@dataclass(frozen=True)
class TextData:
    """Which text a causal-LM run uses, and how it becomes sequences (the `TaskData` interface).

    Args:
        text_files: training text files (UTF-8, one text per line; `.jsonl` with a `text_column`
            field per line).
        eval_text_files: held-out text files; when empty, the held-out text is the dataset's
            validation (else test) split, else the last `eval_fraction` of the training text.
        dataset: a Hub id or local path for `datasets.load_dataset`, used with or instead of
            `text_files` (its `train` split, or its only split, is training text).
        text_column: the text field of `.jsonl` lines and dataset rows.
        max_seq_length: tokens per packed sequence.
        max_train_samples: a seeded random choice of this many training sequences (None: all).
        max_eval_samples: the first this many held-out sequences (None: all).
        eval_fraction: the share of the training text's sequences held out (its last ones, so
            they never overlap training) when no held-out text is given otherwise.
        seed: the seed of the training sample.
    """

    text_files: tuple[str, ...] = ()
    eval_text_files: tuple[str, ...] = ()
    dataset: str | None = None
    text_column: str = "text"
    max_seq_length: int = 128
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    eval_fraction: float = 0.1
    seed: int = 42

    def __post_init__(self) -> None:
        # Lists are accepted and stored as tuples, so the object stays hashable and immutable.
        object.__setattr__(self, "text_files", tuple(str(f) for f in self.text_files))
        object.__setattr__(self, "eval_text_files", tuple(str(f) for f in self.eval_text_files))
        if self.max_seq_length < 2:
            raise DataError(f"max_seq_length must be at least 2, got {self.max_seq_length}")
        if not 0 < self.eval_fraction < 1:
            raise DataError(
                f"eval_fraction must lie strictly between 0 and 1: {self.eval_fraction}"
            )

    @property
    def task(self) -> LanguageModelingTask:
        return LANGUAGE_MODELING

    @classmethod
    def from_config(cls, data: Any, seed: int = 42) -> TextData:
        """From a recipe's `data` section (`hf_compress.recipe.fields.DataConfig`)."""
        return cls(
            text_files=tuple(data.text_files),
            eval_text_files=tuple(data.eval_text_files),
            dataset=data.dataset,
            text_column=data.text_column,
            max_seq_length=data.max_seq_length,
            max_train_samples=data.max_train_samples,
            max_eval_samples=data.max_eval_samples,
            eval_fraction=data.eval_fraction,
            seed=seed,
        )

    # What the text is ---------------------------------------------------------------------
    def _sources(self) -> tuple[list[tuple[str, list[str]]], list[tuple[str, list[str]]]]:
        """(training, held-out) texts, each as (where they came from, texts) pairs."""
        train = [(f, read_texts(f, self.text_column)) for f in self.text_files]
        held_out = [(f, read_texts(f, self.text_column)) for f in self.eval_text_files]
        if self.dataset is not None:
            splits = load_text_dataset(self.dataset, self.text_column)
            train_split = "train" if "train" in splits else next(iter(splits))
            train.append((f"{self.dataset} ({train_split})", splits[train_split]))
            if not held_out:
                split = next((s for s in HELD_OUT_SPLITS if s in splits and s != train_split), None)
                if split is not None:
                    held_out.append((f"{self.dataset} ({split})", splits[split]))
        return train, held_out

    def _blocks(self, sources: list[tuple[str, list[str]]], tokenizer: Any) -> np.ndarray:
        where = ", ".join(name for name, _ in sources)
        texts = [text for _, part in sources for text in part]
        ids = token_stream(texts, tokenizer)
        blocks = pack_blocks(ids, self.max_seq_length)
        if not len(blocks):
            raise DataError(
                f"{where}: {len(ids)} tokens make no sequence of max_seq_length="
                f"{self.max_seq_length} tokens; give more text or a smaller max_seq_length"
            )
        return blocks

    def _split(self, tokenizer: Any, with_train: bool) -> tuple[np.ndarray | None, np.ndarray]:
        train_sources, held_out_sources = self._sources()
        if held_out_sources:
            if with_train and not train_sources:
                raise DataError(
                    "no training text: set data.text_files or data.dataset (eval_text_files are "
                    "held out only)"
                )
            train = self._blocks(train_sources, tokenizer) if with_train else None
            return train, self._blocks(held_out_sources, tokenizer)
        if not train_sources:
            raise DataError(
                "no text: set data.text_files or data.dataset (or eval_text_files / --text-file "
                "for an evaluation)"
            )
        blocks = self._blocks(train_sources, tokenizer)
        held = max(1, math.ceil(self.eval_fraction * len(blocks)))
        if with_train and held >= len(blocks):
            where = ", ".join(name for name, _ in train_sources)
            raise DataError(
                f"{where}: {len(blocks)} sequence(s) of {self.max_seq_length} tokens cannot be "
                "split into training and held-out text; give more text, a smaller "
                "max_seq_length, or data.eval_text_files"
            )
        return blocks[: len(blocks) - held], blocks[len(blocks) - held :]

    # The TaskData interface ---------------------------------------------------------------
    def _dev_dataset(self, blocks: np.ndarray) -> Dataset:
        if self.max_eval_samples is not None:
            blocks = blocks[: self.max_eval_samples]
        return blocks_dataset(blocks)

    def train_and_dev(self, tokenizer: Any) -> tuple[Dataset, Dataset]:
        """The training sequences and the held-out sequences, tokenized by `tokenizer`.

        Raises:
            DataError: a file is missing, empty or malformed, or the text makes no sequence.
        """
        train_blocks, dev_blocks = self._split(tokenizer, with_train=True)
        train = blocks_dataset(train_blocks)
        if self.max_train_samples is not None and self.max_train_samples < len(train):
            train = train.shuffle(seed=self.seed).select(range(self.max_train_samples))
        return train, self._dev_dataset(dev_blocks)

    def dev(self, tokenizer: Any) -> Dataset:
        """The held-out sequences alone (the same ones `train_and_dev` returns)."""
        return self._dev_dataset(self._split(tokenizer, with_train=False)[1])
