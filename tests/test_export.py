"""ONNX export (hf_compress/checkpoint/export.py): every technique's output exports and computes the
same logits in ONNX Runtime; the recipe's int8 layers stay int8 (their own codes and scales, the
fallback layers float, the bytes of the checkpoint); ONNX Runtime re-quantization of float
checkpoints is smaller; bad input gets clear errors and leaves nothing."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from matrix import INT8_EMBEDDINGS_FALLBACK, all_cases, apply_case
from tiny import logits, save_with_tokenizer, tiny_inputs, tiny_model, tiny_tokenizer
from torch import nn

import hf_compress  # noqa: F401  (registers the compressed format)
from hf_compress.checkpoint.export import (
    EXPORT_MARKER,
    ONNX_FILE,
    OnnxSequenceClassifier,
    export_model,
    export_onnx,
    float_model_for_export,
    is_onnx_export,
)
from hf_compress.checkpoint.onnx_int8 import INT8_MATMUL_OPS
from hf_compress.cli import main
from hf_compress.errors import CheckpointError, HfCompressError, OutputExistsError
from hf_compress.evaluation.evaluate import model_figures, predict
from hf_compress.evaluation.measure import count_parameters
from hf_compress.methods.quantization.layers import Int8Linear

pytest.importorskip("onnxruntime")


def _onnx_logits(directory: Path, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return OnnxSequenceClassifier(directory)(**inputs).logits


def _export_marks(case, seen: set[str]) -> list:
    """The first case of each technique (and every int8 case, what the export must keep) runs by
    default; the other cases of a technique add minutes of ONNX exports, so they run with
    --run-slow."""
    kinds = tuple(sorted({m["type"] for m in case.modifiers}))
    first = kinds not in seen
    seen.add(kinds)
    int8 = any(m.get("method", "").endswith("int8") or "int8" in case.id for m in case.modifiers)
    return [] if first or int8 else [pytest.mark.slow]


# Every matrix case on BERT (one family keeps the suite short; the families differ only in the
# layers the techniques replace, which the PyTorch matrix covers), plus the uneven-head cases on
# all.
_SEEN: set[str] = set()
EXPORT_CASES = [
    pytest.param(case, "bert", id=f"{case.id}-bert", marks=_export_marks(case, _SEEN))
    for case in all_cases()
    if "bert" in case.families
]
EXPORT_CASES += [
    pytest.param(case, family, id=f"{case.id}-{family}")
    for case in all_cases()
    if case.id == "head-pruning-taylor-oneshot"
    for family in ("roberta", "distilbert")
]


@pytest.mark.parametrize(("case", "family"), EXPORT_CASES)
def test_every_technique_exports_with_the_same_logits(case, family, tmp_path):
    model, _ = apply_case(case, family)
    source = save_with_tokenizer(model, tmp_path / "model")
    if any("bnb" in str(m.get("method", "")) for m in case.modifiers):
        with pytest.raises(HfCompressError, match="bitsandbytes"):
            export_onnx(str(source), tmp_path / "onnx")
        assert not (tmp_path / "onnx").exists()
        return
    info = export_onnx(str(source), tmp_path / "onnx")
    assert is_onnx_export(tmp_path / "onnx")
    assert info["max_abs_logit_diff_vs_pytorch"] <= info["tolerance"]
    assert info["size_bytes"] == (tmp_path / "onnx" / ONNX_FILE).stat().st_size
    int8 = _holds_int8_linear(model)
    if not int8:
        assert info["tolerance"] == 1e-3 and info["pytorch_int8_rounding_effect"] == 0.0
    # At other batch and sequence sizes than the export's sample (dynamic axes), with padding:
    # without int8 Linear layers the graph computes the model's float equivalent exactly; with
    # them, PyTorch's int8 model to the stated tolerance.
    float_model = float_model_for_export(copy.deepcopy(model))
    for batch, length in ((3, 12), (1, 30)):
        inputs = tiny_inputs(batch=batch, length=length)
        exported = _onnx_logits(tmp_path / "onnx", inputs)
        if not int8:
            torch.testing.assert_close(exported, logits(float_model, inputs), atol=2e-4, rtol=0)
        torch.testing.assert_close(
            exported, logits(model, inputs), atol=max(5e-3, info["tolerance"]), rtol=0
        )


def _holds_int8_linear(model) -> bool:
    return any(isinstance(m, Int8Linear) for m in model.modules())


def _graph(directory: Path):
    import onnx

    return onnx.load(str(directory / ONNX_FILE))


def _initializers(graph) -> dict:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}


def test_int8_checkpoint_keeps_the_recipes_int8(tmp_path):
    import numpy as np
    from datasets import Dataset

    model, _ = apply_case(INT8_EMBEDDINGS_FALLBACK, "bert")
    source = save_with_tokenizer(model, tmp_path / "int8")
    int8_layers = {n: m for n, m in model.named_modules() if isinstance(m, Int8Linear)}
    float_layers = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert len(float_layers - {"classifier"}) == 1  # the fallback layer
    info = export_onnx(str(source), tmp_path / "onnx")

    graph = _graph(tmp_path / "onnx")
    tensors = _initializers(graph)
    # every int8 Linear layer: the recipe's own codes (transposed to MatMul's [in, out]) and
    # scales, multiplied by an integer MatMul
    for name, layer in int8_layers.items():
        assert tensors[f"{name}.weight_t"].dtype == np.int8
        np.testing.assert_array_equal(tensors[f"{name}.weight_t"], layer.weight.numpy().T)
        np.testing.assert_array_equal(tensors[f"{name}.weight_scale"], layer.weight_scale.numpy())
    ops = [node.op_type for node in graph.graph.node]
    assert ops.count("MatMulInteger") == len(int8_layers) == info["layers"]["int8_linear"]
    int8_tensors = [n for n, t in tensors.items() if t.dtype == np.int8]
    assert len(int8_tensors) == len(int8_layers) + 1  # + the embedding table
    # the fallback layer (and the classifier) stay float
    assert sorted(info["layers"]["float_linear"]) == sorted(float_layers)
    for name in float_layers:
        assert f"{name}.weight_t" not in tensors
    # the word embeddings: int8 rows and their scales, gathered
    table = tensors["bert.embeddings.word_embeddings.qweight"]
    assert table.dtype == np.int8
    gathered = {node.input[0] for node in graph.graph.node if node.op_type == "Gather"}
    assert "bert.embeddings.word_embeddings.qweight" in gathered
    assert info["layers"]["quantized_embeddings"] == {"bert.embeddings.word_embeddings": 8}

    # logits: within the stated tolerance, measured at export and here at other shapes
    assert info["pytorch_int8_rounding_effect"] > 0
    assert info["max_abs_logit_diff_vs_pytorch"] <= info["tolerance"]
    for batch, length in ((5, 9), (1, 40)):
        inputs = tiny_inputs(batch=batch, length=length, seed=batch)
        torch.testing.assert_close(
            _onnx_logits(tmp_path / "onnx", inputs),
            logits(model, inputs),
            atol=info["tolerance"],
            rtol=0,
        )

    # bytes: the graph's weights take what the PyTorch checkpoint's do (int8, not float; the
    # exporter drops this untrained model's all-zero biases)
    weight_bytes = sum(t.nbytes for t in tensors.values() if t.ndim)
    state_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert weight_bytes == pytest.approx(state_bytes, rel=0.1)
    assert info["size_bytes"] < (tmp_path / "int8" / "model.safetensors").stat().st_size + 64_000
    # (a graph of float weights, as the export wrote before, takes about 4x)
    export_model(float_model_for_export(copy.deepcopy(model)), tiny_tokenizer(), tmp_path / "f")
    float_tensors = _initializers(_graph(tmp_path / "f")).values()
    assert weight_bytes < 0.4 * sum(t.nbytes for t in float_tensors if t.ndim)

    # the export is measured and evaluated like any model
    onnx_model = OnnxSequenceClassifier(tmp_path / "onnx")
    tokenizer = tiny_tokenizer()
    texts = ["the movie was good", "bad plot", "very fun story and great actors"]
    dataset = Dataset.from_dict({**tokenizer(texts), "labels": [0, 1, 0]})
    got = predict(onnx_model, tokenizer, dataset, batch_size=2, progress=False)
    want = predict(model, tokenizer, dataset, batch_size=2, progress=False)
    np.testing.assert_allclose(got, want, atol=info["tolerance"], rtol=0)
    assert count_parameters(onnx_model)[0] == pytest.approx(count_parameters(model)[0], rel=0.05)
    assert (
        model_figures(onnx_model, saved_dir=str(tmp_path / "onnx"), latency=False)["size_bytes"]
        == info["size_bytes"]
    )


def test_a_graph_off_by_more_than_the_tolerance_is_an_error(tmp_path, monkeypatch):
    from hf_compress.checkpoint import onnx_int8

    (case,) = [c for c in all_cases() if c.id == "int8-dynamic"]
    model, _ = apply_case(case, "bert")
    source = save_with_tokenizer(model, tmp_path / "int8")
    correct = onnx_int8.export_module

    def wrong_scales(module):  # a translation bug: every int8 layer's scales doubled
        replacement = correct(module)
        if isinstance(replacement, onnx_int8.OnnxInt8Linear):
            replacement.weight_scale.mul_(2)
        return replacement

    monkeypatch.setattr(onnx_int8, "export_module", wrong_scales)
    with pytest.raises(HfCompressError, match="differ from PyTorch's by .*tolerance"):
        export_onnx(str(source), tmp_path / "onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"]


def test_qat_checkpoint_exports_with_its_input_grid(tmp_path):
    (case,) = [c for c in all_cases() if c.id == "qat-int8"]
    model, _ = apply_case(case, "bert")
    layers = [m for m in model.modules() if isinstance(m, Int8Linear)]
    assert layers and all(layer.static_activations for layer in layers)
    info = export_onnx(str(save_with_tokenizer(model, tmp_path / "qat")), tmp_path / "onnx")
    graph = _graph(tmp_path / "onnx")
    ops = [node.op_type for node in graph.graph.node]
    # QAT's fixed input grid: QuantizeLinear with the learned scale, no dynamic quantization
    # (query, key and value learn the same range from one input: the exporter merges their
    # identical QuantizeLinear nodes)
    assert ops.count("MatMulInteger") == len(layers)
    assert 0 < ops.count("QuantizeLinear") <= len(layers)
    assert "DynamicQuantizeLinear" not in ops
    assert info["max_abs_logit_diff_vs_pytorch"] <= info["tolerance"]
    inputs = tiny_inputs(batch=4, length=20, seed=3)
    torch.testing.assert_close(
        _onnx_logits(tmp_path / "onnx", inputs), logits(model, inputs), atol=1e-4, rtol=0
    )


def test_4bit_embeddings_stay_packed(tmp_path):
    import numpy as np

    (case,) = [c for c in all_cases() if c.id == "embedding-4bit-group"]
    model, _ = apply_case(case, "bert")
    info = export_onnx(str(save_with_tokenizer(model, tmp_path / "m")), tmp_path / "onnx")
    tensors = _initializers(_graph(tmp_path / "onnx"))
    for name in ("word_embeddings", "position_embeddings"):
        packed = tensors[f"bert.embeddings.{name}.qweight"]
        assert packed.dtype == np.uint8 and packed.shape[1] == 16  # two 4-bit codes per byte
    assert info["layers"]["quantized_embeddings"] == {
        "bert.embeddings.word_embeddings": 4,
        "bert.embeddings.position_embeddings": 4,
    }
    assert info["max_abs_logit_diff_vs_pytorch"] < 1e-3


def test_quantize_int8_is_refused_for_an_int8_checkpoint(tmp_path, capsys):
    (case,) = [c for c in all_cases() if c.id == "int8-dynamic"]
    model, _ = apply_case(case, "bert")
    source = save_with_tokenizer(model, tmp_path / "int8")
    out = tmp_path / "onnx"
    capsys.readouterr()
    assert main(["export", str(source), "--out", str(out), "--quantize", "int8"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "already holds int8" in error and "drop --quantize int8" in error
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["int8"]
    assert main(["export", str(source), "--out", str(out)]) == 0
    assert "13 int8 Linear layers" in capsys.readouterr().out  # 2 x 6 + the pooler


def test_quantize_int8_keeps_the_recipes_embedding_table(tmp_path):
    import numpy as np

    (case,) = [c for c in all_cases() if c.id == "embedding-int8"]
    model, _ = apply_case(case, "bert")
    info = export_onnx(
        str(save_with_tokenizer(model, tmp_path / "m")), tmp_path / "onnx", quantize="int8"
    )
    graph = _graph(tmp_path / "onnx")
    tensors = _initializers(graph)
    # ONNX Runtime quantized the MatMuls; the table, and its scales, are the recipe's
    assert "MatMulInteger" in [node.op_type for node in graph.graph.node]
    codes = model.bert.embeddings.word_embeddings.qweight.numpy()
    np.testing.assert_array_equal(tensors["bert.embeddings.word_embeddings.qweight"], codes)
    assert tensors["bert.embeddings.word_embeddings.scale"].dtype == np.float32
    assert info["layers"]["quantized_embeddings"] == {"bert.embeddings.word_embeddings": 8}
    assert info["max_abs_logit_diff_vs_pytorch"] <= info["tolerance"]


def test_benchmark_script_times_pytorch_and_both_exports(tmp_path, capsys):
    from tiny import load_script

    (case,) = [c for c in all_cases() if c.id == "int8-dynamic-embeddings"]
    model, _ = apply_case(case, "bert")
    source = save_with_tokenizer(model, tmp_path / "int8")
    script = load_script("onnx_int8_export")
    argv = [str(source), "--batch-sizes", "1,2", "--seq", "8", "--rounds", "2", "--threads", "1"]
    capsys.readouterr()
    script.main([*argv, "--out", str(tmp_path / "bench")])
    report = json.loads(capsys.readouterr().out)
    assert set(report["median_ms"]) == {"pytorch", "new", "old"}
    assert all(set(per) == {"1", "2"} for per in report["median_ms"].values())
    assert report["size_bytes"]["new"] < report["size_bytes"]["pytorch"] + 64_000
    assert report["max_abs_logit_diff_vs_pytorch"]["new"] < 1e-2
    script.main([*argv, "--out", str(tmp_path / "ops"), "--compare-ops"])
    report = json.loads(capsys.readouterr().out)
    assert set(report["median_ms"]) == set(INT8_MATMUL_OPS)
    with pytest.raises(SystemExit, match="no int8 Linear layers"):
        script.main(
            [
                str(save_with_tokenizer(tiny_model(), tmp_path / "float")),
                "--out",
                str(tmp_path / "x"),
            ]
        )


def test_structure_carries_over_and_int8_is_smaller(tmp_path):
    (case,) = [c for c in all_cases() if c.id == "heads-ffn-gradual-taylor"]
    model, dense = apply_case(case, "bert")
    source = save_with_tokenizer(model, tmp_path / "pruned")
    dense_source = save_with_tokenizer(dense, tmp_path / "dense")
    export_onnx(str(source), tmp_path / "pruned-onnx")
    export_onnx(str(dense_source), tmp_path / "dense-onnx")
    info = export_onnx(str(source), tmp_path / "pruned-int8", quantize="int8")
    assert info["quantize"] == "int8"

    pruned_onnx = OnnxSequenceClassifier(tmp_path / "pruned-onnx")
    # the graph holds the pruned weights only: as many as the pruned PyTorch model, fewer than the
    # dense one
    assert count_parameters(pruned_onnx)[0] == pytest.approx(count_parameters(model)[0], rel=0.02)
    assert (
        count_parameters(pruned_onnx)[0]
        < count_parameters(OnnxSequenceClassifier(tmp_path / "dense-onnx"))[0]
    )
    float_bytes = (tmp_path / "pruned-onnx" / ONNX_FILE).stat().st_size
    int8_bytes = (tmp_path / "pruned-int8" / ONNX_FILE).stat().st_size
    assert int8_bytes < 0.6 * float_bytes
    assert (
        model_figures(
            OnnxSequenceClassifier(tmp_path / "pruned-int8"),
            saved_dir=str(tmp_path / "pruned-int8"),
            latency=False,
        )["size_bytes"]
        == int8_bytes
    )

    # int8 stays close to float: same predicted class on most random inputs
    inputs = tiny_inputs(batch=16, length=10, seed=5)
    int8_logits = _onnx_logits(tmp_path / "pruned-int8", inputs)
    assert (int8_logits.argmax(-1) == logits(model, inputs).argmax(-1)).float().mean() >= 0.75


def test_onnx_model_is_measured_and_evaluated_like_any_model(tmp_path):
    from datasets import Dataset

    model = tiny_model("bert")
    export_onnx(str(save_with_tokenizer(model, tmp_path / "m")), tmp_path / "onnx")
    onnx_model = OnnxSequenceClassifier(tmp_path / "onnx")
    figures = model_figures(
        onnx_model,
        saved_dir=str(tmp_path / "onnx"),
        latency_config={"batch_sizes": (1, 2), "seq_len": 16, "runs": 2, "warmup": 1},
        progress=False,
    )
    assert set(figures["latency_ms"]) == {"1", "2"} and figures["latency_ms"]["2"]["median"] > 0
    tokenizer = tiny_tokenizer()
    encoded = tokenizer(["the movie was good", "bad plot", "very fun story and great actors"])
    dataset = Dataset.from_dict({**encoded, "labels": [0, 1, 0]})
    got = predict(onnx_model, tokenizer, dataset, batch_size=2, progress=False)
    want = predict(model, tokenizer, dataset, batch_size=2, progress=False)
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(want), atol=2e-4, rtol=0)


def test_cli_export_then_bench_reads_the_export(tmp_path, capsys):
    source = save_with_tokenizer(tiny_model("bert"), tmp_path / "m")
    assert main(["export", str(source), "--out", str(tmp_path / "onnx"), "--quantize", "int8"]) == 0
    assert "model.onnx" in capsys.readouterr().out
    assert json.loads((tmp_path / "onnx" / EXPORT_MARKER).read_text())["quantize"] == "int8"
    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                str(tmp_path / "onnx"),
                str(source),
                "--batch-sizes",
                "1",
                "--seq-len",
                "8",
                "--runs",
                "2",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())["results"]
    assert rows[0]["size_bytes"] < rows[1]["size_bytes"]


def test_existing_output_is_not_overwritten_and_failures_leave_nothing(tmp_path, monkeypatch):
    source = save_with_tokenizer(tiny_model("bert"), tmp_path / "m")
    out = tmp_path / "onnx"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        export_onnx(str(source), out)
    assert (out / "keep.txt").read_text() == "mine"

    import onnxruntime.quantization

    def broken(*args, **kwargs):
        raise RuntimeError("quantizer failed")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", broken)
    with pytest.raises(RuntimeError, match="quantizer failed"):
        export_onnx(str(source), out, quantize="int8", overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"  # the old output survives a failed export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "onnx"]  # no partial directory left


def test_bad_inputs_get_clear_errors(tmp_path):
    source = save_with_tokenizer(tiny_model("bert"), tmp_path / "m")
    with pytest.raises(HfCompressError, match="quantize must be one of"):
        export_onnx(str(source), tmp_path / "x", quantize="int4")
    with pytest.raises(CheckpointError, match="not an ONNX export"):
        OnnxSequenceClassifier(source)
    export_onnx(str(source), tmp_path / "onnx")
    (tmp_path / "onnx" / ONNX_FILE).write_bytes(b"not a graph")
    with pytest.raises(CheckpointError, match="export it again"):
        OnnxSequenceClassifier(tmp_path / "onnx")


def test_export_for_the_wrong_task_is_refused(tmp_path):
    from hf_compress.data.glue_tasks import get_task
    from hf_compress.evaluation.load import load_model_for_eval

    export_onnx(
        str(save_with_tokenizer(tiny_model("bert", num_labels=3), tmp_path / "m")),
        tmp_path / "onnx",
    )
    with pytest.raises(CheckpointError, match="3 labels but sst2 has 2"):
        load_model_for_eval(str(tmp_path / "onnx"), get_task("sst2"))
    with pytest.raises(HfCompressError, match="ONNX export"):
        load_model_for_eval(str(tmp_path / "onnx"), get_task("mnli"), load_in="8bit")
