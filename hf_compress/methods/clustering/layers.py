"""`ClusteredLinear`: a Linear layer stored as a float codebook plus packed indices."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ...checkpoint.rebuild import float_linear
from .kmeans import cluster_weights, pack_indices, packed_size, unpack_indices


class ClusteredLinear(nn.Module):
    """A Linear whose weight is `codebook[indices]`: a trainable codebook of 2^bits values and
    fixed, bit-packed indices (`packed_indices`, a uint8 buffer saved in the checkpoint).

    Args:
        in_features: input size.
        out_features: output size.
        bits: bits per index.
        bias: whether the layer has a bias.
        device: where to create the tensors.
        dtype: dtype of the codebook and bias.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits: int,
        bias: bool = True,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= bits <= 8:
            raise ValueError(f"bits must be in 1..8, got {bits}")
        self.in_features = in_features
        self.out_features = out_features
        self.bits = bits
        self.codebook = nn.Parameter(torch.zeros(1 << bits, device=device, dtype=dtype))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.register_buffer(
            "packed_indices",
            torch.zeros(
                packed_size(in_features * out_features, bits), dtype=torch.uint8, device=device
            ),
        )
        # Unpacked indices, recomputed when the packed buffer changes (load, device move). Kept as
        # a plain attribute, not a buffer, so the state dict holds only the packed form.
        self._unpacked: torch.Tensor | None = None
        self._unpacked_key: tuple[Any, ...] | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int, max_iter: int = 300) -> ClusteredLinear:
        """Clusters `linear`'s weight (k-means, linear init) into a new `ClusteredLinear`."""
        weight = linear.weight
        module = cls(
            linear.in_features,
            linear.out_features,
            bits,
            linear.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        codebook, indices = cluster_weights(weight, bits, max_iter)
        with torch.no_grad():
            module.codebook.copy_(codebook.to(weight.device))
            module.packed_indices.copy_(pack_indices(indices.to(weight.device), bits))
            if linear.bias is not None:
                module.bias.copy_(linear.bias)
        return module

    def indices(self) -> torch.Tensor:
        """Cluster index of every weight (int64, out x in)."""
        packed = self.packed_indices
        key = (packed.data_ptr(), packed._version, packed.device)
        # A cache filled under torch.inference_mode cannot take part in autograd later: refill it.
        stale = (
            self._unpacked is not None
            and self._unpacked.is_inference()
            and not torch.is_inference_mode_enabled()
        )
        if self._unpacked is None or self._unpacked_key != key or stale:
            numel = self.in_features * self.out_features
            self._unpacked = unpack_indices(packed, self.bits, numel).reshape(
                self.out_features, self.in_features
            )
            self._unpacked_key = key
        return self._unpacked

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight, `codebook[indices]` (differentiable with respect to the codebook)."""
        return F.embedding(self.indices(), self.codebook.unsqueeze(1)).squeeze(-1)

    def to_float(self) -> nn.Linear:
        """A plain float `nn.Linear` with the decoded weight."""
        with torch.no_grad():
            return float_linear(self.weight.detach(), self.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(
            hidden,
            self.weight.to(hidden.dtype),
            None if self.bias is None else self.bias.to(hidden.dtype),
        )

    def compressed_numel(self) -> tuple[int, int]:
        """(total, non-zero) elements of the dense weight and bias this layer stands for."""
        total = self.in_features * self.out_features
        nonzero = int(torch.count_nonzero(self.weight.detach()).item())
        if self.bias is not None:
            total += self.bias.numel()
            nonzero += int(torch.count_nonzero(self.bias.detach()).item())
        return total, nonzero

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}"
