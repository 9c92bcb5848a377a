"""Compute precision on load (`--dtype` of `eval` and `bench`, `load_model_for_eval(dtype=...)`):
compressed checkpoints run in bfloat16 with their integer storage intact and the fp32 logits
within bfloat16 rounding; fp32 and bf16 rows side by side in one bench; clear errors otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from matrix import all_cases, apply_case
from tiny import logits, save_with_tokenizer, tiny_inputs, tiny_model

import hf_compress  # noqa: F401  (registers the compressed format)
from hf_compress.cli import main
from hf_compress.data.glue_tasks import get_task
from hf_compress.errors import HfCompressError
from hf_compress.evaluation.bench import bench_models
from hf_compress.evaluation.load import load_model_for_eval
from hf_compress.evaluation.tables import format_bench_table

# The techniques whose checkpoints keep non-float storage (int8 codes, sparse bitmasks, codebooks,
# quantized embeddings) or rebuild a changed structure on load: the cases a dtype cast could break.
BF16_CASES = (
    "int8-dynamic",
    "int8-dynamic-embeddings",
    "qat-int8",
    "embedding-4bit-group",
    "magnitude-pruning-oneshot",
    "weight_clustering-4bit-oneshot",
    "head-pruning-taylor-oneshot",
    "low_rank-ratio-oneshot",
    "layer_sharing-all-first",
)


def _case(case_id: str):
    return next(case for case in all_cases() if case.id == case_id)


@pytest.mark.parametrize("case_id", BF16_CASES)
def test_compressed_checkpoints_compute_in_bfloat16(case_id, tmp_path):
    model, _ = apply_case(_case(case_id), "bert")
    source = save_with_tokenizer(model, tmp_path / "model")
    stored = {name: t.dtype for name, t in model.state_dict().items() if not t.is_floating_point()}
    bf16 = load_model_for_eval(str(source), None, dtype="bfloat16").eval()
    state = bf16.state_dict()
    assert {state[name].dtype for name in stored} <= {
        dtype for dtype in stored.values()
    }  # codes stay integers
    # Every parameter is cast; the int8 layers keep their float32 scales and bias buffers (their
    # int8 kernel computes in float32 and returns the input's dtype).
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    inputs = tiny_inputs(batch=3, length=12)
    out = logits(bf16, inputs)
    assert out.dtype == torch.bfloat16
    reference = logits(model, inputs)
    torch.testing.assert_close(out.float(), reference, atol=2e-3, rtol=0.05)


def test_float32_is_the_default_and_unchanged(tmp_path):
    model = tiny_model("bert")
    source = save_with_tokenizer(model, tmp_path / "model")
    loaded = load_model_for_eval(str(source), get_task("sst2"))
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    inputs = tiny_inputs()
    torch.testing.assert_close(logits(loaded, inputs), logits(model, inputs), atol=1e-6, rtol=0)


def test_bench_measures_each_model_in_each_dtype(tmp_path):
    from hf_compress.checkpoint.export import export_onnx

    source = save_with_tokenizer(tiny_model("bert"), tmp_path / "m")
    export_onnx(str(source), tmp_path / "onnx")
    rows = bench_models(
        [str(source), str(tmp_path / "onnx")],
        batch_sizes=(1,),
        seq_len=8,
        runs=2,
        dtypes=("float32", "bfloat16"),
        output=str(tmp_path / "bench.json"),
    )
    assert [(Path(r["model"]).name, r["dtype"]) for r in rows] == [
        ("m", "float32"),
        ("m", "bfloat16"),
        ("onnx", "onnx"),
    ]
    assert (
        rows[0]["size_bytes"] == rows[1]["size_bytes"]
    )  # size on disk: the checkpoint, not the compute dtype
    assert json.loads((tmp_path / "bench.json").read_text())["results"][1]["dtype"] == "bfloat16"
    table = format_bench_table(rows)
    assert f"{source} (bfloat16)" in table and f"{source} (float32)" not in table


def test_cli_eval_and_bench_take_dtype(tmp_path, glue_dir, capsys):
    source = save_with_tokenizer(tiny_model("bert"), tmp_path / "m")
    argv = [
        "eval",
        str(source),
        "--task",
        "sst2",
        "--glue-dir",
        str(glue_dir),
        "--max-eval-samples",
        "16",
    ]
    assert main([*argv, "--dtype", "bfloat16"]) == 0
    bf16 = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    fp32 = json.loads(capsys.readouterr().out)
    assert bf16["eval_samples"] == fp32["eval_samples"] == 16
    assert (
        abs(bf16["accuracy"] - fp32["accuracy"]) <= 2 / 16
    )  # a random tiny model: near-ties may flip

    report = tmp_path / "bench.json"
    argv = [
        "bench",
        str(source),
        "--batch-sizes",
        "1",
        "--seq-len",
        "8",
        "--runs",
        "2",
        "--dtype",
        "float32,bfloat16",
    ]
    assert main([*argv, "--output", str(report)]) == 0
    assert [r["dtype"] for r in json.loads(report.read_text())["results"]] == [
        "float32",
        "bfloat16",
    ]
    assert "(bfloat16)" in capsys.readouterr().out


def test_bad_dtype_requests_get_clear_errors(tmp_path, capsys):
    from hf_compress.checkpoint.export import export_onnx

    source = save_with_tokenizer(tiny_model("bert"), tmp_path / "m")
    assert main(["bench", str(source), "--dtype", "bf16"]) == 2
    assert "float32, bfloat16, float16" in capsys.readouterr().err
    assert (
        main(["bench", "--task", "sst2", "--out", str(tmp_path / "b"), "--dtype", "bfloat16"]) == 2
    )
    assert "--dtype" in capsys.readouterr().err and not (tmp_path / "b").exists()
    with pytest.raises(HfCompressError, match="not one of"):
        load_model_for_eval(str(source), None, dtype="int8")
    export_onnx(str(source), tmp_path / "onnx")
    with pytest.raises(HfCompressError, match="ONNX export"):
        load_model_for_eval(str(tmp_path / "onnx"), None, dtype="bfloat16")
    with pytest.raises(HfCompressError, match="bitsandbytes"):
        load_model_for_eval(str(source), get_task("sst2"), load_in="8bit", dtype="bfloat16")


def test_bitsandbytes_checkpoint_refuses_a_dtype(tmp_path):
    pytest.importorskip("bitsandbytes")
    model, _ = apply_case(_case("bnb-8bit"), "bert")
    source = save_with_tokenizer(model, tmp_path / "model")
    with pytest.raises(HfCompressError, match="compute_dtype"):
        load_model_for_eval(str(source), None, dtype="bfloat16")
    assert load_model_for_eval(str(source), None, dtype="float32") is not None
