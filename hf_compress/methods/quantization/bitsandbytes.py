"""bitsandbytes 8-bit / 4-bit quantization, and LoRA adapters that recover 4-bit accuracy (QLoRA).

`quantize_with_bitsandbytes` serves the `quantization` methods `bnb_8bit` (LLM.int8),
`bnb_4bit_nf4` and `bnb_4bit_fp4`: the model is saved and loaded back with transformers'
`BitsAndBytesConfig`, the path every bitsandbytes user takes, so the model the recipe hands on is
exactly what `from_pretrained` rebuilds from the saved checkpoint (its `config.json` carries the
`quantization_config` beside hf-compress's own `compression_config`).

The `lora` modifier trains low-rank adapters (peft) on the frozen, quantized layers (Dettmers
et al. 2023, QLoRA), optionally with the task head trained in full. The adapters become part of
the compressed checkpoint (`compression_config["lora"]`, rebuild order 80): the model class
re-injects them when it is constructed, before transformers swaps the base layers for their
bitsandbytes versions, so one `AutoModelForSequenceClassification.from_pretrained(dir)` after
`import hf_compress` gives back base and adapters, in one `model.safetensors`.

On CPU, bitsandbytes' 4-bit kernel (0.50) needs `in_features % 64 == 0` and
`out_features % 32 == 0` (its block size and packing); layers that do not fit (usually the
classifier) stay in full precision, and the run notes which.
"""

from __future__ import annotations

import importlib
import importlib.util
import tempfile
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import PreTrainedModel

from ...checkpoint.format import record_method
from ...errors import HfCompressError, UnsupportedModelError
from ..modifier import StageContext
from ..targets import strip_wrapper_prefix
from .config import BNB_4BIT_METHODS, QuantizationConfig
from .layers import Int8Linear, QATLinear
from .selection import quantizable_linears

if TYPE_CHECKING:
    from transformers import BitsAndBytesConfig


# bitsandbytes' CPU 4-bit kernel: quantization block size along the input, packing along the output.
CPU_4BIT_IN_MULTIPLE = 64

CPU_4BIT_OUT_MULTIPLE = 32

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def require_bitsandbytes() -> Any:
    """Imports bitsandbytes or raises an error that says how to install it."""
    try:
        return importlib.import_module("bitsandbytes")
    except ImportError as exc:
        raise HfCompressError(
            "bitsandbytes quantization needs the bitsandbytes package: `pip install bitsandbytes`"
        ) from exc


def _bnb_linear_types() -> tuple[type[nn.Module], ...]:
    if importlib.util.find_spec("bitsandbytes") is None:
        return ()
    bnb = require_bitsandbytes()
    return (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)


def fits_cpu_4bit(linear: nn.Linear) -> bool:
    """Whether bitsandbytes' CPU 4-bit kernel can run this layer's shape."""
    return (
        linear.in_features % CPU_4BIT_IN_MULTIPLE == 0
        and linear.out_features % CPU_4BIT_OUT_MULTIPLE == 0
    )


def bitsandbytes_config(config: QuantizationConfig, skip: list[str]) -> BitsAndBytesConfig:
    """The transformers `BitsAndBytesConfig` for a `quantization` config, keeping `skip` in full
    precision."""
    from transformers import BitsAndBytesConfig

    if config.method == "bnb_8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=config.method.rsplit("_", 1)[1],
        bnb_4bit_use_double_quant=config.double_quant,
        bnb_4bit_compute_dtype=_DTYPES[config.compute_dtype],
        llm_int8_skip_modules=skip,
    )


def _model_device(model: nn.Module) -> torch.device:
    for tensor in [*model.parameters(), *model.buffers()]:
        return tensor.device
    return torch.device("cpu")


def quantize_with_bitsandbytes(
    model: PreTrainedModel, config: QuantizationConfig, ctx: StageContext
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """Quantizes `model`'s Linear layers with bitsandbytes by saving it and loading it back.

    Returns:
        (the quantized model, a report for the stage summary).

    Raises:
        HfCompressError: bitsandbytes is not installed.
        UnsupportedModelError: the device is neither CPU nor CUDA, the model is already
            quantized, or no layer is left to quantize.
    """
    require_bitsandbytes()
    method = config.method
    device = _model_device(model)
    if device.type not in ("cpu", "cuda"):
        raise UnsupportedModelError(
            f"quantization ({method}): bitsandbytes runs on CPU and CUDA here, but the model is on "
            f"{device}; move it to one of them (or use method int8_dynamic)"
        )
    if getattr(model.config, "quantization_config", None) is not None or any(
        isinstance(m, (Int8Linear, QATLinear, *_bnb_linear_types())) for m in model.modules()
    ):
        raise UnsupportedModelError(
            f"quantization ({method}): the model is already quantized; apply one quantization "
            "method, once, last"
        )
    four_bit = method in BNB_4BIT_METHODS
    candidates = quantizable_linears(model, config)
    # The CPU kernel's shape rule is applied on CUDA too: a checkpoint made on a GPU must load and
    # run on CPU (bitsandbytes has no per-device fallback for these layers).
    unfit = [name for name, linear in candidates if four_bit and not fits_cpu_4bit(linear)]
    chosen = {name for name, _ in candidates if name not in unfit}
    if not chosen:
        detail = (
            f"; bitsandbytes' CPU 4-bit kernel needs in_features % {CPU_4BIT_IN_MULTIPLE} == 0 and "
            f"out_features % {CPU_4BIT_OUT_MULTIPLE} == 0, which {len(unfit)} candidate layer(s) "
            "miss"
            if unfit
            else ""
        )
        raise UnsupportedModelError(
            f"quantization ({method}): {type(model).__name__} has no Linear layer bitsandbytes can "
            f"quantize{detail} (targets={list(config.targets)}, "
            f"skip_modules={list(config.skip_modules)})"
        )
    if unfit:
        ctx.notes.append(
            f"quantization ({method}): kept in full precision because bitsandbytes' CPU 4-bit "
            f"kernel needs in_features % {CPU_4BIT_IN_MULTIPLE} == 0 and out_features % "
            f"{CPU_4BIT_OUT_MULTIPLE} == 0 (applied on every device, so the checkpoint also runs "
            f"on CPU): {', '.join(unfit)}"
        )
    # Every other Linear (and subclass) by full name: transformers would otherwise convert them.
    skip = sorted(
        strip_wrapper_prefix(name)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and strip_wrapper_prefix(name) not in chosen
    )
    quantization_config = bitsandbytes_config(config, skip)

    record_method(model, method)  # the compressed class, so hf-compress structures reload too
    was_training = model.training
    with tempfile.TemporaryDirectory(prefix="hf-compress-bnb-") as tmp:
        model.save_pretrained(tmp)
        quantized = type(model).from_pretrained(
            tmp,
            quantization_config=quantization_config,
            device_map={"": device},
            dtype=next(model.parameters()).dtype,
        )
    quantized.train(was_training)
    state = quantized.state_dict()
    packed_bytes = sum(
        t.numel() * t.element_size()
        for k, t in state.items()
        if any(k.startswith(n + ".") for n in chosen)
    )
    float_bytes = sum(
        sum(t.numel() * t.element_size() for t in m.parameters(recurse=False))
        for n, m in candidates
        if n in chosen
    )
    report = {
        "quantized_layers": len(chosen),
        "kept_full_precision": skip,
        "linear_bytes_before": float_bytes,
        "linear_bytes_after": packed_bytes,
        "linear_compression_factor": round(float_bytes / packed_bytes, 3) if packed_bytes else None,
        "device": str(device),
    }
    return quantized, report
