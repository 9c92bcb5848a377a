"""Where each model family keeps its layers, attention heads, FFN and embeddings.

Techniques never hard-code `model.bert.encoder.layer[i].attention.self.query`; they ask the
family's adapter. An adapter is data (dotted paths relative to the base model and to one
layer) plus a few helpers, so adding a family is one small file that calls `register_adapter`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from ..errors import UnsupportedModelError

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Dotted paths into one model family.

    Args:
        family: the family's `model_type` (e.g. `bert`); compressed models use `compressed_<family>`.
        layers: path of the `nn.ModuleList` of transformer layers, relative to `model.base_model`.
        attention: path of the self-attention module (holding q/k/v) relative to a layer.
        query, key, value: paths of the q/k/v projections relative to a layer.
        attention_output: path of the attention output projection relative to a layer.
        ffn_in, ffn_out: paths of the FFN's two Linear layers relative to a layer.
        word_embeddings: path of the token embedding relative to `model.base_model`.
        heads_attr: attribute of the attention module holding its head count.
        all_head_size_attr: attribute holding heads x head size (`None` when the module has none).
        config_heads, config_layers, config_ffn, config_hidden: config field names.
    """

    family: str
    layers: str
    attention: str
    query: str
    key: str
    value: str
    attention_output: str
    ffn_in: str
    ffn_out: str
    word_embeddings: str
    heads_attr: str
    all_head_size_attr: str | None
    config_heads: str
    config_layers: str
    config_ffn: str
    config_hidden: str

    # Access -------------------------------------------------------------------------------
    def layer_list(self, model: PreTrainedModel) -> nn.ModuleList:
        return model.base_model.get_submodule(self.layers)

    def num_layers(self, model: PreTrainedModel) -> int:
        return len(self.layer_list(model))

    def layer(self, model: PreTrainedModel, index: int) -> nn.Module:
        return self.layer_list(model)[index]

    def get(self, layer: nn.Module, path: str) -> nn.Module:
        return layer.get_submodule(path)

    def set(self, layer: nn.Module, path: str, module: nn.Module) -> None:
        parent, _, child = path.rpartition(".")
        setattr(layer.get_submodule(parent) if parent else layer, child, module)

    def head_size(self, config: PretrainedConfig) -> int:
        return getattr(config, self.config_hidden) // getattr(config, self.config_heads)

    def num_heads(self, model: PreTrainedModel, index: int) -> int:
        return getattr(self.get(self.layer(model, index), self.attention), self.heads_attr)

    def set_num_heads(self, model: PreTrainedModel, index: int, heads: int) -> None:
        """Updates the attention module's bookkeeping after its q/k/v were narrowed."""
        attention = self.get(self.layer(model, index), self.attention)
        setattr(attention, self.heads_attr, heads)
        if self.all_head_size_attr is not None:
            setattr(attention, self.all_head_size_attr, heads * self.head_size(model.config))

    def ffn_width(self, model: PreTrainedModel, index: int) -> int:
        return self.get(self.layer(model, index), self.ffn_in).out_features

    def embeddings(self, model: PreTrainedModel) -> nn.Embedding:
        return model.base_model.get_submodule(self.word_embeddings)

    def layer_prefix(self, model: PreTrainedModel, index: int) -> str:
        """Full module name of layer `index` in `model` (e.g. `bert.encoder.layer.3`)."""
        base = model.base_model_prefix if model.base_model is not model else ""
        return ".".join(p for p in (base, self.layers, str(index)) if p)


ADAPTERS: dict[str, ArchitectureAdapter] = {}


def register_adapter(adapter: ArchitectureAdapter) -> ArchitectureAdapter:
    ADAPTERS[adapter.family] = adapter
    return adapter


def family_of(config: PretrainedConfig) -> str:
    """The family name of a (possibly compressed) config: `compressed_bert` -> `bert`."""
    model_type = getattr(config, "model_type", "")
    return model_type.removeprefix("compressed_")


def get_adapter(model_or_config: PreTrainedModel | PretrainedConfig) -> ArchitectureAdapter:
    """The adapter for a model or config.

    Raises:
        UnsupportedModelError: the family has no adapter; the message lists the supported ones.
    """
    config = getattr(model_or_config, "config", model_or_config)
    family = family_of(config)
    if family not in ADAPTERS:
        raise UnsupportedModelError(
            f"model type {getattr(config, 'model_type', None)!r} is not supported by hf-compress; "
            f"supported families: {', '.join(sorted(ADAPTERS))}. Adding a family is one adapter file "
            "in hf_compress/architectures/ (see bert.py)."
        )
    return ADAPTERS[family]
