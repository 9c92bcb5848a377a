"""Recipe keys of `quantization`, `embedding_quantization` and `lora`, and the names of the int8
methods, bitsandbytes methods and int8 kernels."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from ...recipe.fields import ModifierConfig, check_patterns
from ...recipe.registry import recipe_type
from ...recipe.schema import option
from ..targets import name_matches, strip_wrapper_prefix

BACKENDS = ("auto", "onednn", "fbgemm", "dequant")

# What a recipe may ask for (`quantization.kernel`), saved with each layer in the checkpoint:
# `auto` = the default choice (see `cpu_backend`); `onednn_on_amx` = oneDNN where the CPU has AMX
# int8 tiles (faster at batch 32 there, slower at batch 1 on narrow layers), `auto` elsewhere.
KERNELS = ("auto", "fbgemm", "onednn", "onednn_on_amx")


# LoRA -----------------------------------------------------------------------------------------
@recipe_type("lora")
@dataclass(frozen=True)
class LoraConfig(ModifierConfig):
    """Recipe keys of `lora`."""

    requires_training = True
    allows_training_after_freeze = True

    r: int = option(8, help="rank of each adapter", range=(1, 4096))
    alpha: float = option(
        16.0,
        help="scaling numerator: the adapter's output is multiplied by alpha / r",
        range=(0, None),
        exclusive=(True, False),
    )
    dropout: float = option(
        0.05,
        help="dropout on the adapters' input while training",
        range=(0, 1),
        exclusive=(False, True),
    )
    target_modules: tuple[str, ...] = option(
        (),
        help="layers to adapt (name or `re:<regex>`); default: every bitsandbytes-quantized layer, "
        "or every Linear of the transformer layers when the model is not quantized",
    )
    train_modules: tuple[str, ...] = option(
        ("classifier",),
        help="modules trained in full beside the adapters (they must not be quantized); default: "
        "the task head",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_patterns("target_modules", self.target_modules)
        check_patterns("train_modules", self.train_modules)
        if self.target_modules and self.targets:
            raise ValueError(
                "give the layers to adapt as `target_modules` or as `targets`, not both"
            )


# Modifier -----------------------------------------------------------------------------------
@recipe_type("embedding_quantization")
@dataclass(frozen=True)
class EmbeddingQuantizationConfig(ModifierConfig):
    """Recipe keys of `embedding_quantization`."""

    bits: int = option(
        8,
        help="bits per stored value: 8 (int8, symmetric) or 4 (packed, asymmetric)",
        choices=(8, 4),
    )
    group_size: int | None = option(
        None,
        help="values sharing one scale; must divide the hidden size (default: one scale per row)",
        range=(2, None),
    )
    include_position: bool = option(
        False, help="also quantize the position embeddings (word embeddings always)"
    )


METHODS = ("int8_dynamic", "qat_int8", "bnb_8bit", "bnb_4bit_nf4", "bnb_4bit_fp4")

INT8_METHODS = ("int8_dynamic", "qat_int8")

BNB_METHODS = ("bnb_8bit", "bnb_4bit_nf4", "bnb_4bit_fp4")

BNB_4BIT_METHODS = ("bnb_4bit_nf4", "bnb_4bit_fp4")

COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


@recipe_type("quantization")
@dataclass(frozen=True)
class QuantizationConfig(ModifierConfig):
    """Recipe keys of `quantization`."""

    once_per_stage = True
    freezes_weights = True
    # The conversion happens at the end of the stage, after the stage's own training (which only
    # qat_int8 needs; with the other methods a training stage trains the float model first).
    trains_before_freezing = True

    method: str = option(
        "int8_dynamic",
        help="int8_dynamic (post-training int8), qat_int8 (quantization-aware training; its stage "
        "must train), bnb_8bit / bnb_4bit_nf4 / bnb_4bit_fp4 (bitsandbytes)",
        choices=METHODS,
    )
    skip_modules: tuple[str, ...] = option(
        ("classifier", "lm_head"),
        help="modules kept in full precision: a module name, the name of a parent (e.g. "
        "`classifier` keeps the whole head), or `re:<regex>`; default: the task head (a "
        "classifier, or a language model's output layer, often tied to the embeddings)",
    )
    include_embeddings: bool = option(
        False,
        help="int8_dynamic / qat_int8: also store the word embeddings as int8 (one scale per row); "
        "a language model whose output layer is tied to them keeps one int8 matrix for both",
    )
    double_quant: bool = option(
        False,
        help="bnb 4-bit: also quantize the per-block scales (QLoRA's double quantization, ~0.4 "
        "bit/weight less)",
    )
    compute_dtype: str = option(
        "float32",
        help="bnb 4-bit: dtype the dequantized weights are multiplied in",
        choices=COMPUTE_DTYPES,
    )
    fp32_fallback: int = option(
        0,
        help="int8_dynamic: keep this many Linear layers in float, those whose int8 version moves "
        "the model's output most on `calibration_batches` training batches (costs one pass over "
        "them per Linear layer)",
        range=(0, None),
    )
    smoothing: float = option(
        0.0,
        help="int8_dynamic: SmoothQuant migration strength alpha (Xiao et al. 2023; 0.5 in the "
        "paper); 0 = off. Before quantizing, each input channel of the q/k/v, FFN and down "
        "projections is divided by max|x|^alpha / max|w|^(1 - alpha), measured on "
        "`calibration_batches` training batches, and the weights multiplied by it (folded into "
        "the preceding norm or up projection: exact in float). For decoders, whose activations "
        "have outlier channels",
        range=(0, 1),
    )
    calibration_batches: int = option(
        8,
        help="int8_dynamic with fp32_fallback or smoothing: training batches the layer "
        "sensitivities / activation ranges are measured on",
        range=(1, None),
    )
    kernel: str = option(
        "auto",
        help="int8 methods: the CPU kernel the int8 layers prefer, saved in the checkpoint: auto "
        "(fbgemm on x86 for dynamic inputs), fbgemm, onednn, or onednn_on_amx (oneDNN on CPUs with "
        "AMX int8 tiles, where it is faster at batch 32; auto elsewhere); a machine that cannot "
        "run it uses auto, and HF_COMPRESS_INT8_BACKEND overrides it",
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
        check_patterns("skip_modules", self.skip_modules)
        four_bit = self.method in BNB_4BIT_METHODS
        if self.double_quant and not four_bit:
            raise ValueError(
                f"double_quant applies to bnb_4bit_nf4 / bnb_4bit_fp4 only, not {self.method}"
            )
        if self.compute_dtype != "float32" and not four_bit:
            raise ValueError(
                f"compute_dtype applies to bnb_4bit_nf4 / bnb_4bit_fp4 only, not {self.method}"
            )
        if self.include_embeddings and self.method not in INT8_METHODS:
            raise ValueError(
                f"include_embeddings applies to int8_dynamic / qat_int8; with {self.method} add an "
                "`embedding_quantization` modifier before this one instead"
            )
        if self.fp32_fallback and self.method != "int8_dynamic":
            raise ValueError(
                f"fp32_fallback applies to int8_dynamic only, not {self.method}; for {self.method} "
                "list the layers to keep in float in skip_modules"
            )
        if self.smoothing and self.method != "int8_dynamic":
            raise ValueError(f"smoothing applies to int8_dynamic only, not {self.method}")
        if self.calibration_batches != 8 and not (self.fp32_fallback or self.smoothing):
            raise ValueError(
                "calibration_batches applies with fp32_fallback > 0 or smoothing > 0 only"
            )
        if self.kernel != "auto" and self.method not in INT8_METHODS:
            raise ValueError(
                f"kernel applies to int8_dynamic / qat_int8 only, not {self.method} (bitsandbytes "
                "has its own kernels)"
            )
        if self.ema_decay != 0.99 and self.method != "qat_int8":
            raise ValueError(f"ema_decay applies to qat_int8 only, not {self.method}")
        if self.method in BNB_METHODS and importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError(
                f"method {self.method} needs bitsandbytes, which is not installed: `pip install "
                "bitsandbytes`"
            )

    def needs_training(self) -> bool:
        """qat_int8 trains with the quantizers in place: its stage must train."""
        return self.method == "qat_int8"


def is_skipped(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether module `name` or one of its parents matches `patterns` (see `name_matches`)."""
    if not patterns:
        return False
    parts = strip_wrapper_prefix(name).split(".")
    return any(name_matches(".".join(parts[: i + 1]), patterns) for i in range(len(parts)))
