"""The storage layers of quantization: `Int8Linear`, `QATLinear` and `QuantizedEmbedding`.

`Int8Linear` keeps a Linear layer as plain tensors: an int8 weight (one symmetric scale per
output channel), the float bias and, after quantization-aware training, a static activation
scale and zero point. They are ordinary buffers, so `save_pretrained` writes int8 to
safetensors (4x smaller than fp32) and `from_pretrained` reloads them through the compressed
checkpoint format (`compression_config["int8_linear"]`), never inflating back to fp32. The
kernel that multiplies them is chosen at run time (kernels.py); the packed weight a kernel wants
is a private run-time cache (not a buffer), rebuilt when the weight changes or the module
moves, so checkpoints hold only the portable int8 tensors.

`QATLinear` is an `nn.Linear` whose forward fake-quantizes the weight (per output channel,
symmetric) and the input (per tensor, asymmetric uint8, range tracked with an exponential moving
average) with straight-through gradients (Jacob et al. 2018). At the end of its stage it is
converted to the same int8 storage (`Int8Linear.from_linear` with the learned input range), so the
converted layer computes what the fake-quantized one did.

`QuantizedEmbedding` stores an embedding table as int8 rows with one scale each, or 4-bit rows
in groups with a scale and an offset per group; rows are dequantized only when looked up.
"""

from __future__ import annotations

import math
import warnings
import weakref
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...checkpoint.rebuild import float_linear
from ...errors import UnsupportedModelError
from .config import BACKENDS, KERNELS
from .kernels import (
    _LAST_INPUT,
    _MIN_SCALE,
    ACT_QMAX,
    ACT_QMAX_REDUCED,
    WEIGHT_QMAX,
    _version,
    activation_qparams,
    cpu_backend,
    cpu_has_vnni,
    onednn_available,
    quantize_activation,
    quantize_weight_per_channel,
    record_fbgemm_failure,
)


