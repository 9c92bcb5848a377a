"""Cross-layer parameter sharing (ALBERT, Lan et al. 2020).

Groups of transformer layers become one module referenced at several positions of the layer
list, so they run the same weights, train as one (each position's gradient adds into the shared
parameters) and are stored once. Groups are given as `groups: [[0, 1], [2, 3], [4, 5]]` or
`share: all`; the shared weights start from the mean of the group's layers (`init: mean`) or its
first layer (`init: first`).

Storage: the layer list becomes a `SharedLayerList`, a `ModuleList` that registers each distinct
layer once (under the index of its first position) and maps positions to layers. Its state dict
therefore holds every shared tensor exactly once, with no aliased keys: safetensors (which
refuses aliased tensors) saves it, and `from_pretrained` fills each shared module once and finds
no missing keys. The obvious alternative, an ordinary ModuleList holding one module at two
positions, was probed in transformers 5.24: `save_pretrained` raises a RuntimeError about shared
tensors unless every alias is declared in the model's `_tied_weights_keys`, a class-level mapping
that `post_init` also expands into weight tying (gated by `config.tie_word_embeddings`), so it
cannot be set per instance safely.

Recipe keys (`type: layer_sharing`): `groups` | `share`, `init`. Checkpoint entry:
`compression_config["shared_layers"] = [[0, 1], [2, 3], [4, 5]]`, rebuilt at order 25: after
layer selection (20, which may renumber layers) and before per-layer reshaping (30, 40), so the
weights load into the shared modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...architectures.base import get_adapter
from ...checkpoint.format import record_method, record_structure
from ...recipe.registry import register_modifier
from ..modifier import Modifier, StageContext
from .config import LayerSharingConfig, _check_groups
from .layers import share_layers

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@register_modifier("layer_sharing")
class LayerSharingModifier(Modifier):
    """Makes groups of transformer layers share one set of weights (ALBERT).

    Applied in `on_initialize`; in a training stage the shared layers are fine-tuned as one.
    """

    config_class = LayerSharingConfig
    description = "cross-layer weight sharing"
    hub_tags = ("weight-sharing",)

    def __init__(self, config: LayerSharingConfig) -> None:
        super().__init__(config)
        self.config: LayerSharingConfig = config
        self.groups: list[list[int]] = []
        self.layers_before = 0
        self.layers_after = 0

    def on_initialize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        adapter = get_adapter(model)
        layer_list = adapter.layer_list(model)
        num_layers = len(layer_list)
        if self.config.share == "all":
            requested = [list(range(num_layers))]
        else:
            requested = [list(group) for group in self.config.groups or ()]
            _check_groups(requested, num_layers, "layer_sharing.groups")
        self.layers_before = len({id(layer) for layer in layer_list})
        shared = share_layers(layer_list, requested, self.config.init)
        adapter.set(model.base_model, adapter.layers, shared)
        self.groups = shared.groups()
        self.layers_after = len({id(layer) for layer in shared})
        record_structure(model, "shared_layers", self.groups)
        record_method(model, "layer_sharing")
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "groups": self.groups,
            "distinct_layers_before": self.layers_before,
            "distinct_layers_after": self.layers_after,
            "init": self.config.init,
        }
