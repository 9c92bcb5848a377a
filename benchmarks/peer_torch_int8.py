"""Peer benchmark: PyTorch's own int8 paths against hf_compress's int8 results, on a real teacher.

torch `quantize_dynamic` int8 and torchao int8 side by side with our points on the same teacher
and data. This measures, in one process and with hf_compress's own functions
(the task's dev metric, CPU latency at batch 1 and 32 x sequence 128 with random token ids, 2
warm-ups, median of `--runs`; the method of `hf-compress bench`):

- the fine-tuned teacher in fp32 (first row: every ratio is against it);
- `torch.ao.quantization.quantize_dynamic(teacher, {nn.Linear}, torch.qint8)`;
- torchao `Int8DynamicActivationInt8WeightConfig` (eager), and with `--compile` the same model
  under `torch.compile` (compile time recorded; one compilation per input shape);
- each `--ours` directory (hf_compress checkpoints, e.g. an int8 recipe's output), loaded as a
  user would, through `from_pretrained`.

Latency is measured twice. First each model alone, one after the other (`latency_ms_sequential`,
the method of `hf-compress bench`). Then, with every model in memory, all of them round-robin
(`hf_compress.evaluation.measure.round_robin_latency`: run 1 of each model, then run 2 of each,
...) at each batch size; that is `latency_ms`, the figure the frontier uses. On a shared 2-core
machine the load moves between minutes, and a model timed alone can land in a slow or a fast minute
(one peer's ratio moved 2.2x between two processes here); interleaved, every model sees the same
load, so their ratios can be compared even when the milliseconds drift.

Bytes on disk: neither peer writes a checkpoint that reloads with `from_pretrained` (quantized
modules and tensor subclasses are not in transformers' formats), so their size is
`torch.save(model.state_dict())`, the smallest file they can be saved to; ours are the saved
directory's weight files. Run in the project venv with torchao added:

    .venv/bin/pip install torchao==0.18.0
    python benchmarks/peer_torch_int8.py --task mrpc --teacher bench_out/mrpc/teacher \
        --ours bench_out/mrpc/minilm-mrpc-int8 --out bench_out/peers/torch_int8_mrpc.json

The output has the layout of `hf-compress bench --output` (rows with `model`, `size_bytes`,
`latency_ms`, `metrics`), with `peer: true` on the peers' rows, so
`benchmarks/frontier_with_peers.py --bench FILE` places them on the frontier. A peer that fails
here is recorded with its error instead of figures.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hf_compress.checkpoint.loading import load_checked_tokenizer
from hf_compress.data.glue_tasks import get_task
from hf_compress.data.preprocess import load_task_datasets
from hf_compress.evaluation.bench import bench_models
from hf_compress.evaluation.evaluate import evaluate_task
from hf_compress.evaluation.load import load_model_for_eval
from hf_compress.evaluation.measure import (
    count_parameters,
    environment,
    latency_inputs,
    latency_summary,
    measure_latency,
    round_robin_latency,
)

logger = logging.getLogger("peer_torch_int8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, help="GLUE task the teacher was fine-tuned on")
    parser.add_argument("--teacher", required=True, help="fine-tuned teacher directory")
    parser.add_argument(
        "--ours", nargs="*", default=[], help="hf_compress checkpoints to measure beside the peers"
    )
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--glue-dir", help="GLUE folder (default: $HF_COMPRESS_GLUE_DIR)")
    parser.add_argument(
        "--seq-len", type=int, default=128, help="evaluation and latency sequence length"
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also torchao int8 under torch.compile (slow to start)",
    )
    return parser.parse_args(argv)


def state_dict_bytes(model: nn.Module) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state_dict.pt"
        torch.save(model.state_dict(), path)
        return path.stat().st_size


def torch_quantize_dynamic(teacher: nn.Module) -> nn.Module:
    # Deprecated in torch 2.10+ (torch.ao.quantization); still the reference eager int8 path.
    return torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(teacher), {nn.Linear}, dtype=torch.qint8
    )


def torchao_int8(teacher: nn.Module) -> nn.Module:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    model = copy.deepcopy(teacher)
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model


def torchao_int8_compiled(teacher: nn.Module) -> nn.Module:
    return torch.compile(torchao_int8(teacher))


PEERS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "torch quantize_dynamic int8": torch_quantize_dynamic,
    "torchao int8 (eager)": torchao_int8,
}


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except (
        importlib.metadata.PackageNotFoundError
    ):  # torchao is optional: its peer row says why it did not run
        return None


def peer_row(
    name: str, make: Callable[[nn.Module], nn.Module], teacher: nn.Module, evaluate: Callable, args
) -> tuple[dict[str, Any], nn.Module | None]:
    """The peer's row, and its model for the round-robin timing (None when it failed)."""
    row: dict[str, Any] = {"model": name, "dtype": "float32", "peer": True}
    try:
        start = time.perf_counter()
        model = make(teacher)
        row["quantize_time_s"] = time.perf_counter() - start
        model.eval()
        row["size_bytes"] = state_dict_bytes(model)
        # Quantized modules hold packed weights that are not nn.Parameters: count the teacher's.
        row["num_parameters"], row["nonzero_parameters"] = count_parameters(teacher)
        start = time.perf_counter()
        row["latency_ms"] = measure_latency(
            model, batch_sizes=(1, 32), seq_len=args.seq_len, runs=args.runs
        )
        row["latency_wall_time_s"] = (
            time.perf_counter() - start
        )  # includes compilation under --compile
        row["metrics"] = evaluate(model)
    except Exception as error:  # a peer that fails is reported with its error, not dropped
        logger.exception("%s failed", name)
        row["error"] = f"{type(error).__name__}: {error}"
        return row, None
    return row, model


