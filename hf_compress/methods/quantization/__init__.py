"""Quantization: the project's own int8 Linear (`int8_dynamic`, `qat_int8`), bitsandbytes 8-bit
and 4-bit, LoRA adapters on a quantized model (`lora`) and int8 / 4-bit embeddings
(`embedding_quantization`)."""
