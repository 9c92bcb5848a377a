"""Export a compressed model to ONNX, keeping the recipe's int8 layers int8, and run it.

What each layer becomes in the graph:

- `Int8Linear` (int8 weights, one scale per output channel): the same int8 codes and scales as
  initializers, multiplied by an integer MatMul (`DynamicQuantizeLinear` + `MatMulInteger` for
  dynamic inputs, the fastest of the forms measured; `QuantizeLinear` + `MatMulInteger` with the
  fixed input grid QAT learned), which ONNX Runtime fuses into its integer kernels: see
  checkpoint/onnx_int8.py. Linear layers the recipe kept in float (`fp32_fallback`, the
  classifier) stay float MatMuls.
- `QuantizedEmbedding`: the int8 (or packed 4-bit) rows and their scales as initializers, looked up
  with Gather, then Cast and Mul (4 bits: the packed bytes gathered, split into their two codes
  with Div / Floor / Sub, the offset added).
- Structural compression (fewer heads, narrower FFN, fewer layers, factorized layers, a smaller
  vocabulary) carries over as is; storage formats only PyTorch knows (packed sparse bitmasks,
  clustering codebooks) are expanded to the float weights they stand for (`to_float()`).

The graph's logits are checked against the PyTorch model's on a few inputs (tolerance in
`export_onnx`). `quantize="int8"` is for float checkpoints: ONNX Runtime then re-quantizes every
MatMul and the embeddings with its own scales (`onnxruntime.quantization.quantize_dynamic`); a
checkpoint that already holds int8 Linear layers is refused, since the export keeps them. The
export is the public `torch.onnx.export` (dynamo): nothing here re-implements an exporter or a
kernel.

`format="openvino"` converts that checked graph to OpenVINO IR (checkpoint/openvino_ir.py) and
checks the IR against PyTorch in turn; with `calibration_texts`, NNCF then gives the IR static
int8 activations calibrated on them (the int8 weights then meet int8 inputs in OpenVINO's integer
kernels).

    hf-compress export outputs/quickstart --out outputs/quickstart-onnx
    hf-compress export outputs/quickstart --out outputs/quickstart-ov --format openvino
    hf-compress export outputs/quickstart --out outputs/quickstart-ov-int8 --format openvino \
        --int8-activations
    hf-compress bench outputs/quickstart-onnx --task sst2
"""

from __future__ import annotations

import copy
import json
import shutil
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from ..errors import CheckpointError, HfCompressError, OutputExistsError
from .openvino_ir import (
    OPENVINO_XML,
    calibration_feeds,
    check_precision,
    compile_ir,
    ir_bytes,
    ir_input_names,
    quantize_activations_int8,
    require_nncf,
    require_openvino,
    run_compiled,
)

ONNX_FILE = "model.onnx"

# The export record (what was exported, how, its size, the check against PyTorch); its name
# predates the OpenVINO format and stays, so earlier exports keep loading.
EXPORT_MARKER = "onnx_export.json"

QUANTIZE_CHOICES = ("int8",)

FORMATS = ("onnx", "openvino")
FORMAT_NAMES = {"onnx": "ONNX", "openvino": "OpenVINO"}


def export_format(path: str | Path) -> str | None:
    """ "onnx" or "openvino" for a directory written by `export_onnx`, else None."""
    path = Path(path)
    if not (path.is_dir() and (path / EXPORT_MARKER).is_file()):
        return None
    if (path / ONNX_FILE).is_file():
        return "onnx"
    if (path / OPENVINO_XML).is_file():
        return "openvino"
    return None


def is_onnx_export(path: str | Path) -> bool:
    """Whether `path` is an ONNX directory written by `export_onnx`."""
    return export_format(path) == "onnx"


def _require_onnx() -> None:
    missing = []
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise HfCompressError(
            f"ONNX export needs {', '.join(missing)}: pip install 'hf-compress[onnx]' (onnx, "
            "onnxruntime, onnxscript)"
        )


