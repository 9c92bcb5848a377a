"""The accuracy / size / speed frontier of several recipes against one teacher, on one task.

`run_benchmark` runs each recipe from the same fine-tuned teacher (its `base_model` and
`teacher` are pointed at it, `finetune_base` dropped), then measures the teacher and every
result in one process, one after the other: the task metric on the dev set, parameters,
non-zero parameters, bytes on disk and CPU latency. It writes `results.json`, `results.md` and
`frontier.png` (metric against size and against latency, the teacher marked).

`default_recipes` picks the recipes of one task from a folder, and `prepare_teacher` fine-tunes
(or reuses) the teacher; `hf-compress bench --out` and `scripts/benchmark_glue.py` share them.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any

from ..checkpoint.loading import load_for_task, load_tokenizer
from ..data.glue_tasks import get_task
from ..data.preprocess import TaskData
from ..errors import RecipeError
from ..recipe.recipe import Recipe
from ..training.runner import run_recipe
from .evaluate import evaluate_task, model_figures
from .measure import compare_latency, environment
from .plots import plot_frontier
from .tables import markdown_results

logger = logging.getLogger(__name__)


# `make demo`'s recipe: a tutorial with its own smaller budget, not one point of the frontier.
EXCLUDED_BY_DEFAULT = ("quickstart",)


def default_recipes(task: str, recipes_dir: str | Path = "recipes") -> list[Path]:
    """The recipes a benchmark of `task` runs when none are named.

    Every `*.yaml` / `*.yml` file in `recipes_dir` whose `task:` is `task` (read from the file,
    which must be a valid recipe, not guessed from its name), sorted by file name, except the
    quickstart.

    Args:
        task: the GLUE task (`sst2`, `rte`, ...).
        recipes_dir: the folder to look in (not searched recursively).

    Raises:
        RecipeError: the folder does not exist, or a file in it is not a valid recipe.
    """
    wanted = get_task(task).name
    folder = Path(recipes_dir)
    if not folder.is_dir():
        raise RecipeError(
            f"{folder}: recipes folder not found; pass --recipes-dir or name the recipe files"
        )
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return [
        p for p in files if p.stem not in EXCLUDED_BY_DEFAULT and Recipe.from_yaml(p).task == wanted
    ]


def recipes_teacher_epochs(
    recipes: list[str] | list[Path], overrides: list[str] | None = None
) -> float:
    """The teacher epochs a benchmark of `recipes` uses when none are given: the
    `finetune_base.epochs` every recipe that fine-tunes its base agrees on (what they were written
    for; RTE's 2,490 pairs need 5, not 1), else 1 with a warning."""
    epochs = {
        recipe.finetune_base.epochs
        for recipe in (Recipe.from_yaml(path, overrides=overrides) for path in recipes)
        if recipe.finetune_base is not None
    }
    if len(epochs) != 1:
        logger.warning(
            "bench: the recipes set no common finetune_base.epochs; the teacher gets 1 epoch "
            "(--teacher-epochs)"
        )
        return 1.0
    logger.info(
        "bench: fine-tuning the teacher for %g epoch(s), the recipes' finetune_base.epochs", *epochs
    )
    return epochs.pop()


def check_recipes(
    task: str, recipes: list[str] | list[Path], overrides: list[str] | None = None
) -> None:
    """Checks that every file is a valid recipe (with `overrides`) for `task`, before anything runs.

    Raises:
        RecipeError: a file is missing or invalid, or trains on another task.
    """
    wanted = get_task(task).name
    for path in recipes:
        recipe = Recipe.from_yaml(path, overrides=overrides)
        if recipe.task != wanted:
            raise RecipeError(
                f"{path}: task: {recipe.task}, but this benchmark measures {wanted}; leave it out "
                f"or use --task {recipe.task}"
            )


def benchmark_recipe(
    recipe_path: str | Path, teacher: str, output_root: Path, overrides: list[str]
) -> Recipe:
    """The recipe at `recipe_path`, re-pointed at `teacher` and writing under `output_root`."""
    name = Path(recipe_path).stem
    original = Recipe.from_yaml(recipe_path)
    pinned = [
        f"base_model={teacher}",
        f"teacher={teacher if original.teacher != 'none' else 'none'}",
        "finetune_base=null",
        f"output_dir={output_root / name}",
    ]
    return Recipe.from_yaml(recipe_path, overrides=[*pinned, *overrides])


def finished_report(recipe: Recipe) -> dict[str, Any] | None:
    """The report of a finished run of exactly `recipe` in its output_dir, else None.

    `run_recipe` writes an output directory all at once, so one with `report.json` is complete; its
    `recipe.yaml` tells whether it came from the same recipe (after the benchmark's overrides). A
    local teacher written after the output (re-fine-tuned in place) makes it stale.
    """
    output = Path(recipe.output_dir)
    if not (output / "report.json").is_file() or not (output / "recipe.yaml").is_file():
        return None
    teacher = Path(recipe.base_model)
    if (
        teacher.is_dir()
        and max(f.stat().st_mtime for f in teacher.iterdir())
        > (output / "report.json").stat().st_mtime
    ):
        return None
    try:
        if Recipe.from_yaml(output / "recipe.yaml").to_dict() != recipe.to_dict():
            return None
        return json.loads((output / "report.json").read_text())
    except (RecipeError, ValueError, OSError):  # unreadable: run the recipe again
        return None


def run_benchmark(
    task: str,
    teacher: str,
    recipes: list[str],
    output_root: str | Path,
    overrides: list[str] | None = None,
    glue_dir: str | None = None,
    latency_runs: int = 10,
    batch_sizes: tuple[int, ...] = (1, 32),
    seq_len: int = 128,
    max_eval_samples: int | None = None,
    teacher_time_s: float = 0.0,
    resume: bool = False,
) -> dict[str, Any]:
    """Runs `recipes` from `teacher` and measures everything side by side.

    Args:
        task: the GLUE task.
        teacher: directory of the fine-tuned teacher (also the baseline and each recipe's base).
        recipes: recipe files, each for `task` (checked before any runs).
        output_root: where each recipe's output and the results go.
        overrides: `--set` overrides applied to every recipe (e.g. `data.max_train_samples=8000`).
        glue_dir: local GLUE folder.
        latency_runs: timed runs per batch size.
        batch_sizes: latency batch sizes.
        seq_len: latency sequence length.
        max_eval_samples: evaluate on at most this many dev examples (default: all).
        teacher_time_s: seconds already spent fine-tuning `teacher` for this run (0 when it was
            given or reused); recorded, and counted in `total_time_s`, the end-to-end time.
        resume: reuse each recipe's finished output when it was written by this very recipe (same
            file, teacher and overrides), continue an interrupted one from its `<output>.work`
            (see `run_recipe`), and start the others from the beginning.

    Raises:
        RecipeError: a recipe file is missing or invalid, or for another task. A recipe that
            fails while running is reported under `failed` instead; the others still run.
    """
    glue_task = get_task(task)
    check_recipes(glue_task.name, recipes, overrides)
    output_root = Path(output_root)
    output_root.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    for path in recipes:
        name = Path(path).stem
        entry: dict[str, Any] = {"name": name, "recipe": str(path)}
        try:
            recipe = benchmark_recipe(path, teacher, output_root, overrides or [])
            finished = finished_report(recipe) if resume else None
            if finished is not None:
                logger.info(
                    "%s: reusing its finished run in %s (--resume)", name, recipe.output_dir
                )
                # total_time_s: what run_recipe took, as timed in the other branch
                report, output_dir, seconds = (
                    finished,
                    recipe.output_dir,
                    finished.get("total_time_s"),
                )
                entry["reused"] = True
            else:
                t0 = time.perf_counter()
                result = run_recipe(
                    recipe,
                    overwrite=True,
                    glue_dir=glue_dir,
                    latency=False,
                    progress=False,
                    push=False,
                    resume=resume,
                )
                report, output_dir, seconds = (
                    result.report,
                    result.output_dir,
                    time.perf_counter() - t0,
                )
            entry.update(
                output_dir=str(output_dir),
                compression_time_s=seconds,
                stages=report.get("stages"),
                notes=report.get("notes"),
            )
        except Exception as exc:  # a failed recipe is reported, the others still run
            logger.error("%s failed: %s", name, exc)
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc(limit=5)
        runs.append(entry)

    measured = [
        {"name": "teacher (fp32)", "output_dir": teacher, "is_baseline": True},
        *[r for r in runs if "error" not in r],
    ]
    loaded = {}
    for entry in measured:
        source = entry["output_dir"]
        logger.info("evaluating %s", entry["name"])
        tokenizer = load_tokenizer(source)
        model = load_for_task(source, glue_task)
        dev = TaskData(glue_task, seq_len, max_eval_samples=max_eval_samples, glue_dir=glue_dir)
        entry["metrics"] = evaluate_task(
            model, tokenizer, glue_task, dev.dev(tokenizer), progress=False
        )
        entry.update(model_figures(model, saved_dir=source, latency=False))
        loaded[entry["name"]] = model
    # Every result timed round-robin with the teacher: ratios that hold on a busy machine.
    logger.info("timing %d models round-robin", len(loaded))
    timing = compare_latency(loaded, batch_sizes, seq_len, latency_runs)
    for entry in measured:
        entry["latency_ms"] = timing["latency_ms"][entry["name"]]
        entry["speedup"] = timing["speedup"].get(entry["name"])
    del loaded
    results = {
        "task": glue_task.name,
        "metric_name": glue_task.main_metric,
        "teacher": teacher,
        "overrides": overrides or [],
        "environment": environment(),
        "latency_config": {
            "batch_sizes": list(batch_sizes),
            "seq_len": seq_len,
            "runs": latency_runs,
        },
        "latency": {k: timing[k] for k in ("reliable", "reason", "load_per_core")},
        "teacher_time_s": teacher_time_s,
        "total_time_s": teacher_time_s + time.perf_counter() - started,
        "results": measured,
        "failed": [r for r in runs if "error" in r],
    }
    (output_root / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (output_root / "results.md").write_text(markdown_results(results))
    plot_frontier(results, output_root / "frontier.png")
    return results
