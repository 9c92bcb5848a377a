"""The int8 arithmetic and kernels behind `Int8Linear` and `QATLinear`.

How an int8 layer computes is chosen at run time from the same stored tensors, so checkpoints
never depend on a kernel (`cpu_backend`):

- `fbgemm` (dynamically quantized layers on x86 CPUs, the default there):
  `torch.ops.quantized.linear_dynamic`, which measures and quantizes each input inside its GEMM;
  the fastest eager int8 path on the CPUs measured (BENCHMARKS.md). Its weight packing goes
  through PyTorch's quantized tensor type, which PyTorch 2.13 deprecates; the packed weight is
  only a run-time cache, so if a release removes that type the layers switch to `onednn` by
  themselves. (That is the difference from `torch.ao.quantization.quantize_dynamic`, the same
  kernel, whose module state is the packed object: it does not save to safetensors or reload
  through `from_pretrained`.)
- `onednn` (layers with a static QAT input range, and the fallback): the input is quantized to
  uint8 (with the stored range, or its own) and multiplied by
  `torch.ops.onednn.qlinear_pointwise`, oneDNN's u8 x s8 -> int32 GEMM with scales and bias in
  its epilogue, the kernel PyTorch's own x86 int8 path lowers to. It uses a static range exactly
  (a converted QAT layer computes what the fake-quantized one did), but quantizing a dynamic
  input costs three eager passes, so it is not the default for dynamic layers; on CPUs with AMX
  int8 a recipe may prefer it (`kernel: onednn_on_amx`): faster at large batches there, slower
  at batch 1 (BENCHMARKS.md, "Machine and software").
- `dequant` (every other device: CUDA, ARM, ...): the same integer arithmetic emulated in
  float (dequantized weight, fake-quantized input). The reference the tests compare against;
  not faster than fp32.

Without VNNI, x86 int8 kernels sum pairs of u8 x s8 products in int16, which can saturate, so
there the inputs use 7 bits (`reduce_range`).
"""

from __future__ import annotations

import functools
import os
import platform
import threading
from pathlib import Path
from typing import Any

import torch

from .config import BACKENDS, KERNELS

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
    """Scale and zero point of an asymmetric uint8 grid of `levels` steps covering [low, high] and
    0.0.

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
    x: torch.Tensor,
    scale: float,
    zero_point: int,
    qmax: int,
    clamp: bool = True,
    reuse: bool = False,
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
    """Per thread: buffers for quantizing inputs (float32 scratch and uint8 codes), grown on
    demand."""

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
    return (
        _is_x86()
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.onednn, "qlinear_pointwise")
    )


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


def record_fbgemm_failure(reason: str) -> None:
    """Marks fbgemm unusable in this process (`fbgemm_available()` is then False)."""
    _FBGEMM_FAILED.append(reason)


def cpu_backend(static_activations: bool = False, kernel: str = "auto") -> str:
    """The int8 kernel for a layer on this machine's CPU (see the module docstring).

    By default `fbgemm` for dynamic inputs, `onednn` for static (QAT) ones and wherever fbgemm is
    missing, `dequant` off x86. `kernel` is the layer's saved preference (`KERNELS`), honoured where
    this machine can run it and ignored elsewhere, so a checkpoint runs everywhere. The environment
    variable HF_COMPRESS_INT8_BACKEND (onednn | fbgemm | dequant) overrides both.
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
        # also `kernel: fbgemm`; static (QAT) inputs need oneDNN, which takes a fixed range
        return "fbgemm"
    return "onednn" if onednn_available() else "dequant"


@functools.lru_cache(maxsize=1)
def cpu_has_vnni() -> bool:
    """Whether the CPU multiplies u8 x s8 into int32 directly (VNNI / AMX): then inputs keep 8
    bits."""
    return bool(_cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def _version(x: torch.Tensor) -> int | None:
    # Inference-mode tensors have no version counter.
    return None if x.is_inference() else x._version


class _LastInput(threading.local):
    """Per thread: the last quantized input (see `Int8Linear._quantized_input`)."""

    entry: tuple[Any, ...] | None = None


_LAST_INPUT = _LastInput()
