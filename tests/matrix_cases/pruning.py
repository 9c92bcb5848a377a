"""Matrix cases of pruning: head_pruning, ffn_pruning, magnitude_pruning."""

from matrix import MatrixCase

CASES = [
    MatrixCase(
        id="head-pruning-taylor-oneshot",
        modifiers=[{"type": "head_pruning", "sparsity": 0.5, "importance": "taylor"}],
    ),
    MatrixCase(
        id="ffn-pruning-magnitude-layer-oneshot",
        modifiers=[
            {"type": "ffn_pruning", "sparsity": 0.5, "importance": "magnitude", "scope": "layer"}
        ],
    ),
    MatrixCase(
        id="heads-ffn-gradual-taylor",
        modifiers=[
            {"type": "head_pruning", "sparsity": 0.5, "end": 0.5, "update_every": 1},
            {"type": "ffn_pruning", "sparsity": 0.5, "end": 0.5, "update_every": 1},
        ],
        epochs=1,
    ),
    MatrixCase(
        id="magnitude-pruning-oneshot",
        modifiers=[{"type": "magnitude_pruning", "sparsity": 0.8}],
        shrinks="bytes",
    ),
    MatrixCase(
        id="magnitude-pruning-gradual-global",
        modifiers=[
            {
                "type": "magnitude_pruning",
                "sparsity": 0.8,
                "scope": "global",
                "end": 0.5,
                "update_every": 1,
            }
        ],
        epochs=1,
        shrinks="bytes",
    ),
]
