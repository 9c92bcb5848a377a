"""Weight sharing: k-means weight clustering (`weight_clustering`) and cross-layer sharing
(`layer_sharing`)."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from matrix import MatrixCase, apply_case
from safetensors import safe_open
from sklearn.cluster import KMeans
from tiny import logits, tiny_inputs, tiny_model
from torch import nn
from transformers import AutoModelForSequenceClassification

import hf_compress
from hf_compress import RecipeError, compress
from hf_compress.architectures.base import get_adapter
from hf_compress.evaluation.measure import count_parameters, saved_size_bytes
from hf_compress.methods.clustering.kmeans import (
    cluster_weights,
    kmeans_1d,
    pack_indices,
    packed_size,
    unpack_indices,
)
from hf_compress.methods.clustering.layers import ClusteredLinear
from hf_compress.methods.sharing.layers import SharedLayerList

ROOT = Path(__file__).resolve().parents[1]


def _clustered(model: nn.Module) -> dict[str, ClusteredLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, ClusteredLinear)}


# Bit packing -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("numel", [1, 7, 64, 1001])
def test_packed_indices_round_trip_exactly(bits, numel):
    generator = torch.Generator().manual_seed(bits * 1000 + numel)
    indices = torch.randint(0, 1 << bits, (numel,), generator=generator)
    indices[0] = (1 << bits) - 1  # the largest index uses every bit
    packed = pack_indices(indices, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == packed_size(numel, bits) == -(-numel * bits // 8)
    assert torch.equal(unpack_indices(packed, bits, numel), indices)


def test_four_bit_packing_puts_two_indices_in_a_byte():
    packed = pack_indices(torch.tensor([1, 2, 15, 0]), 4)
    assert packed.tolist() == [1 | (2 << 4), 15]


# k-means ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_kmeans_matches_sklearn_lloyd_with_linear_init(bits):
    torch.manual_seed(bits)
    values = torch.randn(4000, dtype=torch.float64) * 0.05
    centroids, labels = kmeans_1d(values, 1 << bits)
    data = values.numpy().reshape(-1, 1)
    init = np.linspace(data.min(), data.max(), 1 << bits).reshape(-1, 1)
    reference = KMeans(n_clusters=1 << bits, init=init, n_init=1, max_iter=300, tol=0).fit(data)
    inertia = ((values - centroids[labels]) ** 2).sum().item()
    assert inertia == pytest.approx(reference.inertia_, rel=1e-6)
    np.testing.assert_allclose(
        np.sort(centroids.numpy()), np.sort(reference.cluster_centers_.ravel()), rtol=1e-6
    )


def test_kmeans_uses_every_centroid_even_with_empty_initial_clusters():
    torch.manual_seed(0)
    values = torch.randn(3000) * 0.05
    values[0] = 5.0  # an outlier leaves most linearly spaced centroids without any weight
    codebook, indices = cluster_weights(values.reshape(60, 50), bits=4)
    assert len(torch.unique(indices)) == 16
    assert len(torch.unique(codebook[indices])) == 16


def test_layers_with_few_values_are_kept_exactly():
    weight = torch.tensor([[0.5, -1.0], [0.5, 2.0]])
    codebook, indices = cluster_weights(weight, bits=2)
    assert torch.equal(codebook[indices], weight)


# Clustered layers ------------------------------------------------------------------------------
def test_clustered_linear_matches_codebook_and_sums_gradients_per_centroid():
    torch.manual_seed(0)
    linear = nn.Linear(24, 12)
    layer = ClusteredLinear.from_linear(linear, bits=3)
    weight = layer.weight
    assert len(torch.unique(weight)) <= 8
    assert (weight - linear.weight).abs().max() < (linear.weight.max() - linear.weight.min()) / 8
    x = torch.randn(5, 24)
    torch.testing.assert_close(layer(x), x @ weight.T + linear.bias)
    # Deep Compression's centroid update: d loss / d centroid = sum of the gradients of its weights.
    dense = weight.detach().clone().requires_grad_(True)
    (x @ dense.T).pow(2).sum().backward()
    layer(x).sub(linear.bias).pow(2).sum().backward()
    expected = torch.zeros(8).index_add_(0, layer.indices().reshape(-1), dense.grad.reshape(-1))
    torch.testing.assert_close(layer.codebook.grad, expected, rtol=1e-5, atol=1e-6)
    total, nonzero = layer.compressed_numel()
    assert total == 24 * 12 + 12


def test_clustered_layers_keep_at_most_2_to_the_bits_values_through_training():
    case = MatrixCase(
        id="cluster-train", modifiers=[{"type": "weight_clustering", "bits": 2}], epochs=2
    )
    model, dense = apply_case(case, "bert")
    layers = _clustered(model)
    assert set(layers) == {
        f"bert.encoder.layer.{i}.{p}"
        for i in range(2)
        for p in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        )
    }
    # The assignments are the k-means ones of the dense weights, and stayed fixed while training.
    for name, layer in layers.items():
        _, indices = cluster_weights(dense.get_submodule(name).weight, 2)
        assert torch.equal(layer.indices(), indices)
        assert len(torch.unique(layer.weight)) <= 4
    # The centroids did train.
    trained = layers["bert.encoder.layer.0.intermediate.dense"].codebook.detach()
    initial, _ = cluster_weights(
        dense.get_submodule("bert.encoder.layer.0.intermediate.dense").weight, 2
    )
    assert not torch.allclose(trained, initial)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_clustered_checkpoint_stores_packed_indices_and_reloads(bits):
    model = tiny_model("bert")
    dense_bytes = saved_size_bytes(model)
    inputs = tiny_inputs()
    compress(model, [{"type": "weight_clustering", "bits": bits}])
    assert model.config.compression_config["clustered"] == {
        name: bits for name in _clustered(model)
    }
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        with safe_open(str(Path(tmp) / "model.safetensors"), "pt") as f:
            key = "bert.encoder.layer.0.intermediate.dense.packed_indices"
            packed = f.get_tensor(key)
            assert packed.dtype == torch.uint8 and packed.numel() == packed_size(32 * 64, bits)
            assert not any(k.endswith("intermediate.dense.weight") for k in f.keys())
        reloaded = AutoModelForSequenceClassification.from_pretrained(tmp).eval()
    for name, layer in _clustered(model).items():
        again = reloaded.get_submodule(name)
        assert isinstance(again, ClusteredLinear) and again.bits == bits
        assert torch.equal(again.weight, layer.weight)
    torch.testing.assert_close(logits(reloaded, inputs), logits(model, inputs), atol=0, rtol=0)
    # Bytes on disk: each clustered layer's float32 weight became packed indices plus a codebook.
    shapes = [(32, 32)] * 4 + [(32, 64)] * 2
    expected = 2 * sum(o * i * 4 - packed_size(o * i, bits) - (1 << bits) * 4 for o, i in shapes)
    assert dense_bytes - saved_size_bytes(model) == pytest.approx(
        expected, abs=2048
    )  # header sizes differ a little


def test_clustering_bits_out_of_range_is_a_recipe_error():
    for bits in (0, 9):
        with pytest.raises(RecipeError, match="bits"):
            compress(tiny_model("bert"), [{"type": "weight_clustering", "bits": bits}])
    with pytest.raises(RecipeError, match="no Linear layer matched"):
        compress(tiny_model("bert"), [{"type": "weight_clustering", "targets": ["nothing.here"]}])


# Layer sharing ---------------------------------------------------------------------------------
def _layers(model):
    return get_adapter(model).layer_list(model)


def _deep_model(family: str = "bert", num_layers: int = 4):
    """The tiny model of `family` with `num_layers` layers (tiny_model fixes the count at 2)."""
    config = copy.deepcopy(tiny_model(family).config)
    setattr(config, get_adapter(config).config_layers, num_layers)
    torch.manual_seed(0)
    return type(tiny_model(family))(config).eval()


@pytest.mark.parametrize("init", ["mean", "first"])
def test_sharing_initialises_from_the_mean_or_the_first_layer(init):
    model = _deep_model("bert", 4)
    originals = [copy.deepcopy(layer) for layer in _layers(model)]
    compress(model, [{"type": "layer_sharing", "groups": [[0, 1], [2, 3]], "init": init}])
    layers = _layers(model)
    assert isinstance(layers, SharedLayerList)
    assert layers[0] is layers[1] and layers[2] is layers[3] and layers[1] is not layers[2]
    query = layers[2].attention.self.query.weight
    a, b = originals[2].attention.self.query.weight, originals[3].attention.self.query.weight
    torch.testing.assert_close(query, (a + b) / 2 if init == "mean" else a)
    assert model.config.compression_config["shared_layers"] == [[0, 1], [2, 3]]


def test_sharing_stores_each_shared_layer_once_and_cuts_parameters():
    model = _deep_model("bert", 4)
    total, _ = count_parameters(model)
    layer_params = sum(p.numel() for p in _layers(model)[0].parameters())
    compress(model, [{"type": "layer_sharing", "share": "all"}])
    assert count_parameters(model)[0] == total - 3 * layer_params
    keys = model.state_dict().keys()
    assert any(k.startswith("bert.encoder.layer.0.") for k in keys)
    assert not any(k.startswith(f"bert.encoder.layer.{i}.") for i in (1, 2, 3) for k in keys)
    out = model(**tiny_inputs(), output_hidden_states=True)
    assert len(out.hidden_states) == 5  # embeddings + 4 positions, shared or not


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_shared_layers_are_one_module_after_reload(family):
    model = _deep_model(family, 3)
    inputs = tiny_inputs()
    compress(model, [{"type": "layer_sharing", "groups": [[0, 2]]}])
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        reloaded, info = AutoModelForSequenceClassification.from_pretrained(
            tmp, output_loading_info=True
        )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    layers = _layers(reloaded.eval())
    assert layers[0] is layers[2] and layers[1] is not layers[0]
    torch.testing.assert_close(logits(reloaded, inputs), logits(model, inputs), atol=0, rtol=0)
    # A later update through one position changes every position of its group.
    first = next(layers[2].parameters())
    with torch.no_grad():
        first.add_(1.0)
    assert torch.equal(next(layers[0].parameters()), first)
    assert not torch.equal(next(layers[1].parameters()), first)


def test_shared_layers_train_as_one():
    case = MatrixCase(
        id="share-train", modifiers=[{"type": "layer_sharing", "groups": [[0, 1]]}], epochs=2
    )
    model, dense = apply_case(case, "bert")
    layers = _layers(model)
    assert layers[0] is layers[1]
    mean = (
        dense.bert.encoder.layer[0].output.dense.weight
        + dense.bert.encoder.layer[1].output.dense.weight
    ) / 2
    assert not torch.allclose(layers[0].output.dense.weight, mean)  # trained
    # Gradients from both positions reach the one parameter.
    model.zero_grad()
    inputs = {**tiny_inputs(), "labels": torch.tensor([0, 1, 1])}
    model.train()
    model(**inputs).loss.backward()
    assert layers[1].output.dense.weight.grad is layers[0].output.dense.weight.grad
    assert layers[0].output.dense.weight.grad.abs().sum() > 0


def test_mean_init_refuses_layers_whose_storage_cannot_be_averaged():
    for first in ({"type": "weight_clustering", "bits": 2}, {"type": "low_rank", "rank": 4}):
        model = tiny_model("bert")
        compress(model, [first])
        with pytest.raises(hf_compress.UnsupportedModelError, match="init: first"):
            compress(model, [{"type": "layer_sharing", "share": "all", "init": "mean"}])
        compress(model, [{"type": "layer_sharing", "share": "all", "init": "first"}])
        assert _layers(model)[0] is _layers(model)[1]


def test_shared_layer_list_keeps_sharing_through_list_operations():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    layers = SharedLayerList([a, a, b])
    assert len(layers) == 3 and list(layers) == [a, a, b] and list(layers._modules) == ["0", "2"]
    assert layers[-1] is b and layers[1:][0] is a and isinstance(layers[:2], SharedLayerList)
    layers[2] = a
    assert layers.groups() == [[0, 1, 2]] and len(list(layers.parameters())) == 2
    layers.append(b)
    assert layers[3] is b and layers.groups() == [[0, 1, 2]]
    del layers[0]
    assert list(layers) == [a, a, b]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"groups": [[0, 1]], "share": "all"}, "exactly one"),
        ({}, "exactly one"),
        ({"groups": [[0, 1], [1, 2]]}, "two groups"),
        ({"groups": [[0]]}, "fewer than two"),
        ({"groups": [[0, -1]]}, "negative"),
        ({"share": "some"}, "allowed values"),
        ({"groups": [[0, 1]], "init": "random"}, "allowed values"),
        ({"groups": [[0, 5]]}, "out of range"),
        ({"share": "all", "targets": ["classifier"]}, "not targets"),
    ],
)
def test_bad_sharing_configs_are_recipe_errors(entry, message):
    with pytest.raises(RecipeError, match=message):
        compress(tiny_model("bert"), [{"type": "layer_sharing", **entry}])


def test_recipe_files_validate():
    for name in ("cluster-2bit", "cluster-3bit", "cluster-4bit", "share-3groups"):
        recipe = hf_compress.Recipe.from_yaml(ROOT / "recipes" / f"minilm-sst2-{name}.yaml")
        assert any(stage.trains for stage in recipe.stages)
