"""The compressed checkpoint format (DESIGN.md section 3)."""

from .families import COMPRESSED_CONFIGS, COMPRESSED_MODELS, is_compressed, to_compressed
from .structure import (
    FORMAT_VERSION,
    REBUILDERS,
    apply_structure,
    get_structure,
    record_method,
    record_structure,
    register_rebuild,
)

__all__ = [
    "COMPRESSED_CONFIGS",
    "COMPRESSED_MODELS",
    "FORMAT_VERSION",
    "REBUILDERS",
    "apply_structure",
    "get_structure",
    "is_compressed",
    "record_method",
    "record_structure",
    "register_rebuild",
    "to_compressed",
]