def _float_equivalent(module: nn.Module) -> nn.Module | None:
    """The plain float module a compressed storage layer stands for (its `to_float()`: every
    technique's storage layer has one), or None for an ordinary module."""
    to_float = getattr(module, "to_float", None)
    return to_float() if callable(to_float) else None


def _refuse_bitsandbytes(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if type(module).__module__.startswith("bitsandbytes"):
            raise HfCompressError(
                f"cannot export {name!r} ({type(module).__name__}): bitsandbytes layers run only "
                "in bitsandbytes' kernels and have no ONNX form; export the model before its "
                "bitsandbytes stage and pass --quantize int8 to let ONNX Runtime quantize it "
                "instead"
            )


def _replace_modules(model: nn.Module, replace: Any) -> list[tuple[str, nn.Module, nn.Module]]:
    """Swaps every module for which `replace(module)` is not None; (name, old, new) per swap."""
    swaps = []
    for name, module in list(model.named_modules()):
        replacement = replace(module)
        if replacement is not None:
            swaps.append((name, module, replacement))
    for name, _, replacement in swaps:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, replacement)
    return swaps


def float_model_for_export(model: PreTrainedModel) -> PreTrainedModel:
    """`model` (changed in place) with every compressed storage module replaced by its float
    equivalent (int8 layers too: their dequantized weights).

    Raises:
        HfCompressError: the model holds bitsandbytes layers (their kernels have no ONNX form).
    """
    _refuse_bitsandbytes(model)
    _replace_modules(model, _float_equivalent)
    return model.float().eval()


def int8_model_for_export(model: PreTrainedModel) -> tuple[PreTrainedModel, dict[str, Any]]:
    """`model` (changed in place) ready for an export that keeps the recipe's int8: int8 Linear
    layers and quantized embeddings become the export modules of checkpoint/onnx_int8.py (same
    codes and scales), every other storage layer its float equivalent.

    Returns:
        The model and a summary of the layers: `int8_linear` (names), `float_linear` (names of
        the Linear layers left in float, e.g. `fp32_fallback` and the classifier) and
        `quantized_embeddings` (name -> bits).

    Raises:
        HfCompressError: the model holds bitsandbytes layers (their kernels have no ONNX form).
    """
    from .onnx_int8 import OnnxInt8Linear, OnnxQuantizedEmbedding, export_module

    _refuse_bitsandbytes(model)
    kept = _replace_modules(model, export_module)
    _replace_modules(model, _float_equivalent)
    model = model.float().eval()
    return model, {
        "int8_linear": [n for n, _, new in kept if isinstance(new, OnnxInt8Linear)],
        "float_linear": [n for n, m in model.named_modules() if isinstance(m, nn.Linear)],
        "quantized_embeddings": {
            n: new.bits for n, _, new in kept if isinstance(new, OnnxQuantizedEmbedding)
        },
    }


def holds_int8_linear(model: nn.Module) -> bool:
    """Whether `model` has Linear layers stored in int8 (which the export keeps int8)."""
    for module in model.modules():
        describe = getattr(module, "onnx_int8_parts", None)
        if callable(describe) and (describe() or {}).get("kind") == "linear":
            return True
    return False


def _nodes_reading(path: Path, modules: Any) -> list[str]:
    """Names of the nodes of the graph at `path` that read a tensor of one of `modules` (e.g. the
    Gather of a quantized embedding's scales, which ONNX Runtime's quantizer must leave alone)."""
    import onnx

    prefixes = tuple(f"{name}." for name in modules)
    if not prefixes:
        return []
    graph = onnx.load(str(path)).graph
    return [n.name for n in graph.node if any(i.startswith(prefixes) for i in n.input)]


def _strip_debug_info(path: Path) -> None:
    """Drops the exporter's per-node debug metadata (Python stack traces, module paths): a few
    hundred bytes per node that the runtime never reads."""
    import onnx

    graph = onnx.load(str(path))
    for node in graph.graph.node:
        del node.metadata_props[:]
    onnx.save(graph, str(path))


