"""`hf-compress bench`: size, parameters, latency (and the GLUE metric) of several models side by
side."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..checkpoint.loading import load_checked_tokenizer
from ..checkpoint.sources import resolve_model_source
from ..errors import HfCompressError
from .evaluate import model_figures
from .measure import environment


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
    from ..checkpoint.export import is_onnx_export
    from ..data.glue_tasks import get_task
    from ..data.preprocess import load_task_datasets
    from .evaluate import evaluate_task
    from .load import load_model_for_eval
    from .precision import check_dtype

    if not dtypes:
        raise HfCompressError("bench: no dtype to measure in (give at least one, e.g. float32)")
    for dtype in dtypes:
        check_dtype(dtype)
    glue_task = get_task(task) if task else None
    rows = []
    for name in models:
        source = resolve_model_source(name)
        saved_dir = source if Path(source).is_dir() else None
        dev = tokenizer = None
        for dtype in ("onnx",) if is_onnx_export(source) else dtypes:
            model = load_model_for_eval(source, glue_task, dtype=None if dtype == "onnx" else dtype)
            row: dict[str, Any] = {"model": name, "dtype": dtype}
            row.update(
                model_figures(
                    model,
                    saved_dir=saved_dir,
                    latency_config={"batch_sizes": batch_sizes, "seq_len": seq_len, "runs": runs},
                )
            )
            if glue_task is not None:
                if dev is None:
                    tokenizer = load_checked_tokenizer(source)
                    _, dev = load_task_datasets(
                        glue_task,
                        tokenizer,
                        seq_len,
                        max_eval_samples=max_eval_samples,
                        glue_dir=glue_dir,
                        with_train=False,
                    )
                row["metrics"] = evaluate_task(model, tokenizer, glue_task, dev)
            rows.append(row)
            del model
    if output:
        Path(output).write_text(
            json.dumps(
                {"environment": environment(), "seq_len": seq_len, "results": rows}, indent=2
            )
        )
    return rows
