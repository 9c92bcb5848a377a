"""ONNX export (hf_compress/checkpoint/export.py): every technique's output exports and computes the
same logits in ONNX Runtime; int8 export is smaller; bad input gets clear errors and leaves
nothing."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from matrix import all_cases, apply_case
from tiny import logits, tiny_inputs, tiny_model, tiny_tokenizer

import hf_compress  # noqa: F401  (registers the compressed format)
from hf_compress.checkpoint.export import (
    EXPORT_MARKER,
    ONNX_FILE,
    OnnxSequenceClassifier,
    export_onnx,
    float_model_for_export,
    is_onnx_export,
)
from hf_compress.cli import main
from hf_compress.errors import CheckpointError, HfCompressError, OutputExistsError
from hf_compress.evaluation.evaluate import model_figures, predict
from hf_compress.evaluation.measure import count_parameters

pytest.importorskip("onnxruntime")


def _save(model, directory: Path) -> Path:
    model.save_pretrained(directory)
    tiny_tokenizer(directory).save_pretrained(directory)
    return directory


def _onnx_logits(directory: Path, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return OnnxSequenceClassifier(directory)(**inputs).logits


# Every matrix case on BERT (one family keeps the suite short; the families differ only in the
# layers the techniques replace, which the PyTorch matrix covers), plus the uneven-head cases on
# all.
EXPORT_CASES = [
    pytest.param(case, "bert", id=f"{case.id}-bert")
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
    source = _save(model, tmp_path / "model")
    if any("bnb" in str(m.get("method", "")) for m in case.modifiers):
        with pytest.raises(HfCompressError, match="bitsandbytes"):
            export_onnx(str(source), tmp_path / "onnx")
        assert not (tmp_path / "onnx").exists()
        return
    info = export_onnx(str(source), tmp_path / "onnx")
    assert is_onnx_export(tmp_path / "onnx")
    assert info["max_abs_logit_diff_vs_pytorch"] < 1e-3
    # The graph computes the model's float equivalent exactly (int8 layers: their dequantized
    # weights, without PyTorch's activation rounding), at other batch and sequence sizes than the
    # export's sample (dynamic axes), with padding.
    float_model = float_model_for_export(copy.deepcopy(model))
    for batch, length in ((3, 12), (1, 30)):
        inputs = tiny_inputs(batch=batch, length=length)
        exported = _onnx_logits(tmp_path / "onnx", inputs)
        torch.testing.assert_close(exported, logits(float_model, inputs), atol=2e-4, rtol=0)
        torch.testing.assert_close(exported, logits(model, inputs), atol=5e-3, rtol=0)


def test_structure_carries_over_and_int8_is_smaller(tmp_path):
    (case,) = [c for c in all_cases() if c.id == "heads-ffn-gradual-taylor"]
    model, dense = apply_case(case, "bert")
    source = _save(model, tmp_path / "pruned")
    dense_source = _save(dense, tmp_path / "dense")
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
    export_onnx(str(_save(model, tmp_path / "m")), tmp_path / "onnx")
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
    source = _save(tiny_model("bert"), tmp_path / "m")
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
    source = _save(tiny_model("bert"), tmp_path / "m")
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
    source = _save(tiny_model("bert"), tmp_path / "m")
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

    export_onnx(str(_save(tiny_model("bert", num_labels=3), tmp_path / "m")), tmp_path / "onnx")
    with pytest.raises(CheckpointError, match="3 labels but sst2 has 2"):
        load_model_for_eval(str(tmp_path / "onnx"), get_task("sst2"))
    with pytest.raises(HfCompressError, match="ONNX export"):
        load_model_for_eval(str(tmp_path / "onnx"), get_task("mnli"), load_in="8bit")