def _input_names(model: PreTrainedModel, tokenizer: Any) -> list[str]:
    import inspect

    accepted = set(inspect.signature(model.forward).parameters)
    names = [
        n
        for n in getattr(tokenizer, "model_input_names", ["input_ids", "attention_mask"])
        if n in accepted
    ]
    if "input_ids" not in names:
        names.insert(0, "input_ids")
    return names


# The inputs the graph is checked on: three batch shapes, padding, short and long sentences. The
# first is also the example the exporter traces with.
CHECK_TEXTS = (
    ("a short example sentence", "and another, longer one, to make two lengths"),
    (
        "the film is good",
        "it was not very fun, but the actors were great and the story kept me watching to the end",
        "bad",
        "an awful plot, the worst movie of the year",
    ),
    ("one sentence alone, in a batch of one",),
)

# Tolerances of the check against PyTorch (max |logit difference| over CHECK_TEXTS):
# - float graph: float rounding only.
FLOAT_TOLERANCE = 1e-3
# - the recipe's int8 kept: ONNX Runtime and PyTorch multiply the same int8 weights, but each
#   quantizes the activations of dynamic layers itself (per tensor, uint8; PyTorch's kernel may use
#   7 bits on CPUs without VNNI, or its own grid off x86), so they can round an activation to
#   neighbouring codes. That difference is bounded by the rounding effect itself, which is
#   measured at export: the PyTorch int8 model against the same model with float activations
#   (its `to_float()`). Two such roundings differ by at most their sum; the factor 3 leaves room
#   for ONNX Runtime's being the larger on some input. A wrong weight, scale or layout differs by
#   the size of the logits, far above it.
INT8_ROUNDING_FACTOR = 3.0
# - ONNX Runtime re-quantizing a float model (`quantize="int8"`), or NNCF's static int8
#   activations (`calibration_texts`): their own int8 error, which no PyTorch model measures: a
#   quarter of the logits' range.
REQUANTIZED_TOLERANCE = 0.25
REQUANTIZED_TOLERANCE_RULE = f"{REQUANTIZED_TOLERANCE} x max(1, largest |logit|)"
# Calibration texts for static int8 activations are cut to this many tokens unless told.
CALIBRATION_MAX_LENGTH = 128


