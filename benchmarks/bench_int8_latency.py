"""CPU latency of int8 inference paths on a MiniLM-sized BERT (random weights, inference only).

    python benchmarks/bench_int8_latency.py --threads 2 --batch 32 --seq 128 --runs 5
    # also torchao int8 + torch.compile (slow to start):
    python benchmarks/bench_int8_latency.py --compile

Variants (eager ones timed round-robin in one process so machine load hits them alike):

- `fp32`: the float model.
- `hf_compress int8`: `quantization: int8_dynamic` from this package with its default kernel
  (fbgemm's dynamic int8 GEMM on x86); `(onednn kernel)`: the same checkpoint run by oneDNN's int8
  GEMM (the kernel QAT layers and the fallback use); `(onednn, 7-bit inputs)`: with the reduced
  input range used on CPUs without VNNI, to show what that costs.
- `torch.ao quantize_dynamic`: the deprecated `torch.ao.quantization.quantize_dynamic` on nn.Linear.
- `torchao int8 eager`: torchao `Int8DynamicActivationInt8WeightConfig` without compile.
- with `--compile`: `torchao int8 + compile` and `fp32 + compile`, each in a fresh subprocess
  (dynamo reuses graphs across instances of one class, DESIGN.md section 4), each reporting its own
  fp32 eager time for the ratio.

Prints one JSON object: per variant the median wall-clock latency in ms, the median process CPU
time per forward (all threads; steadier than wall time on a shared machine) and the speed-ups over
fp32 by both, plus the environment (CPU, threads, torch version).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
import warnings
from typing import Any

import torch
from transformers import BertConfig, BertForSequenceClassification

from hf_compress.evaluation.measure import round_robin_latency

MINILM = {
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "vocab_size": 30522,
}


def build_model(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(**MINILM, num_labels=2)).eval()


def inputs(batch: int, seq: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, MINILM["vocab_size"], (batch, seq), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def ours(
    model: torch.nn.Module, reduce_range: bool | None = None, backend: str = "auto"
) -> torch.nn.Module:
    import hf_compress  # noqa: F401
    from hf_compress import compress
    from hf_compress.methods.quantization import modifier as quantization  # noqa: F401  (registers `quantization`)
    from hf_compress.methods.quantization.layers import Int8Linear

    model = compress(copy.deepcopy(model), [{"type": "quantization", "method": "int8_dynamic"}])
    for module in model.modules():
        if isinstance(module, Int8Linear):
            module.reduce_range = reduce_range
            module.backend = backend
    return model


def torch_ao_dynamic(model: torch.nn.Module) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8
        )


def torchao_int8(model: torch.nn.Module) -> torch.nn.Module:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    model = copy.deepcopy(model)
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model


@torch.inference_mode()
def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).logits


def compiled_variant(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Runs one compiled variant in this (fresh) process; returns its median and fp32's."""
    torch.set_num_threads(args.threads)
    base = build_model()
    batch = inputs(args.batch, args.seq)
    model = torchao_int8(base) if name == "torchao int8 + compile" else copy.deepcopy(base)
    started = time.perf_counter()
    compiled = torch.compile(model)
    logits(compiled, batch)  # the cold compile
    compile_s = time.perf_counter() - started
    times = round_robin_latency({"fp32": base, name: compiled}, batch, args.runs, warmup=1)
    return {
        "median_ms": statistics.median(times[name][0]),
        "cpu_ms": statistics.median(times[name][1]),
        "fp32_median_ms_same_process": statistics.median(times["fp32"][0]),
        "fp32_cpu_ms_same_process": statistics.median(times["fp32"][1]),
        "compile_s": round(compile_s, 1),
        "max_abs_logit_diff": float((logits(compiled, batch) - logits(base, batch)).abs().max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile variants (about a minute each)",
    )
    parser.add_argument("--skip", nargs="*", default=[], help="eager variant names to leave out")
    parser.add_argument("--_compiled", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._compiled:
        print(json.dumps(compiled_variant(args._compiled, args)))
        return

    torch.set_num_threads(args.threads)
    base = build_model()
    batch = inputs(args.batch, args.seq)
    builders = {
        "fp32": lambda: base,
        "hf_compress int8": lambda: ours(base),
        "hf_compress int8 (onednn kernel)": lambda: ours(base, backend="onednn"),
        "hf_compress int8 (onednn, 7-bit inputs)": lambda: ours(
            base, reduce_range=True, backend="onednn"
        ),
        "torch.ao quantize_dynamic": lambda: torch_ao_dynamic(base),
        "torchao int8 eager": lambda: torchao_int8(base),
    }
    models = {name: build() for name, build in builders.items() if name not in args.skip}
    reference = logits(base, batch)
    times = round_robin_latency(models, batch, args.runs, args.warmup)
    fp32 = statistics.median(times["fp32"][0]) if "fp32" in times else None
    fp32_cpu = statistics.median(times["fp32"][1]) if "fp32" in times else None
    results: dict[str, Any] = {}
    for name, (wall, cpu) in times.items():
        median, cpu_median = statistics.median(wall), statistics.median(cpu)
        results[name] = {
            "median_ms": round(median, 1),
            "min_ms": round(min(wall), 1),
            "cpu_ms": round(cpu_median, 1),
            "speedup_vs_fp32": round(fp32 / median, 2) if fp32 else None,
            "cpu_speedup_vs_fp32": round(fp32_cpu / cpu_median, 2) if fp32_cpu else None,
            "max_abs_logit_diff": round(
                float((logits(models[name], batch) - reference).abs().max()), 5
            ),
        }
    if args.compile:
        for name in ("torchao int8 + compile", "fp32 + compile"):
            command = [
                sys.executable,
                __file__,
                "--_compiled",
                name,
                "--threads",
                str(args.threads),
                "--batch",
                str(args.batch),
                "--seq",
                str(args.seq),
                "--runs",
                str(args.runs),
            ]
            out = (
                subprocess.run(command, capture_output=True, text=True, check=True)
                .stdout.strip()
                .splitlines()[-1]
            )
            row = json.loads(out)
            row["speedup_vs_fp32"] = round(row["fp32_median_ms_same_process"] / row["median_ms"], 2)
            row["cpu_speedup_vs_fp32"] = round(row["fp32_cpu_ms_same_process"] / row["cpu_ms"], 2)
            results[name] = row

    from hf_compress.evaluation.measure import environment

    print(
        json.dumps(
            {
                "config": vars(args) | {"model": MINILM},
                "environment": environment(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
