"""The compressed checkpoint format (DESIGN.md section 3): model classes, rebuild, safe loading,
model sources and export."""

from .format import (
    COMPRESSED_CONFIGS,
    COMPRESSED_MODELS,
    FAMILIES,
    check_supported,
    get_structure,
    is_compressed,
    record_method,
    record_structure,
    to_compressed,
)
from .layout import prepare_layout
from .rebuild import (
    FORMAT_VERSION,
    REBUILDERS,
    apply_structure,
    register_rebuild,
    replace_recorded_linears,
    set_submodule,
)

__all__ = [
    "COMPRESSED_CONFIGS",
    "COMPRESSED_MODELS",
    "FAMILIES",
    "FORMAT_VERSION",
    "REBUILDERS",
    "apply_structure",
    "check_supported",
    "get_structure",
    "is_compressed",
    "prepare_layout",
    "record_method",
    "record_structure",
    "register_rebuild",
    "replace_recorded_linears",
    "set_submodule",
    "to_compressed",
]
