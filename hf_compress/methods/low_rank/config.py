"""Recipe keys of `low_rank`."""

from __future__ import annotations

from dataclasses import dataclass

from ...recipe.fields import ModifierConfig
from ...recipe.registry import recipe_type
from ...recipe.schema import option

_RANK_KEYS = ("rank", "rank_ratio", "energy")


@recipe_type("low_rank")
@dataclass(frozen=True)
class LowRankConfig(ModifierConfig):
    """Keys of `type: low_rank`. Give exactly one of `rank`, `rank_ratio`, `energy` (or only
    `factorize_embeddings` to factorize the embedding alone)."""

    rank: int | None = option(None, help="the same rank for every targeted Linear", range=(1, None))
    rank_ratio: float | None = option(
        None,
        help="rank as a fraction of min(in_features, out_features) per layer",
        range=(0, 1),
        exclusive=(True, False),
    )
    energy: float | None = option(
        None,
        help="per layer, the smallest rank keeping this fraction of the squared singular values",
        range=(0, 1),
        exclusive=(True, False),
    )
    fisher: bool = option(
        False, help="weight the SVD by gradient-based row importance (FWSVD, Hsu et al. 2022)"
    )
    calibration_batches: int = option(
        8, help="training batches used to estimate the Fisher importance", range=(1, None)
    )
    factorize_embeddings: int | None = option(
        None,
        help="factorize the word embedding into vocab x E and E x hidden (ALBERT); null = keep it",
        range=(1, None),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        given = [key for key in _RANK_KEYS if getattr(self, key) is not None]
        if len(given) > 1:
            raise ValueError(
                f"give only one of rank, rank_ratio or energy, not {' and '.join(given)}"
            )
        if not given and self.factorize_embeddings is None:
            raise ValueError(
                "set one of rank, rank_ratio or energy (or factorize_embeddings for the embedding "
                "alone)"
            )
        if self.fisher and not given:
            raise ValueError(
                "fisher: true weights the Linear factorization; also set rank, rank_ratio or energy"
            )
