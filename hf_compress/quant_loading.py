"""Loading any model for evaluation, optionally quantized on load with bitsandbytes."""

from __future__ import annotations

from typing import Any

from .data.glue_tasks import GlueTask
from .errors import HfCompressError
from .models import load_for_task


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
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type, llm_int8_skip_modules=skip)


def load_model_for_eval(source: str, task: GlueTask, load_in: str | None = None) -> Any:
    """The model for `task`, quantized on load when `load_in` is given (classifier and pooler kept
    in full precision: the classifier's few outputs break bitsandbytes' 4-bit CPU kernel).
    A directory written by `hf-compress export` runs in ONNX Runtime."""
    from .export import is_onnx_export, load_onnx_for_task

    if is_onnx_export(source):
        if load_in is not None:
            raise HfCompressError(f"{source} is an ONNX export; --load-in (bitsandbytes) applies to PyTorch checkpoints only")
        return load_onnx_for_task(source, task)
    if load_in is None:
        return load_for_task(source, task)
    return load_for_task(source, task, quantization_config=bnb_config(load_in))
