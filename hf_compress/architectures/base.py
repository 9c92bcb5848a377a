"""Where each model family keeps its layers, attention heads, FFN and embeddings.

Techniques never hard-code `model.bert.encoder.layer[i].attention.self.query`; they ask the
model's adapter. An adapter is data (dotted paths relative to the base model and to one layer,
and the config's field names) plus a few helpers. It is chosen from the model's module tree,
not from its `model_type`: the first registered layout whose paths all exist (as Linear
layers where they must be) in an uncompressed model of the family, built on the meta device,
wins. So an encoder family laid out like BERT (ELECTRA, XLM-R, CamemBERT, ...) needs no new
code here; a new layout is one small file that calls `register_adapter`.
"""

from __future__ import annotations

from collections.abc import Callable
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
        layout: the layout's name (the family it was written for, e.g. `bert`).
        layers: path of the `nn.ModuleList` of transformer layers, relative to `model.base_model`.
        attention: path of the self-attention module (holding q/k/v) relative to a layer.
        query, key, value: paths of the q/k/v projections relative to a layer.
        attention_output: path of the attention output projection relative to a layer.
        ffn_in, ffn_out: paths of the FFN's two Linear layers relative to a layer.
        word_embeddings: path of the token embedding relative to `model.base_model`.
        heads_attr: attribute of the attention module holding its head count (`None`: the module
            keeps none, its head count is read from the query projection's width).
        all_head_size_attr: attribute holding heads x head size (`None` when the module has none).
        config_heads, config_layers, config_ffn, config_hidden: config field names.
        ffn_gate: path of a gated FFN's gate projection (SwiGLU's `gate_proj`), pruned with
            `ffn_in`; `None` for a plain two-layer FFN.
        config_kv_heads: config field of the key/value head count (grouped-query attention);
            `None` when every query head has its own key and value.
        config_head_dim: config field of the head size when the config sets it; else hidden size
            divided by the head count.
        causal: a decoder (its layers carry a `layer_idx` for the KV cache).
        attention_norm, ffn_norm: paths of the normalization layers whose outputs feed the q/k/v
            projections and the FFN's input projections (pre-norm decoders); `None` where the
            layout has none in that place (post-norm encoders). Smoothing folds scales into them.
        groups_attr: attribute of the attention module holding its query heads per key/value
            head (`num_key_value_groups` in Llama-like decoders), updated when query heads are
            removed inside the groups; `None` when the module keeps none.
        prepare: converts a model of the family, in place and losslessly, into this layout
            before any technique runs (GPT-2: `Conv1D` to `nn.Linear`); `None` when the family
            is laid out this way already. Must leave any other model untouched.
    """

    layout: str
    layers: str
    attention: str
    query: str
    key: str
    value: str
    attention_output: str
    ffn_in: str
    ffn_out: str
    word_embeddings: str
    heads_attr: str | None
    all_head_size_attr: str | None
    config_heads: str
    config_layers: str
    config_ffn: str
    config_hidden: str
    ffn_gate: str | None = None
    config_kv_heads: str | None = None
    config_head_dim: str | None = None
    causal: bool = False
    groups_attr: str | None = None
    prepare: Callable[[nn.Module], None] | None = None
    attention_norm: str | None = None
    ffn_norm: str | None = None

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
        if self.config_head_dim and getattr(config, self.config_head_dim, None):
            return getattr(config, self.config_head_dim)
        return getattr(config, self.config_hidden) // getattr(config, self.config_heads)

    def num_heads(self, model: PreTrainedModel, index: int) -> int:
        """Query heads of layer `index`."""
        layer = self.layer(model, index)
        if self.heads_attr is not None:
            return getattr(self.get(layer, self.attention), self.heads_attr)
        if not self._has(layer, self.query):  # every head removed
            return 0
        return self._width(self.get(layer, self.query)) // self.head_size(model.config)

    def num_kv_heads(self, model: PreTrainedModel, index: int) -> int:
        """Key/value heads of layer `index` (as many as query heads without GQA)."""
        if self.config_kv_heads is None:
            return self.num_heads(model, index)
        layer = self.layer(model, index)
        if not self._has(layer, self.key):
            return 0
        return self._width(self.get(layer, self.key)) // self.head_size(model.config)

    def query_heads_per_kv_head(self, config: PretrainedConfig) -> int:
        """Query heads sharing one key/value head (1 without grouped-query attention)."""
        if self.config_kv_heads is None:
            return 1
        kv_heads = getattr(config, self.config_kv_heads, None) or getattr(config, self.config_heads)
        return getattr(config, self.config_heads) // kv_heads

    def query_heads_per_kv_head_at(self, model: PreTrainedModel, index: int) -> int:
        """Query heads sharing one key/value head in layer `index` (fewer than the config says
        after query heads were removed inside the groups)."""
        kv_heads = self.num_kv_heads(model, index)
        return self.num_heads(model, index) // kv_heads if kv_heads else 0

    def head_units(self, config: PretrainedConfig) -> int:
        """Prunable attention units per layer of an unpruned model: key/value groups (heads
        without grouped-query attention)."""
        if self.config_kv_heads is not None and getattr(config, self.config_kv_heads, None):
            return getattr(config, self.config_kv_heads)
        return getattr(config, self.config_heads)

    def ffn_size(self, config: PretrainedConfig) -> int:
        """FFN neurons per layer of an unpruned model (GPT-2 leaves `n_inner` unset: 4x)."""
        return getattr(config, self.config_ffn, None) or 4 * getattr(config, self.config_hidden)

    def set_num_heads(
        self, model: PreTrainedModel, index: int, heads: int, kv_heads: int | None = None
    ) -> None:
        """Updates the attention module's bookkeeping after its q/k/v were narrowed to `heads`
        query and `kv_heads` key/value heads."""
        attention = self.get(self.layer(model, index), self.attention)
        if self.groups_attr is not None and kv_heads:
            setattr(attention, self.groups_attr, heads // kv_heads)
        if self.heads_attr is not None:
            setattr(attention, self.heads_attr, heads)
        if self.all_head_size_attr is not None:
            setattr(attention, self.all_head_size_attr, heads * self.head_size(model.config))

    @staticmethod
    def _has(layer: nn.Module, path: str) -> bool:
        try:
            layer.get_submodule(path)
        except AttributeError:
            return False
        return True

    @staticmethod
    def _width(module: nn.Module) -> int:
        """Output features of a Linear layer or of a storage layer standing for one."""
        return getattr(module, "out_features", None) or module.weight.shape[0]

    def ffn_width(self, model: PreTrainedModel, index: int) -> int:
        return self._width(self.get(self.layer(model, index), self.ffn_in))

    def ffn_rows(self) -> tuple[str, ...]:
        """The FFN projections whose output rows are its neurons (gate and up for SwiGLU)."""
        return (self.ffn_in,) if self.ffn_gate is None else (self.ffn_gate, self.ffn_in)

    def embeddings(self, model: PreTrainedModel) -> nn.Embedding:
        return model.base_model.get_submodule(self.word_embeddings)

    def layer_prefix(self, model: PreTrainedModel, index: int) -> str:
        """Full module name of layer `index` in `model` (e.g. `bert.encoder.layer.3`)."""
        base = model.base_model_prefix if model.base_model is not model else ""
        return ".".join(p for p in (base, self.layers, str(index)) if p)

    def matches(self, model: PreTrainedModel) -> bool:
        """Whether `model` (uncompressed) is laid out this way: its layer list, every projection
        as a Linear layer, the embeddings and the config fields all where this adapter says."""
        fields = (self.config_heads, self.config_layers, self.config_ffn, self.config_hidden)
        if not all(hasattr(model.config, name) for name in fields):
            return False
        if self.prepare is not None:
            self.prepare(model)
        if self.config_kv_heads is not None and not hasattr(model.config, self.config_kv_heads):
            return False
        projections = (
            self.query,
            self.key,
            self.value,
            self.attention_output,
            *self.ffn_rows(),
            self.ffn_out,
        )
        try:
            layers = self.layer_list(model)
            first = layers[0]
            self.get(first, self.attention)
            self.embeddings(model)
            return isinstance(layers, nn.ModuleList) and all(
                isinstance(self.get(first, path), nn.Linear) for path in projections
            )
        except (AttributeError, IndexError, TypeError):
            return False


ADAPTERS: dict[str, ArchitectureAdapter] = {}
# family (model_type) -> its adapter, once found
_FOUND: dict[str, ArchitectureAdapter] = {}


def register_adapter(adapter: ArchitectureAdapter) -> ArchitectureAdapter:
    ADAPTERS[adapter.layout] = adapter
    _FOUND.clear()
    return adapter


def family_of(config: PretrainedConfig) -> str:
    """The family name of a (possibly compressed) config: `compressed_bert` -> `bert`."""
    model_type = getattr(config, "model_type", "")
    return model_type.removeprefix("compressed_")


def _reference_model(config: PretrainedConfig, family: str) -> PreTrainedModel | None:
    """An uncompressed base model of `family` built from `config` on the meta device (no memory),
    or None when transformers cannot build one."""
    import torch
    from transformers import AutoModel
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    values = {k: v for k, v in config.to_dict().items() if k not in _NOT_PLAIN_KEYS}
    try:
        plain = CONFIG_MAPPING[family].from_dict(values)
        with torch.device("meta"):
            return AutoModel.from_config(plain)
    except Exception:  # noqa: BLE001  (any family transformers cannot build this way: unsupported)
        return None


_NOT_PLAIN_KEYS = (
    "compression_config",
    "model_type",
    "architectures",
    "auto_map",
    "quantization_config",
)


def get_adapter(model_or_config: PreTrainedModel | PretrainedConfig) -> ArchitectureAdapter:
    """The adapter for a model or config, chosen from the family's module tree (cached).

    Raises:
        UnsupportedModelError: no registered layout fits; the message lists the known ones.
    """
    config = getattr(model_or_config, "config", model_or_config)
    family = family_of(config)
    if family not in _FOUND:
        reference = _reference_model(config, family)
        found = next(
            (a for a in ADAPTERS.values() if reference is not None and a.matches(reference)), None
        )
        if found is None:
            raise UnsupportedModelError(
                f"model type {getattr(config, 'model_type', None)!r} has none of the layer layouts "
                f"hf-compress knows ({', '.join(sorted(ADAPTERS))}: BERT- and DistilBERT-like "
                "encoders, Llama-like decoders (Llama, Mistral, Qwen2, Qwen3) and GPT-2); a new "
                "layout is one file in hf_compress/architectures/ (see bert.py)"
            )
        _FOUND[family] = found
    return _FOUND[family]
