"""`quantization`: int8 (dynamic or quantization-aware), bitsandbytes 8-bit and 4-bit.

One recipe type, several methods (`method:`):

- `int8_dynamic`: post-training int8. Every targeted `nn.Linear` becomes an `Int8Linear`
  (hf_compress/quantized_linear.py): int8 weights with one symmetric scale per output channel,
  activations quantized per input at run time. The checkpoint stores int8 tensors
  (`compression_config["int8_linear"]`, rebuild order 70) and reloads with `from_pretrained`; on
  x86 CPUs it runs an int8 GEMM (fbgemm's, or oneDNN's; which and why: quantized_linear.py).
- `qat_int8`: quantization-aware training (Jacob et al. 2018). At the start of its (training)
  stage the targeted layers become `QATLinear`s that fake-quantize weights (per channel,
  symmetric) and inputs (per tensor, EMA-tracked range) with straight-through gradients; at the
  end of the stage they are converted to the same `Int8Linear` storage, keeping the learned
  activation ranges.
- `bnb_8bit`, `bnb_4bit_nf4`, `bnb_4bit_fp4`: bitsandbytes through transformers'
  `BitsAndBytesConfig` (hf_compress/modifiers/bnb.py). The model is saved and reloaded with the
  quantization config, so the result is exactly what `from_pretrained` gives back later.

Quantization freezes the weights, so it belongs in the last stage (only LoRA adapters may train
after a bitsandbytes 4-bit stage: the `lora` modifier in bnb.py). Applied at the end of its stage
(`on_finalize`), after whatever else the stage did; list it last among the stage's modifiers.

Recipe keys: `method`, `skip_modules` (kept in full precision; default: the task head),
`fp32_fallback` and `calibration_batches` (int8_dynamic: keep the N layers whose int8 version
moves the output most in float, measured on training batches; quant_sensitivity.py),
`include_embeddings` (int8 methods: word embeddings as int8 too), `kernel` (int8 methods: the CPU
kernel the layers prefer, saved with them; quantized_linear.py), `double_quant` and
`compute_dtype` (bnb 4-bit), `ema_decay` (qat_int8), and the common `targets` / `ignore`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from ..checkpoint import record_method, record_structure, register_rebuild
from ..errors import CheckpointError, HfCompressError, RecipeError, UnsupportedModelError
from ..quantized_linear import KERNELS, Int8Linear, QATLinear, cpu_backend
from ..registry import register_modifier
from ..schema import option
from .base import Modifier, ModifierConfig, StageContext, name_matches, set_submodule, strip_wrapper_prefix
from .quant_sensitivity import calibration_inputs, layer_sensitivity, most_sensitive

METHODS = ("int8_dynamic", "qat_int8", "bnb_8bit", "bnb_4bit_nf4", "bnb_4bit_fp4")
INT8_METHODS = ("int8_dynamic", "qat_int8")
BNB_METHODS = ("bnb_8bit", "bnb_4bit_nf4", "bnb_4bit_fp4")
BNB_4BIT_METHODS = ("bnb_4bit_nf4", "bnb_4bit_fp4")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
STRUCTURE_KEY = "int8_linear"


@dataclass(frozen=True)
class QuantizationConfig(ModifierConfig):
    """Recipe keys of `quantization`."""

    method: str = option(
        "int8_dynamic",
        help="int8_dynamic (post-training int8), qat_int8 (quantization-aware training; its stage must train), "
        "bnb_8bit / bnb_4bit_nf4 / bnb_4bit_fp4 (bitsandbytes)",
        choices=METHODS,
    )
    skip_modules: tuple[str, ...] = option(
        ("classifier",),
        help="modules kept in full precision: a module name, the name of a parent (e.g. `classifier` keeps the "
        "whole head), or `re:<regex>`; default: the task head",
    )
    include_embeddings: bool = option(
        False, help="int8_dynamic / qat_int8: also store the word embeddings as int8 (one scale per row)"
    )
    double_quant: bool = option(
        False, help="bnb 4-bit: also quantize the per-block scales (QLoRA's double quantization, ~0.4 bit/weight less)"
    )
    compute_dtype: str = option(
        "float32", help="bnb 4-bit: dtype the dequantized weights are multiplied in", choices=COMPUTE_DTYPES
    )
    fp32_fallback: int = option(
        0,
        help="int8_dynamic: keep this many Linear layers in float, those whose int8 version moves the model's "
        "output most on `calibration_batches` training batches (costs one pass over them per Linear layer)",
        range=(0, None),
    )
    calibration_batches: int = option(
        8,
        help="int8_dynamic with fp32_fallback: training batches the layer sensitivities are measured on",
        range=(1, None),
    )
    kernel: str = option(
        "auto",
        help="int8 methods: the CPU kernel the int8 layers prefer, saved in the checkpoint: auto (fbgemm on x86 for "
        "dynamic inputs), fbgemm, onednn, or onednn_on_amx (oneDNN on CPUs with AMX int8 tiles, where it is faster "
        "at batch 32; auto elsewhere); a machine that cannot run it uses auto, and HF_COMPRESS_INT8_BACKEND overrides it",
        choices=KERNELS,
    )
    ema_decay: float = option(
        0.99,
        help="qat_int8: weight of the old activation range in its moving average",
        range=(0, 1),
        exclusive=(False, True),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        four_bit = self.method in BNB_4BIT_METHODS
        if self.double_quant and not four_bit:
            raise ValueError(f"double_quant applies to bnb_4bit_nf4 / bnb_4bit_fp4 only, not {self.method}")
        if self.compute_dtype != "float32" and not four_bit:
            raise ValueError(f"compute_dtype applies to bnb_4bit_nf4 / bnb_4bit_fp4 only, not {self.method}")
        if self.include_embeddings and self.method not in INT8_METHODS:
            raise ValueError(
                f"include_embeddings applies to int8_dynamic / qat_int8; with {self.method} add an "
                "`embedding_quantization` modifier before this one instead"
            )
        if self.fp32_fallback and self.method != "int8_dynamic":
            raise ValueError(
                f"fp32_fallback applies to int8_dynamic only, not {self.method}; for {self.method} list the layers "
                "to keep in float in skip_modules"
            )
        if self.calibration_batches != 8 and not self.fp32_fallback:
            raise ValueError("calibration_batches applies with fp32_fallback > 0 only")
        if self.kernel != "auto" and self.method not in INT8_METHODS:
            raise ValueError(f"kernel applies to int8_dynamic / qat_int8 only, not {self.method} (bitsandbytes has its own kernels)")
        if self.ema_decay != 0.99 and self.method != "qat_int8":
            raise ValueError(f"ema_decay applies to qat_int8 only, not {self.method}")
        if self.method in BNB_METHODS and importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError(
                f"method {self.method} needs bitsandbytes, which is not installed: `pip install bitsandbytes`"
            )

    @property
    def requires_training(self) -> bool:
        """Whether this configuration needs a training stage (qat_int8 does; the class flag of
        the same name cannot say so per method)."""
        return self.method == "qat_int8"


def is_skipped(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether module `name` or one of its parents matches `patterns` (see `name_matches`)."""
    if not patterns:
        return False
    parts = strip_wrapper_prefix(name).split(".")
    return any(name_matches(".".join(parts[: i + 1]), patterns) for i in range(len(parts)))


