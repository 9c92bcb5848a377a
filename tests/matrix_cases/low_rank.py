"""Low-rank factorization cases for the shared test matrix (tests/matrix.py)."""

from matrix import MatrixCase

CASES = [
    MatrixCase(id="low_rank-ratio-oneshot", modifiers=[{"type": "low_rank", "rank_ratio": 0.25}]),
    MatrixCase(
        id="low_rank-energy-train", modifiers=[{"type": "low_rank", "energy": 0.8}], epochs=1
    ),
    MatrixCase(
        id="low_rank-fisher-embeddings",
        modifiers=[
            {
                "type": "low_rank",
                "rank": 8,
                "fisher": True,
                "calibration_batches": 2,
                "factorize_embeddings": 8,
            }
        ],
        epochs=1,
    ),
]
