"""Loading any model for evaluation, optionally quantized on load with bitsandbytes."""

from __future__ import annotations

from typing import Any

from ..checkpoint.loading import load_for_task
from ..data.glue_tasks import GlueTask
from ..data.text import LanguageModelingTask
from ..errors import HfCompressError
from .precision import check_dtype


def bnb_config(load_in: str, skip_modules: list[str] | None = None) -> Any:
    """A `BitsAndBytesConfig` for "8bit", "4bit-nf4" or "4bit-fp4"."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise HfCompressError("bitsandbytes is not installed: `pip install bitsandbytes`") from exc
    from transformers import BitsAndBytesConfig

    skip = skip_modules if skip_modules is not None else ["classifier", "pooler"]
    if load_in == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    quant_type = load_in.split("-", 1)[1]
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=quant_type, llm_int8_skip_modules=skip
    )


def load_model_for_eval(
    source: str,
    task: GlueTask | LanguageModelingTask | None,
    load_in: str | None = None,
    dtype: str | None = None,
) -> Any:
    """The model for `task` (`None`: the head it was saved with; the causal-LM task: a causal LM),
    quantized on load when `load_in` is given (classifier and pooler kept in full precision: the
    classifier's few outputs break bitsandbytes' 4-bit CPU kernel; a language model's output layer
    likewise), computing in `dtype` ("float32", "bfloat16", "float16") when given. A directory
    written by `hf-compress export` runs in ONNX Runtime or OpenVINO (GLUE tasks).

    `dtype` is `from_pretrained(..., dtype=...)`: float weights are cast, stored integer codes
    (int8 layers, codebooks, sparse bitmasks) keep their dtype and compute in `dtype`. bfloat16
    roughly halves CPU latency on CPUs with AVX-512 BF16 or AMX (see BENCHMARKS.md); float16 is
    for GPUs (slow on most CPUs).

    Raises:
        HfCompressError: an unknown `dtype`; `dtype` with an export or a bitsandbytes model
            (their compute precision is fixed when they are made).
    """
    import torch

    from ..checkpoint.export import FORMAT_NAMES, export_format, load_export, load_export_for_task
    from ..checkpoint.loading import load_checked_config, load_compressed

    causal_lm = task is not None and task.name == "causal_lm"
    if dtype is not None:
        check_dtype(dtype)
    cast = dtype not in (None, "float32")
    exported = export_format(source)
    if exported is not None:
        kind = f"an {FORMAT_NAMES[exported]} export"
        if load_in is not None:
            raise HfCompressError(
                f"{source} is {kind}; --load-in (bitsandbytes) applies to PyTorch checkpoints only"
            )
        if cast:
            raise HfCompressError(
                f"{source} is {kind}: its precision was fixed by `hf-compress export`; "
                "--dtype applies to PyTorch checkpoints"
            )
        if causal_lm:
            raise HfCompressError(
                f"{source} is {kind} of a classifier; evaluate a causal LM from its PyTorch "
                "checkpoint"
            )
        if task is None:
            return load_export(source)
        return load_export_for_task(source, task)
    kwargs: dict[str, Any] = {}
    if cast:
        if (
            load_in is not None
            or getattr(load_checked_config(source), "quantization_config", None) is not None
        ):
            # transformers keeps some modules of a bitsandbytes model in float32 under
            # dtype=bfloat16 and the CPU forward then fails on mixed dtypes; bitsandbytes sets its
            # compute dtype itself (recipe key `compute_dtype`).
            raise HfCompressError(
                f"--dtype {dtype} cannot be combined with bitsandbytes quantization ({source}); "
                "set the compute dtype in the recipe's quantization step (compute_dtype) instead"
            )
        kwargs["dtype"] = getattr(torch, dtype)
    if load_in is not None:
        kwargs["quantization_config"] = bnb_config(load_in, ["lm_head"] if causal_lm else None)
    if causal_lm:
        return load_compressed(source, "causal-lm", **kwargs)
    if task is None:
        return load_compressed(source, "auto", **kwargs)
    return load_for_task(source, task, **kwargs)
