"""Knowledge distillation (`distillation`) and layer-reduced students (`layer_dropping`).

A student is a model of the same family with fewer layers: its checkpoint is an ordinary one
(`num_hidden_layers` says how many), so this technique has no storage layer and no rebuild.
"""
