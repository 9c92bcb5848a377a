"""1-D k-means of a weight tensor and the bit packing of its cluster indices."""

from __future__ import annotations

import torch


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
# Hand-written instead of scikit-learn's KMeans, whose fixed per-call overhead and general n-D
# algorithm cost seconds per large layer (about a minute per MiniLM, most of the test time). In one
# dimension Lloyd's algorithm needs no distance computations: with sorted centroids every cluster is
# a contiguous run of the sorted weights, bounded by the midpoints between centroids, so one sort
# and a prefix sum up front make each iteration a `searchsorted` of k-1 midpoints (O(k log n)), on
# the weight's own device. It is the same algorithm as sklearn's Lloyd iterations;
# tests/test_weight_sharing.py checks it against sklearn's result.
def kmeans_1d(
    values: torch.Tensor, clusters: int, max_iter: int = 300
) -> tuple[torch.Tensor, torch.Tensor]:
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
    centroids = torch.linspace(
        ordered[0].item(), ordered[-1].item(), clusters, dtype=torch.float64, device=data.device
    )
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


def cluster_weights(
    weight: torch.Tensor, bits: int, max_iter: int = 300
) -> tuple[torch.Tensor, torch.Tensor]:
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
