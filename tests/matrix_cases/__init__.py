"""One file per technique, each defining `CASES = [MatrixCase(...)]` (see tests/matrix.py)."""
