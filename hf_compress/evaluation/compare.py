"""Is one model really better than another on the same dev set? Paired tests on the examples.

Two models evaluated on the same dev set often differ by a handful of examples. Whether that is
more than chance is a paired question: they saw the same sentences. McNemar's exact test answers
it from the examples exactly one of the two gets right (McNemar 1947; Dietterich 1998 recommends
it for comparing two classifiers on one test set). Several independent training runs of the same
pair (seeds, data budgets) are summarised with a two-sided sign test on which model won each run.
scipy's `binomtest` does the arithmetic; only the counting is ours.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest

from ..data.glue_tasks import GlueTask
from ..errors import HfCompressError
from .evaluate import load_with_dev_set, predict


def compare_models(
    model_a: str,
    model_b: str,
    task: GlueTask,
    glue_dir: str | None = None,
    max_seq_length: int = 128,
    max_eval_samples: int | None = None,
    batch_size: int = 64,
    dtype: str | None = None,
) -> PairedComparison:
    """Evaluate two classifiers (directories or Hub ids) on the same dev examples of `task` and
    compare them example by example (`hf_compress.evaluation.compare`)."""
    if task.is_regression:
        raise HfCompressError(
            f"compare: {task.name} is a regression task; compare counts the examples each model "
            "classifies correctly, so it needs a classification task (use `hf-compress eval` for "
            "its correlations)"
        )
    predictions, labels = [], []
    for name in (model_a, model_b):
        # each model with its own tokenizer: a vocabulary-pruned model has its own ids for the same
        # text
        model, tokenizer, dev = load_with_dev_set(
            name, task, glue_dir, max_seq_length, max_eval_samples, dtype=dtype
        )
        predictions.append(predict(model, tokenizer, dev, batch_size).argmax(-1))
        labels.append(np.asarray(dev["labels"]))
    if not np.array_equal(
        labels[0], labels[1]
    ):  # pragma: no cover - the dev set is read the same way twice
        raise HfCompressError("compare: the two models were evaluated on different dev examples")
    return compare_predictions(predictions[0], predictions[1], labels[0])


@dataclass(frozen=True)
class PairedComparison:
    """How two classifiers did on the same examples.

    Attributes:
        examples: number of examples both were evaluated on.
        both_correct / a_only_correct / b_only_correct / both_wrong: the 2x2 table of correctness.
        same_prediction: examples where the two predicted the same class (right or wrong).
    """

    examples: int
    both_correct: int
    a_only_correct: int
    b_only_correct: int
    both_wrong: int
    same_prediction: int

    @property
    def accuracy_a(self) -> float:
        return (self.both_correct + self.a_only_correct) / self.examples

    @property
    def accuracy_b(self) -> float:
        return (self.both_correct + self.b_only_correct) / self.examples

    @property
    def net_examples(self) -> int:
        """Examples A gets right and B does not, minus the reverse (positive: A is ahead)."""
        return self.a_only_correct - self.b_only_correct

    @property
    def mcnemar_p(self) -> float:
        """Two-sided exact McNemar p-value: how likely a split of the discordant examples at least
        this uneven is when both models are equally good (1.0 when they never disagree on
        correctness)."""
        discordant = self.a_only_correct + self.b_only_correct
        if discordant == 0:
            return 1.0
        return float(binomtest(self.a_only_correct, discordant, 0.5).pvalue)

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "accuracy_a": self.accuracy_a,
            "accuracy_b": self.accuracy_b,
            "net_examples": self.net_examples,
            "agreement": self.same_prediction / self.examples,
            "mcnemar_p": self.mcnemar_p,
        }


def compare_predictions(predictions_a: Any, predictions_b: Any, labels: Any) -> PairedComparison:
    """The paired comparison of two models' class predictions on the same labelled examples.

    Args:
        predictions_a: class ids predicted by model A, one per example.
        predictions_b: class ids predicted by model B, in the same order.
        labels: the gold class ids, in the same order.
    """
    a, b, gold = (np.asarray(x).reshape(-1) for x in (predictions_a, predictions_b, labels))
    if not (len(a) == len(b) == len(gold)) or len(gold) == 0:
        raise ValueError(
            f"need the same, non-zero number of predictions and labels: got {len(a)}, {len(b)} and "
            f"{len(gold)}"
        )
    right_a, right_b = a == gold, b == gold
    return PairedComparison(
        examples=len(gold),
        both_correct=int(np.sum(right_a & right_b)),
        a_only_correct=int(np.sum(right_a & ~right_b)),
        b_only_correct=int(np.sum(~right_a & right_b)),
        both_wrong=int(np.sum(~right_a & ~right_b)),
        same_prediction=int(np.sum(a == b)),
    )


def sign_test(wins: int, losses: int) -> float:
    """Two-sided sign-test p-value for `wins` against `losses` (ties left out beforehand):
    how likely a record at least this one-sided is when each run is a coin toss."""
    if wins < 0 or losses < 0:
        raise ValueError(f"wins and losses must not be negative: got {wins} and {losses}")
    if wins + losses == 0:
        return 1.0
    return float(binomtest(wins, wins + losses, 0.5).pvalue)
