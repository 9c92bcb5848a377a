"""Which Linear layers a `quantization` step converts."""

from __future__ import annotations

from torch import nn

from ..targets import strip_wrapper_prefix
from .config import QuantizationConfig, is_skipped


def quantizable_linears(
    model: nn.Module, config: QuantizationConfig
) -> list[tuple[str, nn.Linear]]:
    """The plain `nn.Linear` layers `config` quantizes: `targets` (default: all), minus
    `skip_modules` and `ignore` (each matching the layer or any parent)."""
    chosen = []
    for name, module in model.named_modules():
        # Exactly nn.Linear: subclasses (QAT layers, other techniques' custom layers) are not
        # plain float layers and have their own conversions.
        if type(module) is not nn.Linear:
            continue
        clean = strip_wrapper_prefix(name)
        if config.targets and not is_skipped(clean, config.targets):
            continue
        if is_skipped(clean, config.skip_modules) or is_skipped(clean, config.ignore):
            continue
        chosen.append((clean, module))
    return chosen
