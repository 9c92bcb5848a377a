"""Export a compressed model to ONNX, optionally int8-quantized by ONNX Runtime, and run it.

Structural compression (fewer heads, narrower FFN, fewer layers, factorized layers, a smaller
vocabulary) carries over to the graph as is. Storage formats that only PyTorch knows (int8 codes
+ scales, packed sparse bitmasks, clustering codebooks, quantized embedding rows) are expanded
to the float weights they stand for first; `quantize="int8"` then lets ONNX Runtime re-quantize
every MatMul and the embeddings (Gather) with its own kernels. The export is the public
`torch.onnx.export` (dynamo) and quantization is `onnxruntime.quantization.quantize_dynamic`:
nothing here re-implements an exporter or a kernel.

    hf-compress export outputs/quickstart --out outputs/quickstart-onnx --quantize int8
    hf-compress bench outputs/quickstart-onnx --task sst2
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from ..errors import CheckpointError, HfCompressError, OutputExistsError

ONNX_FILE = "model.onnx"

EXPORT_MARKER = "onnx_export.json"

QUANTIZE_CHOICES = ("int8",)


def is_onnx_export(path: str | Path) -> bool:
    """Whether `path` is a directory written by `export_onnx`."""
    path = Path(path)
    return path.is_dir() and (path / ONNX_FILE).is_file() and (path / EXPORT_MARKER).is_file()


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


def float_model_for_export(model: PreTrainedModel) -> PreTrainedModel:
    """`model` (changed in place) with every compressed storage module replaced by its float
    equivalent.

    Raises:
        HfCompressError: the model holds bitsandbytes layers (their kernels have no ONNX form).
    """
    for name, module in model.named_modules():
        if type(module).__module__.startswith("bitsandbytes"):
            raise HfCompressError(
                f"cannot export {name!r} ({type(module).__name__}): bitsandbytes layers run only "
                "in bitsandbytes' kernels and have no ONNX form; export the model before its "
                "bitsandbytes stage and pass --quantize int8 to let ONNX Runtime quantize it "
                "instead"
            )
    replacements = [(name, _float_equivalent(module)) for name, module in model.named_modules()]
    for name, replacement in replacements:
        if replacement is None:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, replacement)
    return model.float().eval()


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


def export_onnx(
    source: str,
    output_dir: str | Path,
    *,
    quantize: str | None = None,
    opset: int = 18,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Exports a sequence-classification model (compressed or plain) to `output_dir/model.onnx`.

    Args:
        source: a model directory written by `hf-compress run` / `save_pretrained`, or a Hub id.
        output_dir: the export directory: `model.onnx`, the tokenizer, `config.json` and
            `onnx_export.json` (what was exported, how, and the check against PyTorch).
        quantize: None (float32 graph) or "int8": ONNX Runtime dynamic quantization of every
            MatMul (per output channel) and of the embeddings.
        opset: ONNX opset of the exported graph.
        overwrite: replace a non-empty `output_dir`.

    Returns:
        The contents of `onnx_export.json`.

    Raises:
        OutputExistsError: `output_dir` exists and is not empty, without `overwrite`.
        HfCompressError: missing ONNX packages, an unknown `quantize`, bitsandbytes layers, or a
            graph whose outputs differ from PyTorch's.
    """
    import numpy as np
    import onnxruntime as ort

    from .loading import load_checked_tokenizer, load_compressed
    from .sources import resolve_model_source

    _require_onnx()
    if quantize not in (None, *QUANTIZE_CHOICES):
        raise HfCompressError(
            f"quantize must be one of {QUANTIZE_CHOICES} or None, got {quantize!r}"
        )
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"{output_dir} exists and is not empty; choose another --out or pass --overwrite"
        )
    checkpoint = resolve_model_source(source)
    tokenizer = load_checked_tokenizer(checkpoint)
    model = float_model_for_export(load_compressed(checkpoint, "sequence-classification"))
    names = _input_names(model, tokenizer)

    sample = tokenizer(
        ["a short example sentence", "and another, longer one, to make two lengths"],
        padding=True,
        return_tensors="pt",
    )
    inputs = {n: sample[n] if n in sample else torch.zeros_like(sample["input_ids"]) for n in names}
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    staging = output_dir.with_name(f"{output_dir.name}.partial-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    try:
        float_path = staging / (ONNX_FILE if quantize is None else "model-float32.onnx")
        try:
            with torch.no_grad():
                torch.onnx.export(
                    model,
                    args=(),
                    kwargs=inputs,
                    f=str(float_path),
                    input_names=names,
                    output_names=["logits"],
                    dynamic_shapes={n: {0: batch, 1: sequence} for n in names},
                    opset_version=opset,
                    external_data=False,
                    dynamo=True,
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
            )
            float_path.unlink()
            prepared.unlink()
        # The graph must compute what PyTorch computes (to rounding, or to int8 error when
        # quantized).
        with torch.no_grad():
            reference = model(**inputs).logits.float().numpy()
        session = ort.InferenceSession(str(staging / ONNX_FILE), providers=["CPUExecutionProvider"])
        exported = session.run(None, {n: inputs[n].numpy() for n in names})[0]
        max_diff = float(np.abs(exported - reference).max())
        tolerance = 1e-3 if quantize is None else 0.25 * max(1.0, float(np.abs(reference).max()))
        if not max_diff <= tolerance:
            raise HfCompressError(
                f"the exported graph's logits differ from PyTorch's by {max_diff:.3g} (tolerance "
                f"{tolerance:.3g}); the model has an operation the exporter does not translate "
                "faithfully"
            )
        model.config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        info = {
            "source": str(source),
            "format": "onnx",
            "quantize": quantize,
            "opset": opset,
            "inputs": names,
            "max_abs_logit_diff_vs_pytorch": max_diff,
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
        }
        (staging / EXPORT_MARKER).write_text(json.dumps(info, indent=2))
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info


def load_onnx_for_task(directory: str | Path, task: Any) -> OnnxSequenceClassifier:
    """An ONNX export as a model for a GLUE task; an error if its labels do not fit the task."""
    model = OnnxSequenceClassifier(directory)
    if model.config.num_labels != task.num_labels:
        raise CheckpointError(
            f"{directory} was exported with {model.config.num_labels} labels but {task.name} has "
            f"{task.num_labels}; export a model fine-tuned for this task"
        )
    return model


class OnnxSequenceClassifier(nn.Module):
    """An exported model run by ONNX Runtime behind the call signature of a transformers model,
    so `evaluate_task`, `measure_latency` and `bench` measure it like any other.

    Args:
        directory: a directory written by `export_onnx`.
        num_threads: ONNX Runtime intra-op threads (default: `torch.get_num_threads()`, so PyTorch
            and ONNX Runtime are timed with the same number of cores).
    """

    def __init__(self, directory: str | Path, num_threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        directory = Path(directory)
        if not is_onnx_export(directory):
            raise CheckpointError(
                f"{directory} is not an ONNX export (no {ONNX_FILE} / {EXPORT_MARKER}); run "
                "`hf-compress export` first"
            )
        self.directory = directory
        self.info = json.loads((directory / EXPORT_MARKER).read_text())
        self.config = AutoConfig.from_pretrained(directory)
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(directory / ONNX_FILE), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own untyped errors for a corrupt file
            raise CheckpointError(
                f"{directory / ONNX_FILE} could not be loaded by ONNX Runtime ({error}); export it "
                "again"
            ) from error
        self.input_names = [i.name for i in self.session.get_inputs()]

    def forward(self, input_ids: torch.Tensor, **inputs: torch.Tensor) -> SequenceClassifierOutput:
        inputs["input_ids"] = input_ids
        feed = {}
        for name in self.input_names:
            value = inputs.get(name)
            feed[name] = (value if value is not None else torch.zeros_like(input_ids)).cpu().numpy()
        return SequenceClassifierOutput(logits=torch.from_numpy(self.session.run(None, feed)[0]))

    def compressed_numel(self) -> tuple[int, int]:
        """(total, non-zero) elements of the graph's weights, int8 or float (quantization scales and
        zero points and integer shape constants left out), so parameter counts compare with
        PyTorch's."""
        import onnx
        from onnx import TensorProto, numpy_helper

        weight_types = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT8, TensorProto.UINT8}
        total = nonzero = 0
        for tensor in onnx.load(str(self.directory / ONNX_FILE)).graph.initializer:
            if (
                tensor.data_type not in weight_types
                or tensor.name.endswith(("_scale", "_zero_point"))
                or not tensor.dims
            ):
                continue
            values = numpy_helper.to_array(tensor)
            total += values.size
            nonzero += int((values != 0).sum())
        return total, nonzero

    def save_pretrained(self, directory: str | Path) -> None:
        """Copies the export (so `evaluation.model_figures` can measure bytes on disk like any
        model)."""
        shutil.copytree(self.directory, directory, dirs_exist_ok=True)
