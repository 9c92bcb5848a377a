"""The compressed checkpoint format: rebuild on from_pretrained, versioning, bad configs."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import FAMILIES, logits, rebuild_narrowed_ffn, tiny_inputs, tiny_model, tiny_tokenizer
from tiny import narrow_ffn as narrow_widths
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, pipeline

import hf_compress  # noqa: F401
from hf_compress.architectures.base import get_adapter
from hf_compress.checkpoint.format import (
    check_supported,
    is_compressed,
    record_method,
    to_compressed,
)
from hf_compress.checkpoint.rebuild import REBUILDERS, register_rebuild
from hf_compress.errors import CheckpointError, UnsupportedModelError

register_rebuild("_test_ffn", 40)(rebuild_narrowed_ffn)


def narrow_ffn(model, widths: dict[int, int]):
    return narrow_widths(model, widths, "_test_ffn")


@pytest.mark.parametrize("family", FAMILIES)
def test_uneven_structure_reloads_with_identical_logits(tmp_path, family):
    model = narrow_ffn(tiny_model(family), {0: 10, 1: 37})
    assert is_compressed(model) and model.config.model_type == f"compressed_{family}"
    inputs = tiny_inputs()
    expected = logits(model, inputs)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == f"compressed_{family}"
    assert saved["compression_config"] == {"version": 1, "_test_ffn": {"0": 10, "1": 37}}
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))

    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded).__name__ == type(model).__name__
    assert torch.equal(logits(reloaded, inputs), expected)
    adapter = get_adapter(reloaded)
    assert adapter.ffn_width(reloaded, 0) == 10 and adapter.ffn_width(reloaded, 1) == 37
    # the base model class reloads the encoder too
    assert AutoModel.from_pretrained(tmp_path) is not None


def test_pipeline_runs_on_a_compressed_directory(tmp_path):
    model = narrow_ffn(tiny_model("bert"), {0: 16})
    tokenizer = tiny_tokenizer(tmp_path)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    classify = pipeline("text-classification", model=str(tmp_path))
    result = classify("the movie was good")
    assert result[0]["label"] in {"LABEL_0", "LABEL_1"}


def test_plain_models_keep_their_type_until_a_structure_is_recorded():
    model = tiny_model("bert")
    assert not is_compressed(model)
    record_method(model, "something")
    assert is_compressed(model) and model.config.compression_config["methods"] == ["something"]
    assert model.bert.config is model.config  # the inner model shares the new config


def test_newer_format_version_is_refused(tmp_path):
    narrow_ffn(tiny_model("bert"), {0: 16}).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["compression_config"]["version"] = 99
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="version 99 is newer"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path, verify_checksums=False)


def test_unknown_structure_key_is_refused(tmp_path):
    narrow_ffn(tiny_model("bert"), {0: 16}).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["compression_config"]["warp_drive"] = {"x": 1}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unknown entries \\['warp_drive'\\]"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path, verify_checksums=False)


def test_structure_that_does_not_fit_is_a_checkpoint_error(tmp_path):
    narrow_ffn(tiny_model("bert"), {0: 16}).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["compression_config"]["_test_ffn"] = {"7": 16}  # the model has 2 layers
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not fit this model"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path, verify_checksums=False)


def test_config_round_trip_through_autoconfig(tmp_path):
    model = narrow_ffn(tiny_model("roberta"), {1: 8})
    model.config.save_pretrained(tmp_path)
    again = AutoConfig.from_pretrained(tmp_path)
    assert type(again).__name__ == "CompressedRobertaConfig"
    assert again.compression_config == model.config.compression_config


def test_unsupported_architecture_names_the_supported_families():
    from transformers import OPTConfig, OPTForSequenceClassification

    model = OPTForSequenceClassification(
        OPTConfig(
            num_hidden_layers=1, hidden_size=16, num_attention_heads=2, ffn_dim=32, vocab_size=50
        )
    )
    with pytest.raises(UnsupportedModelError, match="none of the layer layouts hf-compress knows"):
        get_adapter(model)
    with pytest.raises(
        UnsupportedModelError,
        match="cannot be saved in the compressed format; supported families: bert, roberta",
    ):
        to_compressed(model)
    with pytest.raises(
        UnsupportedModelError, match="model type 'opt' is not supported by hf-compress; supported"
    ):
        check_supported(model.config)


@pytest.mark.parametrize(
    ("config_class", "model_class"),
    [
        ("ElectraConfig", "ElectraForSequenceClassification"),
        ("XLMRobertaConfig", "XLMRobertaForSequenceClassification"),
    ],
)
def test_encoders_laid_out_like_bert_compress_and_reload_without_new_code(
    tmp_path, config_class, model_class
):
    import transformers

    torch.manual_seed(0)
    config = getattr(transformers, config_class)(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=70,
        embedding_size=32,
    )
    model = getattr(transformers, model_class)(config).eval()
    assert get_adapter(model).layout == "bert"  # found from the module tree
    model = hf_compress.compress(
        model,
        [
            {"type": "head_pruning", "count": 3, "importance": "magnitude"},
            {"type": "ffn_pruning", "sparsity": 0.5, "importance": "magnitude"},
            {"type": "quantization", "method": "int8_dynamic"},
        ],
    )
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded).__name__ == f"Compressed{model_class}"
    assert sum(get_adapter(reloaded).num_heads(reloaded, i) for i in range(2)) == 8 - 3
    torch.testing.assert_close(
        logits(reloaded, tiny_inputs()), logits(model, tiny_inputs()), atol=0, rtol=0
    )


def test_rebuilders_are_registered_by_techniques():
    assert "_test_ffn" in REBUILDERS


@pytest.mark.parametrize(
    ("value", "message"),
    [("[1, 2]", "must be a mapping"), ('{"version": "1"}', "is not a format version")],
)
def test_malformed_compression_config_is_a_checkpoint_error(tmp_path, value, message):
    narrow_ffn(tiny_model("bert"), {0: 16}).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["compression_config"] = json.loads(value)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        AutoModelForSequenceClassification.from_pretrained(tmp_path, verify_checksums=False)
