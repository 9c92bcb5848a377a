"""Weight clustering (`weight_clustering`): each Linear's weights shared through a small
codebook found by 1-D k-means, stored as the codebook plus packed indices (Han et al. 2016)."""
