"""Quantization: the project's own int8 Linear (`int8_dynamic`, `qat_int8`), bitsandbytes 8-bit
and 4-bit, LoRA adapters on a quantized model (`lora`) and int8 / 4-bit embeddings
(`embedding_quantization`)."""

from . import rebuild  # noqa: F401  (registers the rebuilders)
from .config import EmbeddingQuantizationConfig, LoraConfig, QuantizationConfig
from .layers import Int8Linear, QATLinear, QuantizedEmbedding
from .modifier import EmbeddingQuantizationModifier, LoraModifier, QuantizationModifier

__all__ = [
    "EmbeddingQuantizationConfig",
    "EmbeddingQuantizationModifier",
    "Int8Linear",
    "LoraConfig",
    "LoraModifier",
    "QATLinear",
    "QuantizationConfig",
    "QuantizationModifier",
    "QuantizedEmbedding",
]
