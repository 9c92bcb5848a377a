"""fbgemm against oneDNN on one saved int8 checkpoint: latency, round-robin in one process.

The int8 kernel is chosen at run time from the same stored tensors
(hf_compress/methods/quantization/layers.py), so the loaded model and a copy are set to one kernel
each and timed round-robin per batch size (hf_compress.evaluation.measure.round_robin_latency), so
machine load hits them alike. Random token ids, sequence length `--seq`; prints JSON with the
median milliseconds per kernel and batch size, and the environment.

    python benchmarks/int8_kernel_check.py outputs/quickstart --rounds 15
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics

import torch

from hf_compress.evaluation.load import load_model_for_eval
from hf_compress.evaluation.measure import environment, round_robin_latency
from hf_compress.methods.quantization.layers import Int8Linear

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
    inputs = {
        b: torch.randint(0, vocab, (b, args.seq)) for b in map(int, args.batch_sizes.split(","))
    }
    copies = {kernel: copy.deepcopy(model) for kernel in KERNELS}
    for kernel, variant in copies.items():
        for layer in variant.modules():
            if isinstance(layer, Int8Linear):
                layer.backend = kernel
    medians: dict[str, dict[int, float]] = {kernel: {} for kernel in KERNELS}
    for b, ids in inputs.items():
        times = round_robin_latency(copies, {"input_ids": ids}, args.rounds)
        for kernel, (wall, _) in times.items():
            medians[kernel][b] = round(statistics.median(wall), 1)
    print(
        json.dumps(
            {
                "model": args.model,
                "int8_layers": len(layers),
                "median_ms": medians,
                "environment": environment(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
