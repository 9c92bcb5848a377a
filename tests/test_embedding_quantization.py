"""embedding_quantization: error bounds, lookups, storage bytes on disk, reload, config errors."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from tiny import logits, tiny_dataset, tiny_inputs, tiny_model
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForMaskedLM,
    TrainingArguments,
)

import hf_compress  # noqa: F401  (registers the compressed format)
from hf_compress import CompressionTrainer, Recipe, compress
from hf_compress.errors import RecipeError, UnsupportedModelError
from hf_compress.evaluation.measure import count_parameters, weights_size_bytes
from hf_compress.methods.quantization.config import EmbeddingQuantizationConfig
from hf_compress.methods.quantization.layers import QuantizedEmbedding, expected_storage_bytes
from hf_compress.recipe.schema import build

SCHEMES = [(8, None), (8, 16), (4, None), (4, 8)]


def _table(rows: int = 64, dim: int = 32, seed: int = 0) -> nn.Embedding:
    torch.manual_seed(seed)
    embedding = nn.Embedding(rows, dim, padding_idx=0)
    with torch.no_grad():
        embedding.weight[1:] *= torch.rand(rows - 1, 1) * 3  # rows of different magnitudes
    return embedding


@pytest.mark.parametrize(("bits", "group_size"), SCHEMES)
def test_error_is_within_half_a_quantization_step(bits, group_size):
    embedding = _table()
    quantized = QuantizedEmbedding.from_embedding(embedding, bits, group_size)
    weight = embedding.weight.detach()
    group = group_size or weight.shape[1]
    grouped = weight.reshape(weight.shape[0], -1, group)
    if bits == 8:
        step = grouped.abs().amax(-1) / 127
    else:
        step = (grouped.amax(-1) - grouped.amin(-1)) / 15
    error = (quantized.dequantize() - weight).abs().reshape_as(grouped)
    assert (error <= step.unsqueeze(-1) / 2 + 1e-6).all()
    assert error.max() > 0  # really quantized
    # the zero padding row stays exactly zero
    assert torch.equal(quantized.dequantize()[0], torch.zeros(weight.shape[1]))


@pytest.mark.parametrize(("bits", "group_size"), SCHEMES)
def test_lookup_dequantizes_the_looked_up_rows(bits, group_size):
    quantized = QuantizedEmbedding.from_embedding(_table(), bits, group_size)
    ids = torch.tensor([[3, 1, 63], [0, 5, 5]])
    out = quantized(ids)
    assert out.shape == (2, 3, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out, quantized.dequantize()[ids], atol=0, rtol=0)
    assert quantized.weight.shape == (64, 32)


def test_odd_width_packs_and_unpacks():
    embedding = nn.Embedding(10, 7)
    quantized = QuantizedEmbedding.from_embedding(embedding, bits=4)
    assert quantized.qweight.shape == (10, 4) and quantized.qweight.dtype == torch.uint8
    step = (embedding.weight.amax(-1) - embedding.weight.amin(-1)) / 15
    assert (
        (quantized.dequantize() - embedding.weight).abs() <= step.unsqueeze(-1) / 2 + 1e-6
    ).all()


@pytest.mark.parametrize(
    ("bits", "group_size", "minimum_factor"), [(8, None, 3.95), (4, None, 7.6), (4, 64, 6.4)]
)
def test_storage_factor_at_minilm_width(bits, group_size, minimum_factor):
    embedding = nn.Embedding(256, 384)
    quantized = QuantizedEmbedding.from_embedding(embedding, bits, group_size)
    stored = quantized.storage_bytes()
    assert stored == expected_storage_bytes(256, 384, bits, group_size)
    assert 256 * 384 * 4 / stored >= minimum_factor


@pytest.mark.parametrize(("bits", "group_size"), [(8, None), (4, 16)])
def test_checkpoint_smaller_by_expected_bytes_and_reloads(bits, group_size, tmp_path):
    rows, dim = 2048, 32
    model = tiny_model("bert")
    model.resize_token_embeddings(rows)
    model.eval()
    dense_dir, quant_dir = tmp_path / "dense", tmp_path / "quant"
    model.save_pretrained(dense_dir)

    reference = logits(model, tiny_inputs())
    model = compress(
        model, [{"type": "embedding_quantization", "bits": bits, "group_size": group_size}]
    )
    out = logits(model, tiny_inputs())
    assert (out - reference).abs().max() < 0.05  # close to the float model, not identical
    model.save_pretrained(quant_dir)

    with safe_open(str(quant_dir / "model.safetensors"), "pt") as handle:
        stored = {
            k: handle.get_tensor(k)
            for k in handle.keys()
            if k.startswith("bert.embeddings.word_embeddings.")
        }
    assert stored["bert.embeddings.word_embeddings.qweight"].dtype == (
        torch.int8 if bits == 8 else torch.uint8
    )
    stored_bytes = sum(t.numel() * t.element_size() for t in stored.values())
    assert stored_bytes == expected_storage_bytes(rows, dim, bits, group_size)
    saved = weights_size_bytes(dense_dir) - weights_size_bytes(quant_dir)
    expected_saving = rows * dim * 4 - stored_bytes
    assert abs(saved - expected_saving) < 1024  # the rest is safetensors header bytes

    reloaded = AutoModelForSequenceClassification.from_pretrained(quant_dir).eval()
    assert isinstance(reloaded.get_input_embeddings(), QuantizedEmbedding)
    assert reloaded.get_input_embeddings().weight.shape == (rows, dim)
    torch.testing.assert_close(logits(reloaded, tiny_inputs()), out, atol=1e-6, rtol=0)
    # counted as the dense table it stands for
    assert (
        count_parameters(reloaded)[0]
        == count_parameters(AutoModelForSequenceClassification.from_pretrained(dense_dir))[0]
    )


def test_position_embeddings_and_targets():
    model = compress(
        tiny_model("roberta"), [{"type": "embedding_quantization", "include_position": True}]
    )
    embeddings = model.roberta.embeddings
    assert isinstance(embeddings.word_embeddings, QuantizedEmbedding)
    assert isinstance(embeddings.position_embeddings, QuantizedEmbedding)
    assert isinstance(embeddings.token_type_embeddings, nn.Embedding)

    model = compress(
        tiny_model("bert"),
        [{"type": "embedding_quantization", "targets": ["embeddings.token_type_embeddings"]}],
    )
    assert isinstance(model.bert.embeddings.token_type_embeddings, QuantizedEmbedding)
    assert isinstance(model.bert.embeddings.word_embeddings, nn.Embedding)
    assert model.config.compression_config["embedding_quant"] == {
        "embeddings.token_type_embeddings": {"bits": 8, "group_size": None}
    }


def test_bfloat16_cast_runs():
    model = compress(tiny_model("distilbert"), [{"type": "embedding_quantization", "bits": 4}]).to(
        torch.bfloat16
    )
    assert model.get_input_embeddings().scale.dtype == torch.bfloat16
    assert model.get_input_embeddings().qweight.dtype == torch.uint8
    assert torch.isfinite(logits(model, tiny_inputs()).float()).all()


def test_later_training_stage_trains_other_weights(tmp_path):
    recipe = Recipe.from_dict(
        {
            "base_model": "tiny",
            "task": "sst2",
            "output_dir": "unused",
            "stages": [
                {
                    "name": "quantize",
                    "epochs": 0,
                    "modifiers": [{"type": "embedding_quantization", "bits": 8}],
                },
                {"name": "train", "epochs": 1, "modifiers": []},
            ],
        }
    )
    model = tiny_model("bert")
    args = TrainingArguments(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        learning_rate=1e-2,
        per_device_train_batch_size=8,
        logging_strategy="no",
    )
    trainer = CompressionTrainer(
        model=model, args=args, recipe=recipe, train_dataset=tiny_dataset()
    )

    def snapshot():
        return (
            trainer.model.bert.embeddings.word_embeddings.qweight.clone(),
            trainer.model.classifier.weight.detach().clone(),
        )

    trainer.run_stage(recipe.stages[0], 0)
    codes, classifier = snapshot()
    trainer.run_stage(recipe.stages[1], 1)
    new_codes, new_classifier = snapshot()
    assert torch.equal(codes, new_codes)  # the quantized table is a frozen buffer
    assert not torch.equal(classifier, new_classifier)  # the rest trained


def test_errors_name_the_problem():
    torch.manual_seed(0)
    mlm = BertForMaskedLM(
        BertConfig(
            vocab_size=64,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=64,
        )
    )
    with pytest.raises(UnsupportedModelError, match="tied"):
        compress(mlm, [{"type": "embedding_quantization"}])
    with pytest.raises(UnsupportedModelError, match="group_size 12 does not divide"):
        compress(tiny_model("bert"), [{"type": "embedding_quantization", "group_size": 12}])
    with pytest.raises(RecipeError, match="allowed values: 8, 4"):
        build(EmbeddingQuantizationConfig, {"bits": 3}, "embedding_quantization")
    with pytest.raises(RecipeError, match="match no nn.Embedding"):
        compress(
            tiny_model("bert"), [{"type": "embedding_quantization", "targets": ["classifier"]}]
        )
