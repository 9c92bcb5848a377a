"""The `TrainingArguments` of a run: hf-compress's defaults under the recipe's `training:` keys,
and the check, before anything loads, that transformers accepts them."""

from __future__ import annotations

import tempfile
from typing import Any

import torch
from transformers import TrainingArguments

from ..errors import RecipeError
from ..recipe.recipe import Recipe


def training_arguments(recipe: Recipe, output_dir: str, **overrides: Any) -> TrainingArguments:
    """TrainingArguments from the recipe's `training` keys, with defaults suited to compression
    runs."""
    values = {**_defaults(recipe), **recipe.training, **overrides}
    return TrainingArguments(output_dir=output_dir, **values)


def _defaults(recipe: Recipe) -> dict[str, Any]:
    return {
        "per_device_train_batch_size": 32,
        "per_device_eval_batch_size": 64,
        "learning_rate": 5e-5,
        "report_to": [],
        # Checkpoints let an interrupted run resume (`--resume`); one is kept.
        "save_strategy": "steps",
        "save_steps": 200,
        "save_total_limit": 1,
        "logging_steps": 50,
        "seed": recipe.seed,
        "dataloader_num_workers": 0,
        # Under DDP the default (True) reports losses scaled by the world size (DESIGN.md).
        "average_tokens_across_devices": False,
        # Without it, several CPU processes (accelerate launch / torchrun) do not form a gloo
        # group: each would train alone on the whole data set.
        "use_cpu": not torch.cuda.is_available(),
    }


def check_training_arguments(recipe: Recipe) -> None:
    """Builds the real `TrainingArguments` of every stage (cheap, no model), so a value
    transformers refuses (an unknown scheduler, optimizer or strategy, a DeepSpeed config that
    cannot be used) and a logging integration that is not installed fail now, with the key.

    Raises:
        RecipeError: one line naming the recipe, the `training` key and the fix.
    """
    from transformers.integrations import get_available_reporting_integrations

    with tempfile.TemporaryDirectory() as scratch:
        for index, stage in enumerate(recipe.stages):
            where = f"{recipe.source}: stages[{index}].training" if stage.training else None
            where = where or f"{recipe.source}: training"
            try:
                args = training_arguments(recipe, scratch, **stage.training)
            except Exception as exc:  # noqa: BLE001  (transformers raises ValueError, ImportError, ...)
                key = _culprit(recipe, scratch, {**recipe.training, **stage.training})
                first = next((line for line in str(exc).splitlines() if line.strip()), "")
                named = f"{where}.{key}" if key else where
                raise RecipeError(
                    f"{named}: transformers refuses it ({type(exc).__name__}: {first[:240]}); fix "
                    "the value or remove the key"
                ) from exc
            available = set(get_available_reporting_integrations())
            missing = [name for name in args.report_to if name not in available]
            if missing:
                raise RecipeError(
                    f"{where}.report_to: {', '.join(missing)} is not installed; install it (pip "
                    f"install {missing[0]}) or remove it from report_to"
                )


def _culprit(recipe: Recipe, scratch: str, values: dict[str, Any]) -> str | None:
    """The first `training` key that transformers refuses on its own (None: only together)."""
    for key, value in values.items():
        try:
            TrainingArguments(output_dir=scratch, **{**_defaults(recipe), key: value})
        except Exception:  # noqa: BLE001
            return key
    return None
