"""quantization (int8_dynamic, qat_int8, bnb_8bit, bnb_4bit_nf4 / fp4) and lora: error bounds,
int8 storage on disk, reload, QAT equivalence, LoRA recovery over 4-bit, and the errors."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tiny import logits, tiny_dataset, tiny_inputs, tiny_model, tiny_training_args
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    TrainingArguments,
)

import hf_compress  # noqa: F401  (registers the compressed format)
from hf_compress import CompressionTrainer, Recipe, compress
from hf_compress.errors import HfCompressError, RecipeError, UnsupportedModelError
from hf_compress.methods.modifier import StageContext
from hf_compress.methods.quantization import kernels
from hf_compress.methods.quantization.bitsandbytes import require_bitsandbytes
from hf_compress.methods.quantization.config import METHODS, LoraConfig, QuantizationConfig
from hf_compress.methods.quantization.kernels import (
    fbgemm_available,
    onednn_available,
    quantize_weight_per_channel,
)
from hf_compress.methods.quantization.layers import Int8Linear, QATLinear
from hf_compress.methods.quantization.modifier import QuantizationModifier
from hf_compress.methods.quantization.sensitivity import layer_sensitivity, most_sensitive
from hf_compress.recipe.recipe import Stage
from hf_compress.recipe.schema import build

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("bert", "roberta", "distilbert")


def wide_model(seed: int = 0, layers: int = 2) -> BertForSequenceClassification:
    """A BERT 64 wide: bitsandbytes' CPU 4-bit kernel needs in_features % 64 == 0."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=128,
        hidden_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
    )
    return BertForSequenceClassification(config).eval()


def reload(model: nn.Module) -> tuple[nn.Module, Path]:
    tmp = Path(tempfile.mkdtemp())
    model.save_pretrained(tmp)
    return AutoModelForSequenceClassification.from_pretrained(tmp).eval(), tmp


def tensor_dtypes(directory: Path) -> dict[str, str]:
    with safe_open(str(directory / "model.safetensors"), "pt") as f:
        return {key: str(f.get_slice(key).get_dtype()) for key in f.keys()}


def quantize(model: nn.Module, **entry) -> nn.Module:
    return compress(model, [{"type": "quantization", **entry}])


# Int8Linear ------------------------------------------------------------------------------------
def test_weight_quantization_error_is_within_half_a_step_per_channel():
    torch.manual_seed(0)
    weight = torch.randn(16, 48) * torch.rand(16, 1) * 3
    codes, scale = quantize_weight_per_channel(weight)
    assert codes.dtype == torch.int8 and codes.abs().max() == 127
    error = (codes.float() * scale[:, None] - weight).abs()
    assert (error <= scale[:, None] / 2 + 1e-6).all()


@pytest.mark.parametrize("reduce_range", [False, True])
def test_int8_linear_kernels_match_the_integer_reference(reduce_range):
    torch.manual_seed(0)
    linear = nn.Linear(48, 40)
    x = torch.randn(5, 7, 48) * 2
    layer = Int8Linear.from_linear(linear)
    layer.reduce_range = reduce_range
    layer.backend = "dequant"
    reference = layer(x)
    float_out = linear(x)
    # close to the float layer: per-channel weights and a per-tensor input grid
    error = (reference - float_out).abs().max()
    assert 0 < error < (0.03 if not reduce_range else 0.06) * float_out.abs().max()
    if not onednn_available():
        pytest.skip("no x86 int8 kernels on this machine")
    layer.backend = "onednn"  # the same codes as the reference: equal up to float rounding
    torch.testing.assert_close(layer(x), reference, atol=1e-5, rtol=1e-5)
    layer.backend = "fbgemm"  # measures the input range on its own grid: as close to float
    assert layer(x).shape == (5, 7, 40)
    assert (layer(x) - float_out).abs().max() < (
        0.03 if not reduce_range else 0.06
    ) * float_out.abs().max()


def test_int8_linear_picks_fbgemm_for_dynamic_and_onednn_for_static_inputs(monkeypatch):
    if not (fbgemm_available() and onednn_available()):
        pytest.skip("no x86 int8 kernels on this machine")
    monkeypatch.delenv("HF_COMPRESS_INT8_BACKEND", raising=False)
    cpu = torch.device("cpu")
    assert Int8Linear.from_linear(nn.Linear(8, 8)).resolved_backend(cpu) == "fbgemm"
    assert Int8Linear(8, 8, static_activations=True).resolved_backend(cpu) == "onednn"
    assert Int8Linear(8, 8).resolved_backend(torch.device("meta")) == "dequant"
    monkeypatch.setenv(
        "HF_COMPRESS_INT8_BACKEND", "onednn"
    )  # the override, e.g. for batch throughput on AMX
    assert Int8Linear.from_linear(nn.Linear(8, 8)).resolved_backend(cpu) == "onednn"


