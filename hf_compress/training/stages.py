"""One recipe stage's modifiers and their lifecycle, written once for `CompressionTrainer` (which
trains between `initialize` and `finalize`) and for `compress` (one-shot, no training)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from ..methods.modifier import StageContext
    from ..recipe import Stage


class StageRun:
    """The modifiers of stage `index`, built from its specs, sharing the context `ctx`.

    `initialize` calls every modifier's `on_initialize` in recipe order, `finalize` every
    `on_finalize`; each may return a new model object (a bitsandbytes model reloaded with its
    quantization config), which the next modifier then receives.
    """

    def __init__(self, stage: Stage, index: int, ctx: StageContext) -> None:
        self.stage = stage
        self.index = index
        self.ctx = ctx
        self.modifiers = [spec.build() for spec in stage.modifiers]
        ctx.stage, ctx.stage_index, ctx.step, ctx.total_steps = stage, index, 0, 0

    def initialize(self, model: PreTrainedModel) -> PreTrainedModel:
        from ..checkpoint.layout import prepare_layout

        prepare_layout(model)  # e.g. GPT-2's Conv1D layers become the nn.Linear the techniques use
        for modifier in self.modifiers:
            model = modifier.on_initialize(model, self.ctx) or model
        return model

    def finalize(self, model: PreTrainedModel) -> PreTrainedModel:
        self.ctx.step = self.ctx.total_steps  # the stage is over: gradual schedules at their end
        for modifier in self.modifiers:
            model = modifier.on_finalize(model, self.ctx) or model
        return model

    def summary(self) -> dict[str, Any]:
        """What the stage did, for report.json and the model card."""
        return {
            "name": self.stage.name,
            "epochs": self.stage.epochs,
            "modifiers": [m.summary() for m in self.modifiers],
        }
