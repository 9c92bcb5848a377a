"""benchmarks/paired_significance.py: per-run paired counts, and the sign test over runs."""

import json

import pytest
from pipeline_fixtures import make_tiny_base
from tiny import load_script

from hf_compress.evaluation.compare import compare_predictions


def test_summary_counts_wins_losses_and_ties(tmp_path, monkeypatch, capsys):
    script = load_script("paired_significance")
    labels = [1] * 10
    outcomes = {  # (method, control) -> predictions of the method and the control
        ("m1", "c1"): ([1] * 9 + [0], [1] * 5 + [0] * 5),  # method +4
        ("m2", "c2"): ([1] * 6 + [0] * 4, [1] * 7 + [0] * 3),  # method -1
        ("m3", "c3"): ([1] * 8 + [0] * 2, [0] + [1] * 8 + [0]),  # a tie: one each way
    }
    calls = []

    def fake_compare(method, control, task, *args):
        calls.append((method, control, task.name))
        return compare_predictions(*outcomes[(method, control)], labels)

    monkeypatch.setattr(script, "compare_models", fake_compare)
    output = tmp_path / "out.json"
    argv = ["--task", "rte", "--output", str(output)]
    for i in (1, 2, 3):
        argv += ["--pair", f"run {i}", f"m{i}", f"c{i}"]
    assert script.main(argv) == 0
    assert calls == [("m1", "c1", "rte"), ("m2", "c2", "rte"), ("m3", "c3", "rte")]

    table = capsys.readouterr().out
    assert "| run 1 | 90.00 | 50.00 | +40.00 | 4 | 0 | 0.125 |" in table
    assert "ahead in 1 of 3 runs, behind in 1, tied in 1" in table

    saved = json.loads(output.read_text())
    assert saved["summary"] == {"runs": 3, "wins": 1, "losses": 1, "ties": 1, "sign_test_p": 1.0}
    assert [r["net_examples"] for r in saved["runs"]] == [4, -1, 0]


def test_a_real_pair_of_models(tmp_path, glue_dir, capsys):
    script = load_script("paired_significance")
    base = make_tiny_base(tmp_path / "base")
    assert (
        script.main(
            ["--task", "sst2", "--glue-dir", str(glue_dir), "--pair", "same", str(base), str(base)]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "| same |" in table and "tied in 1" in table and "p = 1.0000" in table


def test_a_pair_is_required():
    with pytest.raises(SystemExit):
        load_script("paired_significance").parse_args(["--task", "sst2"])
