"""Compressed model classes: one `model_type` per family, registered with the Auto classes.

For every family in `FAMILIES` (BERT, RoBERTa, DistilBERT and the encoders laid out like them)
this module defines a config subclass
`Compressed<Family>Config` (`model_type="compressed_<family>"`, one extra field
`compression_config`) and, for each task head, a model subclass whose `__init__` builds the
family's normal module tree and then rebuilds the compressed structure from the config before
`from_pretrained` loads the weights. Registered with `AutoConfig.register` and each
`AutoModelFor*.register`, so after `import hf_compress` a compressed directory or Hub repo loads
with the usual `AutoModelFor*.from_pretrained` and `pipeline(...)`. (DESIGN.md section 3: this
keeps `quantization_config` free for bitsandbytes / torchao and lets the Trainer fine-tune.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import transformers
from huggingface_hub.dataclasses import strict
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.models.auto import modeling_auto as auto_names
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from ..architectures.base import family_of, get_adapter
from ..errors import UnsupportedModelError
from .manifest import verification_enabled, verify_source, write_manifest
from .rebuild import FORMAT_VERSION, apply_structure
from .strict import check_loading_info

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def record_structure(model: PreTrainedModel, key: str, value: Any) -> None:
    """Stores `value` under `key` in the model's compression_config (promoting it to its compressed
    class)."""

    to_compressed(model)
    config = dict(model.config.compression_config or {"version": FORMAT_VERSION})
    config[key] = value
    model.config.compression_config = config


def record_method(model: PreTrainedModel, method: str) -> None:
    """Adds a technique name to `compression_config["methods"]` (for cards and tags)."""

    to_compressed(model)
    config = dict(model.config.compression_config or {"version": FORMAT_VERSION})
    methods = list(config.get("methods", []))
    if method not in methods:
        methods.append(method)
    config["methods"] = methods
    model.config.compression_config = config


def get_structure(model: PreTrainedModel, key: str, default: Any = None) -> Any:
    return (getattr(model.config, "compression_config", None) or {}).get(key, default)


# The model families whose compressed checkpoints reload after `import hf_compress`. A list,
# because a family's compressed `model_type` must be registered with the Auto classes before any
# of its checkpoints is read; each is laid out as a known architecture map (tests/test_layout.py
# checks it), so techniques need nothing more to handle it.
FAMILIES = (
    "bert",
    "roberta",
    "distilbert",
    "xlm-roberta",
    "camembert",
    "electra",
    "ernie",
    "data2vec-text",
    "roberta-prelayernorm",
    "llama",
    "mistral",
    "qwen2",
    "gpt2",
    "qwen3",
)

# architecture-name suffix of each task head -> (its Auto class, transformers' model-type ->
# class-name map)
HEAD_AUTO_CLASSES = {
    "Model": AutoModel,
    "ForSequenceClassification": AutoModelForSequenceClassification,
    "ForMaskedLM": AutoModelForMaskedLM,
    "ForTokenClassification": AutoModelForTokenClassification,
    "ForQuestionAnswering": AutoModelForQuestionAnswering,
    "ForMultipleChoice": AutoModelForMultipleChoice,
    "ForCausalLM": AutoModelForCausalLM,
}
_CLASS_NAMES = {
    "Model": auto_names.MODEL_MAPPING_NAMES,
    "ForSequenceClassification": auto_names.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    "ForMaskedLM": auto_names.MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    "ForTokenClassification": auto_names.MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES,
    "ForQuestionAnswering": auto_names.MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES,
    "ForMultipleChoice": auto_names.MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES,
    "ForCausalLM": auto_names.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
}

COMPRESSED_CONFIGS: dict[str, type] = {}

# original model class -> compressed subclass
COMPRESSED_MODELS: dict[type, type] = {}


def _make_config_class(family: str, base: type) -> type:
    namespace = {
        "__module__": __name__,
        "__annotations__": {"compression_config": "dict | None"},
        "model_type": f"compressed_{family}",
        "compression_config": None,
    }
    cls = type(f"Compressed{base.__name__}", (base,), namespace)
    return strict(cls)


class CompressedModelMixin:
    """What every compressed model class adds to its transformers class: an integrity manifest
    written by `save_pretrained`, and a `from_pretrained` that verifies it and loads strictly
    (a missing, unexpected or mismatched tensor is a `CheckpointError`, not a warning).

    `from_pretrained(..., verify_checksums=False)` (or `HF_COMPRESS_VERIFY_CHECKSUMS=0`) skips
    the digest check, for a model edited on purpose; loading stays strict.
    """

    _hf_compress_family: str = ""
    _hf_compress_head: str = ""  # the architecture-name suffix, e.g. "ForSequenceClassification"

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        super().save_pretrained(save_directory, *args, **kwargs)  # type: ignore[misc]
        if kwargs.get("is_main_process", True) and Path(save_directory).is_dir():
            write_manifest(save_directory)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *args: Any,
        verify_checksums: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        source = str(pretrained_model_name_or_path)
        if verification_enabled(verify_checksums):
            verify_source(source, kwargs)
        wants_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(  # type: ignore[misc]
            pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
        )
        config = model.config
        saved = getattr(config, "architectures", None) or []
        check_loading_info(
            model,
            info,
            source,
            "base" if cls._hf_compress_head == "Model" else "head",
            exact_head=any(str(name).endswith(cls._hf_compress_head) for name in saved),
            compressed=bool(getattr(config, "compression_config", None)),
            reinit_head=bool(kwargs.get("ignore_mismatched_sizes", False)),
        )
        return (model, info) if wants_info else model


def _make_model_class(base: type, config_class: type, family: str, head: str) -> type:
    cls = type(
        f"Compressed{base.__name__}",
        (CompressedModelMixin, base),
        {
            "__module__": __name__,
            "config_class": config_class,
            "_hf_compress_family": family,
            "_hf_compress_head": head,
        },
    )

    def __init__(self: PreTrainedModel, config: Any, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, config, *args, **kwargs)
        apply_structure(self, config.compression_config)
        self.post_init()

    cls.__init__ = __init__
    return cls


def _register_all() -> None:
    for family in FAMILIES:
        base_config = CONFIG_MAPPING[family]
        config_class = _make_config_class(family, base_config)
        globals()[config_class.__name__] = config_class
        COMPRESSED_CONFIGS[family] = config_class
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        for suffix, auto_class in HEAD_AUTO_CLASSES.items():
            name = _CLASS_NAMES[suffix].get(family)
            base = getattr(transformers, name, None) if isinstance(name, str) else None
            if base is None:
                continue
            model_class = _make_model_class(base, config_class, family, suffix)
            globals()[model_class.__name__] = model_class
            COMPRESSED_MODELS[base] = model_class
            auto_class.register(config_class, model_class, exist_ok=True)


_register_all()


def is_compressed(model: PreTrainedModel) -> bool:
    return hasattr(type(model), "_hf_compress_family")


def check_supported(config: PretrainedConfig) -> None:
    """Checks, from its config alone, that a model can be compressed and saved in the format: its
    family is registered and laid out as a known architecture map.

    Raises:
        UnsupportedModelError: one line naming the model type and the supported families.
    """
    family = family_of(config)
    if family not in COMPRESSED_CONFIGS:
        raise UnsupportedModelError(
            f"model type {family!r} is not supported by hf-compress; supported families: "
            f"{', '.join(FAMILIES)}"
        )
    get_adapter(config)


def to_compressed(model: PreTrainedModel) -> PreTrainedModel:
    """Turns a model of a supported family into its compressed class, in place.

    The instance's class is swapped for the compressed subclass (which adds no state, only a
    different construction path and config class) instead of copying every weight into a new
    object; the config becomes the compressed config with an empty, versioned
    `compression_config`.

    Raises:
        UnsupportedModelError: the model's family or head has no compressed class.
    """
    if is_compressed(model):
        return model
    family = family_of(model.config)
    compressed_class = COMPRESSED_MODELS.get(type(model))
    if family not in COMPRESSED_CONFIGS or compressed_class is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} (model type {model.config.model_type!r}) cannot be saved in "
            f"the compressed format; supported families: {', '.join(FAMILIES)}"
        )
    values = model.config.to_dict()
    for key in ("model_type", "transformers_version", "architectures"):
        values.pop(key, None)
    values["compression_config"] = values.get("compression_config") or {"version": FORMAT_VERSION}
    new_config = COMPRESSED_CONFIGS[family](**values)
    # Not part of to_dict(): without it the model would switch attention kernels (sdpa -> eager).
    new_config._attn_implementation = model.config._attn_implementation
    model.config = new_config
    model.__class__ = compressed_class
    _register_output_capture(model)
    for module in model.modules():  # sub-models (BertModel inside the head) share the config
        if isinstance(module, PreTrainedModel) and module is not model:
            module.config = new_config
            sub_compressed = COMPRESSED_MODELS.get(type(module))
            if sub_compressed is not None:
                module.__class__ = sub_compressed
                _register_output_capture(module)
    return model


def _register_output_capture(module: PreTrainedModel) -> None:
    # transformers 5 finds the hooks behind `output_hidden_states` / `output_attentions` in a
    # registry keyed by class name, filled in `PreTrainedModel.__init__`; a class swapped in above
    # was never constructed, so without this the swapped model returns `hidden_states=None`.
    try:
        from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY
    except ImportError:  # older or newer transformers without the registry
        return
    _CAN_RECORD_REGISTRY[module] = getattr(module, "_can_record_outputs", None)
