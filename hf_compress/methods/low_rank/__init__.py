"""Low-rank factorization (`low_rank`): Linear layers (and optionally the word embeddings) as
products of two thin matrices from a truncated SVD (Denil et al. 2013)."""
