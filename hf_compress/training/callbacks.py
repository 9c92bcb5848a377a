"""`ModifierCallback`: forwards the Trainer's step and epoch events to the active modifiers."""

from __future__ import annotations

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

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # Beside the Trainer's own checkpoint files: a resumed stage gets its masks and schedules
        # back.
        if self.trainer.is_world_process_zero():
            directory = f"{args.output_dir}/{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            save_modifier_states(self.trainer.modifiers, directory)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        for modifier in self.trainer.modifiers:
            modifier.on_epoch_end(self.trainer.model, self.trainer.context)
