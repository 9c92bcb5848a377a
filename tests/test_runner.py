"""End to end: a recipe on a tiny BERT and a slice of real SST-2, through `run_recipe`."""

from __future__ import annotations

import json

import pytest
import torch
from pipeline_fixtures import make_tiny_base, tiny_recipe_text
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_compress import Recipe
from hf_compress.errors import OutputExistsError
from hf_compress.training.runner import run_recipe


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return make_tiny_base(tmp_path_factory.mktemp("base"))


def _leftovers(parent, name):
    return [p.name for p in parent.iterdir() if p.name.startswith(name + ".")]


def test_run_writes_a_complete_reloadable_checkpoint(tmp_path, tiny_base, glue_dir):
    output = tmp_path / "out"
    recipe = Recipe.from_string(tiny_recipe_text(tiny_base, output, glue_dir), source="tiny.yaml")
    result = run_recipe(
        recipe,
        latency_config={"batch_sizes": (1, 4), "seq_len": 32, "runs": 2, "warmup": 1},
        progress=False,
    )

    names = {p.name for p in output.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "recipe.yaml",
        "report.json",
        "README.md",
        "tokenizer.json",
    } <= names
    assert not _leftovers(tmp_path, "out"), "staging / work directories must be gone"

    report = json.loads((output / "report.json").read_text())
    for side in ("baseline", "compressed"):
        entry = report[side]
        assert (
            set(entry["metrics"]) == {"accuracy", "eval_samples"}
            and entry["metrics"]["eval_samples"] == 32
        )
        assert entry["num_parameters"] > 0 and entry["size_bytes"] > 0
        assert set(entry["latency_ms"]) == {"1", "4"} and entry["latency_ms"]["4"]["median"] > 0
    assert report["compressed"]["num_parameters"] < report["baseline"]["num_parameters"]
    assert report["compressed"]["size_bytes"] < report["baseline"]["size_bytes"]
    assert report["compressed"]["methods"] == ["test_halve_ffn"]
    assert report["stages"] == [
        {"name": "shrink", "epochs": 1.0, "modifiers": [{"type": "_halve_ffn", "kept": "half"}]}
    ]
    assert report["environment"]["threads"] >= 1 and report["task"] == "sst2"
    # what is published names folders, not the user's directory layout
    assert report["base_model"] == tiny_base.name and report["output_dir"] == "out"
    for published in ("report.json", "README.md"):
        text = (output / published).read_text()
        assert str(tmp_path) not in text and str(tiny_base) not in text, published
    assert (output / "hf_compress_manifest.json").is_file()

    # the saved recipe re-validates and records what ran
    assert Recipe.from_yaml(output / "recipe.yaml").stages[0].modifiers[0].type == "_halve_ffn"

    # reload gives the in-memory model's logits
    tokenizer = AutoTokenizer.from_pretrained(output)
    batch = tokenizer(["a gripping , funny film", "dull"], padding=True, return_tensors="pt")
    reloaded = AutoModelForSequenceClassification.from_pretrained(output).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(**batch).logits, result.model.eval()(**batch).logits, atol=1e-6, rtol=0
        )


def test_existing_output_is_never_overwritten_without_asking(tmp_path, tiny_base, glue_dir):
    output = tmp_path / "out"
    output.mkdir()
    (output / "mine.txt").write_text("user data")
    recipe = Recipe.from_string(tiny_recipe_text(tiny_base, output, glue_dir), source="tiny.yaml")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_recipe(recipe, latency=False, progress=False)
    assert (output / "mine.txt").read_text() == "user data"
    assert not _leftovers(tmp_path, "out")


