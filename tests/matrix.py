"""The shared test matrix: every technique crossed with generic checks (DESIGN.md section 5).

Each technique adds its cases in `tests/matrix_cases/<technique>.py` as a module-level
`CASES = [MatrixCase(...), ...]`; `test_matrix.py` collects them all and runs, per case and
model family: applies, forward shape, save -> from_pretrained gives the same logits, config JSON
round trip, and the model really shrinks.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any

from tiny import FAMILIES, tiny_dataset, tiny_model, tiny_training_args

from hf_compress import CompressionTrainer, Recipe


@dataclass
class MatrixCase:
    """One technique configuration to run through the generic checks.

    Args:
        id: test id.
        modifiers: the stage's modifier entries, as in a recipe.
        epochs: training epochs of the stage on the tiny data set (0 = one-shot).
        families: model families to run on.
        shrinks: what must fall versus the dense model: "parameters", "nonzero", "bytes" or "none".
        teacher: give the trainer a teacher (an unmodified copy of the model).
        atol: tolerance of the reload logits check.
    """

    id: str
    modifiers: list[dict[str, Any]]
    epochs: float = 0.0
    families: tuple[str, ...] = FAMILIES
    shrinks: str = "parameters"
    teacher: bool = False
    atol: float = 1e-5
    extra_stages: list[dict[str, Any]] = field(default_factory=list)


# int8 Linear layers, int8 embeddings and one layer kept in float: every form an export must keep.
INT8_EMBEDDINGS_FALLBACK = MatrixCase(
    id="int8-embeddings-fallback",
    modifiers=[
        {
            "type": "quantization",
            "method": "int8_dynamic",
            "include_embeddings": True,
            "fp32_fallback": 1,
        }
    ],
)


def all_cases() -> list[MatrixCase]:
    import matrix_cases

    cases: list[MatrixCase] = []
    for info in pkgutil.iter_modules(matrix_cases.__path__):
        module = importlib.import_module(f"matrix_cases.{info.name}")
        cases.extend(getattr(module, "CASES", []))
    return cases


def apply_case(case: MatrixCase, family: str):
    """Builds a tiny model of `family` and runs the case's stage on it; returns (model, dense
    model)."""
    import copy

    model = tiny_model(family)
    dense = copy.deepcopy(model)
    stages = [
        {"name": "case", "epochs": case.epochs, "modifiers": case.modifiers},
        *case.extra_stages,
    ]
    recipe = Recipe.from_dict(
        {
            "base_model": "tiny",
            "task": "sst2",
            "teacher": "tiny-teacher" if case.teacher else "none",
            "output_dir": "unused",
            "stages": stages,
        },
        source=f"matrix:{case.id}",
    )
    args = tiny_training_args()
    trainer = CompressionTrainer(
        model=model,
        args=args,
        recipe=recipe,
        teacher=copy.deepcopy(dense) if case.teacher else None,
        train_dataset=tiny_dataset(),
    )
    trainer.train()
    return trainer.model.eval(), dense