def interleaved_latency(
    models: dict[str, nn.Module], batch_sizes: tuple[int, ...], seq_len: int, runs: int
) -> dict[str, dict[str, dict[str, float]]]:
    """`measure_latency`'s figures (per model, per batch size) with every model timed round-robin.

    The token ids are drawn below the smallest vocabulary among the models (a vocabulary-pruned
    checkpoint has fewer rows); the ids do not change the cost of a forward pass.
    """
    vocab = min(getattr(getattr(m, "config", None), "vocab_size", 1000) for m in models.values())
    figures: dict[str, dict[str, dict[str, float]]] = {name: {} for name in models}
    for batch in batch_sizes:
        times = round_robin_latency(models, latency_inputs(batch, seq_len, vocab), runs, warmup=2)
        for name, (wall, _) in times.items():
            figures[name][str(batch)] = latency_summary(wall)
    return figures


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    task = get_task(args.task)
    measure = {
        "task": task.name,
        "glue_dir": args.glue_dir,
        "seq_len": args.seq_len,
        "runs": args.runs,
    }
    # The teacher's and our rows are `hf-compress bench` rows (each checkpoint with its own
    # tokenizer).
    rows = bench_models([args.teacher], **measure)
    tokenizer = load_checked_tokenizer(args.teacher)
    _, dev = load_task_datasets(
        task, tokenizer, args.seq_len, glue_dir=args.glue_dir, with_train=False
    )
    teacher = load_model_for_eval(args.teacher, task)
    peers = dict(PEERS)
    if args.compile:
        peers["torchao int8 + torch.compile"] = torchao_int8_compiled
    models = {0: teacher}  # row index -> model, for the round-robin timing
    for name, make in peers.items():
        row, model = peer_row(
            name, make, teacher, lambda model: evaluate_task(model, tokenizer, task, dev), args
        )
        rows.append(row)
        if model is not None:
            models[len(rows) - 1] = model
    for path in args.ours:
        rows += bench_models([path], **measure)
        models[len(rows) - 1] = load_model_for_eval(path, task).eval()
    interleaved = interleaved_latency(
        {str(i): m for i, m in models.items()}, (1, 32), args.seq_len, args.runs
    )
    for index in models:
        rows[index]["latency_ms_sequential"] = rows[index]["latency_ms"]
        rows[index]["latency_ms"] = interleaved[str(index)]
    versions = {pkg: installed_version(pkg) for pkg in ("torch", "torchao", "transformers")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "environment": environment(),
                "versions": versions,
                "seq_len": args.seq_len,
                "task": task.name,
                "latency_method": "round-robin (latency_ms_sequential: one model at a time)",
                "results": rows,
            },
            indent=2,
        )
    )
    for row in rows:
        if "error" in row:
            print(f"{row['model']}: {row['error']}")
            continue
        metrics = ", ".join(
            f"{k} {100 * v:.2f}" for k, v in row["metrics"].items() if k != "eval_samples"
        )
        sequential = row.get("latency_ms_sequential", row["latency_ms"])
        round_robin = row["latency_ms"]
        print(
            f"{row['model']}: {metrics}; {row['size_bytes'] / 1e6:.1f} MB; "
            f"round-robin bs1 {round_robin['1']['median']:.1f} ms, "
            f"bs32 {round_robin['32']['median']:.1f} ms; "
            f"alone bs1 {sequential['1']['median']:.1f} ms, "
            f"bs32 {sequential['32']['median']:.1f} ms"
        )


if __name__ == "__main__":
    main()
