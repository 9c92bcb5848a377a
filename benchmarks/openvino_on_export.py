"""OpenVINO as the runtime of hf-compress exports: our compressed model's ONNX graph, run (and
int8-quantized with NNCF) by OpenVINO, measured beside the PyTorch fp32 teacher in one process.

This answers "does our structural compression compose with OpenVINO's runtime?": the pruned
graph comes from `hf-compress export`, the runtime and the int8 step are OpenVINO's / NNCF's.
It runs in the OpenVINO virtualenv (`$PEER_VENV`, see BENCHMARKS.md) and reuses the measurement
functions of benchmarks/peer_openvino_int8.py (the method of `hf_compress.evaluation.measure`).

    $PEER_VENV/bin/python benchmarks/openvino_on_export.py \
        --teacher outputs/teachers/minilm-sst2-full \
        --export bench_out/onnx/minilm-sst2-prune-heads-ffn-50-onnx \
        --out bench_out/peers/openvino_on_export.json

Output: the JSON layout of peer_openvino_int8.py (`results.pytorch_fp32` first), with `"ours": true`
so benchmarks/frontier_with_peers.py reads it as our pipeline, labelled with the export's name.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_openvino_int8 as peer  # noqa: E402  (the sibling script's measurement functions)


class CompiledClassifier:
    """An OpenVINO compiled model behind a transformers-like call (`model(**inputs).logits`)."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.inputs = [i.get_any_name() for i in compiled.inputs]

    def __call__(self, **inputs: torch.Tensor) -> SimpleNamespace:
        ids = inputs["input_ids"]
        feed = {
            n: (inputs[n] if n in inputs else torch.zeros_like(ids)).numpy() for n in self.inputs
        }
        return SimpleNamespace(logits=torch.from_numpy(np.asarray(self.compiled(feed)[0])))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--teacher", required=True, help="fine-tuned teacher (PyTorch fp32 baseline)"
    )
    parser.add_argument(
        "--export", required=True, help="directory written by `hf-compress export` (float32)"
    )
    parser.add_argument("--glue-dir")
    parser.add_argument("--calibration-samples", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    import nncf
    import openvino as ov
    from transformers import AutoTokenizer, BertForSequenceClassification

    data = peer.glue_dir(args.glue_dir)
    dev_sentences, dev_labels = peer.read_sst2(data / "SST-2" / "dev.tsv")
    train_sentences, _ = peer.read_sst2(data / "SST-2" / "train.tsv")
    latency_args = ([1, 32], 128, 2, 10)
    export = Path(args.export)
    name = export.name

    results: dict[str, dict[str, Any]] = {}
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    teacher = BertForSequenceClassification.from_pretrained(args.teacher).eval()
    vocab = teacher.config.vocab_size
    results["pytorch_fp32"] = {
        "name": "teacher (PyTorch fp32)",
        "accuracy": peer.accuracy(teacher, tokenizer, dev_sentences, dev_labels, 64, 64),
        "size_bytes": (Path(args.teacher) / "model.safetensors").stat().st_size,
        "latency_ms": peer.measure_latency(teacher, vocab, *latency_args),
    }
    del teacher
    gc.collect()

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": str(args.threads), "PERFORMANCE_HINT": "LATENCY"}
    export_tokenizer = AutoTokenizer.from_pretrained(export)
    fp32 = core.read_model(str(export / "model.onnx"))
    input_names = [i.get_any_name() for i in fp32.inputs]
    calibration = peer.calibration_items(
        export_tokenizer, train_sentences, args.calibration_samples, 64, args.seed, input_names
    )
    started = time.perf_counter()
    int8 = nncf.quantize(
        fp32,
        nncf.Dataset(calibration),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calibration),
    )
    quantize_time = time.perf_counter() - started

    save_root = Path(args.out).with_suffix("")
    for key, model in (
        (f"{name} + OpenVINO runtime", fp32),
        (f"{name} + OpenVINO NNCF int8 static", int8),
    ):
        directory = save_root / key.replace(" ", "_").replace("+", "and")
        ov.save_model(model, str(directory / "openvino_model.xml"), compress_to_fp16=False)
        time.sleep(2.0)
        compiled = CompiledClassifier(core.compile_model(model, "CPU", config))
        results[key] = {
            "name": key,
            "accuracy": peer.accuracy(
                compiled, export_tokenizer, dev_sentences, dev_labels, 64, 64
            ),
            "size_bytes": sum(
                p.stat().st_size for p in directory.iterdir() if p.suffix in (".xml", ".bin")
            ),
            "latency_ms": peer.measure_latency(compiled, vocab, *latency_args),
        }
        del compiled
        gc.collect()
    report = {
        "ours": True,
        "pipeline": "hf-compress export (ONNX) -> OpenVINO runtime / NNCF int8",
        "export": str(export),
        "teacher_dir": args.teacher,
        "inference_precision_hint": str(core.get_property("CPU", "INFERENCE_PRECISION_HINT")),
        "ov_config": config,
        "calibration_samples": len(calibration),
        "quantize_time_s": quantize_time,
        "versions": peer.versions(),
        "environment": {"cpu": peer.cpu_model_name(), "cpu_count": os.cpu_count()},
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    base = results["pytorch_fp32"]
    for entry in results.values():
        speed = {
            b: base["latency_ms"][b]["median"] / entry["latency_ms"][b]["median"]
            for b in ("1", "32")
        }
        delta_pt = 100 * (entry["accuracy"] - base["accuracy"])
        size_ratio = base["size_bytes"] / entry["size_bytes"]
        median = {b: entry["latency_ms"][b]["median"] for b in ("1", "32")}
        print(
            f"{entry['name']}: acc {100 * entry['accuracy']:.2f} ({delta_pt:+.2f} pt), "
            f"{entry['size_bytes'] / 1e6:.1f} MB ({size_ratio:.2f}x), "
            f"bs1 {median['1']:.1f} ms ({speed['1']:.2f}x), "
            f"bs32 {median['32']:.1f} ms ({speed['32']:.2f}x)"
        )


if __name__ == "__main__":
    main()
