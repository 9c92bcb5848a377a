"""`SparseLinear`: a Linear layer stored as a packed bitmask plus its non-zero values.

Unstructured pruning leaves a weight matrix of the original shape with most entries zero; a
dense safetensors file of it is no smaller than the unpruned one. `SparseLinear` keeps

- `mask_packed` (uint8 buffer): the weight's non-zero pattern, row-major, 8 entries per byte,
  most significant bit first (the layout of `numpy.packbits`, so
  `numpy.unpackbits(mask_packed)[:out*in]` reads it back outside hf-compress);
- `values` (parameter, the model's float dtype): the kept weights in row-major order;
- `bias` (parameter): unchanged;

so the bytes on disk fall with sparsity (80% sparse fp32: 0.2 * 4 + 1/8 = 0.93 bytes per weight
instead of 4). Both are ordinary tensors of the module, so `save_pretrained` writes them to
safetensors and `from_pretrained` loads them once the module tree was rebuilt (see
`hf_compress.methods.pruning`, rebuilder `sparse_linear`).

The forward pass materialises the dense weight (`masked_scatter`, differentiable with respect
to `values`, so a later training stage fine-tunes the kept weights while the pruned ones stay
exactly zero) and caches it while no gradient is needed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ...checkpoint.rebuild import float_linear

# Bit weights of one packed byte, most significant first (numpy.packbits' default order).
_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Packs a boolean tensor (flattened row-major) into uint8, 8 entries per byte, MSB first.

    Written with torch rather than `numpy.packbits` so it runs on the tensor's own device
    (GPU included) without a host copy; the layout is the same as numpy's.

    Args:
        mask: a boolean tensor of any shape.

    Returns:
        A 1-D uint8 tensor of `ceil(mask.numel() / 8)` bytes.
    """
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=flat.device)
    # The weighted sum of 8 bits is at most 255, so summing in int32 and narrowing is exact.
    return (flat.view(-1, 8).to(torch.int32) * weights.to(torch.int32)).sum(dim=1).to(torch.uint8)


def unpack_mask(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of `pack_mask`: the first `numel` entries as a flat boolean tensor."""
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=packed.device)
    bits = packed.reshape(-1, 1).bitwise_and(weights) != 0
    return bits.reshape(-1)[:numel]


class SparseLinear(nn.Module):
    """A Linear layer whose weight is stored as a packed bitmask plus its non-zero values.

    Args:
        in_features: input size.
        out_features: output size.
        nnz: number of stored (kept) weights.
        bias: whether the layer has a bias.
        dtype: dtype of `values` and `bias` (default: torch's default dtype).
        device: device of the tensors.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        nnz: int,
        bias: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        numel = in_features * out_features
        if not 0 <= nnz <= numel:
            raise ValueError(f"nnz={nnz} does not fit a {out_features}x{in_features} weight")
        self.values = nn.Parameter(torch.zeros(nnz, dtype=dtype, device=device))
        self.register_buffer(
            "mask_packed", torch.zeros((numel + 7) // 8, dtype=torch.uint8, device=device)
        )
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)
        # Caches (plain attributes: never saved, invalidated by the tensors' version counters).
        self._mask_cache: tuple[Any, torch.Tensor] | None = None
        self._weight_cache: tuple[Any, torch.Tensor] | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: torch.Tensor | None = None) -> SparseLinear:
        """Stores `linear`'s weight sparsely.

        Args:
            linear: the layer to convert.
            mask: which weights to keep (same shape as the weight); default: the non-zero ones.
        """
        weight = linear.weight.detach()
        keep = (weight != 0) if mask is None else mask.to(device=weight.device, dtype=torch.bool)
        if keep.shape != weight.shape:
            raise ValueError(
                f"mask shape {tuple(keep.shape)} does not match the weight {tuple(weight.shape)}"
            )
        module = cls(
            linear.in_features,
            linear.out_features,
            int(keep.sum().item()),
            bias=linear.bias is not None,
            dtype=weight.dtype,
            device=weight.device,
        )
        with torch.no_grad():
            module.values.copy_(weight.reshape(-1)[keep.reshape(-1)])
            module.mask_packed.copy_(pack_mask(keep))
            if linear.bias is not None:
                module.bias.copy_(linear.bias.detach())
        module.values.requires_grad_(linear.weight.requires_grad)
        if module.bias is not None:
            module.bias.requires_grad_(linear.bias.requires_grad)
        module.train(linear.training)
        return module

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def sparsity(self) -> float:
        """Fraction of the dense weight that is pruned (not stored)."""
        numel = self.in_features * self.out_features
        return 1.0 - self.nnz / numel if numel else 0.0

    def mask(self) -> torch.Tensor:
        """The boolean keep-mask, shaped like the dense weight."""
        packed = self.mask_packed
        key = (packed.data_ptr(), packed._version, packed.device)
        if self._mask_cache is None or self._mask_cache[0] != key:
            numel = self.in_features * self.out_features
            self._mask_cache = (
                key,
                unpack_mask(packed, numel).view(self.out_features, self.in_features),
            )
        return self._mask_cache[1]

    def dense_weight(self) -> torch.Tensor:
        """The dense weight (pruned entries zero); differentiable with respect to `values`."""
        values = self.values
        mask = self.mask()
        if torch.is_grad_enabled() and values.requires_grad:
            return values.new_zeros(mask.shape).masked_scatter(mask, values)
        # No gradient needed (evaluation, inference): rebuild only when the values changed.
        key = (values.data_ptr(), values._version, values.dtype, values.device, self._mask_cache[0])
        if self._weight_cache is None or self._weight_cache[0] != key:
            with torch.no_grad():
                self._weight_cache = (
                    key,
                    values.new_zeros(mask.shape).masked_scatter(mask, values),
                )
        return self._weight_cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dense_weight(), self.bias)

    def to_float(self) -> nn.Linear:
        """A dense `nn.Linear` with the same weights (pruned entries zero)."""
        with torch.no_grad():
            return float_linear(self.dense_weight().detach(), self.bias)

    def compressed_numel(self) -> tuple[int, int]:
        """(total, non-zero) element counts of the dense weight and bias this module stands for."""
        total = self.in_features * self.out_features
        nonzero = int(torch.count_nonzero(self.values.detach()).item())
        if self.bias is not None:
            total += self.bias.numel()
            nonzero += int(torch.count_nonzero(self.bias.detach()).item())
        return total, nonzero

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.nnz}, "
            f"sparsity={self.sparsity:.3f}, bias={self.bias is not None}"
        )


class EmptyAttention(nn.Module):
    """Self-attention with every head removed: its context has zero channels.

    Stands in for the family's self-attention module, so the layer's residual path and layer
    norm run unchanged and the attention block adds only its output bias. When the family's
    output projection lives inside the attention module (DistilBERT's `out_lin`) it is kept
    here under the same name, so the state-dict keys do not change.

    Args:
        out_name: attribute name of the inner output projection, or None (BERT: it is outside).
        out_proj: that projection, narrowed to zero input features.
    """

    def __init__(self, out_name: str | None = None, out_proj: nn.Module | None = None) -> None:
        super().__init__()
        self.out_name = out_name
        if out_name is not None:
            self.add_module(out_name, out_proj)

    def forward(
        self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, None]:
        context = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
        if self.out_name is not None:
            context = getattr(self, self.out_name)(context)
        return context, None