def test_failure_mid_run_leaves_no_output_behind(tmp_path, tiny_base, glue_dir):
    output = tmp_path / "out"
    text = tiny_recipe_text(tiny_base, output, glue_dir).replace(
        "{type: _halve_ffn}", "{type: _halve_ffn, fail: true}"
    )
    with pytest.raises(RuntimeError, match="planned failure"):
        run_recipe(Recipe.from_string(text, source="tiny.yaml"), latency=False, progress=False)
    assert not output.exists()
    assert not [p for p in _leftovers(tmp_path, "out") if ".partial-" in p]


def test_overwrite_replaces_only_after_success(tmp_path, tiny_base, glue_dir):
    output = tmp_path / "out"
    output.mkdir()
    (output / "old.txt").write_text("old")
    recipe = Recipe.from_string(tiny_recipe_text(tiny_base, output, glue_dir), source="tiny.yaml")
    run_recipe(recipe, overwrite=True, latency=False, progress=False)
    assert not (output / "old.txt").exists() and (output / "model.safetensors").is_file()
    assert not _leftovers(tmp_path, "out")


def test_finetune_cache_is_reused(tmp_path, tiny_base, glue_dir):
    cache = tmp_path / "teacher"
    text = tiny_recipe_text(tiny_base, tmp_path / "a", glue_dir).replace(
        "finetune_base: {epochs: 1}", f"finetune_base: {{epochs: 1, cache_dir: {cache}}}"
    )
    run_recipe(Recipe.from_string(text, source="t.yaml"), latency=False, progress=False)
    marker = json.loads((cache / "hf_compress_finetune.json").read_text())
    stamp = (cache / "model.safetensors").stat().st_mtime_ns
    run_recipe(
        Recipe.from_string(text.replace(str(tmp_path / "a"), str(tmp_path / "b")), source="t.yaml"),
        latency=False,
        progress=False,
    )
    assert (cache / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not retrained
    assert json.loads((cache / "hf_compress_finetune.json").read_text()) == marker
    baseline_a = json.loads((tmp_path / "a" / "report.json").read_text())["baseline"]["metrics"]
    baseline_b = json.loads((tmp_path / "b" / "report.json").read_text())["baseline"]["metrics"]
    assert baseline_a == baseline_b


@pytest.mark.parametrize("finetune_slice", [None, 48])
def test_training_slice_is_tokenized_once_when_the_base_is_fine_tuned_on_it(
    tmp_path, tiny_base, glue_dir, monkeypatch, finetune_slice
):
    import hf_compress.data.preprocess as preprocess

    loaded = []

    def counting_load(task, tokenizer, max_seq_length, max_train_samples, *args, **kwargs):
        loaded.append(max_train_samples)
        return load(task, tokenizer, max_seq_length, max_train_samples, *args, **kwargs)

    load = preprocess.load_task_datasets
    monkeypatch.setattr(preprocess, "load_task_datasets", counting_load)
    text = tiny_recipe_text(tiny_base, tmp_path / "out", glue_dir)
    if finetune_slice is not None:  # its own slice: fine-tuning the base loads that one
        text = text.replace(
            "finetune_base: {epochs: 1}",
            f"finetune_base: {{epochs: 1, max_train_samples: {finetune_slice}}}",
        )
    run_recipe(Recipe.from_string(text, source="t.yaml"), latency=False, progress=False)
    assert sorted(loaded) == sorted([64] if finetune_slice is None else [64, finetune_slice])


def test_a_baseline_at_chance_is_flagged(tmp_path, tiny_base, glue_dir, capsys):
    # The tiny random base on 32 RTE pairs cannot beat always answering the majority label.
    text = tiny_recipe_text(tiny_base, tmp_path / "out", glue_dir).replace(
        "task: sst2", "task: rte"
    )
    result = run_recipe(Recipe.from_string(text, source="t.yaml"), latency=False, progress=False)
    warning = result.report["baseline"]["warning"]
    assert "within noise of a model that learned nothing" in warning
    assert result.report["notes"][0] == warning
    assert f"warning: {warning}" in capsys.readouterr().out
    assert "learned nothing" in (tmp_path / "out" / "README.md").read_text()