def export_onnx(
    source: str,
    output_dir: str | Path,
    *,
    quantize: str | None = None,
    opset: int = 18,
    overwrite: bool = False,
    int8_matmul: str | None = None,
    format: str = "onnx",
    openvino_precision: str = "f32",
    calibration_texts: Sequence[str | tuple[str, str]] | None = None,
    calibration_max_length: int = CALIBRATION_MAX_LENGTH,
) -> dict[str, Any]:
    """Exports a sequence-classification model (compressed or plain) to `output_dir/model.onnx`
    (or, with `format="openvino"`, OpenVINO IR), keeping the recipe's int8 layers int8 (see the
    module docstring).

    The exported graph's logits are compared with the PyTorch model's (as it runs, int8 kernels
    included) on `CHECK_TEXTS`. Tolerance: 1e-3 for a float graph; with int8 layers kept, 1e-3 plus
    3x the effect of PyTorch's own activation rounding on the same inputs (`INT8_ROUNDING_FACTOR`);
    with `quantize="int8"`, 0.25 x max(1, largest |logit|). Both figures go to `onnx_export.json`.

    Args:
        source: a model directory written by `hf-compress run` / `save_pretrained`, or a Hub id.
        output_dir: the export directory: `model.onnx`, the tokenizer, `config.json` and
            `onnx_export.json` (what was exported, how, its size and the check against PyTorch).
        quantize: None (the model as stored: float, or the recipe's int8) or "int8": ONNX Runtime
            dynamic quantization of every float MatMul (per output channel) and float embedding
            table, for a float checkpoint (tables the recipe quantized stay as stored); refused
            for one that already holds int8 Linear layers.
        opset: ONNX opset of the exported graph.
        overwrite: replace a non-empty `output_dir`.
        int8_matmul: the ONNX form of int8 Linear layers with dynamic inputs, one of
            `onnx_int8.INT8_MATMUL_OPS`; default `onnx_int8.INT8_MATMUL_DEFAULT`, the fastest
            measured in ONNX Runtime (the others are kept for benchmarks/onnx_int8_export.py
            --compare-ops), and `OPENVINO_INT8_MATMUL` for OpenVINO (int8 weights its reader
            keeps int8).
        format: "onnx" (`model.onnx`, for ONNX Runtime) or "openvino" (`openvino_model.xml` /
            `.bin` converted from the checked ONNX graph, for the OpenVINO runtime and
            optimum-intel; checked against PyTorch again).
        openvino_precision: the inference precision the IR is checked and later run in: "f32",
            or "bf16" (OpenVINO's own default on CPUs with AMX / AVX-512 BF16: faster, and
            checked against the same tolerance).
        calibration_texts: with format "openvino": give the IR static int8 activations (NNCF),
            calibrated on these texts (one string, or a pair for two-sentence tasks, each);
            checked against PyTorch with 0.25 x max(1, largest |logit|), since their rounding is
            NNCF's own. None (the default): activations stay float.
        calibration_max_length: calibration texts are truncated to this many tokens.

    Returns:
        The contents of `onnx_export.json`.

    Raises:
        OutputExistsError: `output_dir` exists and is not empty, without `overwrite`.
        HfCompressError: missing ONNX (or OpenVINO) packages, an unknown `quantize` or
            `format`, `quantize="int8"` for an int8 checkpoint or with OpenVINO, bitsandbytes
            layers, or a graph whose outputs differ from PyTorch's.
    """
    from .loading import load_checked_tokenizer, load_compressed
    from .sources import resolve_model_source

    _check_request(
        quantize, int8_matmul, output_dir, overwrite, format, openvino_precision, calibration_texts
    )
    checkpoint = resolve_model_source(source)
    tokenizer = load_checked_tokenizer(checkpoint)
    model = load_compressed(checkpoint, "sequence-classification").eval()
    return export_model(
        model,
        tokenizer,
        output_dir,
        source=str(source),
        quantize=quantize,
        opset=opset,
        overwrite=overwrite,
        int8_matmul=int8_matmul,
        format=format,
        openvino_precision=openvino_precision,
        calibration_texts=calibration_texts,
        calibration_max_length=calibration_max_length,
    )


def check_int8_activations_request(format: str) -> None:
    """Static int8 activations: an OpenVINO option, which needs NNCF installed."""
    if format != "openvino":
        raise HfCompressError(
            "static int8 activations (--int8-activations) are an OpenVINO option: add "
            "--format openvino"
        )
    require_nncf()


def _check_request(
    quantize: str | None,
    int8_matmul: str | None,
    output_dir: str | Path,
    overwrite: bool,
    format: str = "onnx",
    openvino_precision: str = "f32",
    calibration_texts: Sequence[Any] | None = None,
) -> None:
    from .onnx_int8 import INT8_MATMUL_OPS

    if format not in FORMATS:
        raise HfCompressError(f"format must be one of {FORMATS}, got {format!r}")
    if calibration_texts is not None:
        check_int8_activations_request(format)
        if len(calibration_texts) == 0:
            raise HfCompressError("static int8 activations need at least one calibration text")
    _require_onnx()
    if format == "openvino":
        if quantize is not None:
            # OpenVINO's ONNX reader would turn ONNX Runtime's int8 MatMulInteger weights into
            # int32 constants: larger than the float model's.
            raise HfCompressError(
                "--quantize int8 is ONNX Runtime's re-quantization, for --format onnx; with "
                "--format openvino, export the checkpoint as stored (a recipe's int8 stays int8)"
            )
        check_precision(openvino_precision)
        require_openvino()
    if quantize not in (None, *QUANTIZE_CHOICES):
        raise HfCompressError(
            f"quantize must be one of {QUANTIZE_CHOICES} or None, got {quantize!r}"
        )
    if int8_matmul not in (None, *INT8_MATMUL_OPS):
        raise HfCompressError(
            f"int8_matmul must be one of {INT8_MATMUL_OPS} or None, got {int8_matmul!r}"
        )
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"{output_dir} exists and is not empty; choose another --out or pass --overwrite"
        )


