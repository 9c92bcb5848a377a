"""A real run killed with SIGKILL mid-stage resumes with `--resume` and ends like an uninterrupted
run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipeline_fixtures import make_tiny_base, tiny_recipe_text

REPO = Path(__file__).resolve().parents[1]

STAGE = """  - name: count
    epochs: 2
    modifiers:
      - {type: _count_steps, sleep: 0.08}
"""


def _command(recipe: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hf_compress",
        "--plugin",
        "pipeline_fixtures",
        "run",
        str(recipe),
        "--no-latency",
        *extra,
    ]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return make_tiny_base(tmp_path_factory.mktemp("base"))


def test_killed_run_resumes_from_last_checkpoint(tmp_path, tiny_base, glue_dir):
    output = tmp_path / "out"
    text = tiny_recipe_text(tiny_base, output, glue_dir, extra_stage=STAGE)
    text = text.replace("max_train_samples: 64", "max_train_samples: 320").replace(
        "logging_steps: 1", "logging_steps: 5, save_steps: 8"
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    work = tmp_path / "out.work"

    process = subprocess.Popen(
        _command(recipe), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    checkpoint = work / "stages" / "stage-1" / "checkpoint-16"
    while not (checkpoint / "hf_compress_modifiers.json").is_file():
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not output.exists(), "an interrupted run must not leave an output that looks complete"
    progress = json.loads((work / "progress.json").read_text())
    assert progress["completed_stages"] == 1  # stage 0 finished, stage 1 was interrupted

    resumed = subprocess.run(
        _command(recipe, "--resume"), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        "resuming after stage 0" in resumed.stderr
        and "resuming stage 1 (count) from" in resumed.stderr
    )
    report = json.loads((output / "report.json").read_text())
    # 320 examples / batch 16 = 20 steps an epoch, 2 epochs: the restored counter ends at 40
    assert report["stages"][1]["modifiers"][0] == {"type": "_count_steps", "steps": 40}
    assert report["stages"][0]["modifiers"][0]["type"] == "_halve_ffn"
    config = json.loads((output / "config.json").read_text())
    assert config["compression_config"]["_pipeline_ffn"] == {"0": 32, "1": 32}
    assert not work.exists()


def test_stale_staging_directories_are_cleaned_and_other_recipes_are_not_resumed(
    tmp_path, tiny_base, glue_dir
):
    from hf_compress import Recipe
    from hf_compress.errors import HfCompressError
    from hf_compress.training.runner import run_recipe

    output = tmp_path / "out"
    stale = tmp_path / "out.partial-deadbeef"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    work = tmp_path / "out.work"
    work.mkdir()
    (work / "progress.json").write_text(
        json.dumps({"fingerprint": "another-recipe", "completed_stages": 1})
    )
    recipe = Recipe.from_string(tiny_recipe_text(tiny_base, output, glue_dir), source="t.yaml")
    with pytest.raises(HfCompressError, match="different recipe"):
        run_recipe(recipe, resume=True, latency=False, progress=False)
    with pytest.raises(HfCompressError, match="pass --resume to continue it, or --overwrite"):
        run_recipe(recipe, latency=False, progress=False)  # never deleted without asking
    assert work.exists()
    run_recipe(recipe, overwrite=True, latency=False, progress=False)  # starts fresh
    assert not stale.exists() and not work.exists() and (output / "report.json").is_file()


# Resuming into / inside a LoRA stage after bitsandbytes quantization ---------------------------
class _Killed(RuntimeError):
    """Stands in for the process dying: raised at a chosen point of the first run."""


def _nf4_lora_recipe(base: Path, output: Path, glue_dir: Path):
    from hf_compress import Recipe

    return Recipe.from_dict(
        {
            "base_model": str(base),
            "task": "sst2",
            "data": {
                "max_train_samples": 64,
                "max_eval_samples": 16,
                "max_seq_length": 32,
                "glue_dir": str(glue_dir),
            },
            # 64 examples / batch 16 = 4 steps an epoch; a checkpoint every 2 steps
            "training": {
                "per_device_train_batch_size": 16,
                "learning_rate": 1.0e-3,
                "save_steps": 2,
            },
            "stages": [
                {
                    "name": "nf4",
                    "epochs": 0,
                    "modifiers": [{"type": "quantization", "method": "bnb_4bit_nf4"}],
                },
                {
                    "name": "lora",
                    "epochs": 2,
                    "modifiers": [{"type": "lora", "r": 4, "dropout": 0.0}],
                },
            ],
            "output_dir": str(output),
        }
    )


@pytest.fixture(scope="module")
def wide_base(tmp_path_factory):
    """A 64-wide BERT with the MiniLM tokenizer: bitsandbytes' CPU 4-bit kernel needs
    in_features % 64 == 0 and out_features % 32 == 0."""
    from hf_compress.checkpoint.sources import packaged_model_dir

    if packaged_model_dir("sentence-transformers/all-MiniLM-L6-v2") is None:
        pytest.skip("the packaged MiniLM tokenizer is not installed")
    return make_tiny_base(
        tmp_path_factory.mktemp("wide-base"), hidden_size=64, intermediate_size=128
    )


@pytest.fixture(scope="module")
def uninterrupted_nf4_lora(wide_base, glue_dir, tmp_path_factory):
    from hf_compress.training.runner import run_recipe

    output = tmp_path_factory.mktemp("reference") / "out"
    return run_recipe(_nf4_lora_recipe(wide_base, output, glue_dir), latency=False, progress=False)


@pytest.mark.parametrize("interrupted", ["after_quantization", "inside_lora"])
def test_resume_after_bnb_4bit_into_a_lora_stage(
    interrupted, tmp_path, wide_base, glue_dir, uninterrupted_nf4_lora, monkeypatch, caplog
):
    """Resuming hands the Trainer the 4-bit model reloaded from the stage snapshot (transformers'
    Trainer refused it) and saves it again at checkpoints and at the end (transformers could not
    re-save a pre-quantized bitsandbytes model): both paths must end like an uninterrupted run."""
    import logging

    import torch
    from transformers import AutoModelForSequenceClassification

    import hf_compress.training.callbacks as callbacks_module
    import hf_compress.training.trainer as trainer_module
    from hf_compress.training.runner import run_recipe

    output = tmp_path / "out"
    work = tmp_path / "out.work"
    recipe = _nf4_lora_recipe(wide_base, output, glue_dir)
    with monkeypatch.context() as patch:
        if interrupted == "after_quantization":
            run_stage = trainer_module.CompressionTrainer.run_stage

            def dies_at_stage_1(self, stage, index=0, resume=False):
                if index == 1:
                    raise _Killed
                return run_stage(self, stage, index, resume)

            patch.setattr(trainer_module.CompressionTrainer, "run_stage", dies_at_stage_1)
        else:
            save_states = callbacks_module.save_modifier_states

            # Killed while checkpoint-6 is being written (the modifiers' state goes in first,
            # the Trainer's files after): checkpoint-4 is the newest complete one.
            def dies_inside_checkpoint_6(modifiers, directory):
                save_states(modifiers, directory)
                if directory.endswith("checkpoint-6"):
                    raise _Killed

            patch.setattr(callbacks_module, "save_modifier_states", dies_inside_checkpoint_6)
        with pytest.raises(_Killed):
            run_recipe(recipe, latency=False, progress=False)
    assert not output.exists()
    assert json.loads((work / "progress.json").read_text())["completed_stages"] == 1
    checkpoints = sorted(p.name for p in (work / "stages").glob("stage-1/checkpoint-*"))
    inside = interrupted == "inside_lora"
    assert checkpoints == (["checkpoint-4", "checkpoint-6"] if inside else [])

    with caplog.at_level(logging.INFO, logger="hf_compress"):
        result = run_recipe(recipe, latency=False, progress=False, resume=True)
    assert "resuming after stage 0" in caplog.text
    assert ("resuming stage 1 (lora) from" in caplog.text) == inside
    if inside:
        assert "checkpoint-6 was not written to the end" in caplog.text
        assert "stage-1/checkpoint-4" in caplog.text.split("resuming stage 1 (lora) from")[1]
    report = json.loads((output / "report.json").read_text())
    assert report["compressed"]["methods"] == ["bnb_4bit_nf4", "lora"]
    assert [stage["name"] for stage in report["stages"]] == ["nf4", "lora"]
    assert not work.exists()

    batch = result.tokenizer(["a gripping , funny film", "dull"], padding=True, return_tensors="pt")
    reloaded = AutoModelForSequenceClassification.from_pretrained(output).eval()
    with torch.no_grad():
        resumed_logits = result.model.eval()(**batch).logits
        torch.testing.assert_close(reloaded(**batch).logits, resumed_logits, atol=0, rtol=0)
        reference = uninterrupted_nf4_lora.model.eval()(**batch).logits
    torch.testing.assert_close(resumed_logits, reference, atol=0, rtol=0)
