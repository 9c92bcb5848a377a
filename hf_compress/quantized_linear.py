"""Int8 linear layers that stay int8 on disk, and the fake-quantized layer QAT trains with.

`Int8Linear` keeps a Linear layer as plain tensors: an int8 weight (one symmetric scale per
output channel), the float bias and, after quantization-aware training, a static activation
scale and zero point. They are ordinary buffers, so `save_pretrained` writes int8 to
safetensors (4x smaller than fp32) and `from_pretrained` reloads them through the compressed
checkpoint format (`compression_config["int8_linear"]`), never inflating back to fp32.

How it computes is chosen at run time from the same stored tensors; checkpoints never depend
on a kernel:

- `fbgemm` (dynamically quantized layers on x86 CPUs, the default there):
  `torch.ops.quantized.linear_dynamic`, which measures and quantizes each input inside its GEMM.
  The fastest eager int8 path measured here (scripts/bench_int8_latency.py, MiniLM-sized BERT,
  batch 32 x seq 128, a shared 2-core AMD EPYC with VNNI): 3.6x faster than fp32 on one
  thread, 2.1x on two threads of a machine busy with other work. Its weight packing goes
  through PyTorch's quantized tensor type, which PyTorch 2.13 deprecates; here the packed
  weight is only a run-time cache, so if a release removes that type the layers switch to
  `onednn` by themselves. (That is the difference from `torch.ao.quantization.quantize_dynamic`,
  the same kernel, whose module state is the packed object: it does not save to safetensors or
  reload through `from_pretrained`.)
- `onednn` (layers with a static QAT input range; the fallback): the input is quantized to uint8
  (with the stored range, or its own) and multiplied by `torch.ops.onednn.qlinear_pointwise`,
  oneDNN's u8 x s8 -> int32 GEMM with scales and bias applied in its epilogue: the kernel
  PyTorch's own x86 int8 path (PT2E with `X86InductorQuantizer`, used by torchao) lowers to, on
  plain uint8 / int8 tensors. It uses a static range exactly (so a converted QAT layer computes
  what the fake-quantized one did), but quantizing a dynamic input costs three eager passes
  (range, scale + shift, convert), each a parallel region of its own: 3.6x faster than fp32 on
  one thread, like fbgemm, but only 1.3x on two threads of a busy machine, where every region
  waits for the descheduled thread (a shared 2-core AMD EPYC with VNNI, no AMX). On a 2-core
  Intel Xeon with AMX int8 it was 1.64-1.73x faster than fp32 at batch 32 against fbgemm's
  1.46-1.54x, and equal at batch 1, in two sessions (scripts/bench_int8_latency.py,
  BENCHMARKS.md), but on the pruned quickstart model 24-26% slower at batch 1 (7-9% faster at
  batch 32; scripts/int8_kernel_check.py), so fbgemm stays the default there too. torchao's int8
  tensor subclasses were no faster than fp32 in eager mode (1.4x on one thread, 0.3x on two busy
  ones) and 3.5x faster only after a 30-60 s `torch.compile` per input shape, so they were not
  used.
- `dequant` (every other device: CUDA, ARM, ...): the same integer arithmetic emulated in
  float (dequantized weight, fake-quantized input). The reference the tests compare against;
  not faster than fp32.

Without VNNI, x86 int8 kernels sum pairs of u8 x s8 products in int16, which can saturate, so
there the inputs use 7 bits (`reduce_range`).

The packed weight the kernel wants is a private run-time cache (not a buffer), rebuilt when
the weight changes or the module moves, so checkpoints hold only the portable int8 tensors.

`QATLinear` is an `nn.Linear` whose forward fake-quantizes the weight (per output channel,
symmetric) and the input (per tensor, asymmetric uint8, range tracked with an exponential moving
average) with straight-through gradients (Jacob et al. 2018). `Int8Linear.from_qat` converts it
to the same int8 storage, keeping the learned input range, so the converted layer computes what
the fake-quantized one did.
"""