def export_model(
    model: PreTrainedModel,
    tokenizer: Any,
    output_dir: str | Path,
    *,
    source: str = "",
    quantize: str | None = None,
    opset: int = 18,
    overwrite: bool = False,
    int8_matmul: str | None = None,
    format: str = "onnx",
    openvino_precision: str = "f32",
    calibration_texts: Sequence[str | tuple[str, str]] | None = None,
    calibration_max_length: int = CALIBRATION_MAX_LENGTH,
) -> dict[str, Any]:
    """`export_onnx` for a model already loaded (changed in place: its storage layers are
    replaced by their export forms). `source` names it in `onnx_export.json`; the other arguments
    are `export_onnx`'s."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from .onnx_int8 import INT8_MATMUL_DEFAULT, OPENVINO_INT8_MATMUL, translation_table

    _check_request(
        quantize, int8_matmul, output_dir, overwrite, format, openvino_precision, calibration_texts
    )
    output_dir = Path(output_dir)
    int8_matmul = int8_matmul or (
        OPENVINO_INT8_MATMUL if format == "openvino" else INT8_MATMUL_DEFAULT
    )
    model = model.eval()
    _refuse_bitsandbytes(model)
    if quantize == "int8" and holds_int8_linear(model):
        raise HfCompressError(
            f"{source or 'the model'} already holds int8 Linear layers and the export keeps the "
            "recipe's int8 (its own weights and scales): drop --quantize int8"
        )
    names = _input_names(model, tokenizer)
    batches = []
    for texts in CHECK_TEXTS:
        encoded = tokenizer(list(texts), padding=True, return_tensors="pt")
        zeros = torch.zeros_like(encoded["input_ids"])
        batches.append({n: encoded[n] if n in encoded else zeros for n in names})
    with torch.no_grad():
        # The reference is the model as PyTorch runs it, int8 kernels included.
        reference = [model(**inputs).logits.float().numpy() for inputs in batches]
    rounding_effect = 0.0
    if quantize is None and holds_int8_linear(model):
        float_model = float_model_for_export(copy.deepcopy(model))
        with torch.no_grad():
            rounding_effect = max(
                float(np.abs(float_model(**inputs).logits.float().numpy() - want).max())
                for inputs, want in zip(batches, reference, strict=True)
            )
        del float_model
    # Also with quantize="int8" (no int8 Linear layers then): quantized embeddings stay as
    # stored, ONNX Runtime quantizes the float MatMuls.
    model, layers = int8_model_for_export(model)

    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    staging = output_dir.with_name(f"{output_dir.name}.partial-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    try:
        float_path = staging / (ONNX_FILE if quantize is None else "model-float32.onnx")
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # The exporter notes that batch and sequence axes shared by several inputs keep
                # one name: expected here, and not something the user can act on.
                warnings.filterwarnings("ignore", message=".*will not be used, since it shares")
                # torch's own exporter calling an API it deprecated: nothing for the user to do.
                warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)
                torch.onnx.export(
                    model,
                    args=(),
                    kwargs=batches[0],
                    f=str(float_path),
                    input_names=names,
                    output_names=["logits"],
                    dynamic_shapes={n: {0: batch, 1: sequence} for n in names},
                    opset_version=opset,
                    external_data=False,
                    dynamo=True,
                    custom_translation_table=translation_table(int8_matmul),
                    verbose=False,
                )
        except (
            Exception
        ) as error:  # the exporter raises many unrelated types; name the model and the step
            raise HfCompressError(
                f"torch.onnx.export could not export {source} ({type(error).__name__}: "
                f"{str(error)[:300]}); a custom layer without an ONNX translation is the usual "
                "cause"
            ) from error
        _strip_debug_info(float_path)
        try:  # the ONNX specification's own checks (types, shapes, opset) before the runtime's
            onnx.checker.check_model(str(float_path), full_check=True)
        except onnx.checker.ValidationError as error:
            raise HfCompressError(
                f"the exported graph of {source or 'the model'} is not valid ONNX: "
                f"{str(error)[:300]}"
            ) from error
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic
            from onnxruntime.quantization.shape_inference import quant_pre_process

            # ONNX Runtime's recommended preparation (shape inference, graph optimization) first.
            prepared = staging / "model-prepared.onnx"
            quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
            quantize_dynamic(
                str(prepared),
                str(staging / ONNX_FILE),
                weight_type=QuantType.QInt8,
                per_channel=True,
                nodes_to_exclude=_nodes_reading(prepared, layers["quantized_embeddings"]),
            )
            float_path.unlink()
            prepared.unlink()
        session = ort.InferenceSession(str(staging / ONNX_FILE), providers=["CPUExecutionProvider"])
        max_diff = 0.0
        for inputs, want in zip(batches, reference, strict=True):
            got = session.run(None, {n: inputs[n].numpy() for n in names})[0]
            max_diff = max(max_diff, float(np.abs(got - want).max()))
        largest = max(float(np.abs(want).max()) for want in reference)
        if quantize == "int8":
            tolerance = REQUANTIZED_TOLERANCE * max(1.0, largest)
        else:
            tolerance = FLOAT_TOLERANCE + INT8_ROUNDING_FACTOR * rounding_effect
        if not max_diff <= tolerance:
            raise HfCompressError(
                f"the exported graph's logits differ from PyTorch's by {max_diff:.3g} (tolerance "
                f"{tolerance:.3g}); the model has an operation the exporter does not translate "
                "faithfully"
            )
        model.config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        info = {
            "source": source,
            "format": "onnx",
            "quantize": quantize,
            "opset": opset,
            "inputs": names,
            "size_bytes": (staging / ONNX_FILE).stat().st_size,
            "max_abs_logit_diff_vs_pytorch": max_diff,
            "tolerance": tolerance,
            "tolerance_rule": (
                REQUANTIZED_TOLERANCE_RULE
                if quantize == "int8"
                else f"{FLOAT_TOLERANCE} + {INT8_ROUNDING_FACTOR} x pytorch_int8_rounding_effect"
            ),
            "pytorch_int8_rounding_effect": rounding_effect,
            "checked_batches": [len(texts) for texts in CHECK_TEXTS],
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
        }
        if format == "openvino":
            info["onnxruntime_max_abs_logit_diff"] = max_diff
            calibration = None
            if calibration_texts is not None:
                calibration = calibration_feeds(
                    tokenizer, names, calibration_texts, calibration_max_length
                )
                tolerance = REQUANTIZED_TOLERANCE * max(1.0, largest)
                info["tolerance"] = tolerance
                info["tolerance_rule"] = REQUANTIZED_TOLERANCE_RULE
            info.update(
                _convert_to_openvino(
                    staging, names, batches, reference, tolerance, openvino_precision, calibration
                )
            )
        info["int8_matmul"] = int8_matmul if layers["int8_linear"] else None
        info["layers"] = {
            "int8_linear": len(layers["int8_linear"]),
            "float_linear": layers["float_linear"],
            "quantized_embeddings": layers["quantized_embeddings"],
        }
        (staging / EXPORT_MARKER).write_text(json.dumps(info, indent=2))
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info


def _convert_to_openvino(
    staging: Path,
    names: list[str],
    batches: list[dict[str, torch.Tensor]],
    reference: list[Any],
    tolerance: float,
    precision: str = "f32",
    calibration: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Converts the checked `staging/model.onnx` to OpenVINO IR in `staging` (with static int8
    activations calibrated on `calibration`'s inputs, when given), checks the IR's logits against
    PyTorch's with `tolerance` and removes the ONNX file; returns what changes in
    `onnx_export.json`."""
    import numpy as np

    from .openvino_ir import convert_onnx_to_ir, openvino_version

    onnx_path = staging / ONNX_FILE
    parameters = onnx_weight_numel(onnx_path)
    size = convert_onnx_to_ir(onnx_path, staging)
    int8_activations = None
    if calibration is not None:
        int8_activations = quantize_activations_int8(staging, calibration)
        size = ir_bytes(staging)
    compiled = compile_ir(staging, torch.get_num_threads(), precision)
    max_diff = 0.0
    for inputs, want in zip(batches, reference, strict=True):
        got = run_compiled(compiled, {n: inputs[n].numpy() for n in names})
        max_diff = max(max_diff, float(np.abs(got - want).max()))
    if not max_diff <= tolerance:
        raise HfCompressError(
            f"the OpenVINO IR's logits differ from PyTorch's by {max_diff:.3g} (tolerance "
            f"{tolerance:.3g}, the ONNX graph's passed, precision {precision}"
            f"{', static int8 activations' if calibration is not None else ''}); export with "
            "--openvino-precision f32, without --int8-activations, or with --format onnx instead"
        )
    onnx_path.unlink()
    return {
        "format": "openvino",
        "size_bytes": size,
        "max_abs_logit_diff_vs_pytorch": max_diff,
        "openvino": openvino_version(),
        "openvino_precision": precision,
        "int8_activations": int8_activations,
        "parameters": {"total": parameters[0], "nonzero": parameters[1]},
    }


