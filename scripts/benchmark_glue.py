"""The frontier benchmark: run recipes from one fine-tuned teacher and measure everything side by side.

    python scripts/benchmark_glue.py --task sst2 --teacher outputs/teachers/minilm-sst2 \
        --recipes recipes/minilm-sst2-*.yaml --set data.max_train_samples=8000 --out bench_out/sst2

Without --teacher it first fine-tunes all-MiniLM-L6-v2 on the task (scripts/finetune_teacher.py).
Writes results.json, results.md and frontier.png under --out.
"""

from __future__ import annotations

import argparse
import glob
import logging
import subprocess
import sys
from pathlib import Path

from hf_compress.benchmark import run_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--teacher", help="fine-tuned teacher directory (default: fine-tune one into <out>/teacher)")
    parser.add_argument("--recipes", nargs="*", help="recipe files (default: every recipes/*<task>*.yaml except the quickstart)")
    parser.add_argument("--set", action="append", default=[], help="override for every recipe, e.g. data.max_train_samples=8000")
    parser.add_argument("--out", required=True)
    parser.add_argument("--glue-dir")
    parser.add_argument("--latency-runs", type=int, default=10)
    parser.add_argument("--max-eval-samples", type=int)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    out = Path(args.out)
    teacher = args.teacher
    if teacher is None:
        teacher = str(out / "teacher")
        command = [sys.executable, str(Path(__file__).with_name("finetune_teacher.py")), "--task", args.task, "--output", teacher]
        subprocess.run(command + (["--glue-dir", args.glue_dir] if args.glue_dir else []), check=True)
    recipes = args.recipes or sorted(p for p in glob.glob(f"recipes/*-{args.task}-*.yaml"))
    results = run_benchmark(
        args.task, teacher, recipes, out, overrides=args.set, glue_dir=args.glue_dir,
        latency_runs=args.latency_runs, max_eval_samples=args.max_eval_samples,
    )
    print(Path(out / "results.md").read_text())
    print(f"total time: {results['total_time_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
