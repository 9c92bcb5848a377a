"""The frontier benchmark: run recipes from one fine-tuned teacher and measure everything side by side.

    python scripts/benchmark_glue.py --task sst2 --teacher outputs/teachers/minilm-sst2 \
        --recipes recipes/minilm-sst2-*.yaml --set data.max_train_samples=8000 --out bench_out/sst2

The same as `hf-compress bench --task sst2 --out bench_out/sst2 ...`. Without --recipes it runs
every recipe in --recipes-dir whose `task:` is --task, except the quickstart. Without --teacher it
first fine-tunes all-MiniLM-L6-v2 on the task into <out>/teacher for the recipes' common
`finetune_base.epochs` (else 1), reused when already there with the same settings. Writes
results.json, results.md and frontier.png under --out.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from hf_compress.evaluation.frontier import check_recipes, default_recipes, recipes_teacher_epochs, run_benchmark
from hf_compress.training.teacher import prepare_teacher


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--teacher", help="fine-tuned teacher directory (default: fine-tune one into <out>/teacher)")
    parser.add_argument("--recipes", nargs="*", help="recipe files (default: every recipe of --task in --recipes-dir)")
    parser.add_argument("--recipes-dir", default="recipes", help="folder the default recipes come from (default: recipes)")
    parser.add_argument("--set", action="append", default=[], help="override for every recipe, e.g. data.max_train_samples=8000")
    parser.add_argument("--out", required=True)
    parser.add_argument("--glue-dir")
    parser.add_argument("--latency-runs", type=int, default=10)
    parser.add_argument("--max-eval-samples", type=int)
    parser.add_argument("--resume", action="store_true", help="reuse finished recipe outputs, continue interrupted runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    out = Path(args.out)
    recipes = [str(r) for r in args.recipes or default_recipes(args.task, args.recipes_dir)]
    if not recipes:
        parser.error(f"no recipe in {args.recipes_dir}/ has task: {args.task}")
    check_recipes(args.task, recipes, args.set)
    started = time.perf_counter()
    teacher = args.teacher or prepare_teacher(
        args.task, out / "teacher", glue_dir=args.glue_dir, epochs=recipes_teacher_epochs(recipes, args.set)
    )
    run_benchmark(
        args.task, teacher, recipes, out, overrides=args.set, glue_dir=args.glue_dir,
        latency_runs=args.latency_runs, max_eval_samples=args.max_eval_samples,
        teacher_time_s=time.perf_counter() - started, resume=args.resume,
    )
    print(Path(out / "results.md").read_text())  # ends with the total time, teacher fine-tuning included


if __name__ == "__main__":
    main()