def load_export(directory: str | Path) -> ExportedSequenceClassifier:
    """An export directory (ONNX or OpenVINO) as a model with a transformers call signature."""
    if export_format(directory) == "openvino":
        return OpenVinoSequenceClassifier(directory)
    return OnnxSequenceClassifier(directory)


def load_export_for_task(directory: str | Path, task: Any) -> ExportedSequenceClassifier:
    """An export as a model for a GLUE task; an error if its labels do not fit the task."""
    model = load_export(directory)
    if model.config.num_labels != task.num_labels:
        raise CheckpointError(
            f"{directory} was exported with {model.config.num_labels} labels but {task.name} has "
            f"{task.num_labels}; export a model fine-tuned for this task"
        )
    return model


class ExportedSequenceClassifier(nn.Module):
    """An exported model run by its runtime behind the call signature of a transformers model, so
    `evaluate_task`, `measure_latency` and `bench` measure it like any other. Subclasses give
    `input_names` and `run(feed) -> logits`."""

    expected_format = ""
    model_file = ""

    def __init__(self, directory: str | Path) -> None:
        super().__init__()
        directory = Path(directory)
        if export_format(directory) != self.expected_format:
            raise CheckpointError(
                f"{directory} is not an {FORMAT_NAMES[self.expected_format]} export (no "
                f"{self.model_file} / {EXPORT_MARKER}); run `hf-compress export` first"
            )
        self.directory = directory
        self.info = json.loads((directory / EXPORT_MARKER).read_text())
        self.config = AutoConfig.from_pretrained(directory)
        self.input_names: list[str] = []

    def run(self, feed: dict[str, Any]) -> Any:
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, **inputs: torch.Tensor) -> SequenceClassifierOutput:
        inputs["input_ids"] = input_ids
        feed = {}
        for name in self.input_names:
            value = inputs.get(name)
            feed[name] = (value if value is not None else torch.zeros_like(input_ids)).cpu().numpy()
        return SequenceClassifierOutput(logits=torch.from_numpy(self.run(feed)))

    def save_pretrained(self, directory: str | Path) -> None:
        """Copies the export (so `evaluation.model_figures` can measure bytes on disk like any
        model)."""
        shutil.copytree(self.directory, directory, dirs_exist_ok=True)


