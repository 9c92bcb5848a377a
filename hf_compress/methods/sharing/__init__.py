"""Cross-layer weight sharing (`layer_sharing`): groups of transformer layers that use one set
of weights, stored once."""

from . import rebuild  # noqa: F401  (registers the rebuilder)
from .config import LayerSharingConfig
from .layers import SharedLayerList
from .modifier import LayerSharingModifier

__all__ = ["LayerSharingConfig", "LayerSharingModifier", "SharedLayerList"]
