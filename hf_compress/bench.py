"""`hf-compress bench`: size, parameters, latency (and the GLUE metric) of several models side by side."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import HfCompressError
from .evaluation import model_figures
from .loading import load_checked_tokenizer, resolve_checkpoint
from .measure import environment
from .reporting import human_bytes


def bench_models(
    models: list[str],
    task: str | None = None,
    glue_dir: str | None = None,
    batch_sizes: tuple[int, ...] = (1, 32),
    seq_len: int = 128,
    runs: int = 10,
    max_eval_samples: int | None = None,
    output: str | None = None,
    dtypes: Sequence[str] = ("float32",),
) -> list[dict[str, Any]]:
    """Measures every model in the same process and returns one row per model and dtype.

    `dtypes`: compute precisions to measure each PyTorch model in ("float32", "bfloat16",
    "float16"; see `load_model_for_eval`), e.g. `("float32", "bfloat16")` for both side by side.
    An ONNX export is measured once, as exported.

    Each row has `model`, `dtype` ("onnx" for exports), `size_bytes` (on disk), `num_parameters`,
    `nonzero_parameters`, `latency_ms` (per batch size: median, p10, p90) and, with `task`,
    `metrics`.
    """
    from .data.glue_tasks import get_task
    from .data.preprocess import load_task_datasets
    from .evaluation import evaluate_task
    from .export import is_onnx_export
    from .quant_loading import check_dtype, load_model_for_eval

    if not dtypes:
        raise HfCompressError("bench: no dtype to measure in (give at least one, e.g. float32)")
    for dtype in dtypes:
        check_dtype(dtype)
    glue_task = get_task(task) if task else None
    rows = []
    for name in models:
        source = resolve_checkpoint(name)
        saved_dir = source if Path(source).is_dir() else None
        dev = tokenizer = None
        for dtype in ("onnx",) if is_onnx_export(source) else dtypes:
            model = load_model_for_eval(source, glue_task, dtype=None if dtype == "onnx" else dtype)
            row: dict[str, Any] = {"model": name, "dtype": dtype}
            row.update(
                model_figures(
                    model, saved_dir=saved_dir, latency_config={"batch_sizes": batch_sizes, "seq_len": seq_len, "runs": runs}
                )
            )
            if glue_task is not None:
                if dev is None:
                    tokenizer = load_checked_tokenizer(source)
                    _, dev = load_task_datasets(
                        glue_task, tokenizer, seq_len, max_eval_samples=max_eval_samples, glue_dir=glue_dir, with_train=False
                    )
                row["metrics"] = evaluate_task(model, tokenizer, glue_task, dev)
            rows.append(row)
            del model
    if output:
        Path(output).write_text(json.dumps({"environment": environment(), "seq_len": seq_len, "results": rows}, indent=2))
    return rows


def format_bench_table(rows: list[dict[str, Any]]) -> str:
    batch_sizes = list(rows[0]["latency_ms"]) if rows and "latency_ms" in rows[0] else []
    header = ["model", "params", "non-zero", "size", *[f"bs={b} ms" for b in batch_sizes]]
    has_metric = any("metrics" in r for r in rows)
    if has_metric:
        header.append("metric")
    table = [header]
    for r in rows:
        precision = r.get("dtype", "float32")
        line = [
            r["model"] if precision in ("float32", "onnx") else f"{r['model']} ({precision})",
            f"{r['num_parameters'] / 1e6:.2f}M",
            f"{r['nonzero_parameters'] / 1e6:.2f}M",
            human_bytes(r["size_bytes"]),
            *[f"{r['latency_ms'][b]['median']:.1f}" for b in batch_sizes],
        ]
        if has_metric:
            metrics = {k: v for k, v in r.get("metrics", {}).items() if k != "eval_samples"}
            line.append(", ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items()))
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in table)
