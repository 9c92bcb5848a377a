"""embedding_quantization cases for the shared matrix (vocab_pruning needs a tokenizer and text:
it is tested in tests/test_vocab_pruning.py)."""

from matrix import MatrixCase

CASES = [
    MatrixCase(
        id="embedding-int8",
        modifiers=[{"type": "embedding_quantization", "bits": 8}],
        shrinks="bytes",
    ),
    MatrixCase(
        id="embedding-4bit-group",
        modifiers=[
            {"type": "embedding_quantization", "bits": 4, "group_size": 8, "include_position": True}
        ],
        shrinks="bytes",
    ),
    MatrixCase(
        id="embedding-int8-then-train",
        modifiers=[{"type": "embedding_quantization", "bits": 8}],
        extra_stages=[{"name": "train-rest", "epochs": 1, "modifiers": []}],
        shrinks="bytes",
    ),
]
