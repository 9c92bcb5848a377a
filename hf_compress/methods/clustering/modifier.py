"""Weight clustering (trained quantization of Deep Compression, Han et al. 2016).

Each targeted Linear's weights are clustered by k-means into 2^bits shared values (centroids
initialised linearly between the smallest and largest weight, which the paper found keeps the
rare large weights best). The layer becomes a `ClusteredLinear` holding a float codebook and the
per-weight cluster indices, bit-packed `bits` per index into a uint8 buffer, so on disk the layer
takes about bits/32 of its float32 bytes.

In a training stage the centroids are fine-tuned while the assignments stay fixed: the weight is
computed as `codebook[indices]` in every forward, so autograd sums the gradients of all weights
that share a centroid into that centroid, exactly the paper's update.

Recipe keys (`type: weight_clustering`): `bits` (1..8), `max_iter`, `targets`, `ignore`. Checkpoint
entry: `compression_config["clustered"] = {"module.name": bits}`, rebuilt at order 60 before the
weights load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from ...architectures.base import get_adapter
from ...checkpoint.format import get_structure, record_method, record_structure
from ...checkpoint.rebuild import (
    set_submodule,
)
from ...errors import RecipeError
from ...recipe.registry import register_modifier
from ..modifier import Modifier, StageContext
from .config import WeightClusteringConfig
from .layers import ClusteredLinear

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@register_modifier("weight_clustering")
class WeightClusteringModifier(Modifier):
    """Clusters Linear weights into 2^bits shared values per layer; centroids train, indices stay.

    Applied in `on_initialize`; in a training stage the codebooks (and biases) are fine-tuned.
    """

    config_class = WeightClusteringConfig
    description = "weight clustering (shared codebooks)"
    hub_tags = ("clustered",)

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
                    f"weight_clustering: left {name} as is ({type(module).__name__} is not a plain "
                    "float Linear)"
                )
                continue
            clustered = ClusteredLinear.from_linear(module, self.config.bits, self.config.max_iter)
            set_submodule(model, name, clustered)
            self.clustered[name] = self.config.bits
            self.clustered_numel += module.weight.numel()
            self.stored_bytes += (
                clustered.packed_indices.numel()
                + clustered.codebook.numel() * clustered.codebook.element_size()
            )
        if not self.clustered:
            raise RecipeError(
                "weight_clustering: no Linear layer matched (targets/ignore); with no targets it "
                "clusters the transformer layers' Linears"
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