def quantizable_linears(model: nn.Module, config: QuantizationConfig) -> list[tuple[str, nn.Linear]]:
    """The plain `nn.Linear` layers `config` quantizes: `targets` (default: all), minus
    `skip_modules` and `ignore` (each matching the layer or any parent)."""
    chosen = []
    for name, module in model.named_modules():
        # Exactly nn.Linear: subclasses (QAT layers, other techniques' custom layers) are not
        # plain float layers and have their own conversions.
        if type(module) is not nn.Linear:
            continue
        clean = strip_wrapper_prefix(name)
        if config.targets and not is_skipped(clean, config.targets):
            continue
        if is_skipped(clean, config.skip_modules) or is_skipped(clean, config.ignore):
            continue
        chosen.append((clean, module))
    return chosen


# Checkpoint -------------------------------------------------------------------------------
def _resolve(model: PreTrainedModel, name: str) -> str | None:
    """`name` as saved, mapped onto `model` (a head model or its bare base model); None when
    the module belongs to a head this model does not have."""
    names = dict(model.named_modules())
    if name in names:
        return name
    prefix = getattr(model, "base_model_prefix", "")
    if prefix and model.base_model is model and name.startswith(prefix + "."):
        stripped = name[len(prefix) + 1 :]
        return stripped if stripped in names else None
    if prefix and model.base_model is not model and f"{prefix}.{name}" in names:
        return f"{prefix}.{name}"
    if prefix and model.base_model is model and not name.startswith(prefix + "."):
        return None  # a head layer (e.g. the classifier) loaded into the bare encoder: unused
    raise CheckpointError(
        f"compression_config[{STRUCTURE_KEY!r}] names {name!r}, which {type(model).__name__} does not have; the "
        "checkpoint does not match this model class"
    )