def test_a_layers_saved_kernel_preference_is_followed_where_it_can_run(monkeypatch):
    if not (fbgemm_available() and onednn_available()):
        pytest.skip("no x86 int8 kernels on this machine")
    monkeypatch.delenv("HF_COMPRESS_INT8_BACKEND", raising=False)
    cpu = torch.device("cpu")

    def chosen(kernel: str, static: bool = False) -> str:
        qparams = (0.05, 128) if static else None
        return Int8Linear.from_linear(
            nn.Linear(8, 8), input_qparams=qparams, kernel=kernel
        ).resolved_backend(cpu)

    assert (chosen("auto"), chosen("fbgemm"), chosen("onednn")) == ("fbgemm", "fbgemm", "onednn")
    assert (
        chosen("fbgemm", static=True) == "onednn"
    )  # a fixed (QAT) input range needs oneDNN's kernel
    monkeypatch.setattr(kernels, "cpu_has_amx_int8", lambda: True)
    assert chosen("onednn_on_amx") == "onednn"
    monkeypatch.setattr(kernels, "cpu_has_amx_int8", lambda: False)
    assert chosen("onednn_on_amx") == "fbgemm"
    monkeypatch.setenv(
        "HF_COMPRESS_INT8_BACKEND", "fbgemm"
    )  # the environment overrides the checkpoint
    assert chosen("onednn") == "fbgemm"
    with pytest.raises(ValueError, match="onednn_on_amx"):
        Int8Linear.from_linear(nn.Linear(8, 8), kernel="amx")


def test_the_kernel_preference_is_saved_per_layer_and_reloaded(monkeypatch):
    monkeypatch.delenv("HF_COMPRESS_INT8_BACKEND", raising=False)
    model = quantize(tiny_model("bert"), method="int8_dynamic", kernel="onednn")
    assert {m.kernel for m in model.modules() if isinstance(m, Int8Linear)} == {"onednn"}
    reloaded, directory = reload(model)
    saved = json.loads((directory / "config.json").read_text())["compression_config"]["int8_linear"]
    assert saved and all(
        spec == {"activations": "dynamic", "kernel": "onednn"} for spec in saved.values()
    )
    layers = [m for m in reloaded.modules() if isinstance(m, Int8Linear)]
    assert len(layers) == len(saved) and {m.kernel for m in layers} == {"onednn"}
    inputs = tiny_inputs()
    torch.testing.assert_close(logits(reloaded, inputs), logits(model, inputs), atol=0, rtol=0)
    # Without a preference the checkpoint records none (and stays what earlier versions wrote).
    _, plain = reload(quantize(tiny_model("bert"), method="int8_dynamic"))
    specs = json.loads((plain / "config.json").read_text())["compression_config"][
        "int8_linear"
    ].values()
    assert all(spec == {"activations": "dynamic"} for spec in specs)


def test_an_unknown_kernel_in_a_checkpoint_or_a_recipe_is_a_clear_error():
    _, directory = reload(quantize(tiny_model("bert"), method="int8_dynamic", kernel="onednn"))
    config = json.loads((directory / "config.json").read_text())
    name = next(iter(config["compression_config"]["int8_linear"]))
    config["compression_config"]["int8_linear"][name]["kernel"] = "tpu"
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(HfCompressError, match="kernel 'tpu'.*upgrade hf-compress"):
        AutoModelForSequenceClassification.from_pretrained(directory, verify_checksums=False)
    with pytest.raises(ValueError, match="kernel applies to int8_dynamic / qat_int8 only"):
        QuantizationConfig(method="bnb_8bit", kernel="onednn")


def test_onednn_layers_run_outside_inference_mode_after_running_inside_it(monkeypatch):
    # The input workspace and cached scalars are created on first use; if that use is under
    # torch.inference_mode (an evaluation), later training-mode calls must still work.
    if not onednn_available():
        pytest.skip("no x86 int8 kernels on this machine")
    monkeypatch.setattr(kernels, "_WORKSPACE", kernels._Workspace())
    kernels._scalar.cache_clear()
    torch.manual_seed(0)
    layer = Int8Linear.from_linear(nn.Linear(16, 8))
    layer.backend = "onednn"
    x = torch.randn(4, 16)
    with torch.inference_mode():
        inside = layer(x)
    torch.testing.assert_close(layer(x.clone()), inside.clone(), atol=0, rtol=0)


def test_int8_linear_falls_back_to_onednn_when_fbgemm_cannot_pack(monkeypatch):
    if not onednn_available():
        pytest.skip("no x86 int8 kernels on this machine")
    torch.manual_seed(0)
    layer = Int8Linear.from_linear(nn.Linear(16, 8))
    x = torch.randn(4, 16)
    layer.backend = "onednn"
    expected = layer(x)

    def removed(*args, **kwargs):
        raise RuntimeError("quantized tensors were removed")

    monkeypatch.setattr(torch, "_make_per_channel_quantized_tensor", removed)
    monkeypatch.setattr(kernels, "_FBGEMM_FAILED", [])
    layer.backend = "fbgemm"
    with pytest.warns(UserWarning, match="using oneDNN"):
        out = layer(x)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    assert not fbgemm_available()  # later layers go straight to oneDNN


def test_int8_linear_shares_the_quantized_input_only_while_it_is_unchanged():
    torch.manual_seed(0)
    first, second = (
        Int8Linear.from_linear(nn.Linear(16, 8)),
        Int8Linear.from_linear(nn.Linear(16, 8)),
    )
    x = torch.randn(4, 16)
    expected = second(x.clone())
    first(x)
    torch.testing.assert_close(second(x), expected, atol=0, rtol=0)
    with torch.no_grad():
        x.mul_(3)  # in place: the version counter changes, the cached codes must not be reused
    torch.testing.assert_close(second(x), second(x.clone()), atol=0, rtol=0)
    assert not torch.allclose(second(x), expected)


