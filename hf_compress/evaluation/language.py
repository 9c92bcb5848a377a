"""How good and how fast a causal language model is: perplexity on held-out text, agreement with a
reference model (KL divergence, top-1 agreement), and greedy generation speed.

    model, tokenizer, dev = load_with_text_dev_set("outputs/smollm2-pruned", TextData(...))
    perplexity(model, dev)                      # {"perplexity": 21.3, "eval_tokens": ...}
    agreement(model, original, dev)             # {"kl_divergence": 0.08, "top1_agreement": 0.91}
    generation_speed(model, tokenizer)          # {"prefill_ms": ..., "tokens_per_second": ...}

Every position of a packed sequence predicts the next token, so a block of L tokens gives L - 1
predictions (its first token has none); sums are token-weighted across blocks and batches.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from tqdm.auto import tqdm

from ..errors import HfCompressError
from .measure import model_device

# A batch's float32 logits are kept under about this many bytes (a 49k-token vocabulary gives
# 25 MB of logits per 128-token sequence): larger batches are split, with identical results.
LOGITS_BUDGET_BYTES = 1 << 30


def _vocab_size(model: Any) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text_config, "vocab_size", None)


def _batches(
    dataset: Dataset, batch_size: int, models: tuple[Any, ...], progress: bool
) -> Iterator[dict[str, torch.Tensor]]:
    """Padded batches of `input_ids` / `attention_mask`, at most `batch_size` sequences and at most
    `LOGITS_BUDGET_BYTES` of logits each."""
    if batch_size < 1:
        raise HfCompressError(f"batch_size must be at least 1, got {batch_size}")
    columns = [c for c in ("input_ids", "attention_mask") if c in dataset.column_names]
    if "input_ids" not in columns:
        raise HfCompressError(
            f"the dataset has no input_ids column (columns: {', '.join(dataset.column_names)}); "
            "build it with hf_compress.data.TextData"
        )
    rows = dataset.select_columns(columns)
    longest = max((len(ids) for ids in rows["input_ids"]), default=1)
    vocab = max((_vocab_size(m) or 0 for m in models), default=0)
    if vocab:
        batch_size = max(1, min(batch_size, LOGITS_BUDGET_BYTES // (4 * vocab * longest)))
    for start in tqdm(
        range(0, len(rows), batch_size), desc="evaluating", disable=not progress, leave=False
    ):
        part = rows[start : start + batch_size]
        ids = [torch.tensor(x, dtype=torch.long) for x in part["input_ids"]]
        masks = [torch.tensor(x, dtype=torch.long) for x in part.get("attention_mask", [])] or [
            torch.ones_like(x) for x in ids
        ]
        yield {
            "input_ids": torch.nn.utils.rnn.pad_sequence(ids, batch_first=True),
            "attention_mask": torch.nn.utils.rnn.pad_sequence(masks, batch_first=True),
        }


def _next_token_logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Float32 logits of the positions that predict a next token (all but the last), checked to
    be finite."""
    device = model_device(model)
    logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
    logits = logits[:, :-1].float().cpu()
    if not torch.isfinite(logits).all():
        raise HfCompressError(
            "the model gives NaN or infinite logits, so no metric is reported; its weights are "
            "corrupt (re-download or re-save it) or overflow in this precision (evaluate in "
            "float32)"
        )
    return logits


