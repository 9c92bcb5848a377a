"""Batch-1 speed of causal LMs compared with each other: prefill and greedy generation timed
round-robin (as `compare_latency` times encoders), so the ratios hold on a busy machine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import HfCompressError
from .language import _prompt_ids, _vocab_size
from .measure import compare_round_robin, model_device


@torch.inference_mode()
def compare_generation_speed(
    models: dict[str, Any],
    tokenizer: Any,
    prompt_tokens: int = 128,
    new_tokens: int = 64,
    runs: int = 5,
    warmup: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Times each model's prefill (one forward over a `prompt_tokens` prompt) and its greedy
    generation of exactly `new_tokens` tokens with the KV cache, round-robin, and compares every
    model with the first.

    Returns:
        `compare_round_robin`'s result over the measures `prefill` and `generate`, plus
        `tokens_per_second` per model (`new_tokens` over the median generation time, prompt
        included), `prompt_tokens`, `new_tokens` and `threads`.
    """
    if min(prompt_tokens, new_tokens, runs) < 1:
        raise HfCompressError("prompt_tokens, new_tokens and runs must each be at least 1")
    vocab = min(min(_vocab_size(m) or len(tokenizer) for m in models.values()), len(tokenizer))
    prompt = _prompt_ids(tokenizer, prompt_tokens, vocab, seed=0)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def prefill(model: Any) -> Callable[[], Any]:
        ids = prompt.to(model_device(model))
        return lambda: model(input_ids=ids, attention_mask=torch.ones_like(ids))

    def generate(model: Any) -> Callable[[], Any]:
        ids = prompt.to(model_device(model))

        def run() -> None:
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
            if out.shape[-1] != prompt_tokens + new_tokens:
                raise HfCompressError(
                    f"generate() returned {out.shape[-1] - prompt_tokens} new tokens, not "
                    f"{new_tokens}"
                )

        return run

    for model in models.values():
        model.eval()
    steps = {
        "prefill": {name: prefill(model) for name, model in models.items()},
        "generate": {name: generate(model) for name, model in models.items()},
    }
    timing = compare_round_robin(steps, runs, warmup, progress)
    timing["tokens_per_second"] = {
        name: new_tokens / (per["generate"]["median"] / 1000)
        for name, per in timing["latency_ms"].items()
    }
    timing.update(
        prompt_tokens=prompt_tokens, new_tokens=new_tokens, threads=torch.get_num_threads()
    )
    return timing
