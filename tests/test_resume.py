"""A real run killed with SIGKILL mid-stage resumes with `--resume` and ends like an uninterrupted run."""

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
    return [sys.executable, "-m", "hf_compress", "--plugin", "pipeline_fixtures", "run", str(recipe), "--no-latency", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return make_tiny_base(tmp_path_factory.mktemp("base"))


def test_killed_run_resumes_from_last_checkpoint(tmp_path, tiny_base, glue_dir):
    output = tmp_path / "out"
    text = tiny_recipe_text(tiny_base, output, glue_dir, extra_stage=STAGE)
    text = text.replace("max_train_samples: 64", "max_train_samples: 320").replace("logging_steps: 1", "logging_steps: 5, save_steps: 8")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    work = tmp_path / "out.work"

    process = subprocess.Popen(_command(recipe), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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

    resumed = subprocess.run(_command(recipe, "--resume"), env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after stage 0" in resumed.stderr and "resuming stage 1 (count) from" in resumed.stderr
    report = json.loads((output / "report.json").read_text())
    # 320 examples / batch 16 = 20 steps an epoch, 2 epochs: the restored counter ends at 40
    assert report["stages"][1]["modifiers"][0] == {"type": "_count_steps", "steps": 40}
    assert report["stages"][0]["modifiers"][0]["type"] == "_halve_ffn"
    config = json.loads((output / "config.json").read_text())
    assert config["compression_config"]["_pipeline_ffn"] == {"0": 32, "1": 32}
    assert not work.exists()


def test_stale_staging_directories_are_cleaned_and_other_recipes_are_not_resumed(tmp_path, tiny_base, glue_dir):
    from hf_compress import Recipe
    from hf_compress.errors import HfCompressError
    from hf_compress.runner import run_recipe

    output = tmp_path / "out"
    stale = tmp_path / "out.partial-deadbeef"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    work = tmp_path / "out.work"
    work.mkdir()
    (work / "progress.json").write_text(json.dumps({"fingerprint": "another-recipe", "completed_stages": 1}))
    recipe = Recipe.from_string(tiny_recipe_text(tiny_base, output, glue_dir), source="t.yaml")
    with pytest.raises(HfCompressError, match="different recipe"):
        run_recipe(recipe, resume=True, latency=False, progress=False)
    run_recipe(recipe, latency=False, progress=False)  # without --resume: starts fresh
    assert not stale.exists() and not work.exists() and (output / "report.json").is_file()
