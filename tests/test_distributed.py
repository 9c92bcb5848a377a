"""The same pruning + distillation recipe on one and on two CPU processes (accelerate, gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pipeline_fixtures import make_tiny_base, tiny_recipe_text
from transformers import AutoModelForSequenceClassification

# Pruning happens once, before training (start == end == 0), from the same weights on 1 and 2
# processes: gradual pruning would score weights that trained for different step counts.
STAGE_MODIFIERS = (
    "      - {{type: head_pruning, sparsity: 0.5, importance: {importance}, "
    "start: 0.0, end: 0.0}}\n"
    "      - {{type: ffn_pruning, sparsity: 0.5, importance: magnitude, start: 0.0, end: 0.0}}\n"
    "      - {{type: distillation, temperature: 2.0, alpha_kd: 0.5, alpha_ce: 0.5}}\n"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _recipe(tmp_path: Path, base: Path, glue_dir: Path, name: str, importance: str) -> Path:
    text = tiny_recipe_text(base, tmp_path / name, glue_dir)
    text = text.replace(
        "      - {type: _halve_ffn}\n", STAGE_MODIFIERS.format(importance=importance)
    )
    text = text.replace("max_train_samples: 64", "max_train_samples: 128")
    # The tiny base itself is the teacher: a fine-tuning on 2 processes would start from other
    # weights.
    text = text.replace("teacher: finetuned-base\nfinetune_base: {epochs: 1}", f"teacher: {base}")
    assert "finetune_base" not in text
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def _run(recipe: Path, processes: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if processes == 1:
        command = [sys.executable, "-m", "hf_compress", "run", str(recipe), "--no-latency"]
    else:
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(processes),
            "--main_process_port",
            str(_free_port()),
            "-m",
            "hf_compress",
            "run",
            str(recipe),
            "--no-latency",
        ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return make_tiny_base(tmp_path_factory.mktemp("base"))


def test_one_and_two_processes_prune_the_same_structure(tmp_path, tiny_base, glue_dir):
    one = _run(_recipe(tmp_path, tiny_base, glue_dir, "one", "magnitude"), 1)
    two = _run(_recipe(tmp_path, tiny_base, glue_dir, "two", "magnitude"), 2)
    configs = [
        json.loads((tmp_path / n / "config.json").read_text())["compression_config"]
        for n in ("one", "two")
    ]
    assert (
        configs[0]["heads"] == configs[1]["heads"]
        and configs[0]["ffn_width"] == configs[1]["ffn_width"]
    )
    assert sum(configs[1]["heads"].values()) == 4  # half of 2 layers x 4 heads

    reports = [json.loads((tmp_path / n / "report.json").read_text()) for n in ("one", "two")]
    accuracies = [r["compressed"]["metrics"]["accuracy"] for r in reports]
    assert abs(accuracies[0] - accuracies[1]) <= 0.25  # 32 dev sentences, different data order
    # two processes split the data: each took half the optimizer steps of the single process
    assert "'epoch': '1'" in one.stdout + one.stderr and "'epoch': '1'" in two.stdout + two.stderr
    # only the main process wrote, and the result reloads
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("two")) == [
        "two",
        "two.yaml",
    ]
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "two").eval()
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([[2, 100, 200, 3]])).logits).all()


def test_taylor_scores_agree_across_processes(tmp_path, tiny_base, glue_dir):
    # Each rank scores heads on its own batches; without averaging the scores the ranks would
    # remove different heads and DDP would fail on mismatched parameter shapes.
    _run(_recipe(tmp_path, tiny_base, glue_dir, "taylor", "taylor"), 2)
    config = json.loads((tmp_path / "taylor" / "config.json").read_text())["compression_config"]
    assert sum(config["heads"].values()) == 4


def test_int8_fp32_fallback_picks_one_layer_on_two_processes(tmp_path, tiny_base, glue_dir):
    # Each rank measures the layer sensitivities on its own batches and the scores are averaged
    # (an all-reduce over gloo here, which must accept them); the checkpoint keeps one layer in
    # float.
    text = tiny_recipe_text(tiny_base, tmp_path / "fallback", glue_dir)
    text = text.replace("teacher: finetuned-base\nfinetune_base: {epochs: 1}", "teacher: none")
    text = text.replace(
        "    epochs: 1\n    modifiers:\n      - {type: _halve_ffn}\n",
        "    epochs: 0\n    modifiers:\n"
        "      - {type: quantization, method: int8_dynamic, fp32_fallback: 1}\n",
    )
    assert "_halve_ffn" not in text and "finetune_base" not in text
    recipe = tmp_path / "fallback.yaml"
    recipe.write_text(text)
    _run(recipe, 2)
    report = json.loads((tmp_path / "fallback" / "report.json").read_text())
    (kept,) = report["stages"][0]["modifiers"][0]["fp32_fallback"]
    config = json.loads((tmp_path / "fallback" / "config.json").read_text())["compression_config"]
    assert (
        kept not in config["int8_linear"] and len(config["int8_linear"]) == 12
    )  # 2 layers x 6 + pooler - 1
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "fallback").eval()
    assert type(model.get_submodule(kept)) is torch.nn.Linear


DECODER_STAGES = """  - name: shrink
    epochs: 0
    modifiers:
      - {type: layer_dropping, num_layers: 1, importance: block_influence, calibration_batches: 4}
      - {type: head_pruning, count: 1, unit: query_head, importance: magnitude}
      - {type: ffn_pruning, sparsity: 0.5, importance: magnitude}
  - name: distil
    epochs: 1
    modifiers:
      - {type: distillation, alpha_hidden: 0}
"""


def test_a_decoder_recipe_gives_the_same_structure_on_one_and_two_processes(tmp_path):
    from decoder_fixtures import llama_recipe_text, make_tiny_llama_base, write_text
    from transformers import AutoModelForCausalLM

    base = make_tiny_llama_base(tmp_path / "llama")
    text = write_text(tmp_path / "train.txt", lines=600)
    configs = []
    for name, processes in (("one", 1), ("two", 2)):
        recipe = tmp_path / f"{name}.yaml"
        recipe.write_text(llama_recipe_text(base, tmp_path / name, text, DECODER_STAGES))
        _run(recipe, processes)
        configs.append(json.loads((tmp_path / name / "config.json").read_text()))
    # Block influence is averaged over the ranks' batches, magnitudes need none: every rank of the
    # two-process run dropped and pruned alike (DDP would fail otherwise), as one process did.
    for key in ("heads", "kv_heads", "ffn_width"):
        assert configs[0]["compression_config"][key] == configs[1]["compression_config"][key]
    assert configs[0]["compression_config"]["heads"] == {"0": 2}  # 1 of 2 per group, both kept
    assert configs[0]["compression_config"]["kv_heads"] == {"0": 2}
    assert configs[0]["num_hidden_layers"] == configs[1]["num_hidden_layers"] == 1
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "two").eval()
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(
            model.generate(ids, max_new_tokens=4, do_sample=False),
            model.generate(ids, max_new_tokens=4, do_sample=False, use_cache=False),
        )
