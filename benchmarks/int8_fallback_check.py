"""Accuracy of post-training int8 with and without `fp32_fallback`, on a real fine-tuned teacher.

For each setting the teacher is quantized with `hf_compress.compress` (`quantization:
int8_dynamic`, the default fbgemm kernel on x86) and evaluated on the task's full dev set; the
names of the layers kept in float are printed and saved. The calibration batches are a seeded
sample of `--calibration-samples` training sentences in batches of `--batch-size`, padded per
batch, as the trainer gives them; the fallback measures on all of them. Accuracy only: latency
comes from `hf-compress bench`.

    python benchmarks/int8_fallback_check.py --task sst2 \
        --teacher outputs/teachers/minilm-sst2-full --fallback 0 1 2 \
        --out bench_out/int8-fallback-sst2.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from hf_compress import compress
from hf_compress.checkpoint.loading import load_checked_tokenizer
from hf_compress.data.glue_tasks import get_task
from hf_compress.data.preprocess import load_task_datasets
from hf_compress.evaluation.evaluate import evaluate_task
from hf_compress.evaluation.load import load_model_for_eval
from hf_compress.evaluation.measure import environment

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--teacher", required=True, help="fine-tuned teacher directory")
    parser.add_argument(
        "--fallback", type=int, nargs="+", default=[0, 1, 2], help="fp32_fallback values to try"
    )
    parser.add_argument(
        "--embeddings", action="store_true", help="also each setting with include_embeddings"
    )
    parser.add_argument("--calibration-samples", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16, help="calibration batch size")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--glue-dir")
    parser.add_argument("--out", help="JSON file to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    task = get_task(args.task)
    tokenizer = load_checked_tokenizer(args.teacher)
    train, dev = load_task_datasets(
        task, tokenizer, args.seq_len, args.calibration_samples, glue_dir=args.glue_dir
    )
    train = train.remove_columns([c for c in train.column_names if c not in MODEL_INPUTS])
    batches = list(
        DataLoader(train, batch_size=args.batch_size, collate_fn=DataCollatorWithPadding(tokenizer))
    )
    teacher = load_model_for_eval(args.teacher, task)
    rows: list[dict[str, Any]] = [
        {"setting": "teacher (fp32)", **evaluate_task(teacher, tokenizer, task, dev)}
    ]
    settings = [{"fp32_fallback": n} for n in args.fallback]
    if args.embeddings:
        settings += [{**s, "include_embeddings": True} for s in settings]
    for setting in settings:
        entry = {"type": "quantization", "method": "int8_dynamic", **setting}
        if setting["fp32_fallback"]:  # measure on every calibration batch, not the key's default 8
            entry["calibration_batches"] = len(batches)
        start = time.perf_counter()
        model = compress(copy.deepcopy(teacher), [entry], calibration_data=batches)
        seconds = time.perf_counter() - start
        kept = [
            n
            for n, m in model.named_modules()
            if type(m).__name__ == "Linear" and "classifier" not in n
        ]
        rows.append(
            {
                "setting": setting,
                "kept_in_float": kept,
                "quantize_time_s": seconds,
                **evaluate_task(model, tokenizer, task, dev),
            }
        )
    for row in rows:
        metrics = ", ".join(f"{k} {100 * v:.2f}" for k, v in row.items() if k in task.metrics)
        print(f"{row['setting']}: {metrics}; kept in float: {row.get('kept_in_float', '-')}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps(
                {
                    "environment": environment(),
                    "task": task.name,
                    "teacher": args.teacher,
                    "calibration_samples": args.calibration_samples,
                    "results": rows,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
