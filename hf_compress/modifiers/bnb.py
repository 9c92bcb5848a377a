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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import PreTrainedModel

from ..checkpoint import record_method, record_structure, register_rebuild
from ..errors import CheckpointError, HfCompressError, UnsupportedModelError
from ..quantized_linear import Int8Linear, QATLinear
from ..registry import register_modifier
from ..schema import option
from .base import Modifier, ModifierConfig, StageContext, name_matches, strip_wrapper_prefix
from .quantization import BNB_4BIT_METHODS, QuantizationConfig, is_skipped, quantizable_linears

if TYPE_CHECKING:
    from transformers import BitsAndBytesConfig

# bitsandbytes' CPU 4-bit kernel: quantization block size along the input, packing along the output.
CPU_4BIT_IN_MULTIPLE = 64
CPU_4BIT_OUT_MULTIPLE = 32
LORA_KEY = "lora"
# The adapters' own Linear layers must stay float when transformers quantizes the base on load.
LORA_SKIP_PATTERNS = [r".*\.lora_A", r".*\.lora_B"]
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


def allow_resaving(model: nn.Module) -> None:
    """Lets `save_pretrained` write a model loaded from a bitsandbytes checkpoint again.

    Loading pre-quantized bitsandbytes weights, transformers (5.24) records a weight conversion
    (`Bnb4bitDeserialize` / `Bnb8bitDeserialize`) that `save_pretrained` then tries to reverse, and
    it has no reverse (`NotImplementedError`; see huggingface/transformers pull request #45743):
    the reloaded model cannot be saved, neither by the runner after a stage nor by the Trainer at
    a checkpoint. The reverse is the identity, because bitsandbytes' layers already write their
    state dict in the serialized layout the conversion reads (`weight`, `weight.absmax`, ...,
    `SCB`), so those conversions are dropped: the model then saves exactly as one that was
    quantized from float weights. Conversions that do anything else are left alone.
    """
    conversions = getattr(model, "_weight_conversions", None)
    if not conversions:
        return
    try:
        from transformers.integrations.bitsandbytes import Bnb4bitDeserialize, Bnb8bitDeserialize
    except ImportError:  # another transformers layout: nothing of this kind to drop
        return
    deserialize = (Bnb4bitDeserialize, Bnb8bitDeserialize)

    def only_deserializes(conversion: Any) -> bool:
        operations = getattr(conversion, "operations", None)
        return bool(operations) and all(isinstance(op, deserialize) for op in operations)

    model._weight_conversions = [c for c in conversions if not only_deserializes(c)]


def fits_cpu_4bit(linear: nn.Linear) -> bool:
    """Whether bitsandbytes' CPU 4-bit kernel can run this layer's shape."""
    return linear.in_features % CPU_4BIT_IN_MULTIPLE == 0 and linear.out_features % CPU_4BIT_OUT_MULTIPLE == 0


