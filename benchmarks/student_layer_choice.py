"""Which of the teacher's layers should a layer-reduced student keep? Their dev metric before
training.

A distillation student (`student: {layers: [...]}`) or a `layer_dropping` model starts from some
of the fine-tuned teacher's layers. This evaluates the teacher reduced to each candidate set as it
is, before any training: a start that already solves much of the task has less to re-learn.

    python benchmarks/student_layer_choice.py outputs/teachers/minilm-sst2-full --task sst2 \\
        --layers 0,2,4 1,3,5 0,3,5

Prints one line per candidate and a JSON report (also written to `--output` when given).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

from hf_compress.data.glue_tasks import get_task
from hf_compress.errors import HfCompressError
from hf_compress.evaluation.evaluate import evaluate_task, load_with_dev_set
from hf_compress.methods.distillation.student import keep_layers


def parse_layers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"layers must be comma-separated integers like 0,2,4, got {text!r}"
        ) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="fine-tuned teacher directory (or Hub id)")
    parser.add_argument("--task", default="sst2", help="GLUE task the model was fine-tuned on")
    parser.add_argument(
        "--layers",
        nargs="+",
        type=parse_layers,
        required=True,
        help="candidate layer sets, e.g. 0,2,4 1,3,5",
    )
    parser.add_argument("--glue-dir", help="GLUE data folder (default: HF_COMPRESS_GLUE_DIR)")
    parser.add_argument("--max-eval-samples", type=int)
    parser.add_argument("--output", help="also write the report here as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    task = get_task(args.task)
    teacher, tokenizer, dev = load_with_dev_set(
        args.model, task, args.glue_dir, max_eval_samples=args.max_eval_samples
    )
    report = {
        "model": args.model,
        "task": task.name,
        "teacher": evaluate_task(teacher, tokenizer, task, dev, progress=False),
    }
    report["candidates"] = []
    for layers in args.layers:
        try:
            student = keep_layers(copy.deepcopy(teacher), layers)
        except HfCompressError as exc:
            print(f"student_layer_choice: error: {exc}", file=sys.stderr)
            return 2
        metrics = evaluate_task(student, tokenizer, task, dev, progress=False)
        report["candidates"].append({"layers": layers, "metrics": metrics})
        print(f"layers {layers}: {json.dumps(metrics)}", file=sys.stderr)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
