"""OpenVINO IR from the ONNX export, and a runner that evaluates and times it like any model.

`hf-compress export --format openvino` first writes the ONNX graph (checkpoint/export.py: the
recipe's int8 Linear layers as int8 codes and scales, quantized embeddings as gathered codes,
the structure as compressed), checks it in ONNX Runtime, then converts that graph with OpenVINO's
own converter (`openvino.convert_model`) and saves the IR under the file names optimum-intel
reads (`openvino_model.xml` / `.bin`). Nothing here converts or optimizes a graph by hand.

The IR is checked against PyTorch with the ONNX graph's tolerance. OpenVINO computes in bfloat16
by default on CPUs with AVX-512 BF16 / AMX; the export records and runs it with f32 inference
precision by default so that its logits are the ones checked; `openvino_precision="bf16"` checks
and runs it in bfloat16 instead (about 2x faster on such CPUs).

Static int8 activations (`quantize_activations_int8`, `hf-compress export --int8-activations`):
NNCF (`nncf.quantize`, transformer preset, which also applies SmoothQuant) calibrates the IR on
task sentences and inserts activation quantizers, so that the int8 weights meet int8 inputs in
OpenVINO's integer kernels (VNNI / AMX) instead of being dequantized for a float GEMM. NNCF is
OpenVINO's own post-training quantizer; nothing here chooses scales by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError, HfCompressError

OPENVINO_XML = "openvino_model.xml"
OPENVINO_BIN = "openvino_model.bin"
PRECISIONS = ("f32", "bf16")


def require_openvino() -> None:
    try:
        import openvino  # noqa: F401
    except ImportError as error:
        raise HfCompressError(
            "--format openvino needs the openvino runtime: pip install 'hf-compress[openvino]'"
        ) from error


def require_nncf() -> None:
    try:
        import nncf  # noqa: F401
    except ImportError as error:
        raise HfCompressError(
            "--int8-activations needs NNCF, OpenVINO's quantizer: pip install "
            "'hf-compress[openvino]'"
        ) from error


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise HfCompressError(f"openvino_precision must be one of {PRECISIONS}, got {precision!r}")


def convert_onnx_to_ir(onnx_path: Path, directory: Path) -> int:
    """Converts the graph at `onnx_path` to `directory`/openvino_model.{xml,bin}; returns the
    IR's bytes on disk. Weights are saved as they are (no float16 compression: int8 codes stay
    int8, float weights stay float32, as in the ONNX graph)."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(directory / OPENVINO_XML), compress_to_fp16=False)
    return ir_bytes(directory)


def ir_bytes(directory: Path) -> int:
    """Bytes on disk of the IR in `directory` (graph and weights)."""
    return sum((directory / name).stat().st_size for name in (OPENVINO_XML, OPENVINO_BIN))


def quantize_activations_int8(
    directory: Path, calibration_feeds: list[dict[str, np.ndarray]]
) -> dict[str, Any]:
    """Rewrites the IR in `directory` with static int8 activations calibrated by NNCF on
    `calibration_feeds` (one dict of named model inputs per calibration text); weights already
    int8 stay as they are. Returns what to record in the export's `onnx_export.json`."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(directory / OPENVINO_XML))
    quantized = nncf.quantize(
        model,
        nncf.Dataset(calibration_feeds),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calibration_feeds),
    )
    del model
    # Written beside the IR first: the original's weights may still be mapped from its file.
    staged = directory / f"int8-activations-{OPENVINO_XML}"
    ov.save_model(quantized, str(staged), compress_to_fp16=False)
    del quantized
    for name in (OPENVINO_XML, OPENVINO_BIN):
        (directory / f"int8-activations-{name}").replace(directory / name)
    return {"nncf": nncf.__version__, "calibration_texts": len(calibration_feeds)}


def calibration_feeds(
    tokenizer: Any, names: list[str], texts: Sequence[str | tuple[str, str]], max_length: int
) -> list[dict[str, Any]]:
    """One dict of the graph's named inputs (int64 arrays, batch of one) per calibration text."""
    feeds = []
    for text in texts:
        parts = (text,) if isinstance(text, str) else tuple(text)
        encoded = tokenizer(*parts, truncation=True, max_length=max_length, return_tensors="np")
        ids = encoded["input_ids"]
        feeds.append({n: (encoded[n] if n in encoded else ids * 0).astype("int64") for n in names})
    return feeds


def compile_ir(directory: Path, num_threads: int, precision: str = "f32") -> Any:
    """The IR in `directory` compiled for the CPU with `num_threads` threads, tuned for latency."""
    import openvino as ov

    check_precision(precision)
    config = {
        "INFERENCE_PRECISION_HINT": precision,
        "INFERENCE_NUM_THREADS": num_threads,
        "PERFORMANCE_HINT": "LATENCY",
    }
    try:
        return ov.Core().compile_model(str(directory / OPENVINO_XML), "CPU", config)
    except Exception as error:  # OpenVINO raises its own untyped errors for a corrupt file
        raise CheckpointError(
            f"{directory / OPENVINO_XML} could not be loaded by OpenVINO ({str(error)[:200]}); "
            "export it again"
        ) from error


def run_compiled(compiled: Any, feed: dict[str, np.ndarray]) -> np.ndarray:
    """The first output (the logits) of a compiled IR for one batch of named inputs."""
    return np.asarray(compiled(feed)[compiled.output(0)])


def ir_input_names(compiled: Any) -> list[str]:
    return [port.get_any_name() for port in compiled.inputs]


def openvino_version() -> str:
    import openvino as ov

    return ov.get_version()
