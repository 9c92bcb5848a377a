"""`LowRankLinear` and `FactorizedEmbedding`: a Linear layer and the word embedding as products of
two thin matrices."""

from __future__ import annotations

import torch
from torch import nn


class LowRankLinear(nn.Module):
    """A Linear factorized as `up(down(x))`: `down` is in -> rank without bias, `up` is rank -> out.

    Args:
        in_features: input size of the original Linear.
        out_features: output size of the original Linear.
        rank: inner size.
        bias: whether `up` carries a bias (the original Linear's).
        device: where to create the weights.
        dtype: their dtype.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.down = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.up = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(hidden))

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight the two factors stand for (out x in); computed, for inspection."""
        return self.up.weight @ self.down.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.up.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class FactorizedEmbedding(nn.Module):
    """A word embedding factorized as `projection(embedding(ids))` (ALBERT).

    Args:
        num_embeddings: vocabulary size.
        embedding_dim: the model's hidden size (the output size).
        factor_dim: the inner size E.
        padding_idx: the padding token id of the original embedding.
        device: where to create the weights.
        dtype: their dtype.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        factor_dim: int,
        padding_idx: int | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.factor_dim = factor_dim
        self.padding_idx = padding_idx
        self.embedding = nn.Embedding(
            num_embeddings, factor_dim, padding_idx=padding_idx, device=device, dtype=dtype
        )
        self.projection = nn.Linear(
            factor_dim, embedding_dim, bias=False, device=device, dtype=dtype
        )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.projection(self.embedding(input_ids))

    @property
    def weight(self) -> torch.Tensor:
        """The dense vocab x hidden table the factors stand for; computed, for inspection."""
        return self.embedding.weight @ self.projection.weight.T

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, factor_dim={self.factor_dim}"