from __future__ import annotations

import functools
import os
import platform
import threading
import warnings
import weakref
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

BACKENDS = ("auto", "onednn", "fbgemm", "dequant")
# What a recipe may ask for (`quantization.kernel`), saved with each layer in the checkpoint:
# `auto` = the default choice (see `cpu_backend`); `onednn_on_amx` = oneDNN where the CPU has AMX
# int8 tiles (faster at batch 32 there, slower at batch 1 on narrow layers), `auto` elsewhere.
KERNELS = ("auto", "fbgemm", "onednn", "onednn_on_amx")
# Symmetric int8 weights use [-127, 127]: keeping -128 out makes the grid symmetric around zero.
WEIGHT_QMAX = 127
# Inputs: asymmetric uint8; the zero point keeps 0.0 exactly representable (padding, GELU tails).
ACT_QMAX = 255
# 7-bit inputs for CPUs without VNNI, where u8 x s8 pairs summed in int16 could saturate.
ACT_QMAX_REDUCED = 127
_MIN_SCALE = 1e-12


# Quantization arithmetic shared by the fake-quantized and the integer layers ---------------
def quantize_weight_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 quantization of a `[out, in]` weight.

    Returns:
        (int8 codes `[out, in]`, float32 scales `[out]`) with `weight ~= codes * scale[:, None]`.
    """
    weight = weight.detach().float()
    scale = (weight.abs().amax(dim=1) / WEIGHT_QMAX).clamp(min=_MIN_SCALE)
    codes = torch.round(weight / scale[:, None]).clamp(-WEIGHT_QMAX, WEIGHT_QMAX).to(torch.int8)
    return codes, scale


def activation_qparams(low: float, high: float, levels: int = ACT_QMAX) -> tuple[float, int]:
    """Scale and zero point of an asymmetric uint8 grid of `levels` steps covering [low, high] and 0.0.

    Dynamic quantization passes one step fewer than its largest code: then every value inside
    the range lands on a code in [0, qmax] without a clamping pass, because rounding the zero
    point moves the grid by at most half a step.
    """
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / levels
    if not scale > _MIN_SCALE:  # an all-zero input (or a NaN range): any scale represents it
        return 1.0, 0
    # Round through float32, the precision fake quantization and the kernels keep scales in.
    scale = float(torch.tensor(scale, dtype=torch.float32))
    zero_point = int(min(max(round(-low / scale), 0), levels))
    return scale, zero_point


def quantize_activation(
    x: torch.Tensor, scale: float, zero_point: int, qmax: int, clamp: bool = True, reuse: bool = False
) -> torch.Tensor:
    """uint8 codes of a float32 `x` on the grid (scale, zero_point), rounding half up.

    Computed as `zero_point + 0.5 + x / scale` (one pass), optionally clamped, then truncated to
    uint8 (one pass): two or three memory passes, which is what this costs in eager mode.
    `torch.quantize_per_tensor` does the same through a deprecated quantized tensor plus a copy.

    Args:
        reuse: write into this thread's workspace instead of new tensors (saves allocating, and
            the page faults, at every call); the codes are then valid until the next call.
    """
    x = x.detach()  # rounding has no gradient; int8 layers do not train
    n = x.numel()
    if reuse and n <= _WORKSPACE_MAX and x.device.type == "cpu":
        shifted, codes = _WORKSPACE.get(n)
        shifted, codes = shifted.view(x.shape), codes.view(x.shape)
        torch.add(_scalar(zero_point + 0.5), x, alpha=1.0 / scale, out=shifted)
    else:
        shifted = torch.add(_scalar(zero_point + 0.5), x, alpha=1.0 / scale)
        codes = None
    if clamp:
        shifted.clamp_(0, qmax + 0.5 - 1e-3)
    if codes is None:
        return shifted.to(torch.uint8)
    return codes.copy_(shifted)  # float -> uint8 conversion truncates, like .to(torch.uint8)


class _Workspace(threading.local):
    """Per thread: buffers for quantizing inputs (float32 scratch and uint8 codes), grown on demand."""

    def __init__(self) -> None:
        self.float = torch.empty(0)
        self.codes = torch.empty(0, dtype=torch.uint8)

    def get(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.float.numel() < n:
            # Normal tensors even when the first call comes under torch.inference_mode (e.g. an
            # evaluation): inference tensors could not be written to by a later call outside it.
            with torch.inference_mode(False):
                self.float = torch.empty(n)
                self.codes = torch.empty(n, dtype=torch.uint8)
        return self.float[:n], self.codes[:n]


# Inputs above this many values get fresh tensors (a 64 MB float scratch at most stays alive).
_WORKSPACE_MAX = 1 << 24
_WORKSPACE = _Workspace()


@functools.lru_cache(maxsize=1024)
def _scalar(value: float) -> torch.Tensor:
    with torch.inference_mode(False):  # cached across calls in and out of inference mode
        return torch.tensor(value, dtype=torch.float32)


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def _is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "x86", "i686")


@functools.lru_cache(maxsize=1)
def onednn_available() -> bool:
    return _is_x86() and torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")


# Set when fbgemm's packing fails (e.g. a PyTorch that removed the quantized tensor types).
_FBGEMM_FAILED: list[str] = []


def fbgemm_available() -> bool:
    return (
        _is_x86()
        and not _FBGEMM_FAILED
        and "fbgemm" in torch.backends.quantized.supported_engines
        and hasattr(torch.ops.quantized, "linear_dynamic")
    )


@functools.lru_cache(maxsize=1)
def cpu_has_amx_int8() -> bool:
    """Whether the CPU has AMX int8 tiles (Intel Xeon since Sapphire Rapids), which oneDNN uses."""
    return "amx_int8" in _cpu_flags()


def cpu_backend(static_activations: bool = False, kernel: str = "auto") -> str:
    """The int8 kernel for a layer on this machine's CPU (see the module docstring).

    By default `fbgemm` for dynamic inputs, `onednn` for static (QAT) ones and wherever fbgemm is
    missing, `dequant` off x86. `kernel` is the layer's saved preference (`KERNELS`), honoured where
    this machine can run it and ignored elsewhere, so a checkpoint runs everywhere. The environment
    variable HF_COMPRESS_INT8_BACKEND (onednn | fbgemm | dequant) overrides both: on CPUs with AMX
    int8, oneDNN (which uses AMX; fbgemm does not) measured 9-12% faster at batch 32 but up to 26%
    slower at batch 1, so it is not the default.
    """
    forced = os.environ.get("HF_COMPRESS_INT8_BACKEND", "").strip().lower()
    if forced in BACKENDS[1:]:
        return forced
    if kernel not in KERNELS:
        raise ValueError(f"int8 kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    if kernel == "onednn_on_amx":
        kernel = "onednn" if cpu_has_amx_int8() else "auto"
    if kernel == "onednn" and onednn_available():
        return "onednn"
    if not static_activations and fbgemm_available():
        return "fbgemm"  # also `kernel: fbgemm`; static (QAT) inputs need oneDNN, which takes a fixed range
    return "onednn" if onednn_available() else "dequant"


@functools.lru_cache(maxsize=1)
def cpu_has_vnni() -> bool:
    """Whether the CPU multiplies u8 x s8 into int32 directly (VNNI / AMX): then inputs keep 8 bits."""
    return bool(_cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def _version(x: torch.Tensor) -> int | None:
    # Inference-mode tensors have no version counter.
    return None if x.is_inference() else x._version


class _LastInput(threading.local):
    """Per thread: the last quantized input (see `Int8Linear._quantized_input`)."""

    entry: tuple[Any, ...] | None = None


_LAST_INPUT = _LastInput()


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
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32, device=device) if bias else None)
        if static_activations:
            self.register_buffer("input_scale", torch.ones((), dtype=torch.float32, device=device))
            self.register_buffer("input_zero_point", torch.zeros((), dtype=torch.int32, device=device))
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

    @classmethod
    def from_qat(cls, layer: QATLinear, kernel: str = "auto") -> Int8Linear:
        """Converts a trained `QATLinear`, keeping its learned input range as a static one.

        Raises:
            ValueError: the layer never ran in training mode, so it has no input range.
        """
        if not bool(layer.observed):
            raise ValueError("this QATLinear never saw an input in training mode, so it has no input range")
        return cls.from_linear(layer.to_linear(), input_qparams=layer.input_qparams(), kernel=kernel)

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
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"inputs={inputs}{kernel}"
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
            raise ValueError(f"Int8Linear.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if device.type != "cpu":
            return "dequant"
        return cpu_backend(self.static_activations, self.kernel) if self.backend == "auto" else self.backend

    def input_grid(self, x2d: torch.Tensor) -> tuple[float, int, int, bool]:
        """(scale, zero point, largest code, whether codes need clamping) for input `x2d`."""
        reduced = (not cpu_has_vnni()) if self.reduce_range is None else self.reduce_range
        qmax = ACT_QMAX_REDUCED if reduced else ACT_QMAX
        if self.static_activations:
            scale, zero_point = float(self.input_scale), int(self.input_zero_point)
            if reduced:  # the same range on the coarser 7-bit grid
                scale, zero_point = activation_qparams(-zero_point * scale, (ACT_QMAX - zero_point) * scale, qmax)
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
            codes, scale, zero_point, packed, weight_scale, zero_points, bias, 1.0, 0, torch.float32, "none", [], ""
        )

    def _quantized_input(self, x: torch.Tensor, x2d: torch.Tensor) -> tuple[torch.Tensor, float, int]:
        """The input's uint8 codes with their scale and zero point.

        Quantizing an input is memory-bound and costs a few passes over it, so the codes are
        shared by consecutive layers that read the same tensor with the same grid (query, key
        and value in attention). The check holds a weak reference to the input object (never
        its address, which the allocator reuses) and its version counter, so an in-place change
        is noticed; in inference mode tensors have no version counter, and an input changed in
        place between two layers reading it would go unnoticed (no encoder in transformers does
        that between its query, key and value projections).
        """
        static = (float(self.input_scale), int(self.input_zero_point)) if self.static_activations else None
        last = _LAST_INPUT.entry
        if last is not None and last[0]() is x and last[1] == _version(x) and last[2] == static:
            return last[3]
        scale, zero_point, qmax, clamp = self.input_grid(x2d)
        # The workspace is safe here: the codes are consumed before the next input is quantized,
        # and replacing the shared entry below drops the only other reference to them.
        result = (quantize_activation(x2d, scale, zero_point, qmax, clamp, reuse=True), scale, zero_point)
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
                        self.weight, self.weight_scale.double(), torch.zeros(self.out_features, dtype=torch.long), 0
                    )
                    bias = None if self.bias is None else self.bias.float()
                    self._packed = (key, torch.ops.quantized.linear_prepack(qweight, bias))
            except (RuntimeError, AttributeError, NotImplementedError) as exc:
                _FBGEMM_FAILED.append(f"{type(exc).__name__}: {exc}")
                warnings.warn(f"hf_compress: fbgemm int8 kernel unavailable ({exc}); using oneDNN", stacklevel=2)
                return self._forward_onednn(x, x2d) if onednn_available() else self._forward_dequant(x2d)
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

    def to_linear(self) -> nn.Linear:
        """A plain `nn.Linear` with the same (unrounded) weights."""
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
            x = torch.fake_quantize_per_tensor_affine(x.float(), scale, zero_point, 0, ACT_QMAX).to(x.dtype)
        return F.linear(x, self.fake_quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ema_decay={self.ema_decay}"
