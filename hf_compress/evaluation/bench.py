"""`hf-compress bench`: size, parameters, latency (and the GLUE metric) of several models side by
side."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..checkpoint.loading import load_checked_tokenizer
from ..checkpoint.sources import resolve_model_source
from ..errors import HfCompressError
from .evaluate import model_figures
from .measure import compare_latency, environment

logger = logging.getLogger(__name__)


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
    An ONNX or OpenVINO export is measured once, as exported. All models are loaded first and timed
    round-robin (`compare_latency`), so their speed ratios hold even on a busy machine; each
    row's `speedup` is against the first row.

    Each row has `model`, `dtype` ("onnx" / "openvino" for exports), `size_bytes` (on disk),
    `num_parameters`, `nonzero_parameters`, `latency_ms` (per batch size: median, p10, p90),
    `speedup` (per batch size, against the first row), `latency_reliable` and, with `task`,
    `metrics`.
    """
    from ..checkpoint.export import export_format
    from ..data.glue_tasks import get_task
    from ..data.preprocess import TaskData
    from .evaluate import evaluate_task
    from .load import load_model_for_eval
    from .precision import check_dtype

    if not dtypes:
        raise HfCompressError("bench: no dtype to measure in (give at least one, e.g. float32)")
    for dtype in dtypes:
        check_dtype(dtype)
    data = (
        TaskData(get_task(task), seq_len, max_eval_samples=max_eval_samples, glue_dir=glue_dir)
        if task
        else None
    )
    rows, loaded = [], {}
    for name in models:
        source = resolve_model_source(name)
        saved_dir = source if Path(source).is_dir() else None
        dev = tokenizer = None
        exported = export_format(source)
        for dtype in (exported,) if exported else dtypes:
            model = load_model_for_eval(
                source, data.task if data else None, dtype=None if exported else dtype
            )
            row: dict[str, Any] = {"model": name, "dtype": dtype}
            row.update(model_figures(model, saved_dir=saved_dir, latency=False))
            if data is not None:
                if dev is None:
                    tokenizer = load_checked_tokenizer(source)
                    dev = data.dev(tokenizer)
                logger.info("evaluating %s (%s)", name, dtype)
                row["metrics"] = evaluate_task(model, tokenizer, data.task, dev, progress=False)
            rows.append(row)
            loaded[f"{len(rows)}: {name} ({dtype})"] = model
    logger.info("timing %d model(s) round-robin", len(loaded))
    timing = compare_latency(loaded, batch_sizes, seq_len, runs)
    for row, key in zip(rows, loaded):
        row["latency_ms"] = timing["latency_ms"][key]
        row["speedup"] = timing["speedup"].get(key)
        row["latency_reliable"] = timing["reliable"]
    if output:
        Path(output).write_text(
            json.dumps(
                {
                    "environment": environment(),
                    "seq_len": seq_len,
                    "latency": {k: timing[k] for k in ("reliable", "reason", "load_per_core")},
                    "results": rows,
                },
                indent=2,
            )
        )
    if not timing["reliable"]:
        logger.warning("speed figures are unreliable: %s; run bench again later", timing["reason"])
    return rows
