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

import inspect
import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any

from .data.glue_tasks import get_task
from .data.preprocess import load_task_datasets
from .errors import RecipeError
from .evaluation import evaluate_task, model_figures
from .measure import environment
from .models import load_for_task, load_tokenizer
from .recipe import Recipe
from .reporting import human_bytes
from .runner import run_recipe

logger = logging.getLogger(__name__)

DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TEACHER_REPORT = "teacher_report.json"
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
        raise RecipeError(f"{folder}: recipes folder not found; pass --recipes-dir or name the recipe files")
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return [p for p in files if p.stem not in EXCLUDED_BY_DEFAULT and Recipe.from_yaml(p).task == wanted]


def recipes_teacher_epochs(recipes: list[str] | list[Path], overrides: list[str] | None = None) -> float:
    """The teacher epochs a benchmark of `recipes` uses when none are given: the
    `finetune_base.epochs` every recipe that fine-tunes its base agrees on (what they were written
    for; RTE's 2,490 pairs need 5, not 1), else 1 with a warning."""
    epochs = {
        recipe.finetune_base.epochs
        for recipe in (Recipe.from_yaml(path, overrides=overrides) for path in recipes)
        if recipe.finetune_base is not None
    }
    if len(epochs) != 1:
        logger.warning("bench: the recipes set no common finetune_base.epochs; the teacher gets 1 epoch (--teacher-epochs)")
        return 1.0
    logger.info("bench: fine-tuning the teacher for %g epoch(s), the recipes' finetune_base.epochs", *epochs)
    return epochs.pop()


def check_recipes(task: str, recipes: list[str] | list[Path], overrides: list[str] | None = None) -> None:
    """Checks that every file is a valid recipe (with `overrides`) for `task`, before anything runs.

    Raises:
        RecipeError: a file is missing or invalid, or trains on another task.
    """
    wanted = get_task(task).name
    for path in recipes:
        recipe = Recipe.from_yaml(path, overrides=overrides)
        if recipe.task != wanted:
            raise RecipeError(f"{path}: task: {recipe.task}, but this benchmark measures {wanted}; leave it out or use --task {recipe.task}")


def finetune_teacher(
    task: str,
    output_dir: str | Path,
    base_model: str = DEFAULT_BASE_MODEL,
    epochs: float = 1.0,
    max_train_samples: int | None = None,
    max_seq_length: int = 64,
    batch_size: int = 32,
    learning_rate: float = 5e-5,
    glue_dir: str | None = None,
    seed: int = 42,
) -> dict[str, Any]:
    """Fine-tunes `base_model` on `task`: the teacher and baseline a benchmark compares against.

    Args:
        task: the GLUE task.
        output_dir: where the model, tokenizer and `teacher_report.json` are written.
        base_model: Hub id or local path.
        epochs: training epochs.
        max_train_samples: a seeded random sample of the training set (default: all of it).
        max_seq_length: truncate inputs to this many tokens.
        batch_size: per-device training batch size.
        learning_rate: peak learning rate (linear decay, 6% warm-up).
        glue_dir: local GLUE folder.
        seed: random seed.

    Returns:
        The report written to `teacher_report.json`: the settings, dev metrics, parameters,
        bytes on disk, CPU latency and training time.
    """
    from transformers import DataCollatorWithPadding, TrainingArguments, set_seed

    from .trainer import CompressionTrainer

    settings = {
        "base_model": base_model, "task": get_task(task).name, "epochs": epochs, "max_train_samples": max_train_samples,
        "max_seq_length": max_seq_length, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
    }
    set_seed(seed)
    glue_task = get_task(task)
    tokenizer = load_tokenizer(base_model)
    model = load_for_task(base_model, glue_task)
    train, dev = load_task_datasets(glue_task, tokenizer, max_seq_length, max_train_samples, None, glue_dir, seed)
    output = Path(output_dir)
    training_args = TrainingArguments(
        output_dir=str(output.with_name(output.name + ".work")),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=0.06,  # a float below 1 is a ratio of the total steps in transformers 5
        weight_decay=0.01,
        logging_steps=100,
        save_strategy="no",
        report_to=[],
        seed=seed,
    )
    trainer = CompressionTrainer(
        model=model, args=training_args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer
    )
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started

    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    report = {
        **settings,
        "train_examples": len(train) if train is not None else 0,
        "train_seconds": train_seconds,
        "metrics": evaluate_task(model, tokenizer, glue_task, dev),
        **model_figures(model, saved_dir=str(output)),
        "environment": environment(),
    }
    (output / TEACHER_REPORT).write_text(json.dumps(report, indent=2))
    return report


_FINETUNE_SIGNATURE = inspect.signature(finetune_teacher)


def prepare_teacher(task: str, directory: str | Path, **finetune: Any) -> str:
    """A fine-tuned teacher in `directory`: reused when its `teacher_report.json` records the
    same settings, else fine-tuned there with `finetune_teacher(task, directory, **finetune)`."""
    directory = Path(directory)
    report_path = directory / TEACHER_REPORT
    wanted = _FINETUNE_SIGNATURE.bind(task, directory, **finetune)
    wanted.apply_defaults()
    settings = {k: v for k, v in wanted.arguments.items() if k not in ("output_dir", "glue_dir")}
    settings["task"] = get_task(task).name
    if report_path.is_file():
        saved = json.loads(report_path.read_text())
        if {k: saved.get(k) for k in settings} == settings:
            logger.info("reusing the teacher in %s", directory)
            return str(directory)
        logger.warning("%s holds a teacher fine-tuned with other settings; fine-tuning again", directory)
        report_path.unlink()  # an interrupted fine-tuning must not leave an old report beside new weights
    finetune_teacher(task, directory, **finetune)
    return str(directory)


