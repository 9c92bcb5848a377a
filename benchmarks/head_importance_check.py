"""Do head importance scores mean something? Remove the lowest-scoring heads vs random heads.

Sanity check of `head_pruning`'s scores (after Michel et al. 2019, figure 3): on a
fine-tuned classifier, remove a fraction of the attention heads (default: half), once the heads
with the lowest Taylor scores (and once the lowest magnitude scores), and several times a random
set of the same size, without any fine-tuning, and compare dev-set metrics. Random sets follow
the same rule as the scored ones (global ranking, at least one head kept per layer).

    python benchmarks/head_importance_check.py outputs/teacher --task sst2 \
        --glue-dir $HF_COMPRESS_GLUE_DIR

Prints a JSON report (and writes it to `--output` when given).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

import hf_compress
from hf_compress.architectures.base import get_adapter
from hf_compress.data.glue_tasks import get_task
from hf_compress.data.preprocess import load_task_datasets
from hf_compress.evaluation.evaluate import evaluate_task
from hf_compress.methods.pruning.importance import choose_units
from hf_compress.methods.pruning.surgery import remove_heads


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="fine-tuned model directory (or Hub id)")
    parser.add_argument("--task", default="sst2", help="GLUE task the model was fine-tuned on")
    parser.add_argument(
        "--glue-dir", default=None, help="local GLUE folder (default: $HF_COMPRESS_GLUE_DIR)"
    )
    parser.add_argument(
        "--fraction", type=float, default=0.5, help="fraction of all heads to remove"
    )
    parser.add_argument(
        "--calibration-batches", type=int, default=8, help="training batches for the Taylor scores"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--max-eval-samples", type=int, default=None)
    parser.add_argument(
        "--random-seeds", type=int, default=5, help="how many random head sets to try"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", default=None, help="also write the JSON report here")
    args = parser.parse_args(argv)
    if not 0 < args.fraction < 1:
        parser.error("--fraction must be between 0 and 1 (exclusive)")
    return args


def head_counts(model: Any) -> dict[str, int]:
    adapter = get_adapter(model)
    return {str(i): adapter.num_heads(model, i) for i in range(adapter.num_layers(model))}


def remove_random_heads(model: Any, fraction: float, seed: int) -> Any:
    """A copy of `model` with `fraction` of its heads removed at random (at least one kept per
    layer)."""
    model = copy.deepcopy(model)
    adapter = get_adapter(model)
    generator = torch.Generator().manual_seed(seed)
    layers = range(adapter.num_layers(model))
    heads = {i: adapter.num_heads(model, i) for i in layers}
    scores = {i: torch.rand(n, generator=generator) for i, n in heads.items()}
    alive = {i: torch.ones(n, dtype=torch.bool) for i, n in heads.items()}
    target = int(fraction * sum(heads.values()) + 0.5)
    alive = choose_units(scores, alive, target, min_keep=1)
    for i, keep in alive.items():
        remove_heads(model, i, torch.nonzero(keep).flatten().tolist())
    return model


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    task = get_task(args.task)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
    train, dev = load_task_datasets(
        task,
        tokenizer,
        max_seq_length=args.max_seq_length,
        max_train_samples=args.calibration_batches * args.batch_size,
        max_eval_samples=args.max_eval_samples,
        glue_dir=args.glue_dir,
        seed=args.seed,
    )
    collator = DataCollatorWithPadding(tokenizer)

    def calibration() -> Iterator[dict[str, torch.Tensor]]:
        loader = DataLoader(train, batch_size=args.batch_size, shuffle=False, collate_fn=collator)
        yield from loader

    def metric(candidate: Any) -> float:
        return evaluate_task(candidate, tokenizer, task, dev, progress=False)[task.main_metric]

    report: dict[str, Any] = {
        "model": str(args.model),
        "task": task.name,
        "metric": task.main_metric,
        "fraction_removed": args.fraction,
        "heads_before": head_counts(model),
        "full": metric(model),
    }
    for importance in ("taylor", "magnitude"):
        pruned = hf_compress.compress(
            copy.deepcopy(model),
            [
                {
                    "type": "head_pruning",
                    "sparsity": args.fraction,
                    "importance": importance,
                    "calibration_batches": args.calibration_batches,
                }
            ],
            calibration_data=calibration,
        )
        report[f"lowest_{importance}"] = {"metric": metric(pruned), "heads": head_counts(pruned)}
    randoms = [
        metric(remove_random_heads(model, args.fraction, args.seed + k))
        for k in range(args.random_seeds)
    ]
    report["random"] = {
        "metrics": randoms,
        "mean": statistics.fmean(randoms),
        "stdev": statistics.stdev(randoms) if len(randoms) > 1 else 0.0,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