@register_rebuild(STRUCTURE_KEY, 70)
def rebuild_int8_linears(model: PreTrainedModel, value: dict[str, Any]) -> None:
    """Replaces the Linear layers named in `compression_config["int8_linear"]` by empty
    `Int8Linear`s of the same shape, before `from_pretrained` loads the int8 tensors into them."""
    for saved_name, spec in value.items():
        name = _resolve(model, saved_name)
        if name is None:
            continue
        current = model.get_submodule(name)
        static = spec.get("activations", "dynamic") == "static"
        kernel = spec.get("kernel", "auto")
        if kernel not in KERNELS:
            raise CheckpointError(
                f"compression_config[{STRUCTURE_KEY!r}][{saved_name!r}] asks for int8 kernel {kernel!r}, which this "
                f"version does not know ({', '.join(KERNELS)}); upgrade hf-compress"
            )
        if isinstance(current, Int8Linear):
            continue
        if not isinstance(current, nn.Linear):
            raise CheckpointError(
                f"compression_config[{STRUCTURE_KEY!r}] names {name!r}, a {type(current).__name__}, not a Linear layer; "
                "the checkpoint does not match this model"
            )
        replacement = Int8Linear(
            current.in_features,
            current.out_features,
            current.bias is not None,
            static_activations=static,
            device=current.weight.device,
        )
        replacement.kernel = kernel
        set_submodule(model, name, replacement)


def _linear_bytes(module: nn.Module) -> int:
    return sum(
        t.numel() * t.element_size() for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    )