# The integer layer -------------------------------------------------------------------------
class Int8Linear(nn.Module):
    """A Linear layer stored as int8 weights with per-output-channel scales.

    Args:
        in_features: input width.
        out_features: output width.
        bias: whether the layer has a bias.
        static_activations: the layer carries a fixed input scale and zero point (from QAT) in
            the buffers `input_scale` / `input_zero_point`; otherwise each input is quantized
            over its own range (dynamic quantization).
        device: where the buffers are created.

    Buffers (all saved): `weight` int8 `[out, in]`, `weight_scale` float32 `[out]`, `bias`
    float32 `[out]` (if any) and, with static activations, `input_scale` (float32 scalar) and
    `input_zero_point` (int32 scalar).

    Class attributes (an instance attribute overrides them for one layer):
        backend: "auto" (`cpu_backend`'s choice), "onednn", "fbgemm" or "dequant": forces a kernel.
        reduce_range: 7-bit inputs; None = only on CPUs without VNNI.
        kernel: the preference saved with the layer (`KERNELS`), which `backend: auto` follows
            where this machine can run it (set per layer by `from_linear` and the checkpoint).
    """

    backend: ClassVar[str] = "auto"
    reduce_range: ClassVar[bool | None] = None
    kernel: str = "auto"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        static_activations: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.static_activations = static_activations
        self.register_buffer(
            "weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer(
            "weight_scale", torch.ones(out_features, dtype=torch.float32, device=device)
        )
        self.register_buffer(
            "bias", torch.zeros(out_features, dtype=torch.float32, device=device) if bias else None
        )
        if static_activations:
            self.register_buffer("input_scale", torch.ones((), dtype=torch.float32, device=device))
            self.register_buffer(
                "input_zero_point", torch.zeros((), dtype=torch.int32, device=device)
            )
        self._packed: tuple[Any, ...] | None = None

    # Construction ---------------------------------------------------------------------------
    @classmethod
    def from_linear(
        cls, linear: nn.Linear, input_qparams: tuple[float, int] | None = None, kernel: str = "auto"
    ) -> Int8Linear:
        """Quantizes a float Linear: weights per output channel; inputs dynamically, or with the
        fixed uint8 grid `input_qparams` (scale, zero point), e.g. a range learned in QAT.
        `kernel`: the layer's kernel preference (`KERNELS`)."""
        if kernel not in KERNELS:
            raise ValueError(f"int8 kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        module = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            static_activations=input_qparams is not None,
            device=linear.weight.device,
        )
        module.kernel = kernel
        module._set_weight(linear.weight, linear.bias)
        if input_qparams is not None:
            module.input_scale.fill_(input_qparams[0])
            module.input_zero_point.fill_(input_qparams[1])
        return module

    @torch.no_grad()
    def _set_weight(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        codes, scale = quantize_weight_per_channel(weight)
        self.weight.copy_(codes)
        self.weight_scale.copy_(scale)
        if bias is not None:
            self.bias.copy_(bias.detach().float())
        self._packed = None

    # Inspection -----------------------------------------------------------------------------
    def dequantized_weight(self) -> torch.Tensor:
        """The float weight the int8 codes stand for."""
        return self.weight.float() * self.weight_scale.float()[:, None]

    def to_float(self) -> nn.Linear:
        """A plain float `nn.Linear` with the dequantized weight."""
        return float_linear(self.dequantized_weight(), self.bias)

    def onnx_int8_parts(self) -> dict[str, Any]:
        """What an ONNX export needs to keep this layer int8 (checkpoint/onnx_int8.py): `kind`
        "linear", `weight` (int8 `[out, in]`), `weight_scale`, `bias` (or None) and, with static
        inputs, `input_scale` / `input_zero_point` as Python numbers (else None)."""
        static = self.static_activations
        return {
            "kind": "linear",
            "weight": self.weight.detach().cpu(),
            "weight_scale": self.weight_scale.detach().float().cpu(),
            "bias": None if self.bias is None else self.bias.detach().float().cpu(),
            "input_scale": float(self.input_scale) if static else None,
            "input_zero_point": int(self.input_zero_point) if static else None,
        }

    def compressed_numel(self) -> tuple[int, int]:
        """(total, non-zero) elements of the dense Linear this layer stands for (see measure.py)."""
        total = self.weight.numel() + (self.bias.numel() if self.bias is not None else 0)
        nonzero = int(torch.count_nonzero(self.weight).item())
        nonzero += int(torch.count_nonzero(self.bias).item()) if self.bias is not None else 0
        return total, nonzero

    def extra_repr(self) -> str:
        inputs = "static" if self.static_activations else "dynamic"
        kernel = "" if self.kernel == "auto" else f", kernel={self.kernel}"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, inputs={inputs}{kernel}"
        )

    def __getstate__(self) -> dict[str, Any]:
        # The packed kernel weight is an opaque, machine-specific cache: never copied or pickled.
        state = self.__dict__.copy()
        state["_packed"] = None
        return state

    def _apply(self, fn: Any, recurse: bool = True) -> Int8Linear:
        self._packed = None  # .to(), .cuda(), .half(): the cache no longer matches the buffers
        return super()._apply(fn, recurse)

    # Forward ----------------------------------------------------------------------------------
    def resolved_backend(self, device: torch.device) -> str:
        """The kernel this layer uses for inputs on `device`."""
        if self.backend not in BACKENDS:
            raise ValueError(
                f"Int8Linear.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if device.type != "cpu":
            return "dequant"
        return (
            cpu_backend(self.static_activations, self.kernel)
            if self.backend == "auto"
            else self.backend
        )

    def input_grid(self, x2d: torch.Tensor) -> tuple[float, int, int, bool]:
        """(scale, zero point, largest code, whether codes need clamping) for input `x2d`."""
        reduced = (not cpu_has_vnni()) if self.reduce_range is None else self.reduce_range
        qmax = ACT_QMAX_REDUCED if reduced else ACT_QMAX
        if self.static_activations:
            scale, zero_point = float(self.input_scale), int(self.input_zero_point)
            if reduced:  # the same range on the coarser 7-bit grid
                scale, zero_point = activation_qparams(
                    -zero_point * scale, (ACT_QMAX - zero_point) * scale, qmax
                )
            return scale, zero_point, qmax, True
        low, high = torch.aminmax(x2d.detach())
        scale, zero_point = activation_qparams(float(low), float(high), qmax - 1)
        return scale, zero_point, qmax, False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.reshape(-1, self.in_features)
        if x2d.dtype != torch.float32:
            x2d = x2d.float()
        if x2d.shape[0] == 0:
            out = x2d.new_zeros(0, self.out_features)
        else:
            backend = self.resolved_backend(x.device)
            if backend == "onednn":
                out = self._forward_onednn(x, x2d)
            elif backend == "fbgemm":
                out = self._forward_fbgemm(x, x2d)
            else:
                out = self._forward_dequant(x2d)
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    # Run eagerly inside torch.compile'd models: Inductor lowers this op only with the packed
    # weight as a frozen graph constant, and the per-input scale is a Python number here.
    @torch.compiler.disable
    def _forward_onednn(self, x: torch.Tensor, x2d: torch.Tensor) -> torch.Tensor:
        key = (self.weight.data_ptr(), _version(self.weight), _version(self.weight_scale), "onednn")
        if self._packed is None or self._packed[0] != key:
            packed = torch.ops.onednn.qlinear_prepack(self.weight, None)
            zero_points = torch.zeros(self.out_features, dtype=torch.int32)
            self._packed = (key, packed, self.weight_scale.float().contiguous(), zero_points)
        _, packed, weight_scale, zero_points = self._packed
        codes, scale, zero_point = self._quantized_input(x, x2d)
        bias = None if self.bias is None else self.bias.float()
        return torch.ops.onednn.qlinear_pointwise(
            codes,
            scale,
            zero_point,
            packed,
            weight_scale,
            zero_points,
            bias,
            1.0,
            0,
            torch.float32,
            "none",
            [],
            "",
        )

    def _quantized_input(
        self, x: torch.Tensor, x2d: torch.Tensor
    ) -> tuple[torch.Tensor, float, int]:
        """The input's uint8 codes with their scale and zero point.

        Quantizing an input is memory-bound and costs a few passes over it, so the codes are
        shared by consecutive layers that read the same tensor with the same grid (query, key
        and value in attention). The check holds a weak reference to the input object (never
        its address, which the allocator reuses) and its version counter, so an in-place change
        is noticed; in inference mode tensors have no version counter, and an input changed in
        place between two layers reading it would go unnoticed (no encoder in transformers does
        that between its query, key and value projections).
        """
        static = (
            (float(self.input_scale), int(self.input_zero_point))
            if self.static_activations
            else None
        )
        last = _LAST_INPUT.entry
        if last is not None and last[0]() is x and last[1] == _version(x) and last[2] == static:
            return last[3]
        scale, zero_point, qmax, clamp = self.input_grid(x2d)
        # The workspace is safe here: the codes are consumed before the next input is quantized,
        # and replacing the shared entry below drops the only other reference to them.
        result = (
            quantize_activation(x2d, scale, zero_point, qmax, clamp, reuse=True),
            scale,
            zero_point,
        )
        try:
            _LAST_INPUT.entry = (weakref.ref(x), _version(x), static, result)
        except TypeError:  # not weakly referenceable: do not share
            _LAST_INPUT.entry = None
        return result

    @torch.compiler.disable
    def _forward_fbgemm(self, x: torch.Tensor, x2d: torch.Tensor) -> torch.Tensor:
        key = (self.weight.data_ptr(), _version(self.weight), _version(self.weight_scale), "fbgemm")
        if self._packed is None or self._packed[0] != key:
            try:
                with warnings.catch_warnings():
                    # The packing goes through a quantized tensor, a type PyTorch has deprecated;
                    # if a release removes it, the layers fall back to oneDNN (below).
                    warnings.simplefilter("ignore")
                    qweight = torch._make_per_channel_quantized_tensor(
                        self.weight,
                        self.weight_scale.double(),
                        torch.zeros(self.out_features, dtype=torch.long),
                        0,
                    )
                    bias = None if self.bias is None else self.bias.float()
                    self._packed = (key, torch.ops.quantized.linear_prepack(qweight, bias))
            except (RuntimeError, AttributeError, NotImplementedError) as exc:
                record_fbgemm_failure(f"{type(exc).__name__}: {exc}")
                warnings.warn(
                    f"hf_compress: fbgemm int8 kernel unavailable ({exc}); using oneDNN",
                    stacklevel=2,
                )
                return (
                    self._forward_onednn(x, x2d)
                    if onednn_available()
                    else self._forward_dequant(x2d)
                )
        # 7-bit inputs without VNNI, like onednn (fbgemm's AVX2 kernels sum u8 x s8 pairs in int16).
        reduce_range = (not cpu_has_vnni()) if self.reduce_range is None else self.reduce_range
        return torch.ops.quantized.linear_dynamic(x2d.contiguous(), self._packed[1], reduce_range)

    def _forward_dequant(self, x2d: torch.Tensor) -> torch.Tensor:
        scale, zero_point, qmax, clamp = self.input_grid(x2d)
        codes = quantize_activation(x2d, scale, zero_point, qmax, clamp)
        x_q = (codes.float() - zero_point) * scale
        bias = None if self.bias is None else self.bias.float()
        return F.linear(x_q, self.dequantized_weight().to(x_q.device), bias)


# Quantization-aware training ----------------------------------------------------------------
class QATLinear(nn.Linear):
    """An `nn.Linear` that trains with int8 fake quantization (Jacob et al. 2018).

    Forward: the weight is rounded to its per-output-channel symmetric int8 grid and the input
    to a per-tensor uint8 grid whose range is an exponential moving average of the batch
    minimum / maximum (updated in training mode, frozen in eval mode). Rounding passes gradients
    straight through inside the range, so the float weights keep learning.

    Args:
        in_features / out_features / bias: as `nn.Linear`.
        ema_decay: weight of the old range in the moving average.
        device / dtype: as `nn.Linear`.

    Buffers: `act_min`, `act_max` (the tracked range) and `observed` (whether a batch was seen).
    It stays an `nn.Linear`, so other modifiers of the same stage (pruning masks, distillation)
    see the usual `weight` and `bias`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        ema_decay: float = 0.99,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.ema_decay = ema_decay
        self.register_buffer("act_min", torch.zeros((), device=device))
        self.register_buffer("act_max", torch.zeros((), device=device))
        self.register_buffer("observed", torch.zeros((), dtype=torch.bool, device=device))

    @classmethod
    def from_linear(cls, linear: nn.Linear, ema_decay: float = 0.99) -> QATLinear:
        """Wraps `linear`, sharing its weight and bias tensors."""
        module = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            ema_decay,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
        # The same Parameter objects: anything holding them (other modifiers) stays valid.
        module.weight = linear.weight
        if linear.bias is not None:
            module.bias = linear.bias
        return module

    def to_float(self) -> nn.Linear:
        """A plain `nn.Linear` sharing this layer's (unrounded) weight and bias parameters."""
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        linear.weight = self.weight
        if self.bias is not None:
            linear.bias = self.bias
        return linear

    def input_qparams(self) -> tuple[float, int]:
        """Scale and zero point of the tracked input range (the static grid after conversion)."""
        return activation_qparams(float(self.act_min), float(self.act_max), ACT_QMAX)

    def fake_quantized_weight(self) -> torch.Tensor:
        weight = self.weight
        scale = (weight.detach().float().abs().amax(dim=1) / WEIGHT_QMAX).clamp(min=_MIN_SCALE)
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
        # PyTorch's op rounds and clamps with a straight-through gradient inside the range.
        return torch.fake_quantize_per_channel_affine(
            weight.float(), scale, zero_point, 0, -WEIGHT_QMAX, WEIGHT_QMAX
        ).to(weight.dtype)

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        low, high = torch.aminmax(x.detach().float())
        if not bool(self.observed):
            self.act_min.copy_(low)
            self.act_max.copy_(high)
            self.observed.fill_(True)
        else:
            self.act_min.lerp_(low, 1.0 - self.ema_decay)
            self.act_max.lerp_(high, 1.0 - self.ema_decay)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._observe(x)
        if bool(self.observed):
            scale, zero_point = self.input_qparams()
            x = torch.fake_quantize_per_tensor_affine(x.float(), scale, zero_point, 0, ACT_QMAX).to(
                x.dtype
            )
        return F.linear(x, self.fake_quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ema_decay={self.ema_decay}"


# Rows quantized per chunk: bounds the float32 working copy when tables are large (XLM-R: 250k
# rows).
_CHUNK_ROWS = 8192

# Smallest scale stored, so an all-constant group (e.g. the zero padding row) does not divide by
# zero.


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
                f"embedding_quantization: group_size {group} does not divide the embedding width "
                f"{embedding_dim}; choose a divisor of {embedding_dim} (or omit group_size for one "
                "scale per row)"
            )
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.bits = bits
        self.group_size = group_size
        self.padding_idx = padding_idx
        groups = embedding_dim // group
        dtype = dtype or torch.get_default_dtype()
        if bits == 8:
            self.register_buffer(
                "qweight",
                torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8, device=device),
            )
        else:
            packed = (embedding_dim + 1) // 2
            self.register_buffer(
                "qweight", torch.zeros(num_embeddings, packed, dtype=torch.uint8, device=device)
            )
            self.register_buffer(
                "offset", torch.zeros(num_embeddings, groups, dtype=dtype, device=device)
            )
        self.register_buffer(
            "scale", torch.ones(num_embeddings, groups, dtype=dtype, device=device)
        )

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
            # Quantize against the scale as stored (possibly bf16), so the stored pair is
            # consistent.
            codes = (
                torch.round(values / scale.float().unsqueeze(-1)).clamp(-127, 127).to(torch.int8)
            )
            self.qweight[start : start + count] = codes.reshape(count, -1)
        else:
            low = values.amin(-1).to(self.offset.dtype)
            scale = (
                ((values.amax(-1) - low.float()) / 15).clamp(min=_MIN_SCALE).to(self.scale.dtype)
            )
            codes = torch.round(
                (values - low.float().unsqueeze(-1)) / scale.float().unsqueeze(-1)
            ).clamp(0, 15)
            codes = codes.to(torch.uint8).reshape(count, -1)
            if codes.shape[1] % 2:
                codes = torch.nn.functional.pad(codes, (0, 1))
            self.qweight[start : start + count] = codes[:, 0::2] | (codes[:, 1::2] << 4)
            self.offset[start : start + count] = low
        self.scale[start : start + count] = scale

    # Lookup ---------------------------------------------------------------------------------
    def _dequantize(
        self, codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None
    ) -> torch.Tensor:
        count = codes.shape[0]
        if self.bits == 4:
            codes = torch.stack((codes & 0x0F, codes >> 4), dim=-1).reshape(count, -1)[
                :, : self.embedding_dim
            ]
        values = codes.to(scale.dtype).reshape(count, scale.shape[1], -1) * scale.unsqueeze(-1)
        if offset is not None:
            values = values + offset.unsqueeze(-1)
        return values.reshape(count, self.embedding_dim)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        flat = input_ids.reshape(-1)
        offset = self.offset.index_select(0, flat) if self.bits == 4 else None
        rows = self._dequantize(
            self.qweight.index_select(0, flat), self.scale.index_select(0, flat), offset
        )
        return rows.reshape(*input_ids.shape, self.embedding_dim)

    def dequantize(self) -> torch.Tensor:
        """The whole table as a float tensor (for inspection and error measurement)."""
        offset = self.offset if self.bits == 4 else None
        return self._dequantize(self.qweight, self.scale, offset)

    def onnx_int8_parts(self) -> dict[str, Any]:
        """What an ONNX export needs to keep this table quantized (checkpoint/onnx_int8.py):
        `kind` "embedding", `bits`, `embedding_dim`, `qweight` (the stored codes), `scale`
        `[rows, groups]` and, for 4 bits, `offset` (else None)."""
        return {
            "kind": "embedding",
            "bits": self.bits,
            "embedding_dim": self.embedding_dim,
            "qweight": self.qweight.detach().cpu(),
            "scale": self.scale.detach().float().cpu(),
            "offset": self.offset.detach().float().cpu() if self.bits == 4 else None,
        }

    def to_float(self) -> nn.Embedding:
        """A plain float `nn.Embedding` with the dequantized table."""
        weight = self.dequantize().float()
        embedding = nn.Embedding(*weight.shape, padding_idx=self.padding_idx, device=weight.device)
        with torch.no_grad():
            embedding.weight.copy_(weight)
        return embedding

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized table, for code that reads `get_input_embeddings().weight` (shape, dtype,
        device, values). It is a new tensor, not a parameter: assigning to it changes nothing."""
        return self.dequantize()

    # Vocabulary pruning composes with this module: keep some rows, codes untouched --------
    def select_rows(
        self, index: torch.Tensor, padding_idx: int | None = None
    ) -> QuantizedEmbedding:
        """A new `QuantizedEmbedding` holding only rows `index` (same codes, no requantization)."""
        new = QuantizedEmbedding(
            len(index),
            self.embedding_dim,
            self.bits,
            self.group_size,
            padding_idx,
            self.scale.dtype,
            self.scale.device,
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
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}{group}, "
            f"padding_idx={self.padding_idx}"
        )


def expected_storage_bytes(
    rows: int, dim: int, bits: int, group_size: int | None, scale_bytes: int = 4
) -> int:
    """Bytes a `QuantizedEmbedding` of this shape stores (codes, scales, 4-bit offsets)."""
    groups = dim // (group_size or dim)
    codes = rows * (dim if bits == 8 else math.ceil(dim / 2))
    return codes + rows * groups * scale_bytes * (1 if bits == 8 else 2)


class TiedInt8Embedding(nn.Module):
    """The input embedding of a language model whose output layer shares its matrix (tied
    embeddings, as in Llama-family small models and GPT-2), once that output layer is an
    `Int8Linear`: it holds no tensor of its own and looks token rows up in the output layer's
    int8 weight (one scale per row, i.e. per token), so the checkpoint stores the matrix once,
    as int8, and both ends of the model read it.

    Args:
        head: the int8 output layer (`[vocabulary, hidden]`).
        padding_idx: kept for code that reads `embedding.padding_idx`.
        dtype: dtype of the looked-up rows (the model's float dtype).
    """

    def __init__(
        self, head: Int8Linear, padding_idx: int | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        # Not a submodule: registering it here too would save its tensors twice.
        object.__setattr__(self, "_head", head)
        self.num_embeddings = head.out_features
        self.embedding_dim = head.in_features
        self.padding_idx = padding_idx
        self.dtype = dtype or torch.get_default_dtype()

    @property
    def head(self) -> Int8Linear:
        return self._head

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        flat = input_ids.reshape(-1)
        codes = self._head.weight.index_select(0, flat)
        rows = codes.float() * self._head.weight_scale.index_select(0, flat).float()[:, None]
        return rows.to(self.dtype).reshape(*input_ids.shape, self.embedding_dim)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized table, for code that reads `get_input_embeddings().weight`."""
        return self._head.dequantized_weight().to(self.dtype)

    def to_float(self) -> nn.Embedding:
        """A plain float `nn.Embedding` with the dequantized table."""
        weight = self._head.dequantized_weight()
        embedding = nn.Embedding(*weight.shape, padding_idx=self.padding_idx, device=weight.device)
        with torch.no_grad():
            embedding.weight.copy_(weight)
        return embedding

    def compressed_numel(self) -> tuple[int, int]:
        """Nothing of its own: the output layer counts the shared matrix once."""
        return 0, 0

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8, tied to the output layer"
