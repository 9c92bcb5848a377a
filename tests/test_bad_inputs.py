"""Every bad input found by fuzzing `hf-compress run base.yaml --set KEY=VALUE` on a tiny valid
recipe is refused by `validate` and by `run` before any model loads: exit status 2, one line that
names the key and the fix, and nothing written."""

from __future__ import annotations

import pytest
from pipeline_fixtures import make_tiny_base

from hf_compress.cli import main

CASES = [
    # accepted by validate before, then a traceback in run
    (
        "training.learning_rate=-1.0",
        "training.learning_rate: -1.0 is out of range; it must be >= 0",
    ),
    ("training.per_device_train_batch_size=0", "per_device_train_batch_size: 0 is out of range"),
    ("training.per_device_train_batch_size=-1", "per_device_train_batch_size: -1 is out of range"),
    ("training.gradient_accumulation_steps=0", "gradient_accumulation_steps: 0 is out of range"),
    ("training.lr_scheduler_type=bogus", "training.lr_scheduler_type: transformers refuses it"),
    ("training.eval_strategy=sometimes", "training.eval_strategy: transformers refuses it"),
    ("training.optim=bogus", "training.optim: transformers refuses it"),
    ("training.report_to=wandb", "training.report_to: wandb is not installed"),
    ("training.deepspeed=/nonexistent/ds.json", "training.deepspeed: transformers refuses it"),
    ("base_model=/nonexistent/model", "/nonexistent/model: no such directory"),
    ('base_model=""', "base_model: empty; give a Hub id or a local model folder"),
    ('base_model="model\\udc80x"', "base_model: 'model\\udc80x' holds characters that are not"),
    ('teacher=""', "teacher: empty"),
    ('stages.0.modifiers.0.targets=["re:("]', "'re:(' is not a valid regular expression"),
    ('stages.0.modifiers.0.targets=["re:*"]', "'re:*' is not a valid regular expression"),
    ('output_dir="out\\0put"', "output_dir: 'out\\x00put' holds a NUL byte"),
    ('output_dir=""', "output_dir: empty"),
    # clean errors, but only after the base model had loaded
    ("stages.0.modifiers.0.count=1000", "count: 1000, but"),
    (
        "stages.0.modifiers=[{type: magnitude_pruning, sparsity: 0.5}, {type: head_pruning, "
        "count: 1}]",
        "(magnitude_pruning) cannot share a stage with head_pruning",
    ),
    (
        "stages.0.modifiers=[{type: quantization}, {type: quantization}]",
        "(quantization) appears 2 times; one quantization per stage",
    ),
    ('push_to_hub={repo_id: "not a repo id!!"}', "is not a Hub repository id"),
    # a head that does not fit the task: the fix named, and offered as a recipe key
    ("task=stsb", "set `reinit_head: true` to start from a fresh head"),
    # the Trainer would push by itself, outside hf-compress's push and its secret scan
    ("training.push_to_hub=true", "training.push_to_hub: push with the recipe's `push_to_hub"),
    # a token would be written into the output's recipe.yaml
    ("training.hub_token=hf_abcdefghijklmnopqrstuvwxyz0123", "training.hub_token: log in with"),
]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_base(tmp_path_factory.mktemp("base"))


@pytest.fixture
def recipe(tmp_path, base, glue_dir):
    path = tmp_path / "base.yaml"
    path.write_text(
        f"base_model: {base}\n"
        "task: sst2\n"
        f"data: {{max_train_samples: 32, max_eval_samples: 16, glue_dir: {glue_dir}}}\n"
        "stages:\n"
        "  - name: prune\n"
        "    epochs: 1\n"
        "    modifiers: [{type: head_pruning, count: 1, importance: magnitude}]\n"
        f"output_dir: {tmp_path / 'out'}\n"
    )
    return path


def test_the_base_recipe_is_valid(recipe, capsys):
    assert main(["validate", str(recipe)]) == 0


@pytest.mark.parametrize(("override", "message"), CASES, ids=[c[0][:40] for c in CASES])
def test_bad_input_is_one_line_before_anything_loads(recipe, override, message, capsys):
    # YAML reads the escapes in these overrides (a NUL byte, a lone surrogate) as the characters.
    for command in ("validate", "run"):
        argv = [command, str(recipe), "--set", override]
        assert main([*argv, "--no-latency"] if command == "run" else argv) == 2
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0, error
        assert error.startswith("hf-compress: error: ") and message in error, error
    assert sorted(p.name for p in recipe.parent.iterdir()) == ["base.yaml"]  # nothing written


def test_duplicate_keys_are_an_error_at_every_level(recipe, capsys):
    text = recipe.read_text()
    for duplicated in (
        text + "task: rte\n",
        text.replace("max_eval_samples: 16", "max_eval_samples: 16, max_eval_samples: 8"),
        text.replace("count: 1,", "count: 1, count: 2,"),
    ):
        recipe.write_text(duplicated)
        assert main(["validate", str(recipe)]) == 2
        error = capsys.readouterr().err.strip()
        assert "is given twice" in error and error.count("\n") == 0, error
