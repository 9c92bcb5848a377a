"""Errors raised by hf-compress.

Every error a user can cause (a bad recipe, missing data, an unsupported model, a corrupt
checkpoint) is one of these, with a message that names the problem and the fix.
"""

from __future__ import annotations


class HfCompressError(Exception):
    """Base class of every error hf-compress raises on purpose."""


class RecipeError(HfCompressError, ValueError):
    """A recipe is malformed: unknown key, wrong type, out-of-range value or impossible order."""


class DataError(HfCompressError, FileNotFoundError):
    """A dataset could not be found or parsed."""


class UnsupportedModelError(HfCompressError, ValueError):
    """The model's architecture has no adapter, or the technique cannot handle it."""


class CheckpointError(HfCompressError, ValueError):
    """A compressed checkpoint is corrupt or does not match its `compression_config`."""


class OutputExistsError(HfCompressError, FileExistsError):
    """The output directory already holds files and overwriting was not allowed."""


class HubUnreachableError(HfCompressError, ConnectionError):
    """A Hub id was given while the Hub cannot be reached, and no local copy exists."""