def _predicted(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Which positions predict a real next token: both it and the next one are not padding."""
    mask = batch["attention_mask"].bool()
    return mask[:, :-1] & mask[:, 1:]


@torch.inference_mode()
def perplexity(
    model: Any, dataset: Dataset, batch_size: int = 8, progress: bool = True
) -> dict[str, float | int]:
    """Perplexity of a causal LM on packed sequences: exp of the token-weighted mean next-token
    negative log-likelihood (natural log).

    Args:
        model: a causal LM (its output has `logits` of shape batch x length x vocabulary).
        dataset: sequences with `input_ids` (and `attention_mask`), e.g. `TextData.dev(...)`.
        batch_size: sequences per forward pass (lowered when their logits would exceed ~1 GB).
        progress: show a progress bar.

    Returns:
        `perplexity`, `eval_samples` (sequences) and `eval_tokens` (predicted tokens).

    Raises:
        HfCompressError: the dataset has no sequences, or the model gives NaN / infinite logits.
    """
    model.eval()
    total_nll, tokens = 0.0, 0
    for batch in _batches(dataset, batch_size, (model,), progress):
        logits = _next_token_logits(model, batch)
        keep = _predicted(batch)
        targets = batch["input_ids"][:, 1:]
        nll = F.cross_entropy(logits[keep], targets[keep], reduction="sum")
        total_nll += float(nll)
        tokens += int(keep.sum())
    if not tokens:
        raise HfCompressError(
            "no token to predict: the dataset holds no sequence of two or more tokens"
        )
    return {
        "perplexity": math.exp(total_nll / tokens),
        "eval_samples": len(dataset),
        "eval_tokens": tokens,
    }


@torch.inference_mode()
def agreement(
    model: Any,
    reference: Any,
    dataset: Dataset,
    batch_size: int = 8,
    vocab_size: int | None = None,
    progress: bool = True,
) -> dict[str, float | int]:
    """How closely `model` follows `reference` (e.g. the model it was compressed from) on the
    same sequences: the next-token distributions' KL divergence and their argmax agreement.

    Args:
        model: the causal LM to judge.
        reference: the causal LM it is compared with (same tokenizer).
        dataset: sequences with `input_ids` (and `attention_mask`).
        batch_size: sequences per forward pass (lowered when the logits would exceed ~1 GB).
        vocab_size: compare only the first `vocab_size` logits of both models (say so when one
            of them pads its output layer beyond the tokenizer); without it, output sizes that
            differ are an error.
        progress: show a progress bar.

    Returns:
        `kl_divergence` (mean over predicted tokens of KL(reference || model), in nats),
        `top1_agreement` (fraction of positions where both argmax tokens agree), `eval_samples`
        and `eval_tokens`.

    Raises:
        HfCompressError: the models' vocabularies differ (and `vocab_size` was not given, or is
            larger than one of them), the dataset is empty, or logits are NaN / infinite.
    """
    model.eval()
    reference.eval()
    total_kl, agreeing, tokens = 0.0, 0, 0
    for batch in _batches(dataset, batch_size, (model, reference), progress):
        logits = _next_token_logits(model, batch)
        ref_logits = _next_token_logits(reference, batch)
        width, ref_width = logits.shape[-1], ref_logits.shape[-1]
        if vocab_size is None and width != ref_width:
            raise HfCompressError(
                f"the model has {width} output logits and the reference {ref_width}: they do not "
                "share a vocabulary, so their next-token distributions cannot be compared (if the "
                "first ids do match, e.g. one output layer is padded, pass vocab_size)"
            )
        if vocab_size is not None:
            if vocab_size > min(width, ref_width):
                raise HfCompressError(
                    f"vocab_size={vocab_size} exceeds the model's {width} or the reference's "
                    f"{ref_width} output logits"
                )
            logits, ref_logits = logits[..., :vocab_size], ref_logits[..., :vocab_size]
        keep = _predicted(batch)
        log_p = F.log_softmax(logits[keep], dim=-1)
        log_q = F.log_softmax(ref_logits[keep], dim=-1)
        # KL(reference || model) = sum_v q (log q - log p), per position
        total_kl += float(F.kl_div(log_p, log_q, log_target=True, reduction="sum"))
        agreeing += int((log_p.argmax(-1) == log_q.argmax(-1)).sum())
        tokens += int(keep.sum())
    if not tokens:
        raise HfCompressError(
            "no token to predict: the dataset holds no sequence of two or more tokens"
        )
    return {
        "kl_divergence": total_kl / tokens,
        "top1_agreement": agreeing / tokens,
        "eval_samples": len(dataset),
        "eval_tokens": tokens,
    }


def _prompt_ids(tokenizer: Any, prompt_tokens: int, vocab: int, seed: int) -> torch.Tensor:
    """A fixed pseudo-random prompt of ordinary (not special) tokens."""
    special = set(getattr(tokenizer, "all_special_ids", None) or [])
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (prompt_tokens * 2 + 16,), generator=generator)
    ordinary = ids[[int(i) not in special for i in ids]][:prompt_tokens]
    if len(ordinary) < prompt_tokens:
        raise HfCompressError(f"could not draw a prompt of {prompt_tokens} ordinary tokens")
    return ordinary.unsqueeze(0)


@torch.inference_mode()
def generation_speed(
    model: Any,
    tokenizer: Any,
    prompt_tokens: int = 128,
    new_tokens: int = 64,
    runs: int = 5,
    seed: int = 0,
) -> dict[str, float | int]:
    """Batch-1 speed of a causal LM: a forward over a prompt (prefill) and greedy generation with
    the KV cache. One untimed warm-up of each comes first; figures are medians of `runs`.

    Args:
        model: a causal LM with `generate`.
        tokenizer: its tokenizer (for the special tokens kept out of the prompt, and padding).
        prompt_tokens: length of the fixed pseudo-random prompt.
        new_tokens: tokens generated per run (exactly: end-of-sequence does not stop it).
        runs: timed runs of each.
        seed: the prompt's seed.

    Returns:
        `prefill_ms`, `generate_ms` (prompt + `new_tokens` greedy steps), `tokens_per_second`
        (`new_tokens` / generate time), `prompt_tokens`, `new_tokens`, `runs` and `threads`
        (`torch.get_num_threads()`).
    """
    if min(prompt_tokens, new_tokens, runs) < 1:
        raise HfCompressError("prompt_tokens, new_tokens and runs must each be at least 1")
    model.eval()
    device = model_device(model)
    vocab = _vocab_size(model) or len(tokenizer)
    input_ids = _prompt_ids(tokenizer, prompt_tokens, min(vocab, len(tokenizer)), seed).to(device)
    attention_mask = torch.ones_like(input_ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    generate_kwargs = {
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "do_sample": False,
        "pad_token_id": pad,
    }

    def prefill() -> None:
        model(input_ids=input_ids, attention_mask=attention_mask)

    def generate() -> None:
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs)
        if out.shape[-1] != prompt_tokens + new_tokens:  # a stopping rule we did not ask for
            raise HfCompressError(
                f"generate() returned {out.shape[-1] - prompt_tokens} new tokens, not {new_tokens}"
            )

    def median_ms(step: Any) -> float:
        step()  # warm-up: first-call allocations and kernel selection
        times = []
        for _ in range(runs):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)

    prefill_ms = median_ms(prefill)
    generate_ms = median_ms(generate)
    return {
        "prefill_ms": prefill_ms,
        "generate_ms": generate_ms,
        "tokens_per_second": new_tokens / (generate_ms / 1000),
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "runs": runs,
        "threads": torch.get_num_threads(),
    }


def load_causal_lm_with_tokenizer(
    name: str, load_in: str | None = None, dtype: str | None = None
) -> tuple[Any, Any]:
    """A causal LM (directory, Hub id or .gguf file) and its own tokenizer, loaded safely."""
    from ..checkpoint.loading import load_checked_tokenizer
    from ..checkpoint.sources import resolve_model_source
    from ..data.text import LANGUAGE_MODELING
    from .load import load_model_for_eval

    source = resolve_model_source(name)
    tokenizer = load_checked_tokenizer(source)
    model = load_model_for_eval(source, LANGUAGE_MODELING, load_in, dtype)
    return model, tokenizer


def load_with_text_dev_set(
    name: str, text_data: Any, load_in: str | None = None, dtype: str | None = None
) -> tuple[Any, Any, Dataset]:
    """A causal LM, its tokenizer, and `text_data`'s held-out sequences tokenized by it.

    Args:
        name: a model directory, Hub id or .gguf file.
        text_data: a `hf_compress.data.TextData`.
        load_in / dtype: as `hf_compress.evaluation.load.load_model_for_eval`.
    """
    model, tokenizer = load_causal_lm_with_tokenizer(name, load_in, dtype)
    return model, tokenizer, text_data.dev(tokenizer)
