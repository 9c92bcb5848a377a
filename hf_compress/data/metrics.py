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


def chance_level(task: GlueTask | str, references: Any) -> tuple[float, float]:
    """(score, noise) of the task's main metric for a model that has learned nothing.

    The score of always predicting the most frequent label (classification: accuracy or F1 of
    that constant; Matthews correlation and the correlations of STS-B are 0 for any constant),
    and two standard errors of that score on this many examples: a model within
    `score + noise` cannot be told apart from one that never read the input.
    """
    task = get_task(task) if isinstance(task, str) else task
    references = np.asarray(references)
    n = max(len(references), 1)
    if task.is_regression or task.main_metric in ("matthews_correlation", "pearson", "spearmanr"):
        return 0.0, 2.0 / float(np.sqrt(n))
    values, counts = np.unique(references, return_counts=True)
    majority = np.full_like(references, values[counts.argmax()])
    score = glue_metrics(task, majority, references)[task.main_metric]
    return score, 2.0 * float(np.sqrt(max(score * (1 - score), 1e-12) / n))


def chance_warning(task: GlueTask | str, references: Any, metrics: dict[str, float]) -> str | None:
    """A warning when `metrics` are within noise of `chance_level`, else None."""
    task = get_task(task) if isinstance(task, str) else task
    value = metrics.get(task.main_metric)
    if value is None:
        return None
    score, noise = chance_level(task, references)
    if value > score + noise:
        return None
    return (
        f"the baseline's {task.main_metric} ({100 * value:.2f}) is within noise of a model that "
        f"learned nothing ({100 * score:.2f} +- {100 * noise:.2f} on {len(references)} dev "
        "examples), so a change against it means little; fine-tune the base longer "
        "(finetune_base.epochs) or on more data (data.max_train_samples) first"
    )