def onnx_weight_numel(path: Path) -> tuple[int, int]:
    """(total, non-zero) elements of an ONNX graph's weights, int8 or float (quantization
    scales, zero points, embedding offsets and integer shape constants left out), so parameter
    counts compare with PyTorch's."""
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper

    weight_types = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT8, TensorProto.UINT8}
    total = nonzero = 0
    for tensor in onnx.load(str(path)).graph.initializer:
        if (
            tensor.data_type not in weight_types
            or tensor.name.endswith(("_scale", "_zero_point", ".scale", ".offset"))
            or not tensor.dims
        ):
            continue
        values = numpy_helper.to_array(tensor)
        if tensor.name.endswith(".qweight") and tensor.data_type == TensorProto.UINT8:
            values = np.stack((values & 0x0F, values >> 4))  # two 4-bit codes per byte
        total += values.size
        nonzero += int((values != 0).sum())
    return total, nonzero


class OnnxSequenceClassifier(ExportedSequenceClassifier):
    """An ONNX export run by ONNX Runtime.

    Args:
        directory: a directory written by `export_onnx`.
        num_threads: ONNX Runtime intra-op threads (default: `torch.get_num_threads()`, so PyTorch
            and ONNX Runtime are timed with the same number of cores).
        allow_spinning: let ONNX Runtime's threads busy-wait for more work after each run (its
            own default, a little faster alone). Off here, because hf-compress times models in
            turn in one process (round-robin): spinning threads take the cores from the others
            (measured: PyTorch int8 at batch 1 took 5x longer beside a spinning session).
    """

    expected_format = "onnx"
    model_file = ONNX_FILE

    def __init__(
        self, directory: str | Path, num_threads: int | None = None, allow_spinning: bool = False
    ) -> None:
        super().__init__(directory)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        if not allow_spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(self.directory / ONNX_FILE), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own untyped errors for a corrupt file
            raise CheckpointError(
                f"{self.directory / ONNX_FILE} could not be loaded by ONNX Runtime ({error}); "
                "export it again"
            ) from error
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feed: dict[str, Any]) -> Any:
        return self.session.run(None, feed)[0]

    def compressed_numel(self) -> tuple[int, int]:
        """(total, non-zero) weight elements of the graph (`onnx_weight_numel`)."""
        return onnx_weight_numel(self.directory / ONNX_FILE)