def test_int8_linear_drops_its_packed_cache_when_copied():
    layer = Int8Linear.from_linear(nn.Linear(16, 8))
    layer(torch.randn(2, 16))
    clone = copy.deepcopy(layer)
    assert clone._packed is None
    torch.testing.assert_close(clone(torch.ones(2, 16)), layer(torch.ones(2, 16)), atol=0, rtol=0)


# int8_dynamic ------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_int8_dynamic_is_close_saves_int8_and_reloads_identically(family):
    dense = tiny_model(family)
    inputs = tiny_inputs()
    reference = logits(dense, inputs)
    model = quantize(copy.deepcopy(dense), method="int8_dynamic")
    out = logits(model, inputs)
    assert 0 < (out - reference).abs().max() < 0.02
    linears = [m for m in model.modules() if isinstance(m, Int8Linear)]
    assert len(linears) >= 12 and not any(
        type(m) is nn.Linear for n, m in model.named_modules() if "classifier" not in n
    )

    reloaded, directory = reload(model)
    torch.testing.assert_close(logits(reloaded, inputs), out, atol=0, rtol=0)
    assert sum(isinstance(m, Int8Linear) for m in reloaded.modules()) == len(
        linears
    )  # no inflation to fp32
    dtypes = tensor_dtypes(directory)
    int8_weights = [k for k, v in dtypes.items() if v == "I8"]
    assert len(int8_weights) == len(linears)
    assert all(dtypes[k.replace(".weight", ".weight_scale")] == "F32" for k in int8_weights)
    config = json.loads((directory / "config.json").read_text())
    assert (
        config["model_type"] == f"compressed_{family}"
        and "int8_dynamic" in config["compression_config"]["methods"]
    )


def test_int8_linear_weights_are_four_times_smaller_on_disk():
    dense = wide_model()
    model = quantize(copy.deepcopy(dense), method="int8_dynamic")
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        dense.save_pretrained(a)
        model.save_pretrained(b)
        with (
            safe_open(f"{a}/model.safetensors", "pt") as fa,
            safe_open(f"{b}/model.safetensors", "pt") as fb,
        ):
            names = [n for n, m in model.named_modules() if isinstance(m, Int8Linear)]
            before = sum(fa.get_tensor(f"{n}.weight").nbytes for n in names)
            after = sum(fb.get_tensor(f"{n}.weight").nbytes for n in names)
            with_scales = after + sum(fb.get_tensor(f"{n}.weight_scale").nbytes for n in names)
    assert before == 4 * after
    assert before / with_scales > 3.5


def test_int8_dynamic_reloads_into_the_bare_encoder():
    model = quantize(tiny_model("bert"), method="int8_dynamic")
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        encoder = AutoModel.from_pretrained(tmp)
    assert sum(isinstance(m, Int8Linear) for m in encoder.modules()) == sum(
        isinstance(m, Int8Linear) for m in model.bert.modules()
    )
    torch.testing.assert_close(
        encoder(**tiny_inputs()).last_hidden_state,
        model.bert(**tiny_inputs()).last_hidden_state,
        atol=0,
        rtol=0,
    )


def test_int8_checkpoint_loads_in_bfloat16_and_stays_int8():
    model = quantize(tiny_model("bert"), method="int8_dynamic")
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        half = AutoModelForSequenceClassification.from_pretrained(tmp, dtype=torch.bfloat16).eval()
    layer = half.bert.encoder.layer[0].attention.self.query
    assert isinstance(layer, Int8Linear) and layer.weight.dtype == torch.int8
    out = logits(half, tiny_inputs())
    assert (
        out.dtype == torch.bfloat16
        and (out.float() - logits(model, tiny_inputs())).abs().max() < 0.05
    )


def test_include_embeddings_stores_the_word_embeddings_as_int8():
    plain = quantize(tiny_model("bert"), method="int8_dynamic")
    model = quantize(tiny_model("bert"), method="int8_dynamic", include_embeddings=True)
    reloaded, directory = reload(model)
    torch.testing.assert_close(
        logits(reloaded, tiny_inputs()), logits(model, tiny_inputs()), atol=0, rtol=0
    )
    assert tensor_dtypes(directory)["bert.embeddings.word_embeddings.qweight"] == "I8"
    from hf_compress.evaluation.measure import saved_size_bytes

    assert saved_size_bytes(model) < saved_size_bytes(plain)


def test_skip_modules_keep_layers_and_their_children_in_float():
    model = quantize(
        tiny_model("roberta"), method="int8_dynamic", skip_modules=["classifier", "layer.0"]
    )
    kept = [n for n, m in model.named_modules() if type(m) is nn.Linear]
    assert "classifier.dense" in kept and "classifier.out_proj" in kept
    assert any(n.startswith("roberta.encoder.layer.0.") for n in kept)
    assert not any(n.startswith("roberta.encoder.layer.1.") for n in kept)


def test_summary_reports_sizes():
    modifier = QuantizationModifier(QuantizationConfig(method="int8_dynamic"))
    modifier.on_finalize(wide_model(), StageContext())
    summary = modifier.summary()
    assert summary["method"] == "int8_dynamic" and summary["quantized_layers"] == 13
    assert (
        summary["linear_compression_factor"] > 3.5
    )  # 64 wide: scales and biases weigh; 3.9x at 384