# Modifier -----------------------------------------------------------------------------------
@register_modifier("quantization")
class QuantizationModifier(Modifier):
    """Quantizes the model's Linear layers (and optionally its word embeddings).

    All methods apply at the end of the stage. `qat_int8` also works during the stage: it needs
    the stage to train (`epochs > 0`), and distillation or pruning may train beside it.
    """

    config_class = QuantizationConfig
    freezes_weights = True
    # The conversion happens in on_finalize, after the stage's own training (which only
    # qat_int8 needs; with the other methods a training stage trains the float model first).
    trains_before_freezing = True

    def __init__(self, config: QuantizationConfig) -> None:
        super().__init__(config)
        self.config: QuantizationConfig = config
        self.report: dict[str, Any] = {}
        # name -> the QATLinear put there (another modifier of the stage may replace it later)
        self._qat_layers: dict[str, QATLinear] = {}

    # Lifecycle --------------------------------------------------------------------------------
    def on_initialize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        if self.config.method != "qat_int8":
            return None
        if ctx.stage is not None and not ctx.stage.trains:
            raise HfCompressError(
                f"quantization: method qat_int8 trains with fake quantization, but stage {ctx.stage.name!r} does not "
                "train; set its epochs > 0 (or use method int8_dynamic for one-shot quantization)"
            )
        targets = quantizable_linears(model, self.config)
        if not targets:
            raise UnsupportedModelError(self._nothing_to_quantize(model))
        self._qat_layers = {}
        for name, linear in targets:
            layer = QATLinear.from_linear(linear, self.config.ema_decay)
            set_submodule(model, name, layer)
            self._qat_layers[name] = layer
        return None

    def on_finalize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        method = self.config.method
        if method in BNB_METHODS:
            from .bnb import quantize_with_bitsandbytes

            model, self.report = quantize_with_bitsandbytes(model, self.config, ctx)
            return model
        if _already_quantized(model):
            raise UnsupportedModelError(
                "quantization: this model is already quantized with bitsandbytes; int8 quantization applies to float models"
            )
        converted = self._convert_qat(model, ctx) if method == "qat_int8" else self._quantize_dynamic(model, ctx)
        if not converted:
            raise UnsupportedModelError(self._nothing_to_quantize(model))
        existing = dict((getattr(model.config, "compression_config", None) or {}).get(STRUCTURE_KEY, {}))
        record_structure(model, STRUCTURE_KEY, {**existing, **converted})
        record_method(model, method)
        if self.config.include_embeddings:
            self._quantize_embeddings(model, ctx)
        self.report["backend"] = cpu_backend(static_activations=method == "qat_int8", kernel=self.config.kernel)
        return model

    # int8 ---------------------------------------------------------------------------------------
    def _quantize_dynamic(self, model: PreTrainedModel, ctx: StageContext) -> dict[str, dict[str, str]]:
        converted: dict[str, dict[str, str]] = {}
        before = after = 0
        targets = quantizable_linears(model, self.config)
        kept = set(self._fp32_fallback(model, [name for name, _ in targets], ctx))
        for name, linear in targets:
            if name in kept:
                continue
            quantized = Int8Linear.from_linear(linear, kernel=self.config.kernel)
            before, after = before + _linear_bytes(linear), after + _linear_bytes(quantized)
            set_submodule(model, name, quantized)
            converted[name] = self._layer_spec("dynamic")
        self.report.update(_size_report(converted, before, after))
        return converted

    def _fp32_fallback(self, model: PreTrainedModel, names: list[str], ctx: StageContext) -> list[str]:
        """The `fp32_fallback` most sensitive of `names` (quant_sensitivity.py), recorded in the report."""
        count = self.config.fp32_fallback
        if not count:
            return []
        if count >= len(names):
            raise RecipeError(
                f"quantization: fp32_fallback={count} would keep all {len(names)} quantizable Linear layers in float; "
                f"use a number below {len(names)}"
            )
        batches = calibration_inputs(ctx, self.config.calibration_batches)
        # Measured with the kernel the layers will run, since kernels round inputs differently.
        scores = layer_sensitivity(model, names, batches, partial(Int8Linear.from_linear, kernel=self.config.kernel), ctx)
        kept = most_sensitive(scores, count)
        self.report["fp32_fallback"] = {name: scores[name] for name in kept}
        self.report["sensitivity_batches"] = len(batches)
        ctx.notes.append(
            f"quantization (int8_dynamic): kept in float, as the {count} layer(s) whose int8 version moved the output "
            f"most on {len(batches)} training batches: {', '.join(kept)}"
        )
        return kept

    def _convert_qat(self, model: PreTrainedModel, ctx: StageContext) -> dict[str, dict[str, str]]:
        converted: dict[str, dict[str, str]] = {}
        before = after = 0
        unobserved = []
        modules = dict(model.named_modules())
        for name, module in modules.items():
            name = strip_wrapper_prefix(name)
            if isinstance(module, QATLinear):
                self._qat_layers.setdefault(name, module)
        for name, layer in self._qat_layers.items():
            current = modules.get(name)
            if current is None:  # removed by another modifier of the stage (e.g. layer dropping)
                continue
            # Every process tracked its own ranges; average them so all convert identically.
            ranges = ctx.all_reduce_mean(torch.stack([layer.act_min, layer.act_max]).float().clone())
            with torch.no_grad():
                layer.act_min.copy_(ranges[0])
                layer.act_max.copy_(ranges[1])
            # A modifier finalized before this one may have replaced the QAT layer by a plain
            # (e.g. narrower, pruned) Linear: it still gets the range its input was trained with.
            linear = current.to_linear() if isinstance(current, QATLinear) else current
            if type(linear) is not nn.Linear:
                continue
            if bool(layer.observed):
                quantized = Int8Linear.from_linear(linear, input_qparams=layer.input_qparams(), kernel=self.config.kernel)
                converted[name] = self._layer_spec("static")
            else:  # never ran in training (an unused layer): no learned range, quantize dynamically
                quantized = Int8Linear.from_linear(linear, kernel=self.config.kernel)
                converted[name] = self._layer_spec("dynamic")
                unobserved.append(name)
            before, after = before + _linear_bytes(linear), after + _linear_bytes(quantized)
            set_submodule(model, name, quantized)
        if unobserved:
            ctx.notes.append(
                f"quantization (qat_int8): {len(unobserved)} layer(s) saw no training input and use dynamic activation "
                f"ranges: {', '.join(unobserved)}"
            )
        self.report.update(_size_report(converted, before, after))
        return converted

    def _layer_spec(self, activations: str) -> dict[str, str]:
        """What the checkpoint records for one int8 layer (the kernel only when not `auto`, so
        checkpoints without a preference stay as they were)."""
        spec = {"activations": activations}
        if self.config.kernel != "auto":
            spec["kernel"] = self.config.kernel
        return spec

    def _quantize_embeddings(self, model: PreTrainedModel, ctx: StageContext) -> None:
        # One implementation of int8 tables in the package: the embedding_quantization technique.
        from .embedding_quantization import EmbeddingQuantizationConfig, EmbeddingQuantizationModifier

        embeddings = EmbeddingQuantizationModifier(EmbeddingQuantizationConfig(bits=8))
        embeddings.on_finalize(model, ctx)
        self.report["embeddings"] = {k: v for k, v in embeddings.summary().items() if k != "type"}

    def _nothing_to_quantize(self, model: PreTrainedModel) -> str:
        return (
            f"quantization ({self.config.method}): {type(model).__name__} has no plain nn.Linear layer left to quantize "
            f"after targets={list(self.config.targets)}, skip_modules={list(self.config.skip_modules)}, "
            f"ignore={list(self.config.ignore)}; is it already quantized?"
        )

    # Reporting ----------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return {"type": self.type_name, "method": self.config.method, **self.report}


def _already_quantized(model: PreTrainedModel) -> bool:
    return (
        getattr(model, "hf_quantizer", None) is not None
        or getattr(model.config, "quantization_config", None) is not None
    )


def _size_report(converted: dict[str, Any], before: int, after: int) -> dict[str, Any]:
    return {
        "quantized_layers": len(converted),
        "linear_bytes_before": before,
        "linear_bytes_after": after,
        "linear_compression_factor": round(before / after, 3) if after else None,
    }


# The bitsandbytes methods and the `lora` modifier live in bnb.py; importing it here registers
# `lora` whenever `quantization` is (bnb.py imports this module, so it comes last).
from . import bnb  # noqa: E402,F401
