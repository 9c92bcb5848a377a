"""Low-rank factorization (`type: low_rank`): SVD maths, rank choice, FWSVD, embeddings, reload."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import pytest
import torch
from tiny import logits, tiny_dataset, tiny_inputs, tiny_model
from torch import nn
from transformers import AutoModelForSequenceClassification, BertConfig, BertForMaskedLM

import hf_compress
from hf_compress import RecipeError, UnsupportedModelError, compress
from hf_compress.evaluation.measure import count_parameters
from hf_compress.methods.low_rank.layers import FactorizedEmbedding, LowRankLinear
from hf_compress.methods.low_rank.svd import (
    choose_rank,
    factorize_linear,
    saves_parameters,
    svd_factors,
)


def _linear(out_features: int = 24, in_features: int = 16, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features)


def _batches(n: int = 4):
    data = tiny_dataset(n=8 * n)
    return [
        {
            key: torch.tensor(data[i : i + 8][key])
            for key in ("input_ids", "attention_mask", "labels")
        }
        for i in range(0, 8 * n, 8)
    ]


def test_full_rank_factors_reproduce_the_layer_and_error_falls_with_rank():
    linear = _linear()
    u, s, vh = svd_factors(linear.weight)
    x = torch.randn(5, 16)
    full = factorize_linear(linear, 16, u, s, vh)
    torch.testing.assert_close(full(x), linear(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full.weight, linear.weight, atol=1e-5, rtol=1e-5)
    errors = [
        torch.linalg.norm(factorize_linear(linear, r, u, s, vh).weight - linear.weight).item()
        for r in range(1, 17)
    ]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-4
    # Eckart-Young: the rank-r error is the norm of the dropped singular values.
    assert errors[3] == pytest.approx(torch.linalg.norm(s[4:]).item(), rel=1e-4)


def test_energy_picks_the_smallest_rank_reaching_the_fraction():
    s = torch.tensor([4.0, 2.0, 1.0, 1.0])  # squared: 16, 4, 1, 1 of 22
    assert choose_rank(s, 4, 4, energy=16 / 22) == 1
    assert choose_rank(s, 4, 4, energy=0.75) == 2  # 16/22 = 0.727 < 0.75 <= 20/22
    assert choose_rank(s, 4, 4, energy=20 / 22) == 2
    assert choose_rank(s, 4, 4, energy=0.95) == 3
    assert choose_rank(s, 4, 4, energy=1.0) == 4
    assert choose_rank(s, 4, 8, rank_ratio=0.5) == 2
    assert choose_rank(s, 4, 8, rank=100) == 4


def test_energy_rank_on_a_built_matrix():
    torch.manual_seed(0)
    q1, _ = torch.linalg.qr(torch.randn(12, 12))
    q2, _ = torch.linalg.qr(torch.randn(10, 10))
    singular = torch.tensor([10.0, 5.0, 1.0, 0.1] + [0.0] * 6)
    weight = q1[:, :10] @ torch.diag(singular) @ q2.T
    _, s, _ = svd_factors(weight)
    # 100 + 25 = 125 of 126.01 squared energy is 99.2%: rank 2 for 0.99, rank 3 for 0.9999.
    assert choose_rank(s, 10, 12, energy=0.99) == 2
    assert choose_rank(s, 10, 12, energy=0.9999) == 3


def test_fisher_weighting_changes_the_factorization_toward_important_rows():
    linear = _linear(out_features=16, in_features=16)
    importance = torch.ones(16)
    importance[:4] = 20.0
    u, s, vh = svd_factors(linear.weight)
    fu, fs, fvh = svd_factors(linear.weight, importance)
    plain = factorize_linear(linear, 4, u, s, vh).weight
    weighted = factorize_linear(linear, 4, fu, fs, fvh).weight
    assert not torch.allclose(plain, weighted, atol=1e-3)
    # The important rows are reconstructed better, and the importance-weighted error is lower.
    err_plain = (plain - linear.weight)[:4].norm()
    err_weighted = (weighted - linear.weight)[:4].norm()
    assert err_weighted < err_plain
    w_plain = (importance[:, None] * (plain - linear.weight)).norm()
    w_weighted = (importance[:, None] * (weighted - linear.weight)).norm()
    assert w_weighted < w_plain
    # At full rank the weighting is undone exactly.
    full = factorize_linear(linear, 16, fu, fs, fvh).weight
    torch.testing.assert_close(full, linear.weight, atol=1e-4, rtol=1e-4)


def test_fisher_modifier_uses_gradients_and_differs_from_plain_svd():
    model = tiny_model("bert")
    plain = compress(copy.deepcopy(model), [{"type": "low_rank", "rank": 4}])
    fisher = compress(
        copy.deepcopy(model),
        [{"type": "low_rank", "rank": 4, "fisher": True}],
        calibration_data=_batches(),
    )
    name = "bert.encoder.layer.0.intermediate.dense"
    a, b = plain.get_submodule(name), fisher.get_submodule(name)
    assert isinstance(a, LowRankLinear) and isinstance(b, LowRankLinear)
    assert not torch.allclose(a.weight, b.weight, atol=1e-4)
    assert (
        plain.config.compression_config["low_rank"] == fisher.config.compression_config["low_rank"]
    )


def test_fisher_without_data_is_a_clear_error():
    with pytest.raises(RecipeError, match="fisher"):
        compress(tiny_model("bert"), [{"type": "low_rank", "rank": 4, "fisher": True}])


def test_default_targets_are_encoder_linears_and_useless_ranks_stay_dense():
    model = tiny_model("bert")
    dense_total, _ = count_parameters(model)
    # rank 20: 20 * (32 + 32) >= 32 * 32, so attention stays dense; 20 * (32 + 64) < 32 * 64 for the
    # FFN.
    assert not saves_parameters(20, 32, 32) and saves_parameters(20, 32, 64)
    compress(model, [{"type": "low_rank", "rank": 20}])
    ranks = model.config.compression_config["low_rank"]
    assert set(ranks) == {
        f"bert.encoder.layer.{i}.{p}"
        for i in range(2)
        for p in ("intermediate.dense", "output.dense")
    }
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, nn.Linear)
    assert type(model.bert.pooler.dense) is nn.Linear and type(model.classifier) is nn.Linear
    assert type(model.bert.embeddings.word_embeddings) is nn.Embedding
    assert count_parameters(model)[0] < dense_total


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_factorized_layers_and_embedding_reload(family):
    model = tiny_model(family)
    inputs = tiny_inputs()
    compress(model, [{"type": "low_rank", "rank_ratio": 0.25, "factorize_embeddings": 8}])
    assert model.config.compression_config["embedding_factorization"] == 8
    assert model.config.model_type == f"compressed_{family}"
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        saved = json.loads((Path(tmp) / "config.json").read_text())["compression_config"]
        assert saved["low_rank"] == model.config.compression_config["low_rank"]
        reloaded = AutoModelForSequenceClassification.from_pretrained(tmp).eval()
    assert isinstance(reloaded.get_input_embeddings(), FactorizedEmbedding)
    for name, rank in saved["low_rank"].items():
        module = reloaded.get_submodule(name)
        assert isinstance(module, LowRankLinear) and module.rank == rank == 8
    torch.testing.assert_close(logits(reloaded, inputs), logits(model, inputs), atol=1e-6, rtol=0)


def test_embedding_factorization_is_the_truncated_svd():
    model = tiny_model("bert")
    table = model.bert.embeddings.word_embeddings.weight.detach().clone()
    compress(model, [{"type": "low_rank", "factorize_embeddings": 16}])
    factorized = model.bert.embeddings.word_embeddings
    assert isinstance(factorized, FactorizedEmbedding)
    s = torch.linalg.svdvals(table)
    assert torch.linalg.norm(factorized.weight - table).item() == pytest.approx(
        s[16:].norm().item(), rel=1e-3
    )
    ids = torch.tensor([[1, 5, 9]])
    torch.testing.assert_close(factorized(ids), factorized.weight[ids], atol=1e-6, rtol=0)
    # the Linears were not touched when no rank key is given
    assert "low_rank" not in model.config.compression_config


def test_embedding_factorization_that_saves_nothing_is_refused():
    # 31 * (128 + 32) > 128 * 32: the message names the largest useful size.
    with pytest.raises(RecipeError, match="at most 25"):
        compress(tiny_model("bert"), [{"type": "low_rank", "factorize_embeddings": 31}])


def test_embedding_factorization_refuses_tied_lm_heads():
    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
    )
    with pytest.raises(UnsupportedModelError, match="tied"):
        compress(BertForMaskedLM(config), [{"type": "low_rank", "factorize_embeddings": 8}])


def test_factorizing_twice_leaves_existing_factors_alone():
    model = tiny_model("bert")
    compress(model, [{"type": "low_rank", "rank": 8}])
    first = dict(model.config.compression_config["low_rank"])
    compress(model, [{"type": "low_rank", "rank": 4, "targets": ["bert.pooler.dense"]}])
    ranks = model.config.compression_config["low_rank"]
    assert ranks == {**first, "bert.pooler.dense": 4}
    assert not any(
        isinstance(m, LowRankLinear)
        for m in model.bert.encoder.layer[0].intermediate.dense.children()
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"rank": 4, "energy": 0.9}, "only one of"),
        ({"rank_ratio": 0.5, "rank": 3}, "only one of"),
        ({}, "set one of"),
        ({"energy": 0.0}, "out of range"),
        ({"energy": 1.5}, "out of range"),
        ({"rank": 0}, "out of range"),
        ({"factorize_embeddings": 8, "fisher": True}, "fisher"),
        ({"rank": 4, "sparsity": 0.5}, "unknown key"),
    ],
)
def test_bad_configs_are_recipe_errors(entry, message):
    with pytest.raises(RecipeError, match=message):
        compress(tiny_model("bert"), [{"type": "low_rank", **entry}])


def test_recipe_files_validate():
    root = Path(__file__).resolve().parents[1] / "recipes"
    for name in ("minilm-sst2-low-rank-50.yaml", "minilm-sst2-low-rank-fisher-50.yaml"):
        recipe = hf_compress.Recipe.from_yaml(root / name)
        types = [m.type for stage in recipe.stages for m in stage.modifiers]
        assert "low_rank" in types and any(stage.trains for stage in recipe.stages)


def test_recipe_removes_half_of_minilm_encoder_linear_parameters():
    # MiniLM-L6 shapes (hidden 384, FFN 1536) with the shipped recipe's rank setting.
    root = Path(__file__).resolve().parents[1] / "recipes"
    for name in ("minilm-sst2-low-rank-50.yaml", "minilm-sst2-low-rank-fisher-50.yaml"):
        recipe = hf_compress.Recipe.from_yaml(root / name)
        (spec,) = [m for stage in recipe.stages for m in stage.modifiers if m.type == "low_rank"]
        shapes = [(384, 384)] * 4 + [(384, 1536), (1536, 384)]
        before = sum(i * o for i, o in shapes)
        after = 0
        for i, o in shapes:
            r = choose_rank(
                torch.ones(min(i, o)),
                i,
                o,
                spec.config.rank,
                spec.config.rank_ratio,
                spec.config.energy,
            )
            after += r * (i + o) if saves_parameters(r, i, o) else i * o
        assert after <= 0.5 * before, (name, after / before)
