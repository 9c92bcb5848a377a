"""`quantization` cases for the shared matrix (hf_compress/modifiers/quantization.py, bnb.py).

bitsandbytes 4-bit is tested in tests/test_quantization.py on a 64-wide model: its CPU kernel
needs in_features % 64 == 0, which the matrix's 32-wide tiny models do not have.
"""

from matrix import MatrixCase

import hf_compress.modifiers.quantization  # noqa: F401  (registers `quantization` and `lora`)

CASES = [
    MatrixCase(id="int8-dynamic", modifiers=[{"type": "quantization", "method": "int8_dynamic"}], shrinks="bytes"),
    MatrixCase(
        id="int8-dynamic-embeddings",
        modifiers=[{"type": "quantization", "method": "int8_dynamic", "include_embeddings": True}],
        shrinks="bytes",
    ),
    # quantization-aware training for one epoch, converted to the same int8 storage
    MatrixCase(id="qat-int8", modifiers=[{"type": "quantization", "method": "qat_int8"}], epochs=1, shrinks="bytes"),
    MatrixCase(id="bnb-8bit", modifiers=[{"type": "quantization", "method": "bnb_8bit"}], shrinks="bytes"),
]