def benchmark_recipe(recipe_path: str | Path, teacher: str, output_root: Path, overrides: list[str]) -> Recipe:
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
    if teacher.is_dir() and max(f.stat().st_mtime for f in teacher.iterdir()) > (output / "report.json").stat().st_mtime:
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
                logger.info("%s: reusing its finished run in %s (--resume)", name, recipe.output_dir)
                # total_time_s: what run_recipe took, as timed in the other branch
                report, output_dir, seconds = finished, recipe.output_dir, finished.get("total_time_s")
                entry["reused"] = True
            else:
                t0 = time.perf_counter()
                result = run_recipe(
                    recipe, overwrite=True, glue_dir=glue_dir, latency=False, progress=False, push=False, resume=resume
                )
                report, output_dir, seconds = result.report, result.output_dir, time.perf_counter() - t0
            entry.update(
                output_dir=str(output_dir), compression_time_s=seconds, stages=report.get("stages"), notes=report.get("notes")
            )
        except Exception as exc:  # a failed recipe is reported, the others still run
            logger.error("%s failed: %s", name, exc)
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc(limit=5)
        runs.append(entry)

    latency_config = {"batch_sizes": batch_sizes, "seq_len": seq_len, "runs": latency_runs}
    measured = [{"name": "teacher (fp32)", "output_dir": teacher, "is_baseline": True}, *[r for r in runs if "error" not in r]]
    for entry in measured:
        source = entry["output_dir"]
        logger.info("measuring %s", entry["name"])
        tokenizer = load_tokenizer(source)
        model = load_for_task(source, glue_task)
        _, dev = load_task_datasets(glue_task, tokenizer, seq_len, max_eval_samples=max_eval_samples, glue_dir=glue_dir, with_train=False)
        entry["metrics"] = evaluate_task(model, tokenizer, glue_task, dev, progress=False)
        entry.update(model_figures(model, saved_dir=source, latency_config=latency_config, progress=False))
        del model
    results = {
        "task": glue_task.name,
        "metric_name": glue_task.main_metric,
        "teacher": teacher,
        "overrides": overrides or [],
        "environment": environment(),
        "latency_config": {"batch_sizes": list(batch_sizes), "seq_len": seq_len, "runs": latency_runs},
        "teacher_time_s": teacher_time_s,
        "total_time_s": teacher_time_s + time.perf_counter() - started,
        "results": measured,
        "failed": [r for r in runs if "error" in r],
    }
    (output_root / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (output_root / "results.md").write_text(markdown_results(results))
    plot_frontier(results, output_root / "frontier.png")
    return results


def markdown_results(results: dict[str, Any]) -> str:
    metric = results["metric_name"]
    batches = [str(b) for b in results["latency_config"]["batch_sizes"]]
    base = results["results"][0]
    head = (
        f"| recipe | {metric} | Δ pt | params | non-zero | size | size ratio | "
        + " | ".join(f"bs={b} ms (speed-up)" for b in batches)
        + " | compress time |\n|---|" + "---:|" * (6 + len(batches) + 1) + "\n"
    )
    lines = []
    for r in results["results"]:
        value = r["metrics"][metric]
        lat = " | ".join(
            f"{r['latency_ms'][b]['median']:.1f} ({base['latency_ms'][b]['median'] / r['latency_ms'][b]['median']:.2f}x)" for b in batches
        )
        lines.append(
            f"| {r['name']} | {100 * value:.2f} | {100 * (value - base['metrics'][metric]):+.2f} | "
            f"{r['num_parameters'] / 1e6:.2f}M | {r['nonzero_parameters'] / 1e6:.2f}M | {human_bytes(r['size_bytes'])} | "
            f"{base['size_bytes'] / r['size_bytes']:.2f}x | {lat} | {r.get('compression_time_s', 0):.0f} s |"
        )
    failed = "".join(f"\n- {f['name']}: failed: {f['error']}" for f in results.get("failed", []))
    env = results["environment"]
    footer = (
        f"\n\n{env['cpu']}, {env['threads']} threads, torch {env['torch']}, transformers {env['transformers']}; "
        f"latency: median of {results['latency_config']['runs']} runs, sequence length {results['latency_config']['seq_len']}."
    )
    if "total_time_s" in results:
        teacher = results.get("teacher_time_s", 0.0)
        footer += f" Total time {results['total_time_s'] / 60:.1f} min" + (
            f", of which fine-tuning the teacher {teacher / 60:.1f} min." if teacher >= 1 else " (no teacher fine-tuned in this run)."
        )
    return head + "\n".join(lines) + failed + footer + "\n"


def plot_frontier(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = results["metric_name"]
    batch = str(results["latency_config"]["batch_sizes"][-1])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, (key, label) in zip(axes, (("size", "size on disk (MB)"), ("latency", f"CPU latency, batch {batch} (ms)"))):
        for r in results["results"]:
            x = r["size_bytes"] / 1e6 if key == "size" else r["latency_ms"][batch]["median"]
            y = 100 * r["metrics"][metric]
            style = {"marker": "*", "s": 200, "color": "black"} if r.get("is_baseline") else {"marker": "o", "s": 40}
            if r.get("peer"):
                style = {"marker": "x", "s": 60, "color": "tab:red"}
            ax.scatter([x], [y], **style)
            ax.annotate(r["name"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{results['task']} {metric} (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"hf-compress on {results['task']}: teacher (star) and compressed models")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_results(results: dict[str, Any]) -> str:
    return markdown_results(results)
