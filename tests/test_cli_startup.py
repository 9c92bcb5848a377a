"""The command starts at once: `--help` and argument errors import neither torch nor
transformers (several seconds on a small machine), and `import hf_compress` still registers the
compressed format for Python users."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "datasets", "accelerate", "sklearn", "scipy")


def _imported_after(argv: list[str]) -> tuple[list[str], str]:
    code = (
        "import sys, hf_compress_cli\n"
        f"try:\n    hf_compress_cli.main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return eval(done.stdout.strip().splitlines()[-1]), done.stderr  # noqa: S307 (a list repr)


def test_help_imports_nothing_heavy():
    heavy, _ = _imported_after(["--help"])
    assert heavy == []


def test_argument_errors_import_nothing_heavy():
    for argv in (["run"], ["eval", "m"], ["bench", "--batch-sizes"], ["frobnicate"]):
        heavy, err = _imported_after(argv)
        assert heavy == [] and "usage: hf-compress" in err, argv


def test_import_hf_compress_registers_the_format():
    code = (
        "import hf_compress\n"
        "from transformers import AutoConfig\n"
        "print(type(AutoConfig.for_model('compressed_bert')).__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "CompressedBertConfig", done.stderr[-500:]
