"""Weight clustering (trained quantization of Deep Compression, Han et al. 2016).

Each targeted Linear's weights are clustered by k-means into 2^bits shared values (centroids
initialised linearly between the smallest and largest weight, which the paper found keeps the
rare large weights best). The layer becomes a `ClusteredLinear` holding a float codebook and the
per-weight cluster indices, bit-packed `bits` per index into a uint8 buffer, so on disk the layer
takes about bits/32 of its float32 bytes.

In a training stage the centroids are fine-tuned while the assignments stay fixed: the weight is
computed as `codebook[indices]` in every forward, so autograd sums the gradients of all weights
that share a centroid into that centroid, exactly the paper's update.

Recipe keys (`type: weight_clustering`): `bits` (1..8), `max_iter`, `targets`, `ignore`. Checkpoint entry:
`compression_config["clustered"] = {"module.name": bits}`, rebuilt at order 60 before the weights
load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from ..adapters import get_adapter
from ..checkpoint import get_structure, record_method, record_structure, register_rebuild
from ..checkpoint.structure import replace_recorded_linears
from ..errors import RecipeError
from ..registry import register_modifier
from ..schema import option
from .base import Modifier, ModifierConfig, StageContext, set_submodule

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class WeightClusteringConfig(ModifierConfig):
    """Keys of `type: weight_clustering`. Default targets: the Linears of the transformer layers."""

    bits: int = option(4, help="bits per weight index: each layer keeps 2^bits shared values", range=(1, 8))
    max_iter: int = option(300, help="k-means (Lloyd) iterations per layer at most", range=(1, 100000))


# Bit packing ---------------------------------------------------------------------------------
# Written with torch bit operations rather than numpy.packbits so it runs on the tensor's own
# device (a GPU checkpoint unpacks on the GPU) and handles any width 1..8 the same way: indices
# are laid out densely, `bits` per index, little-endian within each byte, so 3-bit indices take
# exactly ceil(3n/8) bytes.
def packed_size(numel: int, bits: int) -> int:
    """Bytes needed for `numel` indices of `bits` bits each, packed densely."""
    return (numel * bits + 7) // 8


def pack_indices(indices: torch.Tensor, bits: int) -> torch.Tensor:
    """Packs integer `indices` (each < 2^bits) densely into a flat uint8 tensor.

    Args:
        indices: any-shape integer tensor with values in [0, 2^bits).
        bits: bits per index, 1..8.
    """
    flat = indices.reshape(-1).to(torch.int64)
    shifts = torch.arange(bits, device=flat.device)
    bit_stream = ((flat[:, None] >> shifts) & 1).reshape(-1)
    padding = (-bit_stream.numel()) % 8
    if padding:
        bit_stream = torch.cat([bit_stream, bit_stream.new_zeros(padding)])
    byte_shifts = torch.arange(8, device=flat.device)
    return (bit_stream.reshape(-1, 8) << byte_shifts).sum(dim=1).to(torch.uint8)


def unpack_indices(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of `pack_indices`: the first `numel` indices as int64."""
    byte_shifts = torch.arange(8, device=packed.device)
    bit_stream = ((packed.to(torch.int64)[:, None] >> byte_shifts) & 1).reshape(-1)[: numel * bits]
    shifts = torch.arange(bits, device=packed.device)
    return (bit_stream.reshape(numel, bits) << shifts).sum(dim=1)