# fp32_fallback --------------------------------------------------------------------------------
# (norm before the layer, the layer) per family: the planted layer is made int8-hostile below.
PLANT = {
    "bert": (
        "bert.encoder.layer.0.attention.output.LayerNorm",
        "bert.encoder.layer.0.intermediate.dense",
    ),
    "roberta": (
        "roberta.encoder.layer.0.attention.output.LayerNorm",
        "roberta.encoder.layer.0.intermediate.dense",
    ),
    "distilbert": (
        "distilbert.transformer.layer.0.sa_layer_norm",
        "distilbert.transformer.layer.0.ffn.lin1",
    ),
}


def planted_model(family: str, num_labels: int = 2) -> tuple[nn.Module, str]:
    """A tiny model whose planted layer loses far more than the others when made int8.

    Input channel 0 of the planted layer is divided by 1000 in the norm before it and its weight
    column multiplied by 1000, so the float layer computes the same; but each int8 weight row then
    spends its range on that column and rounds the others to about zero. (The residual branch
    sees channel 0 shrunk, a harmless change of the float model.) The head is scaled up so the
    tiny model's outputs, near zero at random init, respond to its encoder.
    """
    model = tiny_model(family, num_labels=num_labels)
    norm, planted = PLANT[family]
    with torch.no_grad():
        model.get_submodule(norm).weight[0] /= 1000
        model.get_submodule(norm).bias[0] /= 1000
        model.get_submodule(planted).weight[:, 0] *= 1000
        for parameter in model.classifier.parameters():
            parameter.mul_(10)
    return model, planted


def calibration(count: int = 4, labels: bool = True) -> list[dict[str, torch.Tensor]]:
    data = tiny_dataset()
    batches = [
        {k: torch.tensor(v) for k, v in data[i * 8 : (i + 1) * 8].items()} for i in range(count)
    ]
    return batches if labels else [{k: v for k, v in b.items() if k != "labels"} for b in batches]


def float_linears(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if type(m) is nn.Linear and "classifier" not in n]


@pytest.mark.parametrize("family", FAMILIES)
def test_fp32_fallback_keeps_the_planted_layer_in_float_and_reloads(family):
    dense, planted = planted_model(family)
    inputs = tiny_inputs()
    # The heads' own dense layers stay float, as the classifier does, so the encoder is compared.
    heads = ("classifier", "pooler", "pre_classifier")
    plain = quantize(copy.deepcopy(dense), method="int8_dynamic", skip_modules=list(heads))
    modifier = QuantizationModifier(
        QuantizationConfig(method="int8_dynamic", fp32_fallback=1, skip_modules=heads)
    )
    ctx = StageContext(train_dataloader=lambda: iter(calibration()))
    model = modifier.on_finalize(copy.deepcopy(dense), ctx)
    assert [n for n in float_linears(model) if not any(h in n for h in heads)] == [planted]
    assert list(modifier.summary()["fp32_fallback"]) == [planted] and planted in ctx.notes[0]

    # Keeping the planted layer in float removes most of int8's error (over the calibration set).
    def error(quantized):
        return sum(
            (logits(quantized, b) - logits(dense, b)).abs().mean()
            for b in calibration(4, labels=False)
        )

    assert error(model) < error(plain) / 3
    reloaded, directory = reload(model)
    torch.testing.assert_close(logits(reloaded, inputs), logits(model, inputs), atol=0, rtol=0)
    assert float_linears(reloaded) == float_linears(model)
    saved = json.loads((directory / "config.json").read_text())["compression_config"]["int8_linear"]
    assert planted not in saved and len(saved) == sum(
        isinstance(m, Int8Linear) for m in model.modules()
    )


@pytest.mark.parametrize("num_labels", [2, 1])
def test_layer_sensitivity_ranks_the_planted_layer_first_and_restores_the_model(num_labels):
    model, planted = planted_model("roberta", num_labels=num_labels)
    model.train()
    modules = dict(model.named_modules())
    before = logits(model.eval(), tiny_inputs())
    model.train()
    names = float_linears(model)
    scores = layer_sensitivity(model, names, calibration(labels=False), Int8Linear.from_linear)
    assert most_sensitive(scores, 1) == [planted]
    assert scores[planted] > 10 * max(v for n, v in scores.items() if n != planted)
    assert model.training and all(modules[n] is m for n, m in model.named_modules())
    torch.testing.assert_close(logits(model.eval(), tiny_inputs()), before, atol=0, rtol=0)


def test_most_sensitive_breaks_ties_by_layer_order():
    assert most_sensitive({"a": 1.0, "b": 3.0, "c": 1.0, "d": 0.5}, 3) == ["b", "a", "c"]


def test_fp32_fallback_without_training_data_or_with_too_many_layers_is_a_clear_error():
    with pytest.raises(RecipeError, match="needs training batches.*fp32_fallback: 0"):
        quantize(tiny_model("bert"), method="int8_dynamic", fp32_fallback=1)
    with pytest.raises(RecipeError, match="found no training batches"):
        compress(
            tiny_model("bert"),
            [{"type": "quantization", "method": "int8_dynamic", "fp32_fallback": 1}],
            calibration_data=[],
        )
    count = len(float_linears(tiny_model("bert")))
    with pytest.raises(RecipeError, match=f"fp32_fallback={count} would keep all {count}"):
        compress(
            tiny_model("bert"),
            [{"type": "quantization", "method": "int8_dynamic", "fp32_fallback": count}],
            calibration_data=calibration(),
        )


