"""The recipe's int8 layers as int8 ONNX: what `export_onnx` puts in the graph for them.

A storage layer that describes itself with `onnx_int8_parts()` (a plain dict of tensors; see
`Int8Linear` and `QuantizedEmbedding` in methods/quantization/layers.py) is replaced, before the
export, by a small module of this file that holds the same int8 tensors as buffers, so the
graph's initializers are the recipe's own codes and scales under the module's name:

- a Linear layer (`kind: "linear"`) calls the placeholder op `hf_compress::int8_linear`, which
  `torch.onnx.export` translates (`custom_translation_table`) into an integer MatMul:
  `DynamicQuantizeLinear` + `MatMulInteger` for dynamic inputs (the fastest form measured, see
  `INT8_MATMUL_DEFAULT`), `QuantizeLinear` + `MatMulInteger` for the fixed input grid learned
  by QAT; then Cast, Mul by the input and weight scales, Add the bias. ONNX Runtime fuses these
  into its integer kernels (DynamicQuantizeMatMul, MatMulIntegerToFloat).
- an embedding table (`kind: "embedding"`) is looked up with standard ops: Gather of the int8
  rows and of their scales, Cast, Mul (4 bits: Gather of the packed bytes, each split into its
  two codes with Div / Floor / Sub, then Mul by the scale and Add the offset).

Everything here is the public exporter and ONNX Runtime's own operators; this module only says
which operator each stored layer becomes.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

# The ONNX forms of an int8 Linear layer with dynamic inputs (all three compute the same integer
# products and run on ONNX Runtime's integer kernels):
#   "MatMulInteger": standard ops, DynamicQuantizeLinear + MatMulInteger + Cast + Mul + Add. The
#       exporter merges the identical DynamicQuantizeLinear of query, key and value (one input),
#       so that input is quantized once; ONNX Runtime fuses the rest into DynamicQuantizeMatMul
#       and MatMulIntegerToFloat.
#   "DynamicQuantizeMatMul": the contrib op alone (what ONNX Runtime's own dynamic quantization
#       fuses to), one per layer: query, key and value each quantize the same input.
#   "QDQ": DynamicQuantizeLinear, DequantizeLinear on both sides of a float MatMul, bias Add.
# Measured in one process, interleaved run by run, medians of 40, 2 threads, Intel Xeon (AMX),
# ONNX Runtime 1.32, all-MiniLM-L6-v2 with every Linear int8, seq 128, three runs
# (benchmarks/onnx_int8_export.py --compare-ops), ms for MatMulInteger / DynamicQuantizeMatMul /
# QDQ: batch 1: 13.5 / 13.8 / 14.0, 14.2 / 14.7 / 14.6, 13.3 / 13.3 / 13.5; batch 32:
# 351 / 355 / 359, 379 / 385 / 389, 471 / 446 / 478 (the last under load from another process).
# The forms are within 3% of each other; MatMulInteger was the fastest or tied in 5 of 6 (its
# shared input quantization), and its standard ops also run on runtimes without ONNX Runtime's
# contrib ops, so it is the default.
#   "WeightDequantize": DequantizeLinear of the int8 weights, a float MatMul, bias Add; inputs
#       stay float (QAT's fixed grid as Quantize/DequantizeLinear). For OpenVINO, whose ONNX
#       reader turns MatMulInteger's int8 weights into int32 constants (4 bytes a weight) but
#       keeps a DequantizeLinear weight as int8 codes that its CPU kernels decompress.
INT8_MATMUL_OPS = ("MatMulInteger", "DynamicQuantizeMatMul", "QDQ", "WeightDequantize")
INT8_MATMUL_DEFAULT = "MatMulInteger"
OPENVINO_INT8_MATMUL = "WeightDequantize"


# The placeholder op -----------------------------------------------------------------------
@torch.library.custom_op("hf_compress::int8_linear", mutates_args=())
def int8_linear(
    x: torch.Tensor,
    weight_t: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    input_scale: torch.Tensor | None,
    input_zero_point: torch.Tensor | None,
) -> torch.Tensor:
    """`x @ dequantized weight + bias` with `x` rounded to a uint8 grid first: its own range
    (dynamic) or `input_scale` / `input_zero_point` (static), as the ONNX graph computes it.
    `weight_t`: int8 `[in, out]`."""
    if input_scale is None:
        low, high = x.min().clamp(max=0), x.max().clamp(min=0)
        scale = ((high - low) / 255).clamp(min=1e-12)
        zero_point = torch.round(-low / scale).clamp(0, 255)
    else:
        scale, zero_point = input_scale, input_zero_point.float()
    codes = torch.clamp(torch.round(x / scale) + zero_point, 0, 255)
    out = ((codes - zero_point) @ weight_t.float()) * (scale * weight_scale)
    return out if bias is None else out + bias


@int8_linear.register_fake
def _(x, weight_t, weight_scale, bias, input_scale, input_zero_point):
    return x.new_empty((*x.shape[:-1], weight_t.shape[1]))


# Export modules -----------------------------------------------------------------------------
class OnnxInt8Linear(nn.Module):
    """An int8 Linear layer in the form the exporter translates (see the module docstring).

    Buffers: `weight_t` int8 `[in, out]` (the layout of ONNX's MatMul B), `weight_scale` float32
    `[out]`, `bias` float32 `[out]` (if any), and with static inputs `input_scale` (float32 scalar)
    and `input_zero_point` (uint8 scalar, the type QuantizeLinear wants).
    """

    def __init__(self, parts: dict[str, Any]) -> None:
        super().__init__()
        self.register_buffer("weight_t", parts["weight"].t().contiguous())
        self.register_buffer("weight_scale", parts["weight_scale"].float().contiguous())
        bias = parts.get("bias")
        self.register_buffer("bias", None if bias is None else bias.float().contiguous())
        static = parts.get("input_scale") is not None
        self.register_buffer(
            "input_scale", torch.tensor(float(parts["input_scale"])) if static else None
        )
        self.register_buffer(
            "input_zero_point",
            torch.tensor(int(parts["input_zero_point"]), dtype=torch.uint8) if static else None,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.hf_compress.int8_linear(
            x, self.weight_t, self.weight_scale, self.bias, self.input_scale, self.input_zero_point
        )


class OnnxQuantizedEmbedding(nn.Module):
    """A quantized embedding table looked up with standard ops.

    Buffers: `qweight` (int8 `[rows, dim]`, or uint8 `[rows, ceil(dim / 2)]` two 4-bit codes per
    byte, low nibble first), `scale` float32 `[rows, groups]` and, for 4 bits, `offset`.
    """

    def __init__(self, parts: dict[str, Any]) -> None:
        super().__init__()
        self.bits = int(parts["bits"])
        self.embedding_dim = int(parts["embedding_dim"])
        self.register_buffer("qweight", parts["qweight"].contiguous())
        self.register_buffer("scale", parts["scale"].float().contiguous())
        offset = parts.get("offset")
        self.register_buffer("offset", None if offset is None else offset.float().contiguous())

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # index_select on the flat ids: one Gather straight from the named initializer (advanced
        # indexing exports as a reshaped copy of the table instead)
        flat = input_ids.reshape(-1)
        values = self.qweight.index_select(0, flat).float()
        if self.bits == 4:
            # The two codes of a byte, low nibble first, in float (exact for 0..255): the
            # exporter's uint8 shift and mask do not type-check in ONNX Runtime.
            high = torch.floor(values / 16)
            values = torch.stack((values - 16 * high, high), dim=-1).flatten(-2)
            values = values[:, : self.embedding_dim]
        groups = self.scale.shape[-1]
        values = (
            values.reshape(flat.shape[0], groups, -1) * self.scale.index_select(0, flat)[..., None]
        )
        if self.offset is not None:
            values = values + self.offset.index_select(0, flat)[..., None]
        return values.reshape(*input_ids.shape, self.embedding_dim)


# Translations -------------------------------------------------------------------------------
@functools.cache
def _contrib_op(name: str) -> Any:
    """An ONNX Runtime contrib op (domain com.microsoft) as an onnxscript op. onnx does not know
    these schemas, so each is declared here, with the inputs ONNX Runtime documents."""
    import onnxscript
    from onnx.defs import OpSchema

    param, optional = OpSchema.FormalParameter, OpSchema.FormalParameterOption.Optional
    signatures = {
        # A float, B int8 [K, N], b_scale [N], b_zero_point [N], bias [N] -> float
        "DynamicQuantizeMatMul": (
            [("A", "T1", False), ("B", "T2", False), ("b_scale", "T1", False)]
            + [("b_zero_point", "T2", True), ("bias", "T1", True)]
        ),
    }
    schema = OpSchema(
        name,
        "com.microsoft",
        1,
        inputs=[
            param(n, t, param_option=optional) if opt else param(n, t)
            for n, t, opt in signatures[name]
        ],
        outputs=[param("Y", "T1")],
        type_constraints=[
            ("T1", ["tensor(float)"], ""),
            ("T2", ["tensor(int8)", "tensor(uint8)"], ""),
        ],
    )
    return onnxscript.values.Op(onnxscript.values.Opset("com.microsoft", 1), name, schema)


def _translation(kind: str) -> Any:
    """The onnxscript function that `torch.onnx.export` calls for each `int8_linear` node."""
    from onnx import TensorProto
    from onnxscript import opset18 as op

    def static_inputs(x, weight_t, weight_scale, bias, input_scale, input_zero_point):
        # The fixed uint8 grid QAT learned: QuantizeLinear rounds half to even and saturates, as
        # PyTorch's quantize_per_tensor does.
        codes = op.QuantizeLinear(x, input_scale, input_zero_point)
        out = op.MatMulInteger(codes, weight_t, input_zero_point)
        out = op.Mul(op.Cast(out, to=TensorProto.FLOAT), op.Mul(input_scale, weight_scale))
        return out if bias is None else op.Add(out, bias)

    def dynamic_fused(x, weight_t, weight_scale, bias, input_scale, input_zero_point):
        if input_scale is not None:
            return static_inputs(x, weight_t, weight_scale, bias, input_scale, input_zero_point)
        return _contrib_op("DynamicQuantizeMatMul")(x, weight_t, weight_scale, None, bias)

    def dynamic_integer(x, weight_t, weight_scale, bias, input_scale, input_zero_point):
        if input_scale is not None:
            return static_inputs(x, weight_t, weight_scale, bias, input_scale, input_zero_point)
        codes, scale, zero_point = op.DynamicQuantizeLinear(x)
        out = op.MatMulInteger(codes, weight_t, zero_point)
        out = op.Mul(op.Cast(out, to=TensorProto.FLOAT), op.Mul(scale, weight_scale))
        return out if bias is None else op.Add(out, bias)

    def dynamic_qdq(x, weight_t, weight_scale, bias, input_scale, input_zero_point):
        if input_scale is not None:
            scale, zero_point = input_scale, input_zero_point
            codes = op.QuantizeLinear(x, scale, zero_point)
        else:
            codes, scale, zero_point = op.DynamicQuantizeLinear(x)
        weight = op.DequantizeLinear(weight_t, weight_scale, axis=1)
        out = op.MatMul(op.DequantizeLinear(codes, scale, zero_point), weight)
        return out if bias is None else op.Add(out, bias)

    def weight_dequantize(x, weight_t, weight_scale, bias, input_scale, input_zero_point):
        if input_scale is not None:
            codes = op.QuantizeLinear(x, input_scale, input_zero_point)
            x = op.DequantizeLinear(codes, input_scale, input_zero_point)
        out = op.MatMul(x, op.DequantizeLinear(weight_t, weight_scale, axis=1))
        return out if bias is None else op.Add(out, bias)

    return {
        "WeightDequantize": weight_dequantize,
        "DynamicQuantizeMatMul": dynamic_fused,
        "MatMulInteger": dynamic_integer,
        "QDQ": dynamic_qdq,
    }[kind]


def translation_table(int8_matmul: str = INT8_MATMUL_DEFAULT) -> dict[Any, Any]:
    """`custom_translation_table` for `torch.onnx.export` of a model holding `OnnxInt8Linear`."""
    if int8_matmul not in INT8_MATMUL_OPS:
        raise ValueError(f"int8_matmul must be one of {INT8_MATMUL_OPS}, got {int8_matmul!r}")
    return {torch.ops.hf_compress.int8_linear.default: _translation(int8_matmul)}


# Replacing the storage layers ---------------------------------------------------------------
def export_module(module: nn.Module) -> nn.Module | None:
    """The export module for a storage layer that keeps int8 in the graph, or None."""
    describe = getattr(module, "onnx_int8_parts", None)
    if not callable(describe):
        return None
    parts = describe()
    if parts is None:
        return None
    if parts["kind"] == "linear":
        return OnnxInt8Linear(parts)
    if parts["kind"] == "embedding":
        return OnnxQuantizedEmbedding(parts)
    raise ValueError(f"unknown onnx_int8_parts kind {parts['kind']!r} of {type(module).__name__}")
