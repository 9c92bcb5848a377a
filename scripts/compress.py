"""Run a recipe, on one process or many: `accelerate launch scripts/compress.py RECIPE [--set k=v ...]`.

The same as `hf-compress run`; with `accelerate launch` every process trains (DDP) and only the
main process writes the output, the card and pushes.
"""

import sys

from hf_compress.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
