"""Peer benchmark: optimum-intel / OpenVINO int8 against hf_compress's own int8 results.

Compares the Intel stack (optimum-intel's `OVModelForSequenceClassification` export, NNCF int8
quantization through `OVQuantizer`, OpenVINO runtime on CPU) with hf_compress's int8 recipes on
SST-2: the same fine-tuned teacher, quantized post-training (static int8 weights and activations
calibrated on `--calibration-samples` SST-2 training sentences, and int8 weight-only), measured
in one process side by side with the fp32 PyTorch teacher and the fp32 OpenVINO export: dev
accuracy on all 872 sentences (max length 64), bytes of the model files on disk, and CPU latency
at batch 1 and 32 x sequence 128 (random token ids, every position attended, 2 threads, 2 warm-up
runs, then median / p10 / p90 of 10 runs), the same method as `hf_compress.evaluation.measure`.

It runs in its own virtual environment (`$PEER_VENV`, installed as BENCHMARKS.md says: torch
2.13.0, optimum-intel with OpenVINO and NNCF) because optimum-intel pins an older transformers
(<5.6) than the project's 5.24. For that reason it does not import hf_compress: the GLUE dev file
is read directly, and the latency function below follows
`hf_compress.evaluation.measure.measure_latency` step by step.

    $PEER_VENV/bin/python benchmarks/peer_openvino_int8.py \
        --teacher outputs/teachers/minilm-sst2 --out bench_out/peers/openvino_int8.json
"""

from __future__ import annotations

import argparse
import csv
import gc
import importlib.metadata
import json
import logging
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, BertForSequenceClassification

logger = logging.getLogger("peer_openvino_int8")

MODEL_FILE_SUFFIXES = (".xml", ".bin", ".safetensors", ".onnx")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--teacher",
        default="outputs/teachers/minilm-sst2",
        help="fine-tuned BertForSequenceClassification directory",
    )
    parser.add_argument("--glue-dir", help="GLUE folder (default: $HF_COMPRESS_GLUE_DIR)")
    parser.add_argument(
        "--calibration-samples",
        type=int,
        default=300,
        help="SST-2 training sentences for static int8 calibration",
    )
    parser.add_argument(
        "--no-weight-only", action="store_true", help="skip the int8 weight-only variant"
    )
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--max-eval-samples", type=int, help="default: all 872 SST-2 dev sentences")
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--latency-seq-len", type=int, default=128)
    parser.add_argument("--latency-warmup", type=int, default=2)
    parser.add_argument("--latency-runs", type=int, default=10)
    parser.add_argument(
        "--settle-s", type=float, default=2.0, help="pause before timing each OpenVINO variant"
    )
    parser.add_argument(
        "--save-dir",
        default="bench_out/peers/openvino_model",
        help="fp32/, int8/ and int8-weight-only/ go here",
    )
    parser.add_argument("--out", default="bench_out/peers/openvino_int8.json")
    return parser.parse_args(argv)


# Data ----------------------------------------------------------------------------------------


def glue_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if os.environ.get("HF_COMPRESS_GLUE_DIR"):
        return Path(os.environ["HF_COMPRESS_GLUE_DIR"])
    raise SystemExit(
        "no GLUE folder given: pass --glue-dir or set HF_COMPRESS_GLUE_DIR "
        "(the folder holding SST-2/train.tsv and SST-2/dev.tsv)"
    )


