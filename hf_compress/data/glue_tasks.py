"""The nine GLUE tasks: files, columns, labels and official metrics.

Label ids follow the Hub's `nyu-mll/glue` dataset, so a model trained on local TSV files and one
trained on the Hub copy agree (e.g. RTE: entailment = 0, not_entailment = 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .text import LanguageModelingTask


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task.

    Args:
        name: the recipe / Hub config name (`sst2`).
        directory: folder name in the original GLUE layout (`SST-2`).
        text_fields: Hub column names of the one or two input texts.
        tsv_columns: original TSV column names (or indices for header-less CoLA) of the texts
            and the label, in the order `(*texts, label)`.
        labels: label names in id order; empty for regression (STS-B).
        tsv_label_map: how TSV label strings map to ids (default: the string is the id).
        metrics: official metric names; `main_metric` is the first.
        has_header: whether the TSV starts with a header line.
        dev_splits: dev file stems (MNLI has matched and mismatched).
    """

    name: str
    directory: str
    text_fields: tuple[str, ...]
    tsv_columns: tuple[str | int, ...]
    labels: tuple[str, ...]
    metrics: tuple[str, ...]
    tsv_label_map: tuple[tuple[str, int], ...] = ()
    has_header: bool = True
    dev_splits: tuple[str, ...] = ("dev",)

    @property
    def is_regression(self) -> bool:
        return not self.labels

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.labels)

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    @property
    def hub_validation_split(self) -> str:
        return "validation_matched" if self.name == "mnli" else "validation"

    def label_id(self, raw: str) -> float | int:
        if self.is_regression:
            return float(raw)
        mapping = dict(self.tsv_label_map)
        return mapping[raw] if mapping else int(raw)


_NLI = (("entailment", 0), ("not_entailment", 1))

GLUE_TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        GlueTask(
            "cola",
            "CoLA",
            ("sentence",),
            (3, 1),
            ("unacceptable", "acceptable"),
            ("matthews_correlation",),
            has_header=False,
        ),
        GlueTask(
            "sst2",
            "SST-2",
            ("sentence",),
            ("sentence", "label"),
            ("negative", "positive"),
            ("accuracy",),
        ),
        GlueTask(
            "mrpc",
            "MRPC",
            ("sentence1", "sentence2"),
            ("#1 String", "#2 String", "Quality"),
            ("not_equivalent", "equivalent"),
            ("f1", "accuracy"),
        ),
        GlueTask(
            "stsb",
            "STS-B",
            ("sentence1", "sentence2"),
            ("sentence1", "sentence2", "score"),
            (),
            ("pearson", "spearmanr"),
        ),
        GlueTask(
            "qqp",
            "QQP",
            ("question1", "question2"),
            ("question1", "question2", "is_duplicate"),
            ("not_duplicate", "duplicate"),
            ("f1", "accuracy"),
        ),
        GlueTask(
            "mnli",
            "MNLI",
            ("premise", "hypothesis"),
            ("sentence1", "sentence2", "gold_label"),
            ("entailment", "neutral", "contradiction"),
            ("accuracy",),
            tsv_label_map=(("entailment", 0), ("neutral", 1), ("contradiction", 2)),
            dev_splits=("dev_matched", "dev_mismatched"),
        ),
        GlueTask(
            "qnli",
            "QNLI",
            ("question", "sentence"),
            ("question", "sentence", "label"),
            ("entailment", "not_entailment"),
            ("accuracy",),
            tsv_label_map=_NLI,
        ),
        GlueTask(
            "rte",
            "RTE",
            ("sentence1", "sentence2"),
            ("sentence1", "sentence2", "label"),
            ("entailment", "not_entailment"),
            ("accuracy",),
            tsv_label_map=_NLI,
        ),
        GlueTask(
            "wnli",
            "WNLI",
            ("sentence1", "sentence2"),
            ("sentence1", "sentence2", "label"),
            ("not_entailment", "entailment"),
            ("accuracy",),
        ),
    )
}


def get_task(name: str) -> GlueTask | LanguageModelingTask:
    """The GLUE task `name` (`sst2`, `SST-2`, ...), or the causal-LM task for `causal_lm`."""
    from ..errors import DataError
    from .text import LANGUAGE_MODELING

    key = name.lower().replace("-", "")
    if key.replace("_", "") == "causallm":
        return LANGUAGE_MODELING
    if key not in GLUE_TASKS:
        raise DataError(
            f"unknown GLUE task {name!r}; tasks: {', '.join(GLUE_TASKS)} (or "
            f"{LANGUAGE_MODELING.name} for language modelling)"
        )
    return GLUE_TASKS[key]
