"""benchmarks/int8_fallback_check.py: int8 with 0 and 1 layers kept in float, on a saved teacher and
real-format GLUE files, written to JSON."""

import json

from pipeline_fixtures import make_tiny_base
from tiny import load_script


def _script():
    return load_script("int8_fallback_check")


def test_each_setting_is_evaluated_and_names_the_layers_kept_in_float(tmp_path, glue_dir):
    teacher = make_tiny_base(tmp_path / "teacher")
    out = tmp_path / "fallback.json"
    _script().main(
        [
            "--task",
            "rte",
            "--teacher",
            str(teacher),
            "--fallback",
            "0",
            "1",
            "--embeddings",
            "--calibration-samples",
            "16",
            "--batch-size",
            "8",
            "--seq-len",
            "32",
            "--glue-dir",
            str(glue_dir),
            "--out",
            str(out),
        ]
    )
    rows = json.loads(out.read_text())["results"]
    assert [row["setting"] for row in rows] == [
        "teacher (fp32)",
        {"fp32_fallback": 0},
        {"fp32_fallback": 1},
        {"fp32_fallback": 0, "include_embeddings": True},
        {"fp32_fallback": 1, "include_embeddings": True},
    ]
    assert all(row["eval_samples"] == 277 and 0 <= row["accuracy"] <= 1 for row in rows)
    assert rows[1]["kept_in_float"] == rows[3]["kept_in_float"] == []
    assert (
        len(rows[2]["kept_in_float"]) == 1 and rows[2]["kept_in_float"] == rows[4]["kept_in_float"]
    )
