"""The accuracy / size / speed frontier of several recipes against one teacher, on one task.

`run_benchmark` runs each recipe from the same fine-tuned teacher (its `base_model` and
`teacher` are pointed at it, `finetune_base` dropped), then measures the teacher and every
result in one process, one after the other: the task metric on the dev set, parameters,
non-zero parameters, bytes on disk and CPU latency. It writes `results.json`, `results.md` and
`frontier.png` (metric against size and against latency, the teacher marked).
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any

from .data.glue_tasks import get_task
from .data.preprocess import load_task_datasets
from .evaluation import evaluate_task, model_figures
from .measure import environment
from .models import load_for_task, load_tokenizer
from .recipe import Recipe
from .reporting import human_bytes
from .runner import run_recipe

logger = logging.getLogger(__name__)


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
) -> dict[str, Any]:
    """Runs `recipes` from `teacher` and measures everything side by side.

    Args:
        task: the GLUE task.
        teacher: directory of the fine-tuned teacher (also the baseline and each recipe's base).
        recipes: recipe files.
        output_root: where each recipe's output and the results go.
        overrides: `--set` overrides applied to every recipe (e.g. `data.max_train_samples=8000`).
        glue_dir: local GLUE folder.
        latency_runs: timed runs per batch size.
        batch_sizes: latency batch sizes.
        seq_len: latency sequence length.
        max_eval_samples: evaluate on at most this many dev examples (default: all).
    """
    output_root = Path(output_root)
    output_root.mkdir(parents=True, exist_ok=True)
    glue_task = get_task(task)
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    for path in recipes:
        name = Path(path).stem
        entry: dict[str, Any] = {"name": name, "recipe": str(path)}
        try:
            recipe = benchmark_recipe(path, teacher, output_root, overrides or [])
            t0 = time.perf_counter()
            result = run_recipe(recipe, overwrite=True, glue_dir=glue_dir, latency=False, progress=False, push=False)
            entry.update(
                output_dir=str(result.output_dir),
                compression_time_s=time.perf_counter() - t0,
                stages=result.report.get("stages"),
                notes=result.report.get("notes"),
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
        "total_time_s": time.perf_counter() - started,
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
