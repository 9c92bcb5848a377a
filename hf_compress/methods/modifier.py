"""The shape every technique shares: a frozen config dataclass and a `Modifier` with lifecycle
hooks.

A modifier is built from its validated config for one recipe stage. The trainer (through
`ModifierCallback`) calls, in order:

- `on_initialize(model, ctx)` before the stage trains (one-shot techniques do their work here);
- `on_step_begin` / `on_step_end` around every optimizer step (gradual schedules, mask
  re-application after the optimizer moved the weights);
- `on_epoch_end`;
- `on_finalize(model, ctx)` after the stage's training (make pruning permanent, convert QAT to
  int8, ...).

`on_initialize` and `on_finalize` may return a new model object (e.g. a bitsandbytes model
reloaded with a quantization config); returning `None` means the model was changed in place.
Loss-changing techniques (distillation) override `compute_loss`. Runtime state (masks, scores,
schedules) lives on the modifier instance, never on the frozen config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ..errors import RecipeError
from ..recipe.fields import ModifierConfig
from .targets import name_matches, strip_wrapper_prefix

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from ..data.glue_tasks import GlueTask
    from ..recipe.recipe import Stage


@dataclass
class StageContext:
    """What a modifier may use while its stage runs. Built by the trainer (or `compress`).

    A modifier that rewrites the tokenizer (vocabulary pruning) assigns the new one to
    `ctx.tokenizer`; the runner saves `ctx.tokenizer` with the model.
    """

    stage: Stage | None = None
    stage_index: int = 0
    teacher: PreTrainedModel | None = None
    tokenizer: PreTrainedTokenizerBase | None = None
    task: GlueTask | None = None
    train_dataloader: Callable[[], Iterator[dict[str, torch.Tensor]]] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    total_steps: int = 0
    step: int = 0
    world_size: int = 1
    is_main_process: bool = True
    # Where GLUE files live (None: HF_COMPRESS_GLUE_DIR, else the Hub), for
    # modifiers that read the task's raw text (vocabulary pruning).
    glue_dir: str | None = None
    # Notes for report.json / the model card, written by modifiers (e.g. skipped modules).
    notes: list[str] = field(default_factory=list)

    @property
    def progress(self) -> float:
        """Fraction of the stage's optimizer steps done (0.0 before training, 1.0 after)."""
        return min(1.0, self.step / self.total_steps) if self.total_steps else 1.0

    def first_training_batches(
        self, count: int, user: str, purpose: str, alternative: str
    ) -> Iterator[dict[str, Any]]:
        """Yields the stage's first `count` training batches, for a modifier that measures
        something on them (layer sensitivities, Taylor or Fisher importance).

        Args:
            count: batches to yield at most.
            user: who asks, as the error messages name it (e.g. "low_rank: fisher: true").
            purpose: what the batches are for ("to measure importance").
            alternative: the recipe change that needs no batches ("set fisher: false").

        Raises:
            RecipeError: the stage has no training data, or it gave no batch.
        """
        if self.train_dataloader is None:
            raise RecipeError(
                f"{user} needs training batches {purpose}; give the trainer a train_dataset (or "
                f"pass calibration_data to compress()), or {alternative}"
            )
        given = 0
        for batch in self.train_dataloader():
            yield batch
            given += 1
            if given >= count:
                return
        if given == 0:
            raise RecipeError(f"{user} found no training batches; the training data set is empty")

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Averages `tensor` over processes so every rank takes the same decision (no-op on one)."""
        if (
            self.world_size > 1
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
            tensor /= self.world_size
        return tensor

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        if (
            self.world_size > 1
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            torch.distributed.broadcast(tensor, src=src)
        return tensor


class Modifier:
    """Base class of every technique. Subclasses set `config_class` and register with
    `@register_modifier("type")`. The recipe rules of a type (needs a teacher, freezes the
    weights, one per stage, ...) are class attributes of its config class (see
    `ModifierConfig`), checked before any model loads.
    """

    type_name: ClassVar[str] = ""
    config_class: ClassVar[type[ModifierConfig]] = ModifierConfig
    # For the model card: what the technique does, in words; the Hub tags it earns; whether it
    # quantizes (the card then names the quantized base model as such).
    description: ClassVar[str] = ""
    hub_tags: ClassVar[tuple[str, ...]] = ()
    quantizes: ClassVar[bool] = False

    def __init__(self, config: ModifierConfig) -> None:
        self.config = config

    # Lifecycle -----------------------------------------------------------------------------
    def on_initialize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        return None

    def on_step_begin(self, model: PreTrainedModel, ctx: StageContext) -> None:
        return None

    def on_step_end(self, model: PreTrainedModel, ctx: StageContext) -> None:
        return None

    def on_epoch_end(self, model: PreTrainedModel, ctx: StageContext) -> None:
        return None

    def on_finalize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        return None

    # Loss hooks ----------------------------------------------------------------------------
    def forward_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for the student's forward (e.g. `output_hidden_states=True`)."""
        return {}

    def compute_loss(
        self,
        loss: torch.Tensor,
        model: PreTrainedModel,
        inputs: dict[str, torch.Tensor],
        outputs: Any,
        ctx: StageContext,
    ) -> torch.Tensor:
        """Returns the loss to optimise given the task loss; the default keeps it."""
        return loss

    def trainable_modules(self) -> list[nn.Module]:
        """Extra modules with parameters the optimizer must train (e.g. hidden-state
        projections)."""
        return []

    # Reporting and resume ------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What this modifier did, for report.json and the model card."""
        return {"type": self.type_name}

    def state_dict(self) -> dict[str, Any]:
        """Runtime state to save in a Trainer checkpoint so a run can resume."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    # Helpers ------------------------------------------------------------------------------
    def target_modules(
        self,
        model: nn.Module,
        default: Callable[[str, nn.Module], bool],
        kind: type[nn.Module] | tuple[type[nn.Module], ...] = nn.Linear,
    ) -> list[tuple[str, nn.Module]]:
        """The (name, module) pairs of type `kind` this modifier applies to.

        `targets` (when given) replaces `default(name, module)`; `ignore` always removes.
        """
        chosen = []
        for name, module in model.named_modules():
            if not isinstance(module, kind):
                continue
            clean = strip_wrapper_prefix(name)
            wanted = (
                name_matches(clean, self.config.targets)
                if self.config.targets
                else default(clean, module)
            )
            if wanted and not name_matches(clean, self.config.ignore):
                chosen.append((clean, module))
        return chosen


def cubic_schedule(
    progress: float, start: float, end: float, final: float, initial: float = 0.0
) -> float:
    """Sparsity at `progress` for gradual pruning (Zhu & Gupta 2017): cubic from `initial` to
    `final`."""
    if progress <= start:
        return initial if end > start else final
    if progress >= end or end <= start:
        return final
    t = (progress - start) / (end - start)
    return final + (initial - final) * (1.0 - t) ** 3