def bitsandbytes_config(config: QuantizationConfig, skip: list[str]) -> BitsAndBytesConfig:
    """The transformers `BitsAndBytesConfig` for a `quantization` config, keeping `skip` in full precision."""
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
            f"quantization ({method}): bitsandbytes runs on CPU and CUDA here, but the model is on {device}; move it "
            "to one of them (or use method int8_dynamic)"
        )
    if getattr(model.config, "quantization_config", None) is not None or any(
        isinstance(m, (Int8Linear, QATLinear, *_bnb_linear_types())) for m in model.modules()
    ):
        raise UnsupportedModelError(
            f"quantization ({method}): the model is already quantized; apply one quantization method, once, last"
        )
    four_bit = method in BNB_4BIT_METHODS
    candidates = quantizable_linears(model, config)
    # The CPU kernel's shape rule is applied on CUDA too: a checkpoint made on a GPU must load and
    # run on CPU (bitsandbytes has no per-device fallback for these layers).
    unfit = [name for name, linear in candidates if four_bit and not fits_cpu_4bit(linear)]
    chosen = {name for name, _ in candidates if name not in unfit}
    if not chosen:
        detail = (
            f"; bitsandbytes' CPU 4-bit kernel needs in_features % {CPU_4BIT_IN_MULTIPLE} == 0 and out_features % "
            f"{CPU_4BIT_OUT_MULTIPLE} == 0, which {len(unfit)} candidate layer(s) miss"
            if unfit
            else ""
        )
        raise UnsupportedModelError(
            f"quantization ({method}): {type(model).__name__} has no Linear layer bitsandbytes can quantize{detail} "
            f"(targets={list(config.targets)}, skip_modules={list(config.skip_modules)})"
        )
    if unfit:
        ctx.notes.append(
            f"quantization ({method}): kept in full precision because bitsandbytes' CPU 4-bit kernel needs in_features "
            f"% {CPU_4BIT_IN_MULTIPLE} == 0 and out_features % {CPU_4BIT_OUT_MULTIPLE} == 0 (applied on every device, "
            f"so the checkpoint also runs on CPU): {', '.join(unfit)}"
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
        t.numel() * t.element_size() for k, t in state.items() if any(k.startswith(n + ".") for n in chosen)
    )
    float_bytes = sum(
        sum(t.numel() * t.element_size() for t in m.parameters(recurse=False)) for n, m in candidates if n in chosen
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


# LoRA -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoraConfig(ModifierConfig):
    """Recipe keys of `lora`."""

    r: int = option(8, help="rank of each adapter", range=(1, 4096))
    alpha: float = option(
        16.0,
        help="scaling numerator: the adapter's output is multiplied by alpha / r",
        range=(0, None),
        exclusive=(True, False),
    )
    dropout: float = option(
        0.05, help="dropout on the adapters' input while training", range=(0, 1), exclusive=(False, True)
    )
    target_modules: tuple[str, ...] = option(
        (),
        help="layers to adapt (name or `re:<regex>`); default: every bitsandbytes-quantized layer, or every Linear "
        "of the transformer layers when the model is not quantized",
    )
    train_modules: tuple[str, ...] = option(
        ("classifier",),
        help="modules trained in full beside the adapters (they must not be quantized); default: the task head",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target_modules and self.targets:
            raise ValueError("give the layers to adapt as `target_modules` or as `targets`, not both")


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
        elif prefix and not name.startswith(prefix + ".") and getattr(model, "base_model", model) is model:
            continue  # a head layer loaded into the bare encoder
        else:
            raise CheckpointError(
                f"compression_config[{LORA_KEY!r}] names {name!r}, which {type(model).__name__} does not have; the "
                "checkpoint does not match this model class"
            )
    return resolved


def _peft_config(r: int, alpha: float, dropout: float, modules: list[str]) -> Any:
    try:
        from peft import LoraConfig as PeftLoraConfig
    except ImportError as exc:
        raise HfCompressError("LoRA adapters need the peft package: `pip install peft`") from exc
    return PeftLoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules, bias="none")


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
        if not isinstance(module, bnb.nn.Linear4bit) or not hasattr(module, "support_avx512bf16_for_cpu"):
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


@register_rebuild(LORA_KEY, 80)
def rebuild_lora(model: PreTrainedModel, value: dict[str, Any]) -> None:
    """Re-injects the LoRA adapters named in `compression_config["lora"]` (after every other
    structure, before transformers quantizes the base layers and loads the weights)."""
    modules = _resolve_names(model, list(value["modules"]))
    if modules:
        _inject(model, int(value["r"]), float(value["alpha"]), float(value.get("dropout", 0.0)), modules)


def _skip_lora_layers_on_load(model: PreTrainedModel) -> None:
    """Adds the adapters' layers to the saved quantization config's skip list, so reloading
    quantizes the base layers only."""
    quantization_config = getattr(model.config, "quantization_config", None)
    if quantization_config is None:
        return
    if isinstance(quantization_config, dict):
        skip = list(quantization_config.get("llm_int8_skip_modules") or [])
        quantization_config["llm_int8_skip_modules"] = skip + [p for p in LORA_SKIP_PATTERNS if p not in skip]
    else:
        skip = list(quantization_config.llm_int8_skip_modules or [])
        quantization_config.llm_int8_skip_modules = skip + [p for p in LORA_SKIP_PATTERNS if p not in skip]


@register_modifier("lora")
class LoraModifier(Modifier):
    """Trains LoRA adapters (and, in full, the task head) over frozen, possibly 4-bit, weights.

    The one kind of training allowed after a stage that froze the weights by quantizing them.
    """

    config_class = LoraConfig
    requires_training = True
    allows_training_after_freeze = True

    def __init__(self, config: LoraConfig) -> None:
        super().__init__(config)
        self.config: LoraConfig = config
        self.modules: list[str] = []
        self.trained_in_full: list[str] = []
        self.trainable_parameters = 0

    def _default_target(self, model: PreTrainedModel) -> Any:
        quantized_types = _bnb_linear_types()
        if quantized_types and any(isinstance(m, quantized_types) for m in model.modules()):
            return lambda name, module: isinstance(module, quantized_types)
        layer_list = None
        try:
            from ..adapters import get_adapter

            adapter = get_adapter(model)
            prefix = adapter.layer_prefix(model, 0).rpartition(".")[0]
            layer_list = prefix + "."
        except UnsupportedModelError:
            pass
        # Int8Linear is included so that LoRA after int8 quantization gets a clear refusal.
        return lambda name, module: (
            (type(module) is nn.Linear or isinstance(module, Int8Linear))
            and (layer_list is None or name.startswith(layer_list))
        )

    def on_initialize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        patterns = self.config.target_modules or self.config.targets
        default = self._default_target(model)
        adaptable = (nn.Linear, *_bnb_linear_types())
        chosen, refused = [], []
        for name, module in model.named_modules():
            clean = strip_wrapper_prefix(name)
            if is_skipped(clean, self.config.train_modules) or is_skipped(clean, self.config.ignore):
                continue
            wanted = is_skipped(clean, patterns) if patterns else default(clean, module)
            if not wanted:
                continue
            if isinstance(module, Int8Linear):
                refused.append(clean)
            elif isinstance(module, adaptable):
                chosen.append(clean)
        if refused:
            raise UnsupportedModelError(
                f"lora: {len(refused)} target layer(s) are int8 (int8_dynamic / qat_int8), which cannot carry trainable "
                f"adapters (e.g. {refused[0]}); use a bnb_4bit_* or bnb_8bit quantization stage before LoRA"
            )
        if not chosen:
            raise UnsupportedModelError(
                f"lora: no Linear layer to adapt in {type(model).__name__} (target_modules={list(patterns)}, "
                f"train_modules={list(self.config.train_modules)})"
            )
        c = self.config
        _hold_cpu_4bit_layout(model, True)
        _inject(model, c.r, c.alpha, c.dropout, chosen)
        model.requires_grad_(False)
        for name, param in model.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                param.requires_grad_(True)
        trained_in_full = []
        for name, module in model.named_modules():
            clean = strip_wrapper_prefix(name)
            if not self.config.train_modules or not name_matches(clean, self.config.train_modules):
                continue
            if any(isinstance(m, (Int8Linear, *_bnb_linear_types())) for m in module.modules()):
                raise UnsupportedModelError(
                    f"lora: train_modules names {clean!r}, which is quantized and cannot be trained in full; keep it in "
                    "full precision with the quantization's skip_modules (the default keeps the classifier)"
                )
            module.requires_grad_(True)
            trained_in_full.append(clean)
        self.modules, self.trained_in_full = chosen, trained_in_full
        self.trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return None

    def on_finalize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        c = self.config
        record_structure(model, LORA_KEY, {"r": c.r, "alpha": c.alpha, "dropout": c.dropout, "modules": self.modules})
        record_method(model, "lora")
        _skip_lora_layers_on_load(model)
        _hold_cpu_4bit_layout(model, False)
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "r": self.config.r,
            "alpha": self.config.alpha,
            "adapted_layers": len(self.modules),
            "trained_in_full": self.trained_in_full,
            "trainable_parameters": self.trainable_parameters,
        }