# k-means -------------------------------------------------------------------------------------
# Hand-written instead of scikit-learn's KMeans: measured here, sklearn took 0.5-0.8 s even for a
# 2k-weight layer (fixed per-call overhead) and 1.6-4 s for a 590k-weight MiniLM FFN matrix at 16
# clusters, about a minute per MiniLM and most of the test time. In one dimension Lloyd's
# algorithm needs no distance computations: with sorted centroids every cluster is a contiguous
# run of the sorted weights, bounded by the midpoints between centroids, so one sort and a prefix
# sum up front make each iteration a `searchsorted` of k-1 midpoints (O(k log n)), on the
# weight's own device. It is the same algorithm as sklearn's Lloyd iterations;
# tests/test_weight_sharing.py checks it against sklearn's result.
def kmeans_1d(values: torch.Tensor, clusters: int, max_iter: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means of a tensor's values, centroids initialised linearly between min and max.

    Centroids are kept sorted (1-D Lloyd preserves their order; relocated ones are re-sorted),
    and an empty cluster moves onto the worst-represented value. Stops when no assignment
    changes.

    Returns:
        (centroids as float64, int64 label of every value, flat).
    """
    data = values.reshape(-1).double()
    ordered = torch.sort(data).values
    prefix = torch.cat([ordered.new_zeros(1), torch.cumsum(ordered, 0)])
    first = torch.zeros(1, dtype=torch.int64, device=data.device)
    last = torch.full((1,), len(ordered), dtype=torch.int64, device=data.device)
    centroids = torch.linspace(ordered[0].item(), ordered[-1].item(), clusters, dtype=torch.float64, device=data.device)
    splits = None
    for _ in range(max_iter):
        # Values <= midpoint j belong to clusters 0..j (ties go left, as in bucketize below).
        new_splits = torch.searchsorted(ordered, (centroids[1:] + centroids[:-1]) / 2, right=True)
        if splits is not None and torch.equal(new_splits, splits):
            break
        splits = new_splits
        edges = torch.cat([first, splits, last])
        counts = edges[1:] - edges[:-1]
        sums = prefix[edges[1:]] - prefix[edges[:-1]]
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        empty = int((counts == 0).sum())
        if empty:
            # Linear initialisation leaves centroids in the sparse tails with no weight at all
            # (most of them at 8 bits). Like sklearn, move each empty one onto a weight that is
            # currently worst represented, so all 2^bits values get used.
            labels = torch.bucketize(data, (centroids[1:] + centroids[:-1]) / 2)
            errors = (data - centroids[labels]) ** 2
            worst = data[torch.topk(errors, min(empty, len(data))).indices]
            centroids = centroids.clone()
            centroids[torch.nonzero(counts == 0).reshape(-1)[: len(worst)]] = worst
            centroids = torch.sort(centroids).values
    labels = torch.bucketize(data, (centroids[1:] + centroids[:-1]) / 2)
    return centroids, labels


def cluster_weights(weight: torch.Tensor, bits: int, max_iter: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means of the weight values into 2^bits clusters with linearly spaced initial centroids.

    Returns:
        (codebook of 2^bits float32 values, int64 indices shaped like `weight`). When the layer
        has at most 2^bits distinct values, each value is its own centroid (no error) and the
        unused codebook entries are 0, never indexed.
    """
    levels = 1 << bits
    values = weight.detach().reshape(-1).float()
    codebook = torch.zeros(levels, dtype=torch.float32, device=values.device)
    distinct = torch.unique(values)
    if len(distinct) <= levels:
        codebook[: len(distinct)] = distinct
        labels = torch.bucketize(values, distinct)
    else:
        centroids, labels = kmeans_1d(values, levels, max_iter)
        codebook[:] = centroids.float()
    return codebook, labels.reshape(weight.shape)


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
            torch.zeros(packed_size(in_features * out_features, bits), dtype=torch.uint8, device=device),
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
        stale = self._unpacked is not None and self._unpacked.is_inference() and not torch.is_inference_mode_enabled()
        if self._unpacked is None or self._unpacked_key != key or stale:
            numel = self.in_features * self.out_features
            self._unpacked = unpack_indices(packed, self.bits, numel).reshape(self.out_features, self.in_features)
            self._unpacked_key = key
        return self._unpacked

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight, `codebook[indices]` (differentiable with respect to the codebook)."""
        return F.embedding(self.indices(), self.codebook.unsqueeze(1)).squeeze(-1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.weight.to(hidden.dtype), None if self.bias is None else self.bias.to(hidden.dtype))

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


@register_modifier("weight_clustering")
class WeightClusteringModifier(Modifier):
    """Clusters Linear weights into 2^bits shared values per layer; centroids train, indices stay.

    Applied in `on_initialize`; in a training stage the codebooks (and biases) are fine-tuned.
    """

    config_class = WeightClusteringConfig

    def __init__(self, config: WeightClusteringConfig) -> None:
        super().__init__(config)
        self.config: WeightClusteringConfig = config
        self.clustered: dict[str, int] = {}
        self.clustered_numel = 0
        self.stored_bytes = 0

    def on_initialize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        layers = get_adapter(model).layer_list(model)
        encoder = {id(m) for m in layers.modules() if isinstance(m, nn.Linear)}
        chosen = self.target_modules(model, lambda name, module: id(module) in encoder)
        for name, module in chosen:
            if type(module) is not nn.Linear or not module.weight.is_floating_point():
                # Subclasses (quantized, QAT, bitsandbytes) store their weight in their own way.
                ctx.notes.append(
                    f"weight_clustering: left {name} as is ({type(module).__name__} is not a plain float Linear)"
                )
                continue
            clustered = ClusteredLinear.from_linear(module, self.config.bits, self.config.max_iter)
            set_submodule(model, name, clustered)
            self.clustered[name] = self.config.bits
            self.clustered_numel += module.weight.numel()
            self.stored_bytes += (
                clustered.packed_indices.numel() + clustered.codebook.numel() * clustered.codebook.element_size()
            )
        if not self.clustered:
            raise RecipeError(
                "weight_clustering: no Linear layer matched (targets/ignore); with no targets it clusters the "
                "transformer layers' Linears"
            )
        recorded = dict(get_structure(model, "clustered") or {})
        recorded.update(self.clustered)
        record_structure(model, "clustered", recorded)
        record_method(model, "weight_clustering")
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "bits": self.config.bits,
            "clustered_layers": len(self.clustered),
            "clustered_weights": self.clustered_numel,
            # float32 weight bytes these layers had, and what codebooks + packed indices take now
            "dense_bytes": 4 * self.clustered_numel,
            "stored_bytes": self.stored_bytes,
        }


@register_rebuild("clustered", order=60)
def _rebuild_clustered(model: PreTrainedModel, layers: dict[str, int]) -> None:
    """Replaces the recorded Linears by empty `ClusteredLinear`s (codebook and indices load next)."""
    replace_recorded_linears(
        model,
        "clustered",
        layers,
        build=lambda linear, bits: ClusteredLinear(
            linear.in_features, linear.out_features, int(bits), linear.bias is not None,
            device=linear.weight.device, dtype=linear.weight.dtype,
        ),
        rebuilt=lambda module, bits: isinstance(module, ClusteredLinear) and module.bits == bits,
    )