# qat_int8 ------------------------------------------------------------------------------------
def _train_steps(model: nn.Module, steps: int = 4) -> None:
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    data = tiny_dataset()
    for step in range(steps):
        batch = {k: torch.tensor(v) for k, v in data[step * 8 : (step + 1) * 8].items()}
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_qat_fake_quant_forward_equals_the_converted_int8_forward(family):
    model = tiny_model(family)
    modifier = QuantizationModifier(QuantizationConfig(method="qat_int8"))
    ctx = StageContext(stage=Stage(name="qat", epochs=1))
    modifier.on_initialize(model, ctx)
    layers = [m for m in model.modules() if isinstance(m, QATLinear)]
    assert layers
    before = layers[0].weight.detach().clone()
    _train_steps(model)
    assert not torch.equal(
        before, layers[0].weight
    )  # straight-through gradients reach the float weights
    assert all(bool(m.observed) and m.act_max > m.act_min for m in layers)
    fake_quantized = logits(model, tiny_inputs())

    modifier.on_finalize(model, ctx)
    assert not any(isinstance(m, QATLinear) for m in model.modules())
    converted = [m for m in model.modules() if isinstance(m, Int8Linear)]
    assert len(converted) == len(layers) and all(m.static_activations for m in converted)
    int8 = logits(model, tiny_inputs())
    torch.testing.assert_close(int8, fake_quantized, atol=1e-5, rtol=1e-5)
    reloaded, _ = reload(model)
    torch.testing.assert_close(logits(reloaded, tiny_inputs()), int8, atol=0, rtol=0)


def test_qat_converts_layers_another_modifier_replaced_with_their_learned_range():
    model = tiny_model("bert")
    modifier = QuantizationModifier(QuantizationConfig(method="qat_int8"))
    ctx = StageContext(stage=Stage(name="qat", epochs=1))
    modifier.on_initialize(model, ctx)
    _train_steps(model, steps=2)
    # as a structured-pruning modifier finalized earlier in the stage would: a new, narrower Linear
    old = model.bert.encoder.layer[0].output.dense
    narrow = nn.Linear(48, old.out_features)
    with torch.no_grad():
        narrow.weight.copy_(old.weight[:, :48])
        narrow.bias.copy_(old.bias)
    model.bert.encoder.layer[0].intermediate.dense = model.bert.encoder.layer[
        0
    ].intermediate.dense.to_float()
    model.bert.encoder.layer[0].output.dense = narrow
    modifier.on_finalize(model, ctx)
    converted = model.bert.encoder.layer[0].output.dense
    assert (
        isinstance(converted, Int8Linear)
        and converted.static_activations
        and converted.in_features == 48
    )
    assert float(converted.input_scale) == old.input_qparams()[0]
    assert not any(type(m) is nn.Linear for n, m in model.named_modules() if "classifier" not in n)


def test_qat_fake_quantization_rounds_weights_and_inputs():
    torch.manual_seed(0)
    layer = QATLinear.from_linear(nn.Linear(16, 8))
    x = torch.randn(4, 16)
    layer.train()
    layer(x)
    layer.eval()
    codes, scale = quantize_weight_per_channel(layer.weight)
    torch.testing.assert_close(
        layer.fake_quantized_weight(), codes.float() * scale[:, None], atol=1e-6, rtol=0
    )
    assert not torch.allclose(
        layer(x), nn.functional.linear(x, layer.weight, layer.bias), atol=1e-6
    )
    # the gradient is straight-through: the same as the float layer's inside the range
    x.requires_grad_(True)
    layer(x).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_qat_needs_a_training_stage():
    assert QuantizationConfig(method="qat_int8").needs_training()
    assert not QuantizationConfig(method="int8_dynamic").needs_training()
    modifier = QuantizationModifier(QuantizationConfig(method="qat_int8"))
    with pytest.raises(HfCompressError, match="epochs > 0"):
        modifier.on_initialize(
            tiny_model("bert"), StageContext(stage=Stage(name="one-shot", epochs=0))
        )


def test_qat_trains_through_the_compression_trainer():
    recipe = Recipe.from_dict(
        {
            "base_model": "tiny",
            "task": "sst2",
            "output_dir": "unused",
            "stages": [
                {
                    "name": "qat",
                    "epochs": 1,
                    "modifiers": [{"type": "quantization", "method": "qat_int8"}],
                }
            ],
        }
    )
    trainer = CompressionTrainer(
        model=tiny_model("bert"), args=_args(), recipe=recipe, train_dataset=tiny_dataset()
    )
    trainer.train()
    assert (
        sum(isinstance(m, Int8Linear) and m.static_activations for m in trainer.model.modules())
        == 13
    )
    assert trainer.model.config.compression_config["methods"] == ["qat_int8"]


# bitsandbytes ---------------------------------------------------------------------------------
def test_bnb_8bit_saves_and_reloads_with_the_same_outputs():
    dense = tiny_model("bert")
    model = quantize(copy.deepcopy(dense), method="bnb_8bit")
    out = logits(model, tiny_inputs())
    assert (out - logits(dense, tiny_inputs())).abs().max() < 0.02
    import bitsandbytes as bnb

    assert sum(isinstance(m, bnb.nn.Linear8bitLt) for m in model.modules()) == 13
    reloaded, directory = reload(model)
    torch.testing.assert_close(
        logits(reloaded, tiny_inputs()), logits(model, tiny_inputs()), atol=0, rtol=0
    )
    config = json.loads((directory / "config.json").read_text())
    assert (
        config["quantization_config"]["load_in_8bit"] and config["model_type"] == "compressed_bert"
    )