class OpenVinoSequenceClassifier(ExportedSequenceClassifier):
    """An OpenVINO export run by the OpenVINO runtime (CPU, latency hint, the precision it was
    checked in).

    Args:
        directory: a directory written by `export_onnx(..., format="openvino")`.
        num_threads: OpenVINO inference threads (default: `torch.get_num_threads()`).
        precision: OpenVINO's inference precision, "f32" or "bf16" (default: the one the export
            was checked in, f32).
    """

    expected_format = "openvino"
    model_file = OPENVINO_XML

    def __init__(
        self, directory: str | Path, num_threads: int | None = None, precision: str | None = None
    ) -> None:
        super().__init__(directory)
        require_openvino()
        self.compiled = compile_ir(
            self.directory,
            num_threads or torch.get_num_threads(),
            precision or self.info.get("openvino_precision", "f32"),
        )
        self.input_names = ir_input_names(self.compiled)

    def run(self, feed: dict[str, Any]) -> Any:
        return run_compiled(self.compiled, feed)

    def compressed_numel(self) -> tuple[int, int]:
        """(total, non-zero) weight elements of the ONNX graph the IR was converted from, counted
        at export (the IR's constants carry no names to tell weights from scales)."""
        parameters = self.info["parameters"]
        return parameters["total"], parameters["nonzero"]
