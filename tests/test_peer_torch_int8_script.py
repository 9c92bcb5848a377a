"""benchmarks/peer_torch_int8.py: the teacher, PyTorch's int8 peers and our checkpoints measured in
one process into the `hf-compress bench --output` layout; a peer that cannot run is recorded, not
fatal."""

import importlib.util
import json
import sys

from pipeline_fixtures import make_tiny_base
from tiny import load_script


def _script():
    return load_script("peer_torch_int8")


def test_peers_and_ours_are_measured_against_the_teacher(tmp_path, glue_dir):
    teacher = make_tiny_base(tmp_path / "teacher")
    out = tmp_path / "peers.json"
    _script().main(
        [
            "--task",
            "rte",
            "--teacher",
            str(teacher),
            "--ours",
            str(teacher),
            "--out",
            str(out),
            "--glue-dir",
            str(glue_dir),
            "--seq-len",
            "32",
            "--runs",
            "2",
        ]
    )
    data = json.loads(out.read_text())
    base, torch_int8, torchao_int8, ours = data["results"]
    assert (
        base["model"] == str(teacher)
        and "peer" not in base
        and base["metrics"]["eval_samples"] == 277
    )
    assert torch_int8["peer"] and torch_int8["model"] == "torch quantize_dynamic int8"
    assert torch_int8["size_bytes"] < base["size_bytes"]  # int8 Linear weights really stored
    assert (
        set(torch_int8["latency_ms"]) == {"1", "32"} and 0 <= torch_int8["metrics"]["accuracy"] <= 1
    )
    assert torchao_int8["peer"]
    if importlib.util.find_spec("torchao") is None:  # not a project dependency: reported, not fatal
        assert "torchao" in torchao_int8["error"] and "metrics" not in torchao_int8
    else:
        assert 0 <= torchao_int8["metrics"]["accuracy"] <= 1
    assert ours["model"] == str(teacher) and "peer" not in ours
    assert ours["metrics"] == base["metrics"] and ours["size_bytes"] == base["size_bytes"]
    # every model that ran is timed twice: alone (as `hf-compress bench` does), then round-robin
    assert data["latency_method"].startswith("round-robin")
    timed = [row for row in data["results"] if "error" not in row]
    for row in timed:
        assert set(row["latency_ms"]) == set(row["latency_ms_sequential"]) == {"1", "32"}
        assert row["latency_ms"]["32"]["runs"] == 2 and row["latency_ms"]["32"]["median"] > 0
        assert row["latency_ms"] != row["latency_ms_sequential"]  # a second measurement, not a copy


def test_a_peer_that_cannot_run_is_recorded_with_its_error(tmp_path, glue_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)  # as if torchao were not installed
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    script = _script()
    real_version = script.importlib.metadata.version

    def version(package):
        if package == "torchao":
            raise script.importlib.metadata.PackageNotFoundError(package)
        return real_version(package)

    monkeypatch.setattr(script.importlib.metadata, "version", version)
    teacher = make_tiny_base(tmp_path / "teacher")
    out = tmp_path / "peers.json"
    script.main(
        [
            "--task",
            "rte",
            "--teacher",
            str(teacher),
            "--out",
            str(out),
            "--glue-dir",
            str(glue_dir),
            "--seq-len",
            "32",
            "--runs",
            "1",
        ]
    )
    data = json.loads(out.read_text())
    assert data["versions"]["torchao"] is None
    base, torch_int8, torchao_int8 = data["results"]
    assert "metrics" in torch_int8 and "error" not in torch_int8
    assert (
        torchao_int8["peer"]
        and "torchao" in torchao_int8["error"]
        and "latency_ms" not in torchao_int8
    )
    assert "latency_ms_sequential" in torch_int8 and "latency_ms_sequential" not in torchao_int8