@pytest.mark.parametrize("method", ["bnb_4bit_nf4", "bnb_4bit_fp4"])
def test_bnb_4bit_skips_unfit_layers_is_close_and_reloads(method):
    import bitsandbytes as bnb

    dense = wide_model()
    ctx_notes: list[str] = []
    modifier = QuantizationModifier(QuantizationConfig(method=method, skip_modules=()))
    model = modifier.on_finalize(copy.deepcopy(dense), StageContext(notes=ctx_notes)).eval()
    # the classifier (2 outputs) cannot run in the CPU 4-bit kernel: kept in float and noted
    assert type(model.classifier) is nn.Linear
    assert any("classifier" in note and "out_features % 32" in note for note in ctx_notes)
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) == 13
    out = logits(model, tiny_inputs())
    assert 0 < (out - logits(dense, tiny_inputs())).abs().max() < 0.05
    reloaded, directory = reload(model)
    # bitsandbytes 0.50 repacks CPU 4-bit weights when saving after a forward: compare with the
    # in-memory model as saved, which is what from_pretrained must give back
    torch.testing.assert_close(
        logits(reloaded, tiny_inputs()), logits(model, tiny_inputs()), atol=0, rtol=0
    )
    assert (
        json.loads((directory / "config.json").read_text())["quantization_config"][
            "bnb_4bit_quant_type"
        ]
        == method[-3:]
    )
    assert modifier.summary()["linear_compression_factor"] > 5


def test_bnb_4bit_checkpoint_is_smaller_than_8bit():
    from hf_compress.evaluation.measure import saved_size_bytes

    four_bit, eight_bit = (
        saved_size_bytes(quantize(wide_model(), method=m)) for m in ("bnb_4bit_nf4", "bnb_8bit")
    )
    assert four_bit < eight_bit < saved_size_bytes(wide_model())


