"""Counting the token ids a text uses, and how a pruned tokenizer re-splits held-out text."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ...errors import DataError
from .tokenizer import PrunedTokenizer

Text = str | tuple[str, str] | Sequence[str]

_ENCODE_BATCH = 2048


# Counting ----------------------------------------------------------------------------------
def _flatten(texts: Iterable[Text]) -> Iterator[str]:
    for text in texts:
        if isinstance(text, str):
            yield text
        else:  # a sentence pair: its tokens are those of both sentences
            yield from (t for t in text if t)


def _batches(texts: Iterable[Text], size: int = _ENCODE_BATCH) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in _flatten(texts):
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def count_token_ids(
    tokenizer: Any, texts: Iterable[Text], counts: torch.Tensor | None = None
) -> torch.Tensor:
    """How often each token id occurs in `texts` (no special tokens added, no truncation).

    Args:
        tokenizer: a transformers tokenizer.
        texts: strings or (text, text) pairs.
        counts: a counts vector to add to (length at least `len(tokenizer)`).

    Returns:
        An int64 vector of length `len(tokenizer)` (or that of `counts`).
    """
    if counts is None:
        counts = torch.zeros(len(tokenizer), dtype=torch.long)
    for batch in _batches(texts):
        encoded = tokenizer(batch, add_special_tokens=False, truncation=False, padding=False)[
            "input_ids"
        ]
        flat = torch.tensor([i for ids in encoded for i in ids], dtype=torch.long)
        if flat.numel():
            counts += torch.bincount(flat, minlength=counts.numel())[: counts.numel()]
    return counts


def read_text_files(paths: Iterable[str | Path]) -> Iterator[str]:
    """Lines of UTF-8 text files, one text per non-empty line.

    Raises:
        DataError: a file is missing or not UTF-8.
    """
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise DataError(
                f"vocab_pruning.extra_text_files: {path} not found (paths are relative to the "
                "working directory)"
            )
        try:
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        yield line.rstrip("\n")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"vocab_pruning.extra_text_files: {path} is not UTF-8 text ({exc})"
            ) from exc


# Reporting ------------------------------------------------------------------------------------
def dev_token_rates(
    old_tokenizer: Any, pruned: PrunedTokenizer, texts: Iterable[Text]
) -> dict[str, Any]:
    """How the pruned vocabulary covers held-out text.

    Returns:
        `dev_tokens` (old tokens counted), `dev_oov_rate` (share of old tokens not kept),
        `dev_unknown_rate` (share of new tokens that are the unknown token) and
        `dev_unknown_rate_before` (the same share under the old tokenizer).
    """
    texts = list(_flatten(texts))
    old_unk = getattr(old_tokenizer, "unk_token_id", None)
    old_total = old_missing = old_unknown = new_total = new_unknown = 0
    for batch in _batches(texts):
        for ids in old_tokenizer(batch, add_special_tokens=False)["input_ids"]:
            old_total += len(ids)
            old_missing += sum(1 for i in ids if i not in pruned.old_to_new)
            old_unknown += sum(1 for i in ids if i == old_unk) if old_unk is not None else 0
        for ids in pruned.tokenizer(batch, add_special_tokens=False)["input_ids"]:
            new_total += len(ids)
            new_unknown += (
                sum(1 for i in ids if i == pruned.unk_id) if pruned.unk_id is not None else 0
            )
    return {
        "dev_texts": len(texts),
        "dev_tokens": old_total,
        "dev_oov_rate": old_missing / old_total if old_total else 0.0,
        "dev_unknown_rate": new_unknown / new_total if new_total else 0.0,
        "dev_unknown_rate_before": old_unknown / old_total if old_total else 0.0,
    }
