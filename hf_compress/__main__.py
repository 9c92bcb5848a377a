"""`python -m hf_compress ...` (also `accelerate launch -m hf_compress run RECIPE`)."""

import sys

from .cli import main

sys.exit(main())
