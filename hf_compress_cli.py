"""The `hf-compress` console command's entry point.

It starts the command without importing torch or transformers (several seconds on a small
machine), so `hf-compress --help` and argument errors answer at once; each command then loads
what it needs. `python -m hf_compress` runs the same command with everything loaded up front.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    os.environ["HF_COMPRESS_LAZY_IMPORT"] = "1"  # read (and removed) by hf_compress/__init__.py
    from hf_compress.cli import main as run

    return run(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
