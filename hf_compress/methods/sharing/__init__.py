"""Cross-layer weight sharing (`layer_sharing`): groups of transformer layers that use one set
of weights, stored once."""
