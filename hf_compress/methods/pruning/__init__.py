"""Pruning: whole attention heads (`head_pruning`), FFN neurons (`ffn_pruning`) and single
weights by magnitude (`magnitude_pruning`, stored as a bitmask plus the kept values)."""
