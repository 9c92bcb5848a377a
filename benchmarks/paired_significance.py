"""Is a method's margin over its control more than chance? Paired tests over several runs.

For each run (a seed, a data budget, ...) the method's model and its control's model are evaluated
on the same dev examples (`hf-compress compare`): the examples only one of them gets right and
McNemar's exact p-value. Over all runs, a two-sided sign test on which model won each run
(ties left out). E.g. distilled 3-layer students against the same students trained on gold
labels alone; usable for any method / control pairs:

    python benchmarks/paired_significance.py --task sst2 \\
        --pair "10k seed 42" bench_out/sst2-kd-mask15/minilm-sst2-distill-3layer-logits \\
                             bench_out/sst2-gold-mask15/minilm-sst2-3layer-no-distill \\
        --pair ... --output docs/benchmarks/some-name.json

Prints a markdown table (and writes the figures as JSON to `--output` when given).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hf_compress.data.glue_tasks import get_task
from hf_compress.evaluation.compare import compare_models, sign_test


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sst2", help="GLUE classification task (default sst2)")
    parser.add_argument(
        "--pair",
        nargs=3,
        action="append",
        required=True,
        metavar=("LABEL", "METHOD_MODEL", "CONTROL_MODEL"),
        help="one run: a label, the method's model and its control's model (repeat for each run)",
    )
    parser.add_argument("--glue-dir", help="GLUE data folder (default: HF_COMPRESS_GLUE_DIR)")
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--output", help="also write the figures here as JSON")
    return parser.parse_args(argv)


def markdown(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = [
        "| run | method | control | margin (pt) | only method right | only control right "
        "| McNemar p |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {100 * r['accuracy_a']:.2f} | {100 * r['accuracy_b']:.2f} "
            f"| {100 * (r['accuracy_a'] - r['accuracy_b']):+.2f} | {r['a_only_correct']} "
            f"| {r['b_only_correct']} "
            f"| {r['mcnemar_p']:.3f} |"
        )
    lines.append("")
    lines.append(
        f"Method ahead in {summary['wins']} of {summary['runs']} runs, "
        f"behind in {summary['losses']}, "
        f"tied in {summary['ties']}: two-sided sign test p = {summary['sign_test_p']:.4f}."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    task = get_task(args.task)
    rows = []
    for label, method, control in args.pair:
        comparison = compare_models(method, control, task, args.glue_dir, args.max_seq_length)
        rows.append({"label": label, "method": method, "control": control, **comparison.to_dict()})
        print(
            f"{label}: {comparison.net_examples:+d} examples, "
            f"McNemar p = {comparison.mcnemar_p:.3f}",
            file=sys.stderr,
        )
    wins = sum(r["net_examples"] > 0 for r in rows)
    losses = sum(r["net_examples"] < 0 for r in rows)
    summary = {
        "runs": len(rows),
        "wins": wins,
        "losses": losses,
        "ties": len(rows) - wins - losses,
        "sign_test_p": sign_test(wins, losses),
    }
    print(markdown(rows, summary))
    if args.output:
        Path(args.output).write_text(
            json.dumps({"task": task.name, "runs": rows, "summary": summary}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
