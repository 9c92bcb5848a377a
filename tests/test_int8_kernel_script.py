"""benchmarks/int8_kernel_check.py: both int8 kernels timed on one saved int8 checkpoint."""

import json

import pytest
from pipeline_fixtures import make_tiny_base
from tiny import load_script

from hf_compress import compress
from hf_compress.evaluation.load import load_model_for_eval
from hf_compress.methods.quantization.kernels import fbgemm_available, onednn_available


def test_times_each_kernel_at_each_batch_size(tmp_path, capsys):
    if not (fbgemm_available() and onednn_available()):
        pytest.skip("no x86 int8 kernels on this machine")
    base = make_tiny_base(tmp_path / "base")
    model = compress(
        load_model_for_eval(str(base), None), [{"type": "quantization", "method": "int8_dynamic"}]
    )
    model.save_pretrained(tmp_path / "int8")
    load_script("int8_kernel_check").main(
        [str(tmp_path / "int8"), "--batch-sizes", "1,4", "--seq", "16", "--rounds", "2"]
    )
    report = json.loads(capsys.readouterr().out)
    assert report["int8_layers"] > 0
    assert set(report["median_ms"]) == {"fbgemm", "onednn"}
    assert all(
        set(per) == {"1", "4"} and all(ms > 0 for ms in per.values())
        for per in report["median_ms"].values()
    )


def test_a_model_without_int8_layers_is_a_clear_error(tmp_path):
    base = make_tiny_base(tmp_path / "base")
    with pytest.raises(SystemExit, match="has no int8 Linear layers"):
        load_script("int8_kernel_check").main([str(base), "--rounds", "1"])
