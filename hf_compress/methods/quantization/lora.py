"""LoRA adapters (peft) injected into a quantized model, so training recovers accuracy while the
quantized weights stay frozen."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from torch import nn

from ...errors import CheckpointError, HfCompressError
from .bitsandbytes import require_bitsandbytes

LORA_KEY = "lora"

# The adapters' own Linear layers must stay float when transformers quantizes the base on load.
LORA_SKIP_PATTERNS = [r".*\.lora_A", r".*\.lora_B"]


def _resolve_names(model: nn.Module, names: list[str]) -> list[str]:
    """Saved module names mapped onto `model` (a head model or its bare encoder)."""
    present = {name for name, _ in model.named_modules()}
    prefix = getattr(model, "base_model_prefix", "")
    resolved = []
    for name in names:
        if name in present:
            resolved.append(name)
        elif prefix and name.startswith(prefix + ".") and name[len(prefix) + 1 :] in present:
            resolved.append(name[len(prefix) + 1 :])
        elif prefix and f"{prefix}.{name}" in present:
            resolved.append(f"{prefix}.{name}")
        elif (
            prefix
            and not name.startswith(prefix + ".")
            and getattr(model, "base_model", model) is model
        ):
            continue  # a head layer loaded into the bare encoder
        else:
            raise CheckpointError(
                f"compression_config[{LORA_KEY!r}] names {name!r}, which {type(model).__name__} "
                "does not have; the checkpoint does not match this model class"
            )
    return resolved


def _peft_config(r: int, alpha: float, dropout: float, modules: list[str]) -> Any:
    try:
        from peft import LoraConfig as PeftLoraConfig
    except ImportError as exc:
        raise HfCompressError("LoRA adapters need the peft package: `pip install peft`") from exc
    return PeftLoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules, bias="none"
    )


def _inject(model: nn.Module, r: int, alpha: float, dropout: float, modules: list[str]) -> None:
    from peft import inject_adapter_in_model

    inject_adapter_in_model(_peft_config(r, alpha, dropout, modules), model)


def _hold_cpu_4bit_layout(model: nn.Module, hold: bool) -> None:
    """Keeps bitsandbytes' 4-bit weights in their trainable layout while adapters train (or lets
    them go back to the inference layout).

    On CPU, bitsandbytes 0.50 repacks a 4-bit weight for its AVX512-BF16 kernel at the first
    forward in eval mode without gradients, and from then on uses that kernel in training mode
    too, which has no backward (and fails on the bias). An evaluation before or during the LoRA
    stage would do that, so for the stage the repacking is switched off and already-repacked
    weights are converted back. Uses bitsandbytes internals, guarded so newer versions that
    change them only lose this safeguard.
    """
    if importlib.util.find_spec("bitsandbytes") is None:
        return
    bnb = require_bitsandbytes()
    inverse = getattr(bnb.functional, "_convert_weight_packed_for_cpu_inverse", None)
    for module in model.modules():
        if not isinstance(module, bnb.nn.Linear4bit) or not hasattr(
            module, "support_avx512bf16_for_cpu"
        ):
            continue
        if hold:
            module._hf_compress_cpu_packing = module.support_avx512bf16_for_cpu
            module.support_avx512bf16_for_cpu = False
            state = getattr(module.weight, "quant_state", None)
            if inverse is not None and getattr(state, "packing_format_for_cpu", False):
                module.weight.data, module.weight.quant_state = inverse(module.weight.data, state)
        elif hasattr(module, "_hf_compress_cpu_packing"):
            module.support_avx512bf16_for_cpu = module._hf_compress_cpu_packing
            del module._hf_compress_cpu_packing
