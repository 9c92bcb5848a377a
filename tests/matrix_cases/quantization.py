"""`quantization` cases for the shared matrix (hf_compress/methods/quantization/).

bitsandbytes 4-bit is tested in tests/test_quantization.py on a 64-wide model: its CPU kernel
needs in_features % 64 == 0, which the matrix's 32-wide tiny models do not have.
"""

from matrix import MatrixCase

CASES = [
    MatrixCase(
        id="int8-dynamic",
        modifiers=[{"type": "quantization", "method": "int8_dynamic"}],
        shrinks="bytes",
    ),
    MatrixCase(
        id="int8-dynamic-embeddings",
        modifiers=[{"type": "quantization", "method": "int8_dynamic", "include_embeddings": True}],
        shrinks="bytes",
    ),
    # the most sensitive Linear layer (measured on training batches) kept in float
    MatrixCase(
        id="int8-dynamic-fp32-fallback",
        modifiers=[{"type": "quantization", "method": "int8_dynamic", "fp32_fallback": 1}],
        shrinks="bytes",
    ),
    # quantization-aware training for one epoch, converted to the same int8 storage
    MatrixCase(
        id="qat-int8",
        modifiers=[{"type": "quantization", "method": "qat_int8"}],
        epochs=1,
        shrinks="bytes",
    ),
    # the same, taught by the unquantized model (minilm-mrpc-qat-int8-distill.yaml)
    MatrixCase(
        id="qat-int8-distill",
        modifiers=[
            {"type": "quantization", "method": "qat_int8"},
            {"type": "distillation", "temperature": 2.0, "alpha_kd": 0.8, "alpha_ce": 0.2},
        ],
        epochs=1,
        teacher=True,
        shrinks="bytes",
    ),
    MatrixCase(
        id="bnb-8bit", modifiers=[{"type": "quantization", "method": "bnb_8bit"}], shrinks="bytes"
    ),
]