def read_sst2(path: Path) -> tuple[list[str], list[int]]:
    """(sentences, labels) of an SST-2 TSV, read like hf_compress (tab-separated, no quoting, BOM
    stripped)."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, rows = rows[0], [r for r in rows[1:] if r]
    text, label = header.index("sentence"), header.index("label")
    return [r[text] for r in rows], [int(r[label]) for r in rows]


# Measurement ---------------------------------------------------------------------------------


def accuracy(
    model: Callable[..., Any],
    tokenizer: Any,
    sentences: list[str],
    labels: list[int],
    max_len: int,
    batch_size: int,
) -> float:
    """Dev accuracy; each batch padded to its longest sentence (as DataCollatorWithPadding does)."""
    predictions: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(sentences), batch_size):
            batch = tokenizer(
                sentences[start : start + batch_size],
                truncation=True,
                max_length=max_len,
                padding=True,
                return_tensors="pt",
            )
            logits = model(**batch).logits
            predictions.append(
                np.asarray(
                    logits.float().numpy() if isinstance(logits, torch.Tensor) else logits
                ).argmax(-1)
            )
    return float((np.concatenate(predictions) == np.asarray(labels)).mean())


def measure_latency(
    model: Callable[..., Any],
    vocab_size: int,
    batch_sizes: list[int],
    seq_len: int,
    warmup: int,
    runs: int,
) -> dict[str, dict[str, float]]:
    """Milliseconds per forward pass: the method of `hf_compress.evaluation.measure.measure_latency`
    (random ids seeded by the batch size, all positions attended, warm-up runs, then median / p10 /
    p90)."""
    results: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        for batch in batch_sizes:
            generator = torch.Generator().manual_seed(batch)
            ids = torch.randint(5, vocab_size, (batch, seq_len), generator=generator)
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            for _ in range(warmup):
                model(**inputs)
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                model(**inputs)
                times.append((time.perf_counter() - start) * 1000)
            times.sort()
            results[str(batch)] = {
                "median": statistics.median(times),
                "p10": times[max(0, int(0.1 * len(times)))],
                "p90": times[min(len(times) - 1, int(0.9 * len(times)))],
                "runs": runs,
            }
    return results


def files_bytes(directory: Path) -> dict[str, int]:
    return {
        p.name: p.stat().st_size
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name.endswith(MODEL_FILE_SUFFIXES)
    }


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in ("torch", "transformers", "openvino", "optimum", "optimum-intel", "nncf"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


# OpenVINO ------------------------------------------------------------------------------------


def calibration_items(
    tokenizer: Any,
    sentences: list[str],
    count: int,
    max_len: int,
    seed: int,
    input_names: list[str],
) -> list[dict[str, np.ndarray]]:
    """`count` training sentences (a seeded random sample), one unpadded sequence per item."""
    chosen = random.Random(seed).sample(sentences, min(count, len(sentences)))
    items = []
    for sentence in chosen:
        encoded = tokenizer(sentence, truncation=True, max_length=max_len, return_tensors="np")
        items.append({name: encoded[name].astype(np.int64) for name in input_names})
    return items


def quantize(
    fp32_dir: Path, out_dir: Path, config: Any, calibration: list[dict[str, np.ndarray]] | None
) -> float:
    """Quantizes the saved fp32 IR with OVQuantizer and saves it to `out_dir`; returns the seconds
    taken."""
    import nncf
    from optimum.intel import OVConfig, OVModelForSequenceClassification, OVQuantizer

    model = OVModelForSequenceClassification.from_pretrained(
        str(fp32_dir), export=False, compile=False
    )
    started = time.perf_counter()
    quantizer = OVQuantizer.from_pretrained(model)
    dataset = nncf.Dataset(calibration) if calibration is not None else None
    quantizer.quantize(
        calibration_dataset=dataset,
        ov_config=OVConfig(quantization_config=config),
        save_directory=out_dir,
    )
    return time.perf_counter() - started


def quantized_ops(xml_path: Path) -> dict[str, int]:
    """How many FakeQuantize / int8 constants the IR holds (evidence of what was quantized)."""
    text = xml_path.read_text()
    return {
        "FakeQuantize": text.count('type="FakeQuantize"'),
        "FakeConvert": text.count('type="FakeConvert"'),
        "i8_or_u8_constants": text.count('element_type="i8"') + text.count('element_type="u8"'),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    from optimum.intel import (
        OVModelForSequenceClassification,
        OVQuantizationConfig,
        OVWeightQuantizationConfig,
    )

    data = glue_dir(args.glue_dir)
    dev_sentences, dev_labels = read_sst2(data / "SST-2" / "dev.tsv")
    if args.max_eval_samples is not None:
        dev_sentences, dev_labels = (
            dev_sentences[: args.max_eval_samples],
            dev_labels[: args.max_eval_samples],
        )
    train_sentences, _ = read_sst2(data / "SST-2" / "train.tsv")
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    save_dir = Path(args.save_dir)
    fp32_dir, int8_dir, wo_dir = save_dir / "fp32", save_dir / "int8", save_dir / "int8-weight-only"
    ov_config = {"INFERENCE_NUM_THREADS": str(args.threads), "PERFORMANCE_HINT": "LATENCY"}
    errors: dict[str, str] = {}

    # The PyTorch teacher first, before OpenVINO starts its own worker threads in this process.
    results: dict[str, dict[str, Any]] = {}
    latency_args = (
        args.latency_batch_sizes,
        args.latency_seq_len,
        args.latency_warmup,
        args.latency_runs,
    )
    teacher = BertForSequenceClassification.from_pretrained(args.teacher)
    teacher.eval()
    vocab = teacher.config.vocab_size
    with tempfile.TemporaryDirectory() as tmp:
        teacher.save_pretrained(tmp)
        teacher_files = files_bytes(Path(tmp))
    logger.info("measuring the PyTorch fp32 teacher")
    results["pytorch_fp32"] = {
        "name": "teacher (PyTorch fp32)",
        "accuracy": accuracy(
            teacher, tokenizer, dev_sentences, dev_labels, args.max_seq_length, args.eval_batch_size
        ),
        "num_parameters": sum(p.numel() for p in teacher.parameters()),
        "files_bytes": teacher_files,
        "size_bytes": sum(teacher_files.values()),
        "latency_ms": measure_latency(teacher, vocab, *latency_args),
    }
    del teacher
    gc.collect()

    # Export and quantize ---------------------------------------------------------------------
    export_started = time.perf_counter()
    exported = OVModelForSequenceClassification.from_pretrained(
        args.teacher, export=True, compile=False, load_in_8bit=False
    )
    exported.save_pretrained(fp32_dir)
    tokenizer.save_pretrained(fp32_dir)
    export_time = time.perf_counter() - export_started
    input_names = list(exported.input_names)
    del exported
    logger.info("exported to %s in %.1f s (inputs %s)", fp32_dir, export_time, input_names)

    calibration = calibration_items(
        tokenizer,
        train_sentences,
        args.calibration_samples,
        args.max_seq_length,
        args.seed,
        input_names,
    )
    variants: dict[str, dict[str, Any]] = {}
    static_config = OVQuantizationConfig(bits=8, num_samples=len(calibration))
    try:
        seconds = quantize(fp32_dir, int8_dir, static_config, calibration)
        tokenizer.save_pretrained(int8_dir)
        variants["openvino_int8_static"] = {
            "dir": int8_dir,
            "quantize_time_s": seconds,
            "config": static_config.to_dict(),
        }
    except Exception as exc:
        errors["openvino_int8_static"] = f"{type(exc).__name__}: {exc}"
        logger.exception("static int8 quantization failed")
    if not args.no_weight_only:
        weight_config = OVWeightQuantizationConfig(bits=8)
        try:
            seconds = quantize(fp32_dir, wo_dir, weight_config, None)
            tokenizer.save_pretrained(wo_dir)
            variants["openvino_int8_weight_only"] = {
                "dir": wo_dir,
                "quantize_time_s": seconds,
                "config": weight_config.to_dict(),
            }
        except Exception as exc:
            errors["openvino_int8_weight_only"] = f"{type(exc).__name__}: {exc}"
            logger.exception("int8 weight-only quantization failed")

    # Measure the OpenVINO variants, one after the other in this process ---------------------
    for key, info in [("openvino_fp32", {"dir": fp32_dir}), *variants.items()]:
        logger.info("measuring %s", key)
        time.sleep(args.settle_s)  # let the worker threads of the previous variant go idle
        model = OVModelForSequenceClassification.from_pretrained(
            str(info["dir"]), export=False, ov_config=ov_config
        )
        files = files_bytes(info["dir"])
        results[key] = {
            "name": key,
            "dir": str(info["dir"]),
            "accuracy": accuracy(
                model,
                tokenizer,
                dev_sentences,
                dev_labels,
                args.max_seq_length,
                args.eval_batch_size,
            ),
            "files_bytes": files,
            "size_bytes": sum(files.values()),
            "ir_ops": quantized_ops(Path(info["dir"]) / "openvino_model.xml"),
            "latency_ms": measure_latency(model, vocab, *latency_args),
            **{k: v for k, v in info.items() if k != "dir"},
        }
        del model
        gc.collect()

    base = results["pytorch_fp32"]
    for entry in results.values():
        entry["accuracy_delta_pt"] = 100 * (entry["accuracy"] - base["accuracy"])
        entry["size_ratio"] = base["size_bytes"] / entry["size_bytes"]
        entry["speedup"] = {
            b: base["latency_ms"][b]["median"] / v["median"] for b, v in entry["latency_ms"].items()
        }

    report: dict[str, Any] = {
        "peer": "optimum-intel / OpenVINO",
        "versions": versions(),
        "teacher_dir": args.teacher,
        "task": "sst2",
        "glue_dir": str(data),
        "eval_samples": len(dev_sentences),
        "max_seq_length": args.max_seq_length,
        "calibration": {
            "samples": len(calibration),
            "source": "SST-2 train.tsv, random.Random(seed).sample",
            "seed": args.seed,
        },
        "ov_config": ov_config,
        "latency_config": {
            "batch_sizes": args.latency_batch_sizes,
            "seq_len": args.latency_seq_len,
            "warmup": args.latency_warmup,
            "runs": args.latency_runs,
            "torch_threads": torch.get_num_threads(),
        },
        "environment": {
            "cpu": cpu_model_name(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "export_time_s": export_time,
        "results": results,
        "errors": errors,
        "total_time_s": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {out}")
    print(
        "| variant | accuracy | Δ pt | size | size ratio | "
        + " | ".join(f"bs={b} ms (speed-up)" for b in args.latency_batch_sizes)
        + " |"
    )
    print("|---|---:|---:|---:|---:|" + "---:|" * len(args.latency_batch_sizes))
    for entry in results.values():
        cells = [
            entry["name"],
            f"{100 * entry['accuracy']:.2f}",
            f"{entry['accuracy_delta_pt']:+.2f}".replace("-", "−"),
            f"{entry['size_bytes'] / 1e6:.1f} MB",
            f"{entry['size_ratio']:.2f}x",
            *(
                f"{entry['latency_ms'][str(b)]['median']:.1f} ({entry['speedup'][str(b)]:.2f}x)"
                for b in args.latency_batch_sizes
            ),
        ]
        print("| " + " | ".join(cells) + " |")
    for key, message in errors.items():
        print(f"{key} FAILED: {message}")


if __name__ == "__main__":
    main()
