"""`embedding_quantization`: int8 or packed 4-bit embedding tables, dequantized row by row at lookup.

In small encoders the word embeddings are most of the checkpoint (all-MiniLM-L6-v2: 11.9M of
22.7M parameters; XLM-R base: 192M of 278M), and linear-layer quantization leaves them in fp32.
This technique replaces each targeted `nn.Embedding` by a `QuantizedEmbedding` that keeps

- 8 bits: an int8 code per value and one symmetric scale per row (or per `group_size` values);
- 4 bits: two unsigned 4-bit codes per byte, with a scale and an offset (the group minimum) per
  row or group (asymmetric, because a 4-bit grid with a fixed zero wastes half its 16 levels on
  rows whose values are not centred),

as buffers, so `save_pretrained` writes int8 / uint8 tensors to safetensors and the checkpoint
shrinks by about 4x (8 bits) or 8x (4 bits) on those tables. A lookup gathers only the
looked-up rows' codes and dequantizes those, so memory during the forward stays small.

Hand-written rather than taken from a library because none fits both constraints: torchao's
embedding configs produce tensor subclasses that only reload through `TorchAoConfig` (which
takes the model's only `quantization_config` slot, see DESIGN.md section 3), and bitsandbytes'
`Embedding8bit` / `Embedding4bit` keep their state in `Int8Params` / `Params4bit` objects that
transformers' loading path restores only for Linear layers. Plain integer buffers reload through
the compressed checkpoint format like every other structure (`compression_config
["embedding_quant"]`, rebuild order 70).

Recipe keys: `bits` (8 | 4), `group_size` (values per scale; default one scale per row),
`include_position` (also quantize the position embeddings), plus the common `targets` / `ignore`
(embedding module names) keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from ..checkpoint import record_method, record_structure, register_rebuild
from ..errors import CheckpointError, RecipeError, UnsupportedModelError
from ..registry import register_modifier
from ..schema import option
from .base import Modifier, ModifierConfig, StageContext, name_matches, set_submodule, strip_wrapper_prefix

STRUCTURE_KEY = "embedding_quant"
# Rows quantized per chunk: bounds the float32 working copy when tables are large (XLM-R: 250k rows).
_CHUNK_ROWS = 8192
# Smallest scale stored, so an all-constant group (e.g. the zero padding row) does not divide by zero.
_MIN_SCALE = 1e-12


class QuantizedEmbedding(nn.Module):
    """An embedding table stored as int8 (8 bits) or packed uint8 (4 bits) codes plus float scales.

    Args:
        num_embeddings: rows (vocabulary size).
        embedding_dim: columns (hidden size).
        bits: 8 or 4.
        group_size: values that share one scale (and, for 4 bits, one offset); `None` = the
            whole row. Must divide `embedding_dim`.
        padding_idx: kept for code that reads `embedding.padding_idx`; not used by the lookup.
        dtype: dtype of the scales and of the lookup's output (the model's float dtype).
        device: where the buffers live.

    Buffers: `qweight` (int8 `[rows, dim]` or uint8 `[rows, ceil(dim / 2)]`), `scale`
    (`[rows, groups]`), and for 4 bits `offset` (`[rows, groups]`).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        bits: int = 8,
        group_size: int | None = None,
        padding_idx: int | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if bits not in (4, 8):
            raise ValueError(f"bits must be 8 or 4, got {bits}")
        group = group_size or embedding_dim
        if embedding_dim % group:
            raise UnsupportedModelError(
                f"embedding_quantization: group_size {group} does not divide the embedding width {embedding_dim}; "
                f"choose a divisor of {embedding_dim} (or omit group_size for one scale per row)"
            )
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.bits = bits
        self.group_size = group_size
        self.padding_idx = padding_idx
        groups = embedding_dim // group
        dtype = dtype or torch.get_default_dtype()
        if bits == 8:
            self.register_buffer("qweight", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8, device=device))
        else:
            packed = (embedding_dim + 1) // 2
            self.register_buffer("qweight", torch.zeros(num_embeddings, packed, dtype=torch.uint8, device=device))
            self.register_buffer("offset", torch.zeros(num_embeddings, groups, dtype=dtype, device=device))
        self.register_buffer("scale", torch.ones(num_embeddings, groups, dtype=dtype, device=device))

    # Construction ---------------------------------------------------------------------------
    @classmethod
    def from_embedding(
        cls, embedding: nn.Embedding, bits: int = 8, group_size: int | None = None
    ) -> QuantizedEmbedding:
        """Quantizes an `nn.Embedding` (its rows, in chunks)."""
        weight = embedding.weight.detach()
        module = cls(
            embedding.num_embeddings,
            embedding.embedding_dim,
            bits=bits,
            group_size=group_size,
            padding_idx=embedding.padding_idx,
            dtype=weight.dtype,
            device=weight.device,
        )
        for start in range(0, weight.shape[0], _CHUNK_ROWS):
            module._quantize_rows(start, weight[start : start + _CHUNK_ROWS])
        return module

    @torch.no_grad()
    def _quantize_rows(self, start: int, rows: torch.Tensor) -> None:
        count = rows.shape[0]
        group = self.group_size or self.embedding_dim
        values = rows.float().reshape(count, -1, group)
        if self.bits == 8:
            scale = (values.abs().amax(-1) / 127).clamp(min=_MIN_SCALE).to(self.scale.dtype)
            # Quantize against the scale as stored (possibly bf16), so the stored pair is consistent.
            codes = torch.round(values / scale.float().unsqueeze(-1)).clamp(-127, 127).to(torch.int8)
            self.qweight[start : start + count] = codes.reshape(count, -1)
        else:
            low = values.amin(-1).to(self.offset.dtype)
            scale = ((values.amax(-1) - low.float()) / 15).clamp(min=_MIN_SCALE).to(self.scale.dtype)
            codes = torch.round((values - low.float().unsqueeze(-1)) / scale.float().unsqueeze(-1)).clamp(0, 15)
            codes = codes.to(torch.uint8).reshape(count, -1)
            if codes.shape[1] % 2:
                codes = torch.nn.functional.pad(codes, (0, 1))
            self.qweight[start : start + count] = codes[:, 0::2] | (codes[:, 1::2] << 4)
            self.offset[start : start + count] = low
        self.scale[start : start + count] = scale

    # Lookup ---------------------------------------------------------------------------------
    def _dequantize(self, codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
        count = codes.shape[0]
        if self.bits == 4:
            codes = torch.stack((codes & 0x0F, codes >> 4), dim=-1).reshape(count, -1)[:, : self.embedding_dim]
        values = codes.to(scale.dtype).reshape(count, scale.shape[1], -1) * scale.unsqueeze(-1)
        if offset is not None:
            values = values + offset.unsqueeze(-1)
        return values.reshape(count, self.embedding_dim)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        flat = input_ids.reshape(-1)
        offset = self.offset.index_select(0, flat) if self.bits == 4 else None
        rows = self._dequantize(self.qweight.index_select(0, flat), self.scale.index_select(0, flat), offset)
        return rows.reshape(*input_ids.shape, self.embedding_dim)

    def dequantize(self) -> torch.Tensor:
        """The whole table as a float tensor (for inspection and error measurement)."""
        offset = self.offset if self.bits == 4 else None
        return self._dequantize(self.qweight, self.scale, offset)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized table, for code that reads `get_input_embeddings().weight` (shape, dtype,
        device, values). It is a new tensor, not a parameter: assigning to it changes nothing."""
        return self.dequantize()

    # Vocabulary pruning composes with this module: keep some rows, codes untouched --------
    def select_rows(self, index: torch.Tensor, padding_idx: int | None = None) -> QuantizedEmbedding:
        """A new `QuantizedEmbedding` holding only rows `index` (same codes, no requantization)."""
        new = QuantizedEmbedding(
            len(index), self.embedding_dim, self.bits, self.group_size, padding_idx, self.scale.dtype, self.scale.device
        )
        index = index.to(self.qweight.device)
        for name in ("qweight", "scale", "offset"):
            if hasattr(new, name):
                getattr(new, name).copy_(getattr(self, name).index_select(0, index))
        return new

    # Measurement ----------------------------------------------------------------------------
    def compressed_numel(self) -> tuple[int, int]:
        """(total, non-zero) elements of the dense table this module stands for."""
        nonzero = 0
        for start in range(0, self.num_embeddings, _CHUNK_ROWS):
            end = start + _CHUNK_ROWS
            offset = self.offset[start:end] if self.bits == 4 else None
            rows = self._dequantize(self.qweight[start:end], self.scale[start:end], offset)
            nonzero += int(torch.count_nonzero(rows).item())
        return self.num_embeddings * self.embedding_dim, nonzero

    def storage_bytes(self) -> int:
        """Bytes of the buffers (what the checkpoint stores for this table)."""
        return sum(buffer.numel() * buffer.element_size() for buffer in self.buffers())

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.group_size else ""
        return f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}{group}, padding_idx={self.padding_idx}"


# Checkpoint -------------------------------------------------------------------------------
@register_rebuild(STRUCTURE_KEY, 70)
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
                f"compression_config[{STRUCTURE_KEY!r}] names {name!r}, which is a {type(current).__name__}, not an "
                "embedding; the checkpoint does not match this model class"
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


# Modifier -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmbeddingQuantizationConfig(ModifierConfig):
    """Recipe keys of `embedding_quantization`."""

    bits: int = option(8, help="bits per stored value: 8 (int8, symmetric) or 4 (packed, asymmetric)", choices=(8, 4))
    group_size: int | None = option(
        None, help="values sharing one scale; must divide the hidden size (default: one scale per row)", range=(2, None)
    )
    include_position: bool = option(False, help="also quantize the position embeddings (word embeddings always)")


def _embedding_paths(model: PreTrainedModel, include_position: bool) -> list[str]:
    """Default targets: the word embeddings (and position embeddings), relative to base_model."""
    base = model.base_model
    word = model.get_input_embeddings()
    names = [name for name, module in base.named_modules() if module is word]
    if not names:
        raise UnsupportedModelError(
            f"embedding_quantization: cannot find the input embeddings of {type(model).__name__} inside its base model"
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
        chosen = self.target_modules(model, default=lambda name, module: False, kind=(nn.Embedding,))
        paths = []
        for name, _module in chosen:
            name = strip_wrapper_prefix(name)
            if prefix and not name.startswith(prefix):
                raise RecipeError(
                    f"embedding_quantization: target {name!r} is outside the base model ({model.base_model_prefix}); "
                    "only embeddings of the encoder can be stored quantized"
                )
            paths.append(name[len(prefix) :] if prefix else name)
        if not paths:
            raise RecipeError(
                f"embedding_quantization: targets {list(self.config.targets)} match no nn.Embedding; e.g. "
                f"`{prefix}embeddings.word_embeddings`"
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
                ctx.notes.append(f"embedding_quantization: {path} was already quantized; left as is")
                continue
            if output is not None and getattr(output, "weight", None) is module.weight:
                raise UnsupportedModelError(
                    f"embedding_quantization: {path} is tied to the output layer ({type(model).__name__} predicts "
                    "tokens with the same matrix); quantizing it would untie them. Use a model with a task head "
                    "(e.g. ForSequenceClassification) or set `targets` to other embeddings."
                )
            quantized = QuantizedEmbedding.from_embedding(module, self.config.bits, self.config.group_size)
            bytes_before += module.weight.numel() * module.weight.element_size()
            bytes_after += quantized.storage_bytes()
            set_submodule(base, path, quantized)
            done[path] = {"bits": self.config.bits, "group_size": self.config.group_size}
        if done:
            existing = dict((getattr(model.config, "compression_config", None) or {}).get(STRUCTURE_KEY, {}))
            record_structure(model, STRUCTURE_KEY, {**existing, **done})
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


def expected_storage_bytes(rows: int, dim: int, bits: int, group_size: int | None, scale_bytes: int = 4) -> int:
    """Bytes a `QuantizedEmbedding` of this shape stores (codes, scales, 4-bit offsets)."""
    groups = dim // (group_size or dim)
    codes = rows * (dim if bits == 8 else math.ceil(dim / 2))
    return codes + rows * groups * scale_bytes * (1 if bits == 8 else 2)
