"""The Hub: pushing a compressed output directory and its generated model card."""

from .model_card import build_model_card, write_model_card
from .push import push_to_hub

__all__ = ["build_model_card", "push_to_hub", "write_model_card"]
