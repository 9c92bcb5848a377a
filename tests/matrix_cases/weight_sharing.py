"""Weight clustering and cross-layer sharing cases for the shared test matrix (tests/matrix.py)."""

from matrix import MatrixCase

CASES = [
    MatrixCase(
        id="weight_clustering-4bit-oneshot",
        modifiers=[{"type": "weight_clustering", "bits": 4}],
        shrinks="bytes",
    ),
    MatrixCase(
        id="weight_clustering-3bit-train",
        modifiers=[{"type": "weight_clustering", "bits": 3}],
        epochs=1,
        shrinks="bytes",
    ),
    MatrixCase(
        id="weight_clustering-2bit-all-linears",
        modifiers=[
            {
                "type": "weight_clustering",
                "bits": 2,
                "targets": ["re:.*"],
                "ignore": ["re:classifier"],
            }
        ],
        shrinks="bytes",
    ),
    MatrixCase(
        id="layer_sharing-groups-train",
        modifiers=[{"type": "layer_sharing", "groups": [[0, 1]]}],
        epochs=1,
    ),
    MatrixCase(
        id="layer_sharing-all-first",
        modifiers=[{"type": "layer_sharing", "share": "all", "init": "first"}],
    ),
    # Stacked: sharing first, then factorizing / clustering the shared layers (rebuilt at 25 then
    # 50 / 60).
    MatrixCase(
        id="layer_sharing-then-low_rank",
        modifiers=[{"type": "layer_sharing", "share": "all"}],
        extra_stages=[
            {"name": "factorize", "epochs": 1, "modifiers": [{"type": "low_rank", "rank": 4}]}
        ],
    ),
    MatrixCase(
        id="layer_sharing-then-clustering",
        modifiers=[{"type": "layer_sharing", "groups": [[0, 1]]}],
        extra_stages=[
            {
                "name": "cluster",
                "epochs": 1,
                "modifiers": [{"type": "weight_clustering", "bits": 4}],
            }
        ],
    ),
    MatrixCase(
        id="low_rank-then-clustering",
        modifiers=[{"type": "low_rank", "rank": 8}],
        extra_stages=[
            {
                "name": "cluster",
                "epochs": 1,
                "modifiers": [{"type": "weight_clustering", "bits": 4}],
            }
        ],
    ),
]
