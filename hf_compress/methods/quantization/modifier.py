"""`quantization`: int8 (dynamic or quantization-aware), bitsandbytes 8-bit and 4-bit.

One recipe type, several methods (`method:`):

- `int8_dynamic`: post-training int8. Every targeted `nn.Linear` becomes an `Int8Linear`
  (hf_compress/methods/quantization/layers.py): int8 weights with one symmetric scale per output
  channel, activations quantized per input at run time. The checkpoint stores int8 tensors
  (`compression_config["int8_linear"]`, rebuild order 70) and reloads with `from_pretrained`; on
  x86 CPUs it runs an int8 GEMM (fbgemm's, or oneDNN's; which and why: layers.py).
- `qat_int8`: quantization-aware training (Jacob et al. 2018). At the start of its (training)
  stage the targeted layers become `QATLinear`s that fake-quantize weights (per channel,
  symmetric) and inputs (per tensor, EMA-tracked range) with straight-through gradients; at the
  end of the stage they are converted to the same `Int8Linear` storage, keeping the learned
  activation ranges.
- `bnb_8bit`, `bnb_4bit_nf4`, `bnb_4bit_fp4`: bitsandbytes through transformers'
  `BitsAndBytesConfig` (hf_compress/methods/quantization/bitsandbytes.py). The model is saved and
  reloaded with the quantization config, so the result is exactly what `from_pretrained` gives back
  later.

Quantization freezes the weights, so it belongs in the last stage (only LoRA adapters may train
after a bitsandbytes 4-bit stage: the `lora` modifier). Applied at the end of its stage
(`on_finalize`), after whatever else the stage did; list it last among the stage's modifiers.

Recipe keys: `method`, `skip_modules` (kept in full precision; default: the task head),
`fp32_fallback` and `calibration_batches` (int8_dynamic: keep the N layers whose int8 version
moves the output most in float, measured on training batches; sensitivity.py),
`include_embeddings` (int8 methods: word embeddings as int8 too), `kernel` (int8 methods: the CPU
kernel the layers prefer, saved with them; layers.py), `double_quant` and
`compute_dtype` (bnb 4-bit), `ema_decay` (qat_int8), and the common `targets` / `ignore`.

`embedding_quantization` replaces each targeted `nn.Embedding` by a `QuantizedEmbedding` (8 bits
with one symmetric scale per row or group; 4 bits packed two per byte with a scale and offset per
row or group). In small encoders the word embeddings are about half the checkpoint, and Linear
quantization leaves them in float. Hand-written because no library fits both needs: torchao's
embedding configs reload only through `TorchAoConfig` (the model's one `quantization_config`
slot), and bitsandbytes' embedding classes keep state that transformers restores only for Linear
layers.

`lora` trains low-rank adapters (peft) on the frozen quantized layers (Dettmers et al. 2023,
QLoRA), optionally with the task head trained in full; the adapters are part of the checkpoint
(`compression_config["lora"]`), re-injected when the model class is constructed.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from ...checkpoint.format import get_structure, record_method, record_structure
from ...checkpoint.rebuild import set_submodule
from ...errors import (
    HfCompressError,
    RecipeError,
    UnsupportedModelError,
)
from ...recipe.registry import register_modifier
from ..modifier import Modifier, StageContext
from ..targets import name_matches, strip_wrapper_prefix
from .bitsandbytes import _bnb_linear_types
from .config import (
    BNB_METHODS,
    EmbeddingQuantizationConfig,
    LoraConfig,
    QuantizationConfig,
    is_skipped,
)
from .kernels import cpu_backend
from .layers import Int8Linear, QATLinear, QuantizedEmbedding, TiedInt8Embedding
from .lora import LORA_KEY, _hold_cpu_4bit_layout, _inject
from .rebuild import (
    INT8_LINEAR_KEY,
    QUANTIZED_EMBEDDING_KEY,
    TIED_EMBEDDING_KEY,
    _skip_lora_layers_on_load,
)
from .selection import quantizable_linears
from .sensitivity import calibration_inputs, layer_sensitivity, most_sensitive
from .smoothing import input_maxima, smooth, smoothing_groups


@register_modifier("lora")
class LoraModifier(Modifier):
    """Trains LoRA adapters (and, in full, the task head) over frozen, possibly 4-bit, weights.

    The one kind of training allowed after a stage that froze the weights by quantizing them.
    """

    config_class = LoraConfig
    description = "LoRA adapters trained on the quantized model"
    hub_tags = ("lora",)

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
            from ...architectures.base import get_adapter

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
            if is_skipped(clean, self.config.train_modules) or is_skipped(
                clean, self.config.ignore
            ):
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
                f"lora: {len(refused)} target layer(s) are int8 (int8_dynamic / qat_int8), which "
                f"cannot carry trainable adapters (e.g. {refused[0]}); use a bnb_4bit_* or "
                "bnb_8bit quantization stage before LoRA"
            )
        if not chosen:
            raise UnsupportedModelError(
                f"lora: no Linear layer to adapt in {type(model).__name__} "
                f"(target_modules={list(patterns)}, "
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
                    f"lora: train_modules names {clean!r}, which is quantized and cannot be "
                    "trained in full; keep it in full precision with the quantization's "
                    "skip_modules (the default keeps the classifier)"
                )
            module.requires_grad_(True)
            trained_in_full.append(clean)
        self.modules, self.trained_in_full = chosen, trained_in_full
        self.trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return None

    def on_finalize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        c = self.config
        record_structure(
            model,
            LORA_KEY,
            {"r": c.r, "alpha": c.alpha, "dropout": c.dropout, "modules": self.modules},
        )
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


def _embedding_paths(model: PreTrainedModel, include_position: bool) -> list[str]:
    """Default targets: the word embeddings (and position embeddings), relative to base_model."""
    base = model.base_model
    word = model.get_input_embeddings()
    names = [name for name, module in base.named_modules() if module is word]
    if not names:
        raise UnsupportedModelError(
            f"embedding_quantization: cannot find the input embeddings of {type(model).__name__} "
            "inside its base model"
        )
    paths = [names[0]]
    if include_position:
        parent = names[0].rpartition(".")[0]
        position = f"{parent}.position_embeddings" if parent else "position_embeddings"
        try:
            if isinstance(base.get_submodule(position), (nn.Embedding, QuantizedEmbedding)):
                paths.append(position)
        except AttributeError:
            pass
    return paths


@register_modifier("embedding_quantization")
class EmbeddingQuantizationModifier(Modifier):
    """Stores embedding tables as int8 or packed 4-bit codes with per-row / per-group scales.

    Applied at the end of its stage (after any training in it), so it can sit beside training
    modifiers; later stages may still train the other weights (the quantized tables are buffers
    and stay frozen).
    """

    config_class = EmbeddingQuantizationConfig
    description = "quantization of the embedding matrix"
    hub_tags = ("quantized",)
    quantizes = True

    def __init__(self, config: EmbeddingQuantizationConfig) -> None:
        super().__init__(config)
        self.config: EmbeddingQuantizationConfig = config
        self.report: dict[str, Any] = {}

    def _targets(self, model: PreTrainedModel) -> list[str]:
        base = model.base_model
        prefix = model.base_model_prefix + "." if base is not model else ""
        if not self.config.targets:
            paths = _embedding_paths(model, self.config.include_position)
            return [p for p in paths if not _ignored(prefix + p, self.config.ignore)]
        chosen = self.target_modules(
            model, default=lambda name, module: False, kind=(nn.Embedding,)
        )
        paths = []
        for name, _module in chosen:
            name = strip_wrapper_prefix(name)
            if prefix and not name.startswith(prefix):
                raise RecipeError(
                    f"embedding_quantization: target {name!r} is outside the base model "
                    f"({model.base_model_prefix}); only embeddings of the encoder can be stored "
                    "quantized"
                )
            paths.append(name[len(prefix) :] if prefix else name)
        if not paths:
            raise RecipeError(
                f"embedding_quantization: targets {list(self.config.targets)} match no "
                f"nn.Embedding; e.g. `{prefix}embeddings.word_embeddings`"
            )
        return paths

    def on_finalize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        base = model.base_model
        output = model.get_output_embeddings()
        done: dict[str, dict[str, Any]] = {}
        bytes_before = bytes_after = 0
        for path in self._targets(model):
            module = base.get_submodule(path)
            if isinstance(module, QuantizedEmbedding):
                ctx.notes.append(
                    f"embedding_quantization: {path} was already quantized; left as is"
                )
                continue
            if output is not None and getattr(output, "weight", None) is module.weight:
                raise UnsupportedModelError(
                    f"embedding_quantization: {path} is tied to the output layer "
                    f"({type(model).__name__} predicts tokens with the same matrix); quantizing it "
                    "would untie them. Use a model with a task head (e.g. "
                    "ForSequenceClassification) or set `targets` to other embeddings."
                )
            quantized = QuantizedEmbedding.from_embedding(
                module, self.config.bits, self.config.group_size
            )
            bytes_before += module.weight.numel() * module.weight.element_size()
            bytes_after += quantized.storage_bytes()
            set_submodule(base, path, quantized)
            done[path] = {"bits": self.config.bits, "group_size": self.config.group_size}
        if done:
            existing = dict(
                (getattr(model.config, "compression_config", None) or {}).get(
                    QUANTIZED_EMBEDDING_KEY, {}
                )
            )
            record_structure(model, QUANTIZED_EMBEDDING_KEY, {**existing, **done})
            record_method(model, "embedding_quantization")
        self.report = {
            "modules": sorted(done),
            "bytes_before": bytes_before,
            "bytes_after": bytes_after,
            "compression_factor": round(bytes_before / bytes_after, 3) if bytes_after else None,
        }
        return model

    def summary(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "bits": self.config.bits,
            "group_size": self.config.group_size,
            "include_position": self.config.include_position,
            **self.report,
        }


def _ignored(name: str, patterns: tuple[str, ...]) -> bool:
    return bool(patterns) and name_matches(name, patterns)


def _linear_bytes(module: nn.Module) -> int:
    return sum(
        t.numel() * t.element_size()
        for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    )


# Modifier -----------------------------------------------------------------------------------
@register_modifier("quantization")
class QuantizationModifier(Modifier):
    """Quantizes the model's Linear layers (and optionally its word embeddings).

    All methods apply at the end of the stage. `qat_int8` also works during the stage: it needs
    the stage to train (`epochs > 0`), and distillation or pruning may train beside it.
    """

    config_class = QuantizationConfig
    description = "quantization"
    hub_tags = ("quantized",)
    quantizes = True

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
                "quantization: method qat_int8 trains with fake quantization, but stage "
                f"{ctx.stage.name!r} does not train; set its epochs > 0 (or use method "
                "int8_dynamic for one-shot quantization)"
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
            from .bitsandbytes import quantize_with_bitsandbytes

            model, self.report = quantize_with_bitsandbytes(model, self.config, ctx)
            return model
        if _already_quantized(model):
            raise UnsupportedModelError(
                "quantization: this model is already quantized with bitsandbytes; int8 "
                "quantization applies to float models"
            )
        converted = (
            self._convert_qat(model, ctx)
            if method == "qat_int8"
            else self._quantize_dynamic(model, ctx)
        )
        if not converted:
            raise UnsupportedModelError(self._nothing_to_quantize(model))
        existing = dict(
            (getattr(model.config, "compression_config", None) or {}).get(INT8_LINEAR_KEY, {})
        )
        record_structure(model, INT8_LINEAR_KEY, {**existing, **converted})
        record_method(model, method)
        if self.config.include_embeddings:
            self._quantize_embeddings(model, ctx)
        self.report["backend"] = cpu_backend(
            static_activations=method == "qat_int8", kernel=self.config.kernel
        )
        return model

    # int8 ---------------------------------------------------------------------------------------
    def _quantize_dynamic(
        self, model: PreTrainedModel, ctx: StageContext
    ) -> dict[str, dict[str, str]]:
        converted: dict[str, dict[str, str]] = {}
        before = after = 0
        if self.config.smoothing:
            self._smooth(model, ctx)
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

    def _smooth(self, model: PreTrainedModel, ctx: StageContext) -> None:
        """SmoothQuant's channel scales (smoothing.py), measured on the calibration batches and
        averaged over processes so every rank scales alike."""
        groups = smoothing_groups(model)
        batches = ctx.first_training_batches(
            self.config.calibration_batches,
            "quantization (int8_dynamic, smoothing)",
            "to measure the activation ranges",
            "set smoothing: 0",
        )
        inputs = [{k: v for k, v in batch.items() if k != "labels"} for batch in batches]
        maxima = [ctx.all_reduce_mean(m) for m in input_maxima(model, groups, inputs)]
        smooth(groups, maxima, self.config.smoothing)
        self.report["smoothing"] = {
            "alpha": self.config.smoothing,
            "smoothed_groups": len(groups),
            "calibration_batches": len(inputs),
        }

    def _fp32_fallback(
        self, model: PreTrainedModel, names: list[str], ctx: StageContext
    ) -> list[str]:
        """The `fp32_fallback` most sensitive of `names` (sensitivity.py), recorded in the
        report."""
        count = self.config.fp32_fallback
        if not count:
            return []
        if count >= len(names):
            raise RecipeError(
                f"quantization: fp32_fallback={count} would keep all {len(names)} quantizable "
                f"Linear layers in float; use a number below {len(names)}"
            )
        batches = calibration_inputs(ctx, self.config.calibration_batches)
        # Measured with the kernel the layers will run, since kernels round inputs differently.
        scores = layer_sensitivity(
            model, names, batches, partial(Int8Linear.from_linear, kernel=self.config.kernel), ctx
        )
        kept = most_sensitive(scores, count)
        self.report["fp32_fallback"] = {name: scores[name] for name in kept}
        self.report["sensitivity_batches"] = len(batches)
        ctx.notes.append(
            f"quantization (int8_dynamic): kept in float, as the {count} layer(s) whose int8 "
            f"version moved the output most on {len(batches)} training batches: {', '.join(kept)}"
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
            ranges = ctx.all_reduce_mean(
                torch.stack([layer.act_min, layer.act_max]).float().clone()
            )
            with torch.no_grad():
                layer.act_min.copy_(ranges[0])
                layer.act_max.copy_(ranges[1])
            # A modifier finalized before this one may have replaced the QAT layer by a plain
            # (e.g. narrower, pruned) Linear: it still gets the range its input was trained with.
            linear = current.to_float() if isinstance(current, QATLinear) else current
            if type(linear) is not nn.Linear:
                continue
            if bool(layer.observed):
                quantized = Int8Linear.from_linear(
                    linear, input_qparams=layer.input_qparams(), kernel=self.config.kernel
                )
                converted[name] = self._layer_spec("static")
            else:  # never ran in training (an unused layer): no learned range, quantize dynamically
                quantized = Int8Linear.from_linear(linear, kernel=self.config.kernel)
                converted[name] = self._layer_spec("dynamic")
                unobserved.append(name)
            before, after = before + _linear_bytes(linear), after + _linear_bytes(quantized)
            set_submodule(model, name, quantized)
        if unobserved:
            ctx.notes.append(
                f"quantization (qat_int8): {len(unobserved)} layer(s) saw no training input and "
                f"use dynamic activation ranges: {', '.join(unobserved)}"
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
        embedding, output = model.get_input_embeddings(), model.get_output_embeddings()
        if isinstance(embedding, nn.Embedding) and getattr(output, "weight", 0) is embedding.weight:
            self._quantize_tied_embeddings(model, embedding, output)
            return
        # One implementation of int8 tables in the package: the embedding_quantization technique.
        from .config import EmbeddingQuantizationConfig

        embeddings = EmbeddingQuantizationModifier(EmbeddingQuantizationConfig(bits=8))
        embeddings.on_finalize(model, ctx)
        self.report["embeddings"] = {k: v for k, v in embeddings.summary().items() if k != "type"}

    def _quantize_tied_embeddings(
        self, model: PreTrainedModel, embedding: nn.Embedding, output: nn.Linear
    ) -> None:
        """A language model's tied embedding and output layer: the output layer becomes an
        `Int8Linear` and the embedding looks its rows up there (the matrix is stored once)."""
        names = {id(module): name for name, module in model.named_modules()}
        head_name, embedding_name = names[id(output)], names[id(embedding)]
        head = Int8Linear.from_linear(output, kernel=self.config.kernel)
        set_submodule(model, head_name, head)
        tied = TiedInt8Embedding(head, embedding.padding_idx, embedding.weight.dtype)
        set_submodule(model, embedding_name, tied)
        model.config.tie_word_embeddings = False  # the tie is now the shared int8 matrix
        linears = dict(get_structure(model, INT8_LINEAR_KEY, {}))
        record_structure(
            model, INT8_LINEAR_KEY, {**linears, head_name: self._layer_spec("dynamic")}
        )
        record_structure(
            model, TIED_EMBEDDING_KEY, {"embedding": embedding_name, "head": head_name}
        )
        size = embedding.weight.numel() * embedding.weight.element_size()
        self.report["embeddings"] = {
            "modules": [embedding_name, head_name],
            "tied": True,
            "bytes_before": size,
            "bytes_after": head.weight.numel() + head.weight_scale.numel() * 4,
        }

    def _nothing_to_quantize(self, model: PreTrainedModel) -> str:
        return (
            f"quantization ({self.config.method}): {type(model).__name__} has no plain nn.Linear "
            f"layer left to quantize after targets={list(self.config.targets)}, "
            f"skip_modules={list(self.config.skip_modules)}, ignore={list(self.config.ignore)}; is "
            "it already quantized?"
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
