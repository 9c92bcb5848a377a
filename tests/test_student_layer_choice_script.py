"""benchmarks/student_layer_choice.py: the teacher reduced to each candidate layer set, before
training."""

import json

import pytest
from pipeline_fixtures import make_tiny_base
from tiny import load_script


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    return make_tiny_base(tmp_path_factory.mktemp("teacher"))


def test_every_candidate_is_evaluated_and_all_layers_is_the_teacher(
    tmp_path, tiny_teacher, glue_dir, capsys
):
    script = load_script("student_layer_choice")
    output = tmp_path / "report.json"
    argv = [
        str(tiny_teacher),
        "--task",
        "sst2",
        "--glue-dir",
        str(glue_dir),
        "--max-eval-samples",
        "32",
        "--output",
        str(output),
    ]
    assert script.main([*argv, "--layers", "0", "1", "0,1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(output.read_text())
    assert [c["layers"] for c in report["candidates"]] == [[0], [1], [0, 1]]
    # keeping every layer is the teacher itself: the same predictions, so the same metric
    assert report["candidates"][2]["metrics"] == report["teacher"]
    assert all(c["metrics"]["eval_samples"] == 32 for c in report["candidates"])


def test_a_layer_the_teacher_does_not_have_is_a_clear_error(tiny_teacher, glue_dir, capsys):
    script = load_script("student_layer_choice")
    argv = [
        str(tiny_teacher),
        "--glue-dir",
        str(glue_dir),
        "--max-eval-samples",
        "8",
        "--layers",
        "0,5",
    ]
    assert script.main(argv) == 2
    err = capsys.readouterr().err
    assert "the model has 2 layers" in err and "Traceback" not in err


def test_layers_must_be_integers():
    with pytest.raises(SystemExit):
        load_script("student_layer_choice").parse_args(["m", "--layers", "0,two"])
