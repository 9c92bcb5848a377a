"""Official GLUE metrics, computed locally with scikit-learn and scipy.

`evaluate.load("glue", ...)` fetches its script from the Hub, which fails offline, so the
metrics are computed directly from the libraries the official script itself uses.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from .glue_tasks import GlueTask, get_task


def glue_metrics(task: GlueTask | str, predictions: Any, references: Any) -> dict[str, float]:
    """The task's official metrics.

    Args:
        task: a `GlueTask` or its name.
        predictions: class ids (classification) or scores (STS-B).
        references: gold labels.

    Returns:
        e.g. `{"accuracy": 0.91}`, `{"f1": 0.88, "accuracy": 0.84}`,
        `{"pearson": ..., "spearmanr": ...}`, `{"matthews_correlation": ...}`.
    """
    task = get_task(task) if isinstance(task, str) else task
    predictions = np.asarray(predictions)
    references = np.asarray(references)
    if predictions.shape != references.shape:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    results: dict[str, float] = {}
    for name in task.metrics:
        if name == "accuracy":
            results[name] = float(accuracy_score(references, predictions))
        elif name == "f1":
            results[name] = float(f1_score(references, predictions))
        elif name == "matthews_correlation":
            results[name] = float(matthews_corrcoef(references, predictions))
        elif name == "pearson":
            results[name] = float(pearsonr(predictions, references)[0])
        elif name == "spearmanr":
            results[name] = float(spearmanr(predictions, references)[0])
        else:  # pragma: no cover - a task table bug
            raise KeyError(name)
    return results
