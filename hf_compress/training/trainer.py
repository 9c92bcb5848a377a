"""`CompressionTrainer`: a `transformers.Trainer` subclass that runs a recipe's stages.

What it overrides, and why:
- `__init__` takes the recipe, the teacher and the runner's stage hooks, and registers
  `ModifierCallback`, through which the active modifiers see every optimizer step and epoch
  (gradual schedules, masks re-applied after the step, modifier state saved with checkpoints).
- `train` runs the stages in order: each builds its modifiers (`StageRun`), initializes them,
  trains the stage's epochs with `Trainer.train` and finalizes them. Without stages it is
  `Trainer.train`.
- `compute_loss` is `Trainer.compute_loss` with the modifiers' extra forward arguments, then each
  modifier may replace the loss (distillation); training batches are token-masked first when the
  recipe sets `data.token_mask_prob`.
- `create_optimizer` adds the parameters modifiers train beside the model (distillation's
  hidden-state projections).
- `push_to_hub` pushes the compressed output (weights, tokenizer, recipe, report, model card)
  through hf-compress's own push, which checks the files for secrets first.
Everything else is `Trainer` as it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from transformers import (
    DataCollatorWithPadding,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_utils import TrainOutput

from ..data.augment import TokenMasker
from ..errors import UnsupportedModelError
from ..hub.push import push_trainer_output
from ..methods.modifier import Modifier, StageContext
from ..recipe.recipe import Recipe, Stage
from .callbacks import ModifierCallback
from .modifier_state import last_complete_checkpoint, load_modifier_states
from .stages import StageRun

logger = logging.getLogger(__name__)


class CompressionTrainer(Trainer):
    """Runs the stages of a compression recipe on a model.

    `train()` runs every stage of `recipe` in order: each stage builds its modifiers, calls their
    `on_initialize`, trains for the stage's `epochs` (none for one-shot stages) and calls their
    `on_finalize`. Without a recipe it is a plain `Trainer`.

    Args:
        model: the model to compress (the student).
        args: `TrainingArguments` shared by all stages; a stage's `training:` keys override them.
        recipe: the `Recipe` to run (or `stages` to run only some).
        teacher: a teacher model for distillation; kept in eval mode, without gradients, on the
            student's device.
        task: the `GlueTask` (used by modifiers that need to know the label space).
        stages: run these stages instead of `recipe.stages`.
        retokenize: called with the new tokenizer when a modifier replaced it (vocabulary
            pruning); returns the re-tokenized `(train_dataset, eval_dataset)`.
        start_stage: skip the stages before this index (they were completed by an earlier run).
        on_stage_end: called as `on_stage_end(index, trainer)` after each stage (the runner saves
            the model there so an interrupted run can resume from the last completed stage).
        **kwargs: any other `Trainer` argument (datasets, data collator, processing class, ...).
    """

    def __init__(
        self,
        model: PreTrainedModel | None = None,
        args: TrainingArguments | None = None,
        recipe: Recipe | None = None,
        teacher: PreTrainedModel | None = None,
        task: Any = None,
        stages: tuple[Stage, ...] | None = None,
        retokenize: Callable[[Any], tuple[Any, Any]] | None = None,
        start_stage: int = 0,
        on_stage_end: Callable[[int, CompressionTrainer], None] | None = None,
        **kwargs: Any,
    ) -> None:
        stages = tuple(stages if stages is not None else (recipe.stages if recipe else ()))
        with _quantization_check_deferred(model, bool(stages)):
            super().__init__(model=model, args=args, **kwargs)
        self.recipe = recipe
        self.stages = stages
        self.task = task
        self.teacher = teacher
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)
            teacher.to(self.args.device)
        self.modifiers: list[Modifier] = []
        self.context = StageContext(teacher=teacher, task=task, tokenizer=self.processing_class)
        self.modifier_callback = ModifierCallback(self)
        self.add_callback(self.modifier_callback)
        self.stage_summaries: list[dict[str, Any]] = []
        self.retokenize = retokenize
        self.start_stage = start_stage
        self.on_stage_end = on_stage_end
        self._stages_output_dir = self.args.output_dir
        self._token_masker: TokenMasker | None = None

    # Stages ----------------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any) -> TrainOutput:  # type: ignore[override]
        """Runs every stage of the recipe (or plain training without one).

        Args:
            resume_from_checkpoint: with a recipe, `True` resumes the first stage that has not
                been completed from its last Trainer checkpoint (with the modifiers' state).
        """
        if not self.stages:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        output = TrainOutput(global_step=0, training_loss=0.0, metrics={})
        for index, stage in enumerate(self.stages):
            if index < self.start_stage:
                continue
            output = self.run_stage(stage, index, resume=bool(resume_from_checkpoint)) or output
            if self.on_stage_end is not None:
                self.on_stage_end(index, self)
        return output

    def stage_output_dir(self, index: int) -> str:
        """Where the Trainer writes the checkpoints of stage `index`."""
        return os.path.join(self._stages_output_dir, f"stage-{index}")

    def run_stage(self, stage: Stage, index: int = 0, resume: bool = False) -> TrainOutput | None:
        """Runs one stage: initialize its modifiers, train `stage.epochs`, finalize them.

        With `resume`, training continues from the stage's last Trainer checkpoint when there is
        one; `on_initialize` runs again first (it is deterministic for a given model and seed),
        then the checkpoint restores weights, optimizer, schedule and the modifiers' state.
        """
        logger.info(
            "stage %d (%s): %d modifier(s), %s epoch(s)",
            index,
            stage.name,
            len(stage.modifiers),
            stage.epochs,
        )
        ctx = self.context
        ctx.device = self.args.device
        ctx.world_size = self.args.world_size
        ctx.is_main_process = self.is_world_process_zero()
        ctx.train_dataloader = self._calibration_batches if self.train_dataset is not None else None
        run = StageRun(stage, index, ctx)
        self.modifiers = run.modifiers  # what ModifierCallback, compute_loss and the optimizer see

        self._swap_model(run.initialize(self.model))
        self._follow_tokenizer()
        output = None
        if stage.trains:
            _check_quantized_training(self.model, self.modifiers, stage, index)
            self._reset_optimizer()
            checkpoint = None
            if resume:
                checkpoint = last_complete_checkpoint(
                    self.stage_output_dir(index), remove_incomplete=self.is_world_process_zero()
                )
            if checkpoint is not None:
                logger.info("resuming stage %d (%s) from %s", index, stage.name, checkpoint)
                load_modifier_states(self.modifiers, checkpoint)
            with self._stage_args(stage, index):
                output = super().train(resume_from_checkpoint=checkpoint)
            self._drop_mixed_precision_forward()
        self._swap_model(run.finalize(self.model))
        self._follow_tokenizer()
        self.stage_summaries.append(run.summary())
        self.modifiers = []
        self._reset_optimizer()
        return output

    @contextlib.contextmanager
    def _stage_args(self, stage: Stage, index: int) -> Iterator[None]:
        # Set in place and restored after: rebuilding TrainingArguments (dataclasses.replace)
        # re-runs its __post_init__, which resets accelerate's shared state mid-run.
        overrides = {
            **stage.training,
            "num_train_epochs": stage.epochs,
            "output_dir": self.stage_output_dir(index),
        }
        saved = {key: getattr(self.args, key) for key in overrides}
        try:
            for key, value in overrides.items():
                setattr(self.args, key, value)
            yield
        finally:
            for key, value in saved.items():
                setattr(self.args, key, value)

    def _drop_mixed_precision_forward(self) -> None:
        # With bf16 / fp16 training, accelerate wraps the model's forward in autocast and leaves
        # it wrapped: the model the stage hands on, which the run measures and saves, would keep
        # computing in half precision in memory but not after reloading.
        from accelerate.utils import extract_model_from_parallel

        self.model = extract_model_from_parallel(self.model, keep_fp32_wrapper=False)

    def _reset_optimizer(self) -> None:
        # A stage may have changed the parameters (pruned, factorized, replaced): the next stage
        # needs a fresh optimizer and schedule over the current parameters.
        self.optimizer = None
        self.lr_scheduler = None
        self.model_wrapped = self.model

    def _swap_model(self, new_model: PreTrainedModel | None) -> None:
        if new_model is not None and new_model is not self.model:
            self.model = new_model
            self.model_wrapped = new_model

    def _follow_tokenizer(self) -> None:
        # A modifier replaced the tokenizer (vocabulary pruning): the data must be re-encoded.
        new = self.context.tokenizer
        if new is None or new is self.processing_class:
            return
        if self.retokenize is None:
            raise RuntimeError(
                "a modifier replaced the tokenizer; pass `retokenize=` to CompressionTrainer"
            )
        self.train_dataset, self.eval_dataset = self.retokenize(new)
        self.processing_class = new
        self.data_collator = DataCollatorWithPadding(new)

    def _calibration_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Training batches on the model's device, for importance scores and calibration."""
        for batch in self.get_train_dataloader():
            yield {
                k: v.to(self.args.device) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()
            }

    def _augment(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The training batch with `data.token_mask_prob` of its tokens masked (unchanged when
        0)."""
        probability = self.recipe.data.token_mask_prob if self.recipe is not None else 0.0
        if probability == 0:
            return inputs
        tokenizer = self.context.tokenizer or self.processing_class
        if (
            self._token_masker is None or self._token_masker.tokenizer is not tokenizer
        ):  # vocabulary pruning swaps it
            self._token_masker = TokenMasker(
                tokenizer, probability, seed=self.recipe.seed + self.args.process_index
            )
        return self._token_masker(inputs)

    # Hub -------------------------------------------------------------------------------------
    def push_to_hub(  # type: ignore[override]
        self,
        commit_message: str | None = None,
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        repo_id: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Saves the compressed model (with tokenizer, recipe.yaml, report.json and model card) and
        pushes it to the Hub in one commit; returns the commit URL. Keeps `Trainer.push_to_hub`'s
        leading arguments because `Trainer.save_model` calls it when `args.push_to_hub` is set."""
        return push_trainer_output(
            self,
            repo_id,
            private=bool(private if private is not None else self.args.hub_private_repo),
            revision=revision or self.args.hub_revision,
            commit_message=commit_message,
            token=token,
        )

    # Loss -----------------------------------------------------------------------------------
    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        """The usual optimizer, plus any parameters that modifiers train beside the model
        (e.g. distillation's hidden-state projections)."""
        optimizer = (
            super().create_optimizer(model) if model is not None else super().create_optimizer()
        )
        extra = [
            p
            for m in self.modifiers
            for module in m.trainable_modules()
            for p in module.parameters()
            if p.requires_grad
        ]
        if extra:
            optimizer.add_param_group({"params": extra, "weight_decay": 0.0})
        return optimizer

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        if model.training:
            inputs = self._augment(inputs)
        extra_kwargs: dict[str, Any] = {}
        for modifier in self.modifiers:
            extra_kwargs.update(modifier.forward_kwargs())
        model_inputs = {**inputs, **extra_kwargs}
        loss, outputs = super().compute_loss(
            model, model_inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        for modifier in self.modifiers:
            loss = modifier.compute_loss(loss, model, inputs, outputs, self.context)
        return (loss, outputs) if return_outputs else loss


@contextlib.contextmanager
def _quantization_check_deferred(model: PreTrainedModel | None, defer: bool) -> Iterator[None]:
    """Keeps `Trainer.__init__` from refusing a bitsandbytes-quantized model that the stages will
    prepare before they train it.

    `Trainer.__init__` refuses to fine-tune a quantized model without a peft wrapper. With stages,
    the model given to the constructor is not what a stage trains: each stage's modifiers prepare
    it first (`lora` injects adapters and freezes the quantized weights), and
    `_check_quantized_training` checks the model a stage is about to train. A fresh run never meets
    the refusal (it quantizes after construction); a resumed run hands over the quantized model
    reloaded from the stage snapshot, so the constructor must accept it the same way.
    """
    hide = defer and model is not None and getattr(model, "is_quantized", False) is True
    if hide:
        model.is_quantized = False  # the flag transformers' check reads; restored right after
    try:
        yield
    finally:
        if hide:
            model.is_quantized = True


def _check_quantized_training(
    model: torch.nn.Module, modifiers: list[Modifier], stage: Stage, index: int
) -> None:
    """Refuses to train a bitsandbytes-quantized model in a stage without a modifier (LoRA) that
    trains beside the frozen quantized weights (what `Trainer.__init__` would have refused)."""
    if getattr(model, "is_quantized", False) and not any(
        m.config.allows_training_after_freeze for m in modifiers
    ):
        raise UnsupportedModelError(
            f"stage {index} ({stage.name}) trains a bitsandbytes-quantized model, whose weights "
            "are frozen; add a `lora` modifier to the stage to train adapters on it, or quantize "
            "in the last stage"
        )
