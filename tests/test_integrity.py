"""Checkpoints prove their integrity: every edit or corruption of a saved compressed model is a
clear `CheckpointError` from plain `from_pretrained` (after `import hf_compress`) and from every
command, loading is strict even without the digest check, and NaN logits are never a metric."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny import tiny_inputs, tiny_model, tiny_tokenizer
from transformers import AutoModelForSequenceClassification

import hf_compress
from hf_compress.checkpoint.manifest import MANIFEST_FILE
from hf_compress.cli import main
from hf_compress.errors import CheckpointError


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("int8")
    model = hf_compress.compress(
        tiny_model("bert"),
        [
            {"type": "head_pruning", "count": 1, "importance": "magnitude"},
            {"type": "quantization", "method": "int8_dynamic"},
        ],
    )
    model.save_pretrained(directory)
    tiny_tokenizer(directory).save_pretrained(directory)
    return directory


def _tensors(edit: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], None]:
    def corrupt(directory: Path) -> None:
        tensors = load_file(str(directory / "model.safetensors"))
        edit(tensors)
        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})

    return corrupt


def _config(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def corrupt(directory: Path) -> None:
        config = json.loads((directory / "config.json").read_text())
        edit(config)
        (directory / "config.json").write_text(json.dumps(config, indent=2))

    return corrupt


def _zero_scales(tensors):
    for key in tensors:
        if key.endswith("weight_scale"):
            tensors[key].zero_()


def _swap_layers(tensors):
    a, b = "bert.encoder.layer.0.output.dense.weight", "bert.encoder.layer.1.output.dense.weight"
    tensors[a], tensors[b] = tensors[b].clone(), tensors[a].clone()


def _flip_bytes(directory: Path) -> None:
    data = bytearray((directory / "model.safetensors").read_bytes())
    for i in range(len(data) - 8, len(data)):
        data[i] ^= 0xFF
    (directory / "model.safetensors").write_bytes(bytes(data))


def _truncate(directory: Path) -> None:
    data = (directory / "model.safetensors").read_bytes()
    (directory / "model.safetensors").write_bytes(data[: len(data) - 100])


CORRUPTIONS = {
    "int8 scales zeroed": _tensors(_zero_scales),
    "classifier filled with NaN": _tensors(lambda t: t["classifier.weight"].fill_(float("nan"))),
    "two layers swapped": _tensors(_swap_layers),
    "int8 codes flipped": _tensors(
        lambda t: t["bert.encoder.layer.0.intermediate.dense.weight"].neg_()
    ),
    "a tensor removed": _tensors(lambda t: t.pop("bert.encoder.layer.1.output.dense.bias")),
    "8 bytes flipped": _flip_bytes,
    "file truncated": _truncate,
    "hidden_act changed": _config(lambda c: c.update(hidden_act="relu")),
    "int8_linear removed": _config(lambda c: c["compression_config"].pop("int8_linear")),
    "num_hidden_layers raised": _config(lambda c: c.update(num_hidden_layers=3)),
}


def _copy(saved: Path, tmp_path: Path, corrupt: Callable[[Path], None]) -> Path:
    directory = tmp_path / "model"
    shutil.copytree(saved, directory)
    corrupt(directory)
    return directory


def test_the_manifest_covers_config_and_weights(saved):
    manifest = json.loads((saved / MANIFEST_FILE).read_text())
    assert sorted(manifest["files"]) == ["config.json", "model.safetensors"]
    reloaded = AutoModelForSequenceClassification.from_pretrained(saved)  # intact: loads
    assert reloaded(**tiny_inputs()).logits.isfinite().all()


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_corruption_is_refused_by_from_pretrained_and_eval(saved, tmp_path, name, capsys):
    directory = _copy(saved, tmp_path, CORRUPTIONS[name])
    with pytest.raises(CheckpointError, match=r"(differs from what was saved|bytes, but)"):
        AutoModelForSequenceClassification.from_pretrained(directory)
    assert main(["eval", str(directory), "--task", "sst2", "--max-eval-samples", "8"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "verify_checksums=False" in error


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a tensor removed", "1 tensors missing"),
        ("int8_linear removed", "tensors in the checkpoint that the model has no place for"),
        ("num_hidden_layers raised", "tensors missing from the checkpoint"),
    ],
)
def test_loading_stays_strict_without_the_digest_check(saved, tmp_path, name, message):
    directory = _copy(saved, tmp_path, CORRUPTIONS[name])
    with pytest.raises(CheckpointError, match=message):
        AutoModelForSequenceClassification.from_pretrained(directory, verify_checksums=False)


def test_nan_logits_are_an_error_not_an_accuracy(saved, tmp_path, glue_dir, monkeypatch, capsys):
    directory = _copy(saved, tmp_path, CORRUPTIONS["classifier filled with NaN"])
    monkeypatch.setenv("HF_COMPRESS_VERIFY_CHECKSUMS", "0")
    argv = ["eval", str(directory), "--task", "sst2", "--glue-dir", str(glue_dir)]
    assert main([*argv, "--max-eval-samples", "8"]) == 2
    assert "NaN or infinite logits on 8 of 8 examples" in capsys.readouterr().err


def test_a_model_edited_on_purpose_loads_with_the_check_off(saved, tmp_path):
    labels = {"0": "bad", "1": "good"}
    directory = _copy(saved, tmp_path, _config(lambda c: c.update(id2label=labels)))
    with pytest.raises(CheckpointError, match=r"config.json: (content differs|\d+ bytes, but)"):
        AutoModelForSequenceClassification.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory, verify_checksums=False)
    assert model.config.id2label == {0: "bad", 1: "good"}
    reloaded = AutoModelForSequenceClassification.from_pretrained(saved)
    inputs = tiny_inputs()
    torch.testing.assert_close(model(**inputs).logits, reloaded(**inputs).logits)
