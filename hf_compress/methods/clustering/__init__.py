"""Weight clustering (`weight_clustering`): each Linear's weights shared through a small
codebook found by 1-D k-means, stored as the codebook plus packed indices (Han et al. 2016)."""

from . import rebuild  # noqa: F401  (registers the rebuilder)
from .config import WeightClusteringConfig
from .layers import ClusteredLinear
from .modifier import WeightClusteringModifier

__all__ = ["ClusteredLinear", "WeightClusteringConfig", "WeightClusteringModifier"]
