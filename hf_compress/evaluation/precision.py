"""The compute precisions a model can be evaluated and timed in (light: the command line's
argument parser reads it before anything heavy is imported)."""

from __future__ import annotations

from ..errors import HfCompressError

DTYPES = ("float32", "bfloat16", "float16")


def check_dtype(dtype: str) -> None:
    """Raises `HfCompressError` unless `dtype` is one of `DTYPES`."""
    if dtype not in DTYPES:
        raise HfCompressError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
