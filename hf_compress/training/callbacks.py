"""`ModifierCallback`: forwards the Trainer's step and epoch events to the active modifiers."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from transformers import (
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .modifier_state import save_modifier_states

if TYPE_CHECKING:
    from .trainer import CompressionTrainer


class ModifierCallback(TrainerCallback):
    """Keeps the stage context's step counters current and calls the modifiers' hooks.

    `on_step_end` runs after the optimizer step, which is where masks are re-applied so pruned
    weights stay zero, and where gradual schedules advance.
    """

    def __init__(self, trainer: CompressionTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        ctx = self.trainer.context
        ctx.total_steps = state.max_steps
        ctx.step = state.global_step

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        ctx = self.trainer.context
        ctx.step = state.global_step
        for modifier in self.trainer.modifiers:
            modifier.on_step_begin(self.trainer.model, ctx)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        ctx = self.trainer.context
        ctx.step = state.global_step
        for modifier in self.trainer.modifiers:
            modifier.on_step_end(self.trainer.model, ctx)
        self._save_states_before_checkpoint(args, state, control)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        for modifier in self.trainer.modifiers:
            modifier.on_epoch_end(self.trainer.model, self.trainer.context)
        self._save_states_before_checkpoint(args, state, control)

    def _save_states_before_checkpoint(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl
    ) -> None:
        # The Trainer writes this step's checkpoint right after this event, ending with its
        # trainer_state.json; the modifiers' state (masks, schedules) goes into that folder first,
        # so a checkpoint with trainer_state.json is complete, ours included.
        if control.should_save and self.trainer.is_world_process_zero():
            name = f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            save_modifier_states(self.trainer.modifiers, os.path.join(args.output_dir, name))
