"""Each `hf-compress` command, in-process through `main()`."""

from __future__ import annotations

import json

import pytest
from pipeline_fixtures import make_tiny_base, tiny_recipe_text

from hf_compress.cli import main


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return make_tiny_base(tmp_path_factory.mktemp("base"))


def test_validate_ok_and_error(tmp_path, tiny_base, glue_dir, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(tiny_recipe_text(tiny_base, tmp_path / "out", glue_dir))
    assert main(["validate", str(path)]) == 0
    assert "valid recipe" in capsys.readouterr().out

    assert main(["validate", str(path), "--set", "stages.0.epochs=-2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-compress: error:") and "stages[0].epochs" in err and "Traceback" not in err

    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "recipe file not found" in capsys.readouterr().err


def test_run_eval_and_bench(tmp_path, tiny_base, glue_dir, capsys):
    path = tmp_path / "r.yaml"
    output = tmp_path / "out"
    path.write_text(tiny_recipe_text(tiny_base, output, glue_dir))
    assert main(["run", str(path), "--no-latency"]) == 0
    out = capsys.readouterr().out
    assert "sst2 accuracy" in out and "size on disk" in out

    # running again refuses to overwrite
    assert main(["run", str(path), "--no-latency"]) == 2
    assert "already exists" in capsys.readouterr().err

    assert main(["eval", str(output), "--task", "sst2", "--glue-dir", str(glue_dir), "--max-eval-samples", "24"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["task"] == "sst2" and metrics["eval_samples"] == 24 and 0.0 <= metrics["accuracy"] <= 1.0

    report = tmp_path / "bench.json"
    argv = ["bench", str(tiny_base), str(output), "--batch-sizes", "1,2", "--seq-len", "16", "--runs", "2", "--output", str(report)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert str(output) in table and "bs=2 ms" in table
    rows = json.loads(report.read_text())["results"]
    assert [r["model"] for r in rows] == [str(tiny_base), str(output)]
    assert rows[1]["num_parameters"] < rows[0]["num_parameters"]
    assert set(rows[0]["latency_ms"]) == {"1", "2"}


def test_eval_with_missing_data_is_a_clear_error(tmp_path, tiny_base, capsys):
    assert main(["eval", str(tiny_base), "--task", "rte", "--glue-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "RTE/dev.tsv not found" in err and "HF_COMPRESS_GLUE_DIR" in err


def test_unreachable_hub_id_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from hf_compress.models import hub_reachable

    hub_reachable.cache_clear()
    assert main(["eval", "someone/not-cached-model", "--task", "sst2"]) == 2
    assert "not reachable" in capsys.readouterr().err
