"""fbgemm against oneDNN on one saved int8 checkpoint: latency, round-robin in one process.

The int8 kernel is chosen at run time from the same stored tensors (hf_compress/quantized_linear.py),
so one loaded model can be timed with each: every round runs each kernel once per batch size, in
turn, so machine load hits them alike (after an untimed forward: a layer re-packs its weight
when its kernel changes). Random token ids, sequence length `--seq`; prints JSON with
the median milliseconds per kernel and batch size, and the environment.

    python scripts/int8_kernel_check.py outputs/quickstart --rounds 15
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from hf_compress.measure import environment
from hf_compress.quant_loading import load_model_for_eval
from hf_compress.quantized_linear import Int8Linear

KERNELS = ("fbgemm", "onednn")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="saved hf_compress checkpoint with int8 layers")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    model = load_model_for_eval(args.model, None).eval()
    layers = [m for m in model.modules() if isinstance(m, Int8Linear)]
    if not layers:
        raise SystemExit(f"{args.model} has no int8 Linear layers")
    vocab = model.config.vocab_size
    inputs = {b: torch.randint(0, vocab, (b, args.seq)) for b in map(int, args.batch_sizes.split(","))}
    times: dict[str, dict[int, list[float]]] = {k: {b: [] for b in inputs} for k in KERNELS}
    with torch.inference_mode():
        for round_index in range(args.rounds + 1):  # round 0 warms up every kernel and shape
            for kernel in KERNELS:
                for layer in layers:
                    layer.backend = kernel
                model(input_ids=inputs[min(inputs)])  # untimed: a layer re-packs its weight for a new kernel
                for b, ids in inputs.items():
                    start = time.perf_counter()
                    model(input_ids=ids)
                    if round_index:
                        times[kernel][b].append((time.perf_counter() - start) * 1000)
    medians = {k: {b: round(statistics.median(v), 1) for b, v in per.items()} for k, per in times.items()}
    print(json.dumps({"model": args.model, "int8_layers": len(layers), "median_ms": medians, "environment": environment()}, indent=2))


if __name__ == "__main__":
    main()