def test_double_quant_and_compute_dtype_reach_bitsandbytes():
    import bitsandbytes as bnb

    model = quantize(
        wide_model(), method="bnb_4bit_nf4", double_quant=True, compute_dtype="bfloat16"
    ).eval()
    layer = next(m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
    assert layer.compute_dtype == torch.bfloat16 and layer.weight.quant_state.nested
    reloaded, directory = reload(model)
    config = json.loads((directory / "config.json").read_text())["quantization_config"]
    assert config["bnb_4bit_use_double_quant"] and config["bnb_4bit_compute_dtype"] == "bfloat16"
    torch.testing.assert_close(
        logits(reloaded, tiny_inputs()), logits(model, tiny_inputs()), atol=0, rtol=0
    )


def test_bnb_on_top_of_a_compressed_structure():
    # embedding_quantization makes a compressed_bert with its own rebuilt structure
    model = compress(
        wide_model(),
        [
            {"type": "embedding_quantization", "bits": 8},
            {"type": "quantization", "method": "bnb_4bit_nf4"},
        ],
    ).eval()
    out = logits(model, tiny_inputs())
    reloaded, directory = reload(model)
    config = json.loads((directory / "config.json").read_text())
    assert (
        "embedding_quant" in config["compression_config"]
        and config["quantization_config"]["load_in_4bit"]
    )
    torch.testing.assert_close(
        logits(reloaded, tiny_inputs()), logits(model, tiny_inputs()), atol=0, rtol=0
    )
    assert (logits(reloaded, tiny_inputs()) - out).abs().max() < 1e-2


def test_bnb_4bit_refuses_layers_none_of_which_fits():
    # the 32-wide model's query layers (32 inputs) do not fit the CPU kernel's 64-value blocks
    with pytest.raises(UnsupportedModelError, match="in_features % 64"):
        quantize(tiny_model("bert"), method="bnb_4bit_nf4", targets=["query"])


def test_bnb_refuses_an_unsupported_device_and_double_quantization():
    model = tiny_model("bert").to("meta")
    modifier = QuantizationModifier(QuantizationConfig(method="bnb_8bit"))
    with pytest.raises(UnsupportedModelError, match="CPU and CUDA"):
        modifier.on_finalize(model, StageContext())
    with pytest.raises(UnsupportedModelError, match="already quantized"):
        quantize(quantize(tiny_model("bert"), method="bnb_8bit"), method="bnb_8bit")
    with pytest.raises(UnsupportedModelError, match="already quantized"):
        quantize(quantize(tiny_model("bert"), method="int8_dynamic"), method="bnb_8bit")


def test_missing_bitsandbytes_is_a_clear_error(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a),
    )
    with pytest.raises(RecipeError, match="pip install bitsandbytes"):
        build(QuantizationConfig, {"method": "bnb_4bit_nf4"}, "stages[0].modifiers[0]")
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` fail
    with pytest.raises(HfCompressError, match="pip install bitsandbytes"):
        require_bitsandbytes()


# LoRA over 4-bit ------------------------------------------------------------------------------
def _args(**overrides) -> TrainingArguments:
    return tiny_training_args(**{"learning_rate": 1e-2, "seed": 0, **overrides})


def _dataset_loss(model: nn.Module) -> float:
    data = tiny_dataset()
    batch = {k: torch.tensor(v) for k, v in data[:].items()}
    model.eval()
    with torch.no_grad():
        return float(model(**batch).loss)


def test_lora_on_4bit_trains_and_reloads_with_one_from_pretrained():
    import bitsandbytes as bnb
    from peft.tuners.lora import LoraLayer

    recipe = Recipe.from_dict(
        {
            "base_model": "tiny",
            "task": "sst2",
            "output_dir": "unused",
            "stages": [
                {
                    "name": "quantize",
                    "epochs": 0,
                    "modifiers": [{"type": "quantization", "method": "bnb_4bit_nf4"}],
                },
                {
                    "name": "recover",
                    "epochs": 2,
                    "modifiers": [{"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0}],
                },
            ],
        }
    )
    trainer = CompressionTrainer(
        model=wide_model(), args=_args(), recipe=recipe, train_dataset=tiny_dataset()
    )
    trainer.run_stage(recipe.stages[0], 0)
    loss_before = _dataset_loss(trainer.model)
    trainer.run_stage(recipe.stages[1], 1)
    model = trainer.model.eval()
    assert _dataset_loss(model) < loss_before - 0.01
    # every adapter learned (B starts at zero): gradients flowed through every 4-bit layer
    lora_b = [p for n, p in model.named_parameters() if ".lora_B." in n]
    assert len(lora_b) == 13 and all(p.abs().sum() > 0 for p in lora_b)
    summary = trainer.stage_summaries[-1]["modifiers"][0]
    assert summary["adapted_layers"] == 13 and summary["trained_in_full"] == ["classifier"]

    reloaded, directory = reload(model)
    assert sum(isinstance(m, LoraLayer) for m in reloaded.modules()) == 13
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in reloaded.modules()) == 13
    torch.testing.assert_close(
        logits(reloaded, tiny_inputs()), logits(model, tiny_inputs()), atol=0, rtol=0
    )
    assert [p.name for p in directory.iterdir() if p.suffix == ".safetensors"] == [
        "model.safetensors"
    ]
    assert json.loads((directory / "config.json").read_text())["compression_config"]["methods"] == [
        "bnb_4bit_nf4",
        "lora",
    ]


def test_lora_refuses_int8_layers():
    recipe_stages = [
        {
            "name": "q",
            "epochs": 0,
            "modifiers": [{"type": "quantization", "method": "int8_dynamic"}],
        },
        {"name": "l", "epochs": 1, "modifiers": [{"type": "lora"}]},
    ]
    recipe = Recipe.from_dict(
        {"base_model": "t", "task": "sst2", "output_dir": "o", "stages": recipe_stages}
    )
    trainer = CompressionTrainer(
        model=tiny_model("bert"), args=_args(), recipe=recipe, train_dataset=tiny_dataset()
    )
    with pytest.raises(UnsupportedModelError, match="int8"):
        trainer.train()


def test_compression_trainer_takes_a_bnb_model_its_lora_stage_prepares():
    """A resumed run hands the Trainer the 4-bit model reloaded from the stage snapshot; its
    LoRA stage attaches the adapters, as in a run that quantized after construction."""
    recipe = Recipe.from_dict(
        {
            "base_model": "tiny",
            "task": "sst2",
            "output_dir": "unused",
            "stages": [
                {
                    "name": "quantize",
                    "epochs": 0,
                    "modifiers": [{"type": "quantization", "method": "bnb_4bit_nf4"}],
                },
                {
                    "name": "recover",
                    "epochs": 1,
                    "modifiers": [{"type": "lora", "r": 4, "dropout": 0.0}],
                },
            ],
        }
    )
    quantized, _ = reload(quantize(wide_model(), method="bnb_4bit_nf4"))
    assert quantized.is_quantized
    trainer = CompressionTrainer(
        model=quantized, args=_args(), recipe=recipe, train_dataset=tiny_dataset(), start_stage=1
    )
    assert quantized.is_quantized  # only hidden from the Trainer's constructor check
    trainer.train()
    assert trainer.stage_summaries[-1]["modifiers"][0]["adapted_layers"] == 13

    # Without stages it is a plain Trainer, which refuses a quantized model without adapters;
    # a stage that trains a quantized model without LoRA is refused when it starts.
    with pytest.raises(ValueError, match="purely quantized"):
        CompressionTrainer(model=quantized, args=_args(), train_dataset=tiny_dataset())
    plain = CompressionTrainer(
        model=reload(quantize(wide_model(), method="bnb_4bit_nf4"))[0],
        args=_args(),
        stages=(Stage(name="finetune", epochs=1),),
        train_dataset=tiny_dataset(),
    )
    with pytest.raises(UnsupportedModelError, match=r"stage 0 \(finetune\).*lora"):
        plain.train()


@pytest.mark.parametrize("method", ["bnb_4bit_nf4", "bnb_8bit"])
def test_a_reloaded_bnb_checkpoint_saves_again(method, tmp_path):
    """transformers cannot reverse its pre-quantized bitsandbytes load conversion on save; models
    loaded through hf-compress save again (runner snapshots, Trainer checkpoints)."""
    from hf_compress.checkpoint.loading import load_compressed

    first, second = tmp_path / "first", tmp_path / "second"
    quantize(wide_model(), method=method).save_pretrained(first)
    model = load_compressed(str(first)).eval()
    model.save_pretrained(second)
    for name in ("config.json", "model.safetensors"):
        assert (second / name).is_file()
    assert tensor_dtypes(second) == tensor_dtypes(first)
    reloaded = AutoModelForSequenceClassification.from_pretrained(second).eval()
    torch.testing.assert_close(
        logits(reloaded, tiny_inputs()), logits(model, tiny_inputs()), atol=0, rtol=0
    )


# Recipes and validation -------------------------------------------------------------------
def test_method_typo_lists_the_valid_methods():
    with pytest.raises(RecipeError) as error:
        Recipe.from_dict(
            {
                "base_model": "t",
                "task": "sst2",
                "output_dir": "o",
                "stages": [
                    {"name": "q", "modifiers": [{"type": "quantization", "method": "int8_dynamc"}]}
                ],
            }
        )
    assert all(method in str(error.value) for method in METHODS)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"method": "int8_dynamic", "double_quant": True}, "double_quant"),
        ({"method": "bnb_8bit", "compute_dtype": "bfloat16"}, "compute_dtype"),
        ({"method": "bnb_4bit_nf4", "include_embeddings": True}, "include_embeddings"),
        ({"method": "int8_dynamic", "ema_decay": 0.9}, "ema_decay"),
        ({"method": "bnb_4bit_nf4", "compute_dtype": "int4"}, "float32, bfloat16, float16"),
        ({"method": "qat_int8", "fp32_fallback": 1}, "fp32_fallback applies to int8_dynamic only"),
        (
            {"method": "int8_dynamic", "calibration_batches": 4},
            "calibration_batches applies with fp32_fallback",
        ),
        ({"method": "int8_dynamic", "fp32_fallback": -1}, "fp32_fallback"),
    ],
)
def test_keys_that_do_not_apply_to_the_method_are_rejected(entry, message):
    with pytest.raises(RecipeError, match=message):
        build(QuantizationConfig, entry, "stages[0].modifiers[0]")


def test_lora_config_rejects_two_target_keys():
    with pytest.raises(RecipeError, match="not both"):
        build(LoraConfig, {"target_modules": ["query"], "targets": ["key"]}, "lora")


def test_only_lora_may_train_after_quantization():
    base = {"base_model": "t", "task": "sst2", "output_dir": "o"}
    quantize_stage = {
        "name": "q",
        "epochs": 0,
        "modifiers": [{"type": "quantization", "method": "bnb_4bit_nf4"}],
    }
    Recipe.from_dict(
        {
            **base,
            "stages": [quantize_stage, {"name": "l", "epochs": 1, "modifiers": [{"type": "lora"}]}],
        }
    )
    with pytest.raises(RecipeError, match="froze the weights"):
        Recipe.from_dict(
            {**base, "stages": [quantize_stage, {"name": "ft", "epochs": 1, "modifiers": []}]}
        )
    with pytest.raises(RecipeError, match="epochs > 0"):
        Recipe.from_dict(
            {
                **base,
                "stages": [
                    quantize_stage,
                    {"name": "l", "epochs": 0, "modifiers": [{"type": "lora"}]},
                ],
            }
        )


@pytest.mark.parametrize(
    "name", ["minilm-sst2-int8", "minilm-sst2-qat-int8", "minilm-sst2-nf4-lora"]
)
def test_shipped_recipes_validate(name):
    recipe = Recipe.from_yaml(REPO / "recipes" / f"{name}.yaml")
    types = [m.type for stage in recipe.stages for m in stage.modifiers]
    assert "quantization" in types and recipe.output_dir == f"outputs/{name}"


def test_gpu_check_script_fails_clearly_without_cuda(tmp_path):
    import subprocess

    if torch.cuda.is_available():
        pytest.skip("a GPU is present; the script would run for real")
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_bnb_check.py"), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "CUDA" in result.stderr


def test_run_recipe_nf4_then_lora_writes_one_reloadable_checkpoint(tmp_path, glue_dir):
    """The whole `hf-compress run` path (stage saves, final save, evaluation, report, card) on a
    64-wide BERT and a slice of real SST-2."""
    from transformers import AutoTokenizer

    from hf_compress.checkpoint.sources import packaged_model_dir
    from hf_compress.training.runner import run_recipe

    minilm = packaged_model_dir("sentence-transformers/all-MiniLM-L6-v2")
    if minilm is None:
        pytest.skip("the packaged MiniLM tokenizer is not installed")
    base = tmp_path / "base"
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    BertForSequenceClassification(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    output = tmp_path / "out"
    recipe = Recipe.from_dict(
        {
            "base_model": str(base),
            "task": "sst2",
            "data": {
                "max_train_samples": 32,
                "max_eval_samples": 16,
                "max_seq_length": 32,
                "glue_dir": str(glue_dir),
            },
            "training": {"per_device_train_batch_size": 16, "learning_rate": 1.0e-3},
            "stages": [
                {
                    "name": "nf4",
                    "epochs": 0,
                    "modifiers": [{"type": "quantization", "method": "bnb_4bit_nf4"}],
                },
                {"name": "lora", "epochs": 1, "modifiers": [{"type": "lora", "r": 4}]},
            ],
            "output_dir": str(output),
        }
    )
    latency = {"batch_sizes": (1,), "seq_len": 16, "runs": 1, "warmup": 0}
    result = run_recipe(recipe, latency_config=latency, progress=False)
    report = json.loads((output / "report.json").read_text())
    assert report["compressed"]["methods"] == ["bnb_4bit_nf4", "lora"]
    assert report["compressed"]["size_bytes"] < report["baseline"]["size_bytes"]
    batch = tokenizer(["a gripping , funny film", "dull"], padding=True, return_tensors="pt")
    reloaded = AutoModelForSequenceClassification.from_pretrained(output).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(**batch).logits, result.model.eval()(**batch).logits, atol=0, rtol=0
        )
