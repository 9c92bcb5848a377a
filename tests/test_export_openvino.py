"""`hf-compress export --format openvino`: the checked ONNX graph converted to OpenVINO IR, which
keeps the recipe's int8, matches PyTorch and is evaluated and timed like any model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from matrix import INT8_EMBEDDINGS_FALLBACK, apply_case
from tiny import logits, save_with_tokenizer, tiny_inputs, tiny_model

import hf_compress  # noqa: F401  (registers the compressed format)
from hf_compress.checkpoint.export import (
    EXPORT_MARKER,
    ONNX_FILE,
    OpenVinoSequenceClassifier,
    export_format,
    export_onnx,
)
from hf_compress.checkpoint.openvino_ir import OPENVINO_BIN, OPENVINO_XML
from hf_compress.cli import main
from hf_compress.errors import CheckpointError, HfCompressError
from hf_compress.evaluation.measure import count_parameters
from hf_compress.methods.quantization.layers import Int8Linear

ov = pytest.importorskip("openvino")


def _int8_constants(directory: Path) -> int:
    model = ov.Core().read_model(str(directory / OPENVINO_XML))
    return sum(
        1
        for op in model.get_ordered_ops()
        if op.get_type_name() == "Constant"
        and op.get_output_element_type(0) == ov.Type.i8
        and len(op.get_output_shape(0)) == 2
    )


def test_int8_checkpoint_exports_to_openvino_with_its_int8(tmp_path):
    model, _ = apply_case(INT8_EMBEDDINGS_FALLBACK, "bert")
    source = save_with_tokenizer(model, tmp_path / "int8")
    info = export_onnx(str(source), tmp_path / "ov", format="openvino")

    out = tmp_path / "ov"
    assert export_format(out) == "openvino"
    assert not (out / ONNX_FILE).exists()  # the IR replaces the intermediate graph
    assert info["format"] == "openvino" and info["openvino_precision"] == "f32"
    assert info["size_bytes"] == sum((out / f).stat().st_size for f in (OPENVINO_XML, OPENVINO_BIN))
    assert json.loads((out / EXPORT_MARKER).read_text())["format"] == "openvino"
    # the recipe's int8 Linear layers and the int8 embedding table stay int8 matrices in the IR
    int8_layers = sum(isinstance(m, Int8Linear) for m in model.modules())
    assert _int8_constants(out) == int8_layers + 1
    # the weights file: about the int8 checkpoint's bytes, far below the float model's (the XML
    # holds the graph's text, the size of a tiny model's weights)
    float_bytes = 4 * sum(p.numel() for p in tiny_model("bert").parameters())
    weight_bytes = (out / OPENVINO_BIN).stat().st_size
    assert weight_bytes < 0.45 * float_bytes
    assert weight_bytes < 1.3 * (source / "model.safetensors").stat().st_size

    # logits within the tolerance checked at export, at other shapes too
    assert info["max_abs_logit_diff_vs_pytorch"] <= info["tolerance"]
    assert info["onnxruntime_max_abs_logit_diff"] <= info["tolerance"]
    runner = OpenVinoSequenceClassifier(out)
    for batch, length in ((5, 9), (1, 40)):
        inputs = tiny_inputs(batch=batch, length=length, seed=batch)
        torch.testing.assert_close(
            runner(**inputs).logits, logits(model, inputs), atol=info["tolerance"], rtol=0
        )
    assert count_parameters(runner)[0] == pytest.approx(count_parameters(model)[0], rel=0.05)

    # bfloat16 inference, checked against the same tolerance and recorded for the runner
    info = export_onnx(str(source), tmp_path / "bf16", format="openvino", openvino_precision="bf16")
    assert info["openvino_precision"] == "bf16"
    assert info["max_abs_logit_diff_vs_pytorch"] <= info["tolerance"]
    bf16 = OpenVinoSequenceClassifier(tmp_path / "bf16")
    inputs = tiny_inputs(batch=3, length=12)
    torch.testing.assert_close(
        bf16(**inputs).logits, logits(model, inputs), atol=info["tolerance"], rtol=0
    )


def test_cli_exports_openvino_and_eval_and_bench_read_it(tmp_path, capsys):
    source = save_with_tokenizer(tiny_model("bert"), tmp_path / "m")
    out = tmp_path / "ov"
    assert main(["export", str(source), "--out", str(out), "--format", "openvino"]) == 0
    assert OPENVINO_XML in capsys.readouterr().out
    bench = tmp_path / "bench.json"
    argv = ["bench", str(out), str(source), "--batch-sizes", "1", "--seq-len", "8", "--runs", "2"]
    assert main([*argv, "--output", str(bench)]) == 0
    rows = json.loads(bench.read_text())["results"]
    assert [row["dtype"] for row in rows] == ["openvino", "float32"]
    ir_bytes = sum((out / f).stat().st_size for f in (OPENVINO_XML, OPENVINO_BIN))
    assert rows[0]["size_bytes"] == ir_bytes  # the graph and its weights, as for ONNX
    # float graph: the IR computes the model itself (f32 inference precision)
    inputs = tiny_inputs(batch=2, length=11)
    np.testing.assert_allclose(
        OpenVinoSequenceClassifier(out)(**inputs).logits.numpy(),
        logits(tiny_model("bert"), inputs).numpy(),
        atol=2e-4,
        rtol=0,
    )


def test_openvino_errors_are_one_clear_line(tmp_path, monkeypatch):
    source = save_with_tokenizer(tiny_model("bert"), tmp_path / "m")
    with pytest.raises(HfCompressError, match="format must be one of"):
        export_onnx(str(source), tmp_path / "x", format="tflite")
    with pytest.raises(HfCompressError, match="openvino_precision must be one of"):
        export_onnx(str(source), tmp_path / "x", format="openvino", openvino_precision="int4")
    with pytest.raises(HfCompressError, match="with --format openvino, export the checkpoint"):
        export_onnx(str(source), tmp_path / "x", format="openvino", quantize="int8")
    with pytest.raises(CheckpointError, match="not an OpenVINO export"):
        OpenVinoSequenceClassifier(source)
    export_onnx(str(source), tmp_path / "ov", format="openvino")
    (tmp_path / "ov" / OPENVINO_XML).write_text("<net>truncated")
    with pytest.raises(CheckpointError, match="export it again"):
        OpenVinoSequenceClassifier(tmp_path / "ov")
    # without the runtime installed: the extra to install, before anything is written
    import builtins

    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(HfCompressError, match=r"hf-compress\[openvino\]"):
        export_onnx(str(source), tmp_path / "y", format="openvino")
    assert not (tmp_path / "y").exists()


@pytest.mark.slow  # the script's other paths run by default in test_export.py
def test_benchmark_script_times_the_openvino_export_beside_pytorch(tmp_path, capsys):
    from tiny import load_script

    model, _ = apply_case(INT8_EMBEDDINGS_FALLBACK, "bert")
    source = save_with_tokenizer(model, tmp_path / "int8")
    script = load_script("onnx_int8_export")
    argv = [str(source), "--batch-sizes", "1", "--seq", "8", "--rounds", "2", "--threads", "1"]
    capsys.readouterr()
    script.main([*argv, "--out", str(tmp_path / "bench"), "--openvino"])
    report = json.loads(capsys.readouterr().out)
    assert set(report["median_ms"]) == {"pytorch", "new", "old", "openvino_f32", "openvino_bf16"}
    assert report["max_abs_logit_diff_vs_pytorch"]["openvino_f32"] < 1e-2
    assert (
        report["size_bytes"]["openvino"]
        > (tmp_path / "bench/openvino" / OPENVINO_BIN).stat().st_size
    )


def _activation_quantizers(directory: Path) -> int:
    model = ov.Core().read_model(str(directory / OPENVINO_XML))
    return sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())


def test_int8_activations_are_calibrated_by_nncf_and_checked(tmp_path):
    pytest.importorskip("nncf")
    model, _ = apply_case(INT8_EMBEDDINGS_FALLBACK, "bert")
    source = save_with_tokenizer(model, tmp_path / "int8")
    texts = ["a good film", "a bad film, long and dull", ("one of a pair", "and the other")] * 4
    info = export_onnx(str(source), tmp_path / "ov", format="openvino", calibration_texts=texts)
    assert info["int8_activations"]["calibration_texts"] == len(texts)
    assert info["tolerance_rule"] == "0.25 x max(1, largest |logit|)"
    assert info["max_abs_logit_diff_vs_pytorch"] <= info["tolerance"]
    assert json.loads((tmp_path / "ov" / EXPORT_MARKER).read_text())["int8_activations"]
    # NNCF's activation quantizers are in the IR; the weight-only export has none
    assert _activation_quantizers(tmp_path / "ov") > 0
    plain = export_onnx(str(source), tmp_path / "plain", format="openvino")
    assert plain["int8_activations"] is None
    assert _activation_quantizers(tmp_path / "plain") == 0
    # the recipe's int8 weights stay int8 constants
    assert _int8_constants(tmp_path / "ov") >= _int8_constants(tmp_path / "plain")
    runner = OpenVinoSequenceClassifier(tmp_path / "ov")
    inputs = tiny_inputs(batch=4, length=10)
    torch.testing.assert_close(
        runner(**inputs).logits, logits(model, inputs), atol=info["tolerance"], rtol=0
    )
    with pytest.raises(HfCompressError, match="add --format openvino"):
        export_onnx(str(source), tmp_path / "x", calibration_texts=texts)
    with pytest.raises(HfCompressError, match="at least one calibration text"):
        export_onnx(str(source), tmp_path / "x", format="openvino", calibration_texts=[])
    assert not (tmp_path / "x").exists()


def test_cli_int8_activations_take_the_task_from_the_recipe(tmp_path, capsys):
    pytest.importorskip("nncf")
    source = save_with_tokenizer(tiny_model("bert"), tmp_path / "m")
    out = tmp_path / "ov"
    argv = ["export", str(source), "--out", str(out), "--int8-activations"]
    assert main(argv) == 2
    assert "add --format openvino" in capsys.readouterr().err
    assert main([*argv, "--format", "openvino"]) == 2
    assert "records no task: pass --calibration-task" in capsys.readouterr().err
    (source / "recipe.yaml").write_text("task: [sst2\n")
    assert main([*argv, "--format", "openvino"]) == 2
    assert "recipe.yaml is not a readable recipe" in capsys.readouterr().err
    assert not out.exists()
    glue = tmp_path / "glue"
    (glue / "SST-2").mkdir(parents=True)
    rows = [f"sentence number {i} is {'good' if i % 2 else 'bad'}\t{i % 2}" for i in range(40)]
    (glue / "SST-2" / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (source / "recipe.yaml").write_text("task: sst2\ndata: {max_seq_length: 16}\n")
    extra = ["--format", "openvino", "--glue-dir", str(glue), "--calibration-samples", "8"]
    assert main([*argv, *extra]) == 0
    record = json.loads((out / EXPORT_MARKER).read_text())
    assert record["int8_activations"]["calibration_texts"] == 8
    assert _activation_quantizers(out) > 0
