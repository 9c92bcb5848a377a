"""Rebuilds quantized storage for `from_pretrained`: int8 Linear layers (`int8_linear`), int8 /
4-bit embeddings (`embedding_quant`), a language model's embedding tied to its int8 output layer
(`int8_tied_embedding`) and LoRA adapters on a quantized model (`lora`)."""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import PreTrainedModel

from ...checkpoint.rebuild import register_rebuild, set_submodule
from ...errors import (
    CheckpointError,
)
from .config import KERNELS
from .layers import Int8Linear, QuantizedEmbedding, TiedInt8Embedding
from .lora import LORA_KEY, LORA_SKIP_PATTERNS, _inject, _resolve_names


@register_rebuild(LORA_KEY, 80)
def rebuild_lora(model: PreTrainedModel, value: dict[str, Any]) -> None:
    """Re-injects the LoRA adapters named in `compression_config["lora"]` (after every other
    structure, before transformers quantizes the base layers and loads the weights)."""
    modules = _resolve_names(model, list(value["modules"]))
    if modules:
        _inject(
            model, int(value["r"]), float(value["alpha"]), float(value.get("dropout", 0.0)), modules
        )


def _skip_lora_layers_on_load(model: PreTrainedModel) -> None:
    """Adds the adapters' layers to the saved quantization config's skip list, so reloading
    quantizes the base layers only."""
    quantization_config = getattr(model.config, "quantization_config", None)
    if quantization_config is None:
        return
    if isinstance(quantization_config, dict):
        skip = list(quantization_config.get("llm_int8_skip_modules") or [])
        quantization_config["llm_int8_skip_modules"] = skip + [
            p for p in LORA_SKIP_PATTERNS if p not in skip
        ]
    else:
        skip = list(quantization_config.llm_int8_skip_modules or [])
        quantization_config.llm_int8_skip_modules = skip + [
            p for p in LORA_SKIP_PATTERNS if p not in skip
        ]


QUANTIZED_EMBEDDING_KEY = "embedding_quant"


# Checkpoint -------------------------------------------------------------------------------
@register_rebuild(QUANTIZED_EMBEDDING_KEY, 70)
def rebuild_quantized_embeddings(model: PreTrainedModel, value: dict[str, Any]) -> None:
    """Replaces the embeddings named in `compression_config["embedding_quant"]` (paths relative to
    `model.base_model`) by empty `QuantizedEmbedding`s of the same shape, before weights load."""
    base = model.base_model
    for name, spec in value.items():
        current = base.get_submodule(name)
        if isinstance(current, QuantizedEmbedding):
            continue
        if not isinstance(current, nn.Embedding):
            raise CheckpointError(
                f"compression_config[{QUANTIZED_EMBEDDING_KEY!r}] names {name!r}, which is a "
                f"{type(current).__name__}, not an embedding; the checkpoint does not match this "
                "model class"
            )
        quantized = QuantizedEmbedding(
            current.num_embeddings,
            current.embedding_dim,
            bits=int(spec["bits"]),
            group_size=spec.get("group_size"),
            padding_idx=current.padding_idx,
            dtype=current.weight.dtype,
            device=current.weight.device,
        )
        set_submodule(base, name, quantized)


INT8_LINEAR_KEY = "int8_linear"


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
        f"compression_config[{INT8_LINEAR_KEY!r}] names {name!r}, which {type(model).__name__} "
        "does not have; the checkpoint does not match this model class"
    )


@register_rebuild(INT8_LINEAR_KEY, 70)
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
                f"compression_config[{INT8_LINEAR_KEY!r}][{saved_name!r}] asks for int8 kernel "
                f"{kernel!r}, which this version does not know ({', '.join(KERNELS)}); upgrade "
                "hf-compress"
            )
        if isinstance(current, Int8Linear):
            continue
        if not isinstance(current, nn.Linear):
            raise CheckpointError(
                f"compression_config[{INT8_LINEAR_KEY!r}] names {name!r}, a "
                f"{type(current).__name__}, not a Linear layer; the checkpoint does not match this "
                "model"
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


TIED_EMBEDDING_KEY = "int8_tied_embedding"


@register_rebuild(TIED_EMBEDDING_KEY, 75)  # after int8_linear (70) made the output layer int8
def rebuild_tied_int8_embedding(model: PreTrainedModel, value: dict[str, str]) -> None:
    """Points the input embedding named in `compression_config["int8_tied_embedding"]` at the
    int8 output layer whose matrix it shares."""
    head = model.get_submodule(value["head"])
    if not isinstance(head, Int8Linear):
        raise CheckpointError(
            f"compression_config[{TIED_EMBEDDING_KEY!r}] ties {value['embedding']} to "
            f"{value['head']}, which is a {type(head).__name__}, not an int8 layer; the checkpoint "
            "does not match this model"
        )
    embedding = model.get_submodule(value["embedding"])
    if isinstance(embedding, TiedInt8Embedding):
        return
    dtype = embedding.weight.dtype if isinstance(embedding, nn.Embedding) else None
    padding = getattr(embedding, "padding_idx", None)
    set_submodule(model, value["embedding"], TiedInt8Embedding(head, padding, dtype))
