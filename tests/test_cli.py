"""Each `hf-compress` command, in-process through `main()`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from pipeline_fixtures import make_tiny_base, tiny_recipe_text

from hf_compress import RecipeError
from hf_compress.cli import main
from hf_compress.data.glue_tasks import get_task
from hf_compress.evaluation import frontier, tables
from hf_compress.training import teacher as teacher_training

REPO = Path(__file__).resolve().parents[1]


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
    assert (
        err.startswith("hf-compress: error:")
        and "stages[0].epochs" in err
        and "Traceback" not in err
    )

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

    assert (
        main(
            [
                "eval",
                str(output),
                "--task",
                "sst2",
                "--glue-dir",
                str(glue_dir),
                "--max-eval-samples",
                "24",
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert (
        metrics["task"] == "sst2"
        and metrics["eval_samples"] == 24
        and 0.0 <= metrics["accuracy"] <= 1.0
    )

    # compare: the paired counts agree with each model's own `eval` accuracy
    evals = {str(output): metrics["accuracy"]}
    assert (
        main(
            [
                "eval",
                str(tiny_base),
                "--task",
                "sst2",
                "--glue-dir",
                str(glue_dir),
                "--max-eval-samples",
                "24",
            ]
        )
        == 0
    )
    evals[str(tiny_base)] = json.loads(capsys.readouterr().out)["accuracy"]
    assert (
        main(
            [
                "compare",
                str(output),
                str(tiny_base),
                "--task",
                "sst2",
                "--glue-dir",
                str(glue_dir),
                "--max-eval-samples",
                "24",
            ]
        )
        == 0
    )
    paired = json.loads(capsys.readouterr().out)
    assert paired["examples"] == 24
    assert (
        paired["both_correct"]
        + paired["a_only_correct"]
        + paired["b_only_correct"]
        + paired["both_wrong"]
        == 24
    )
    assert paired["accuracy_a"] == pytest.approx(evals[str(output)]) and paired[
        "accuracy_b"
    ] == pytest.approx(evals[str(tiny_base)])
    assert 0.0 < paired["mcnemar_p"] <= 1.0

    report = tmp_path / "bench.json"
    argv = [
        "bench",
        str(tiny_base),
        str(output),
        "--batch-sizes",
        "1,2",
        "--seq-len",
        "16",
        "--runs",
        "2",
        "--output",
        str(report),
    ]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert str(output) in table and "bs=2 ms" in table
    rows = json.loads(report.read_text())["results"]
    assert [r["model"] for r in rows] == [str(tiny_base), str(output)]
    assert rows[1]["num_parameters"] < rows[0]["num_parameters"]
    assert set(rows[0]["latency_ms"]) == {"1", "2"}


def test_unsupported_architecture_is_refused_by_validate_and_before_run_does_any_work(
    tmp_path, glue_dir, capsys
):
    from transformers import OPTConfig, OPTForSequenceClassification

    base = tmp_path / "opt"
    OPTForSequenceClassification(
        OPTConfig(
            num_hidden_layers=1, hidden_size=16, num_attention_heads=2, ffn_dim=32, vocab_size=50
        )
    ).save_pretrained(base)
    path = tmp_path / "r.yaml"
    path.write_text(tiny_recipe_text(base, tmp_path / "out", glue_dir))
    capsys.readouterr()
    for command in (["validate", str(path)], ["run", str(path), "--no-latency"]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert (
            err.count("\n") == 0
            and "model type 'opt' is not supported" in err
            and "bert, roberta" in err
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "opt",
        "r.yaml",
    ]  # nothing fine-tuned or written


def test_eval_with_missing_data_is_a_clear_error(tmp_path, tiny_base, capsys):
    assert main(["eval", str(tiny_base), "--task", "rte", "--glue-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "RTE/dev.tsv not found" in err and "HF_COMPRESS_GLUE_DIR" in err


def test_compare_a_model_with_itself_and_refuses_regression(tiny_base, glue_dir, capsys):
    argv = [
        "compare",
        str(tiny_base),
        str(tiny_base),
        "--glue-dir",
        str(glue_dir),
        "--max-eval-samples",
        "16",
    ]
    assert main([*argv, "--task", "sst2"]) == 0
    paired = json.loads(capsys.readouterr().out)
    assert paired["same_prediction"] == 16 and paired["agreement"] == 1.0
    assert paired["a_only_correct"] == paired["b_only_correct"] == 0 and paired["mcnemar_p"] == 1.0

    assert main([*argv, "--task", "stsb"]) == 2
    err = capsys.readouterr().err
    assert "regression task" in err and "hf-compress eval" in err


def test_unreachable_hub_id_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from hf_compress.checkpoint.sources import hub_reachable

    hub_reachable.cache_clear()
    assert main(["eval", "someone/not-cached-model", "--task", "sst2"]) == 2
    assert "not reachable" in capsys.readouterr().err


# `bench` running recipes -------------------------------------------------------------------------
def _recipe(path: Path, task: str, base: Path) -> Path:
    text = tiny_recipe_text(base, path.with_suffix(""), path.parent).replace(
        "task: sst2", f"task: {task}"
    )
    path.write_text(text)
    return path


@pytest.fixture
def fake_run_benchmark(monkeypatch):
    """Records what `bench` hands to run_benchmark instead of training anything."""
    calls = []

    def fake(task, teacher, recipes, output_root, **kwargs):
        calls.append(
            {
                "task": task,
                "teacher": teacher,
                "recipes": recipes,
                "out": str(output_root),
                **kwargs,
            }
        )
        return {"total_time_s": 1.0}

    monkeypatch.setattr(frontier, "run_benchmark", fake)
    monkeypatch.setattr(tables, "markdown_results", lambda results: "| results table |")
    return calls


def test_default_recipes_are_chosen_by_the_task_in_the_file(tmp_path, tiny_base):
    folder = tmp_path / "recipes"
    folder.mkdir()
    for name, task in [
        ("b-sst2.yaml", "sst2"),
        ("a.yml", "sst2"),
        ("quickstart.yaml", "sst2"),
        ("minilm-sst2-x.yaml", "rte"),
    ]:
        _recipe(folder / name, task, tiny_base)
    (folder / "notes.txt").write_text("task: sst2\n")
    names = lambda task: [p.name for p in frontier.default_recipes(task, folder)]  # noqa: E731
    assert names("sst2") == ["a.yml", "b-sst2.yaml"]  # the file name says sst2, the recipe says rte
    assert names("RTE") == ["minilm-sst2-x.yaml"]
    assert names("mrpc") == []
    with pytest.raises(RecipeError, match="recipes folder not found"):
        frontier.default_recipes("sst2", tmp_path / "missing")
    (folder / "broken.yaml").write_text("task: [")
    with pytest.raises(RecipeError, match="broken.yaml: not valid YAML"):
        frontier.default_recipes("sst2", folder)


@pytest.mark.parametrize("task", ["mrpc", "stsb", "cola", "rte"])
def test_shipped_recipes_of_each_glue_task_are_the_default_selection(task):
    names = {p.stem for p in frontier.default_recipes(task, REPO / "recipes")}
    assert {f"minilm-{task}-prune-distill-int8", f"minilm-{task}-int8"} <= names
    assert all(f"-{task}-" in name for name in names) and "quickstart" not in names


def test_bench_runs_named_recipes_through_run_benchmark(
    tmp_path, tiny_base, fake_run_benchmark, capsys
):
    a, b = (
        _recipe(tmp_path / "a.yaml", "sst2", tiny_base),
        _recipe(tmp_path / "b.yaml", "sst2", tiny_base),
    )
    argv = [
        "bench",
        "--task",
        "sst2",
        "--recipes",
        str(a),
        str(b),
        "--teacher",
        str(tiny_base),
        "--out",
        str(tmp_path / "o"),
        "--set",
        "data.max_train_samples=16",
        "--set",
        "stages.0.epochs=2",
        "--glue-dir",
        "G",
        "--runs",
        "3",
        "--batch-sizes",
        "1,8",
        "--seq-len",
        "32",
        "--max-eval-samples",
        "24",
    ]
    assert main(argv) == 0
    assert 0 <= fake_run_benchmark[0].pop("teacher_time_s") < 1  # teacher given: nothing fine-tuned
    assert fake_run_benchmark == [
        {
            "task": "sst2",
            "teacher": str(tiny_base),
            "recipes": [str(a), str(b)],
            "out": str(tmp_path / "o"),
            "overrides": ["data.max_train_samples=16", "stages.0.epochs=2"],
            "glue_dir": "G",
            "latency_runs": 3,
            "batch_sizes": (1, 8),
            "seq_len": 32,
            "max_eval_samples": 24,
            "resume": False,
        }
    ]
    out = capsys.readouterr().out
    assert "| results table |" in out and "results.json" in out


def test_bench_resume_reuses_finished_runs_and_continues_the_others(
    tmp_path, tiny_base, glue_dir, monkeypatch
):
    recipe = _recipe(tmp_path / "a.yaml", "sst2", tiny_base)
    out = tmp_path / "o"
    argv = [
        "bench",
        "--task",
        "sst2",
        "--recipes",
        str(recipe),
        "--teacher",
        str(tiny_base),
        "--out",
        str(out),
        "--glue-dir",
        str(glue_dir),
        "--runs",
        "1",
        "--batch-sizes",
        "1",
        "--seq-len",
        "16",
        "--max-eval-samples",
        "8",
    ]
    assert main(argv) == 0  # a real run: its output is what --resume may reuse
    first = json.loads((out / "results.json").read_text())["results"][1]
    handed = []

    def interrupted(recipe, **kwargs):
        handed.append((str(recipe.output_dir), kwargs["resume"]))
        raise RuntimeError("interrupted again")

    monkeypatch.setattr(frontier, "run_recipe", interrupted)
    assert main([*argv, "--resume"]) == 0  # same recipe, teacher and overrides: reused, not run
    results = json.loads((out / "results.json").read_text())
    assert handed == [] and results["failed"] == []
    assert results["results"][1]["reused"] is True
    assert results["results"][1]["metrics"] == first["metrics"]
    assert (
        results["results"][1]["compression_time_s"]
        == json.loads((out / "a" / "report.json").read_text())["total_time_s"]
    )

    newer = (out / "a" / "report.json").stat().st_mtime + 10
    os.utime(
        tiny_base / "config.json", (newer, newer)
    )  # the teacher re-written after the output: stale
    assert (
        frontier.finished_report(frontier.benchmark_recipe(recipe, str(tiny_base), out, [])) is None
    )
    os.utime(tiny_base / "config.json", (newer - 20, newer - 20))
    assert (
        main([*argv, "--resume", "--set", "stages.0.epochs=2"]) == 0
    )  # another recipe: resumed from its .work
    assert main([*argv, "--set", "stages.0.epochs=2"]) == 0  # no --resume: run afresh
    assert handed == [(str(out / "a"), True), (str(out / "a"), False)]
    failed = json.loads((out / "results.json").read_text())["failed"]
    assert failed[0]["error"] == "RuntimeError: interrupted again"


def test_bench_defaults_to_the_recipes_of_the_task_and_fine_tunes_a_teacher(
    tmp_path, tiny_base, fake_run_benchmark, monkeypatch
):
    folder = tmp_path / "recipes"
    folder.mkdir()
    for name, task in [("x.yaml", "rte"), ("y.yaml", "sst2"), ("quickstart.yaml", "rte")]:
        _recipe(folder / name, task, tiny_base)
    tuned = []

    def fake_finetune(task, output_dir, **kwargs):
        tuned.append((task, str(output_dir), kwargs))
        time.sleep(0.2)

    monkeypatch.setattr(teacher_training, "finetune_teacher", fake_finetune)
    out = tmp_path / "o"
    argv = [
        "bench",
        "--task",
        "rte",
        "--recipes-dir",
        str(folder),
        "--out",
        str(out),
        "--teacher-epochs",
        "3",
        "--seq-len",
        "64",
    ]
    assert main(argv) == 0
    (call,) = fake_run_benchmark
    assert call["recipes"] == [str(folder / "x.yaml")] and call["teacher"] == str(out / "teacher")
    assert tuned == [
        ("rte", str(out / "teacher"), {"glue_dir": None, "epochs": 3.0, "max_seq_length": 64})
    ]
    assert call["teacher_time_s"] >= 0.2  # the fine-tuning counts in the end-to-end time


def test_bench_fine_tunes_the_teacher_for_the_epochs_its_recipes_were_written_for(
    tmp_path, tiny_base, fake_run_benchmark, monkeypatch
):
    folder = tmp_path / "recipes"
    folder.mkdir()
    for name in ("x.yaml", "y.yaml"):
        path = _recipe(folder / name, "rte", tiny_base)
        text = path.read_text()
        assert "finetune_base: {epochs: 1" in text
        path.write_text(text.replace("finetune_base: {epochs: 1", "finetune_base: {epochs: 5"))
    tuned = []
    monkeypatch.setattr(
        teacher_training,
        "finetune_teacher",
        lambda task, output_dir, **kw: tuned.append(kw["epochs"]),
    )
    argv = ["bench", "--task", "rte", "--recipes-dir", str(folder), "--out", str(tmp_path / "o")]
    assert main(argv) == 0 and tuned == [5.0]
    # Recipes that disagree leave the documented default of 1 epoch.
    (folder / "x.yaml").write_text(
        (folder / "x.yaml").read_text().replace("{epochs: 5", "{epochs: 3")
    )
    assert main([*argv[:-1], str(tmp_path / "p")]) == 0 and tuned == [5.0, 1.0]
    assert frontier.recipes_teacher_epochs([folder / "y.yaml"], ["finetune_base.epochs=2"]) == 2.0


def test_prepare_teacher_reuses_a_teacher_fine_tuned_with_the_same_settings(
    tmp_path, tiny_base, glue_dir, monkeypatch
):
    settings = {
        "base_model": str(tiny_base),
        "max_train_samples": 16,
        "max_seq_length": 16,
        "batch_size": 8,
    }
    teacher = teacher_training.prepare_teacher(
        "sst2", tmp_path / "t", glue_dir=str(glue_dir), **settings
    )
    report = json.loads((Path(teacher) / "teacher_report.json").read_text())
    assert (
        report["task"] == "sst2"
        and report["train_examples"] == 16
        and 0 <= report["metrics"]["accuracy"] <= 1
    )
    assert (Path(teacher) / "model.safetensors").is_file()

    tuned = []
    monkeypatch.setattr(
        teacher_training, "finetune_teacher", lambda task, output_dir, **kw: tuned.append(kw)
    )
    assert (
        teacher_training.prepare_teacher("sst2", tmp_path / "t", glue_dir="elsewhere", **settings)
        == teacher
    )
    assert tuned == []  # same settings: reused (where the data came from does not matter)
    teacher_training.prepare_teacher("sst2", tmp_path / "t", **{**settings, "epochs": 2.0})
    assert tuned == [{**settings, "epochs": 2.0}]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench"], "nothing to benchmark"),
        (["bench", "--recipes", "r.yaml"], r"nothing to benchmark.*\(--recipes given\)"),
        (["bench", "m", "--out", "o"], r"not both \(--out with models\)"),
        (
            ["bench", "m", "--teacher", "t", "--set", "a=1"],
            r"not both \(--teacher, --set with models\)",
        ),
        (["bench", "m", "--resume"], r"not both \(--resume with models\)"),
        (["bench", "--out", "o"], "--task is required"),
        (["bench", "--task", "nope", "--out", "o"], "unknown GLUE task 'nope'"),
        (
            ["bench", "--task", "sst2", "--out", "o", "--output", "x.json"],
            "--output is for measuring models",
        ),
        (["bench", "--task", "sst2", "--out", "o", "--batch-sizes", "1,x"], "--batch-sizes '1,x'"),
        (
            ["bench", "--task", "sst2", "--out", "o", "--recipes", "r.yaml", "--recipes-dir", "d"],
            "give one",
        ),
        (
            ["bench", "--task", "sst2", "--out", "o", "--teacher", "t", "--teacher-epochs", "2"],
            "not with --teacher",
        ),
        (
            ["bench", "--task", "sst2", "--out", "o", "--recipes", "missing.yaml"],
            "recipe file not found",
        ),
        (
            ["bench", "--task", "wnli", "--out", "o", "--recipes-dir", "RECIPES"],
            r"no recipe in .*recipes/ has task: wnli",
        ),
        (
            [
                "bench",
                "--task",
                "sst2",
                "--out",
                "o",
                "--teacher-epochs",
                "0",
                "--recipes-dir",
                "RECIPES",
            ],
            "more than 0 epochs",
        ),
    ],
)
def test_bench_mode_errors_are_clear(argv, message, fake_run_benchmark, capsys):
    argv = [str(REPO / "recipes") if a == "RECIPES" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-compress: error:") and "Traceback" not in err
    assert __import__("re").search(message, err), err
    assert fake_run_benchmark == []


def test_bench_refuses_a_recipe_of_another_task(tmp_path, tiny_base, fake_run_benchmark, capsys):
    rte = _recipe(tmp_path / "rte.yaml", "rte", tiny_base)
    argv = [
        "bench",
        "--task",
        "sst2",
        "--recipes",
        str(rte),
        "--teacher",
        str(tiny_base),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert (
        "task: rte, but this benchmark measures sst2" in capsys.readouterr().err
        and fake_run_benchmark == []
    )


# The shipped recipes of the small GLUE tasks, shrunk with --set to a tiny model and 32 examples ---
@pytest.fixture(scope="module")
def tiny_encoder(tiny_base, tmp_path_factory):
    """The tiny base without its 2-label head, so tasks with any number of outputs (STS-B: 1) get a
    fresh one."""
    from transformers import AutoTokenizer, BertModel

    directory = tmp_path_factory.mktemp("encoder")
    BertModel.from_pretrained(tiny_base).save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_base).save_pretrained(directory)
    return directory


@pytest.mark.parametrize("task", ["mrpc", "stsb", "cola", "rte"])
def test_shipped_best_combination_recipe_runs_on_a_tiny_model(
    task, tmp_path, tiny_encoder, glue_dir
):
    output = tmp_path / "out"
    shrink = [
        f"base_model={tiny_encoder}",
        "finetune_base.epochs=1",
        "finetune_base.cache_dir=null",
        "data.max_train_samples=32",
        "data.max_eval_samples=32",
        "data.max_seq_length=32",
        "stages.0.epochs=1",
        "training.per_device_train_batch_size=16",
        f"data.glue_dir={glue_dir}",
        f"output_dir={output}",
    ]
    argv = ["run", str(REPO / "recipes" / f"minilm-{task}-prune-distill-int8.yaml"), "--no-latency"]
    assert main(argv + [arg for s in shrink for arg in ("--set", s)]) == 0
    report = json.loads((output / "report.json").read_text())
    task_spec = get_task(task)
    assert report["task"] == task and report["metric_name"] == task_spec.main_metric
    for side in ("baseline", "compressed"):  # every official metric, before and after
        assert set(task_spec.metrics) <= set(report[side]["metrics"])
    assert report["compressed"]["methods"] == [
        "head_pruning",
        "ffn_pruning",
        "vocab_pruning",
        "int8_dynamic",
        "embedding_quantization",
    ]
    assert report["compressed"]["size_bytes"] < report["baseline"]["size_bytes"]
    assert ('"soft_target_loss": "mse"' in json.dumps(report["stages"])) == task_spec.is_regression
    config = json.loads((output / "config.json").read_text())
    assert (config.get("problem_type") == "regression") == task_spec.is_regression
    assert len(config["id2label"]) == task_spec.num_labels


def test_results_table_states_the_end_to_end_time_and_the_teacher_share():
    row = {
        "metrics": {"accuracy": 0.9},
        "num_parameters": 2e6,
        "nonzero_parameters": 2e6,
        "size_bytes": 4e6,
        "latency_ms": {"32": {"median": 40.0}},
    }
    results = {
        "metric_name": "accuracy",
        "latency_config": {"batch_sizes": [32], "runs": 5, "seq_len": 128},
        "results": [
            {**row, "name": "teacher (fp32)"},
            {**row, "name": "r", "size_bytes": 1e6, "compression_time_s": 30},
        ],
        "environment": {"cpu": "CPU", "threads": 2, "torch": "t", "transformers": "x"},
        "total_time_s": 1500.0,
        "teacher_time_s": 600.0,
    }
    table = tables.markdown_results(results)
    assert "| r | 90.00 | +0.00 |" in table and "| 4.00x |" in table
    assert "Total time 25.0 min, of which fine-tuning the teacher 10.0 min." in table
    assert "(no teacher fine-tuned in this run)" in tables.markdown_results(
        {**results, "teacher_time_s": 0.0}
    )


def test_the_onnx_exporter_logs_only_what_the_user_can_act_on():
    import logging

    from hf_compress.cli import _quiet_libraries

    _quiet_libraries()
    # the exporter's optimizer logs each folded node at INFO; its registry warns about torchvision
    assert not logging.getLogger("onnxscript.optimizer._constant_folding").isEnabledFor(
        logging.INFO
    )
    assert not logging.getLogger("onnx_ir.passes.common.unused_removal").isEnabledFor(logging.INFO)
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    assert not registry.isEnabledFor(logging.WARNING)
