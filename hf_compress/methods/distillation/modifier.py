"""Knowledge distillation (Hinton et al. 2015; DistilBERT, Sanh et al. 2019) and layer dropping.

`distillation` changes the training loss of its stage to

    alpha_kd * T^2 * KL(softmax(teacher / T) || softmax(student / T))      (MSE on regression tasks)
  + alpha_ce * task loss on the gold labels
  + alpha_hidden * hidden-state loss (1 - cosine, or MSE) between mapped student / teacher layers

The teacher runs under `torch.no_grad()` in eval mode on the student's device; its logits may be
cached per example across epochs (`cache_teacher_logits`). With `student: {num_layers: 3}` the
model being trained is first reduced in place to a subset of its own layers (every other layer
by default), initialised from those layers' weights, as DistilBERT built its student.

`layer_dropping` does the same reduction without a teacher (the gold-labels-only control of a
distillation experiment, or a plain smaller model).

Works with pruning in the same stage: head / FFN pruning keeps the hidden size and depth, so the
unpruned teacher teaches the pruned student layer for layer. Put a `distillation` that builds a
student first in its stage (or use `layer_dropping` in an earlier stage), so the other modifiers
see the reduced model.
"""

from __future__ import annotations

import hashlib
import inspect
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...architectures.base import get_adapter
from ...errors import RecipeError, UnsupportedModelError
from ...recipe.registry import register_modifier
from ..modifier import Modifier, StageContext
from .config import (
    DistillationConfig,
    LayerDroppingConfig,
)
from .loss import default_layer_map, hidden_state_loss, soft_target_loss
from .student import block_influence, keep_layers, layer_origin, select_layers

if TYPE_CHECKING:
    from transformers import PreTrainedModel


# Inputs the teacher may take from the student's batch (labels and bookkeeping columns are not
# model inputs; token_type_ids only if the teacher's forward names it, DistilBERT's does not).
_TEACHER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def _is_generic_label(name: Any, index: Any) -> bool:
    return str(name) == f"LABEL_{index}"


def check_teacher_student(teacher: PreTrainedModel, student: PreTrainedModel) -> None:
    """Refuses a teacher whose outputs cannot teach `student`.

    Raises:
        UnsupportedModelError: different label counts, different label names (when both name
            their labels), or different vocabulary sizes (different tokenizers).
    """
    t_cfg, s_cfg = teacher.config, student.config
    if t_cfg.num_labels != s_cfg.num_labels:
        raise UnsupportedModelError(
            f"the teacher has {t_cfg.num_labels} output(s) but the student has {s_cfg.num_labels}; "
            "distillation matches outputs one to one. Fine-tune the teacher on the same task "
            f"(`teacher: finetuned-base`) or load the student with num_labels={t_cfg.num_labels}."
        )
    t_labels, s_labels = dict(t_cfg.id2label or {}), dict(s_cfg.id2label or {})
    for index in t_labels.keys() & s_labels.keys():
        t_name, s_name = t_labels[index], s_labels[index]
        if t_name != s_name and not (
            _is_generic_label(t_name, index) or _is_generic_label(s_name, index)
        ):
            raise UnsupportedModelError(
                f"label {index} is {t_name!r} for the teacher but {s_name!r} for the student; the "
                "label sets must match in the same order. Use a teacher fine-tuned on the same "
                "task and label mapping."
            )
    t_vocab, s_vocab = getattr(t_cfg, "vocab_size", None), getattr(s_cfg, "vocab_size", None)
    if t_vocab is not None and s_vocab is not None and t_vocab != s_vocab:
        raise UnsupportedModelError(
            f"the teacher's vocabulary has {t_vocab} tokens but the student's has {s_vocab}; both "
            "read the same input_ids, so they must share a tokenizer. Use a teacher with the "
            "student's tokenizer, or run vocabulary pruning after the distillation stage."
        )


def _example_key(row: torch.Tensor, mask: torch.Tensor | None, types: torch.Tensor | None) -> bytes:
    # The collator pads each batch to its own longest example and the Trainer shuffles, so the
    # key is a hash of the example's real tokens only (padding removed), not its batch position.
    keep = mask.bool() if mask is not None else torch.ones_like(row, dtype=torch.bool)
    digest = hashlib.blake2b(row[keep].to(torch.int64).numpy().tobytes(), digest_size=16)
    if types is not None:
        digest.update(types[keep].to(torch.int64).numpy().tobytes())
    return digest.digest()


def _check_reduces_first(modifier: Modifier, ctx: StageContext) -> None:
    """Refuses a layer reduction placed after other modifiers of its stage.

    Modifiers before it in the stage have already run `on_initialize` on the full-depth model
    and may hold per-layer state (pruning masks, scores keyed by layer index) that the
    reduction would invalidate.
    """
    if ctx.stage is None:
        return
    specs = list(ctx.stage.modifiers)
    position = next((i for i, spec in enumerate(specs) if spec.config is modifier.config), None)
    earlier = [
        spec.type
        for spec in specs[: position or 0]
        if spec.type not in ("layer_dropping", "distillation")
    ]
    if earlier:
        raise RecipeError(
            f"stage {ctx.stage.name!r}: {modifier.type_name} removes layers, but "
            f"{', '.join(earlier)} comes before it in the same stage and has already set itself up "
            "on all layers; list it first in the stage's modifiers (or reduce the layers in an "
            "earlier stage with `layer_dropping`)"
        )


@register_modifier("distillation")
class DistillationModifier(Modifier):
    """Trains the model against a teacher's soft targets (and optionally its hidden states).

    Runtime state: the kept student layers, the layer map, the hidden-state projections (when
    the hidden sizes differ; trained with the model), the teacher-logit cache and running means
    of the loss terms for the report.
    """

    config_class = DistillationConfig
    description = "knowledge distillation from the teacher"
    hub_tags = ("distilled",)

    def __init__(self, config: DistillationConfig) -> None:
        super().__init__(config)
        self.config: DistillationConfig = config
        self.kept_layers: list[int] | None = None
        self.layer_map: list[int] | None = None
        self.projections: nn.ModuleList | None = None
        self.regression = False
        self._teacher_inputs: tuple[str, ...] = ()
        self._cache: dict[Any, torch.Tensor] = {}
        self._cache_hits = 0
        self._cache_misses = 0
        self._loss_sums: dict[str, float] = defaultdict(float)
        self._loss_steps = 0
        # True between the trainer's step begin / end, False after a step, None without a trainer.
        self._in_step: bool | None = None

    # Lifecycle -----------------------------------------------------------------------------
    def on_initialize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        teacher = ctx.teacher
        if teacher is None:
            raise RecipeError(
                "distillation needs a teacher: set `teacher:` in the recipe (finetuned-base, a "
                "path or a Hub id), or pass teacher= to CompressionTrainer"
            )
        if teacher is model:
            raise RecipeError(
                "the teacher is the model being trained; pass a separate copy as the teacher"
            )
        if self.config.student is not None:
            _check_reduces_first(self, ctx)
            total = get_adapter(model).num_layers(model)
            chosen = select_layers(
                total, self.config.student.num_layers, self.config.student.layers
            )
            keep_layers(model, chosen)
            self.kept_layers = chosen
        check_teacher_student(teacher, model)
        teacher.eval()
        teacher.requires_grad_(False)
        device = next(model.parameters()).device
        teacher.to(device)
        language_model = model.get_output_embeddings() is not None
        if language_model and self.config.cache_teacher_logits:
            raise RecipeError(
                "distillation: cache_teacher_logits would keep a (tokens x vocabulary) logit "
                f"matrix per example of {type(model).__name__}; set cache_teacher_logits: false"
            )
        self.regression = model.config.num_labels == 1 and not language_model
        accepted = inspect.signature(teacher.forward).parameters
        self._teacher_inputs = tuple(name for name in _TEACHER_INPUTS if name in accepted)
        if self.config.alpha_hidden > 0:
            self._setup_hidden(model, teacher, device, ctx)
        return None

    def _setup_hidden(
        self,
        model: PreTrainedModel,
        teacher: PreTrainedModel,
        device: torch.device,
        ctx: StageContext,
    ) -> None:
        # config.num_hidden_layers / hidden_size resolve through attribute_map for DistilBERT too,
        # so any student model works here, not only layer-reduced ones.
        s_layers, t_layers = model.config.num_hidden_layers, teacher.config.num_hidden_layers
        if self.config.layer_map is not None:
            layer_map = list(self.config.layer_map)
            problem = None
            if len(layer_map) != s_layers:
                problem = f"has {len(layer_map)} entries but the student has {s_layers} layers"
            elif max(layer_map) >= t_layers:
                problem = (
                    f"names teacher layer {max(layer_map)} but the teacher has {t_layers} layers "
                    f"(0..{t_layers - 1})"
                )
            if problem:
                raise RecipeError(
                    f"distillation layer_map {layer_map} {problem}; give one increasing teacher "
                    "layer per student layer"
                )
        else:
            if s_layers > t_layers:
                raise RecipeError(
                    f"the student has {s_layers} layers, more than the teacher's {t_layers}, so "
                    "its layers cannot each imitate a different teacher layer; set alpha_hidden: 0 "
                    "(logit distillation only) or use a deeper teacher"
                )
            layer_map = default_layer_map(s_layers, t_layers, layer_origin(model))
        self.layer_map = layer_map
        s_hidden, t_hidden = model.config.hidden_size, teacher.config.hidden_size
        if s_hidden != t_hidden:
            # A learned map from the student's hidden space to the teacher's (TinyBERT's W_h),
            # one per mapped layer; trained with the model through trainable_modules().
            dtype = next(model.parameters()).dtype
            self.projections = nn.ModuleList(nn.Linear(s_hidden, t_hidden) for _ in layer_map).to(
                device, dtype
            )
            if ctx.world_size > 1:
                # Not part of the DDP-wrapped model, so average their gradients ourselves to keep
                # every process's copy identical.
                for param in self.projections.parameters():
                    param.register_hook(lambda grad: ctx.all_reduce_mean(grad.clone()))

    def on_finalize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        self._cache.clear()  # only useful within the stage; frees memory
        return None

    # Loss --------------------------------------------------------------------------------
    def on_step_begin(self, model: PreTrainedModel, ctx: StageContext) -> None:
        self._in_step = True

    def on_step_end(self, model: PreTrainedModel, ctx: StageContext) -> None:
        self._in_step = False

    def forward_kwargs(self) -> dict[str, Any]:
        # Hidden states only for training forwards: an evaluation between steps also goes through
        # compute_loss, and the Trainer would collect extra outputs as predictions.
        wanted = self.config.alpha_hidden > 0 and self._in_step is not False
        return {"output_hidden_states": True} if wanted else {}

    def trainable_modules(self) -> list[nn.Module]:
        return [self.projections] if self.projections is not None else []

    def compute_loss(
        self,
        loss: torch.Tensor,
        model: PreTrainedModel,
        inputs: dict[str, torch.Tensor],
        outputs: Any,
        ctx: StageContext,
    ) -> torch.Tensor:
        cfg = self.config
        student_logits = outputs["logits"]
        student_hidden = outputs.get("hidden_states") if cfg.alpha_hidden > 0 else None
        if cfg.alpha_hidden > 0 and student_hidden is None and model.training:
            raise RuntimeError(
                "distillation with alpha_hidden > 0 needs the student's hidden states: call the "
                "model with **modifier.forward_kwargs() (CompressionTrainer does)"
            )
        teacher_logits, teacher_hidden = self.teacher_outputs(
            ctx.teacher,
            inputs,
            student_logits.device,
            hidden=student_hidden is not None,
            use_cache=model.training,
        )
        terms: dict[str, torch.Tensor] = {}
        if cfg.alpha_kd > 0:
            terms["kd"] = cfg.alpha_kd * soft_target_loss(
                student_logits,
                teacher_logits,
                cfg.temperature,
                self.regression,
                inputs.get("attention_mask"),
            )
        if cfg.alpha_ce > 0 and loss is not None:
            terms["ce"] = cfg.alpha_ce * loss
        if student_hidden is not None:
            terms["hidden"] = cfg.alpha_hidden * self.mapped_hidden_loss(
                student_hidden, teacher_hidden, inputs.get("attention_mask")
            )
        if model.training:
            for name, value in terms.items():
                self._loss_sums[name] += float(value.detach())
            self._loss_steps += 1
        return sum(terms.values())

    def mapped_hidden_loss(
        self,
        student_hidden: tuple[torch.Tensor, ...],
        teacher_hidden: tuple[torch.Tensor, ...],
        attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Mean hidden-state loss over the mapped (student layer, teacher layer) pairs.

        Index 0 of a `hidden_states` tuple is the embedding output, so layer `i`'s output is at
        `i + 1`.
        """
        assert self.layer_map is not None, "on_initialize sets the layer map"
        losses = []
        for i, t in enumerate(self.layer_map):
            student = student_hidden[i + 1]
            if self.projections is not None:
                student = self.projections[i](student)
            losses.append(
                hidden_state_loss(
                    student, teacher_hidden[t + 1], attention_mask, self.config.hidden_loss
                )
            )
        return torch.stack(losses).mean()

    def teacher_outputs(
        self,
        teacher: PreTrainedModel,
        inputs: dict[str, torch.Tensor],
        device: torch.device,
        hidden: bool = False,
        use_cache: bool = True,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """The teacher's logits (cached per training example when enabled) and hidden states (when
        `hidden`)."""
        if teacher.training:
            teacher.eval()
        if next(teacher.parameters()).device != device:
            teacher.to(device)
        keys = self._cache_keys(inputs) if self.config.cache_teacher_logits and use_cache else None
        if keys is not None and all(k in self._cache for k in keys):
            self._cache_hits += len(keys)
            return torch.stack([self._cache[k] for k in keys]).to(device), None
        teacher_inputs = {k: inputs[k] for k in self._teacher_inputs if k in inputs}
        with torch.no_grad():
            out = teacher(**teacher_inputs, output_hidden_states=hidden)
        logits = out["logits"].detach()
        if keys is not None:
            self._cache_misses += len(keys)
            for key, row in zip(keys, logits):
                self._cache[key] = row.clone()
        return logits, (out["hidden_states"] if hidden else None)

    @staticmethod
    def _cache_keys(inputs: dict[str, torch.Tensor]) -> list[Any]:
        if "idx" in inputs:  # a dataset's own example ids, when the Trainer keeps the column
            return [("idx", int(i)) for i in inputs["idx"].view(-1).tolist()]
        ids = inputs["input_ids"].detach().cpu()
        mask = inputs.get("attention_mask")
        types = inputs.get("token_type_ids")
        mask = mask.detach().cpu() if mask is not None else None
        types = types.detach().cpu() if types is not None else None
        return [
            _example_key(
                ids[i],
                mask[i] if mask is not None else None,
                types[i] if types is not None else None,
            )
            for i in range(ids.shape[0])
        ]

    # Reporting and resume --------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        cfg = self.config
        info: dict[str, Any] = {
            "type": self.type_name,
            "temperature": cfg.temperature,
            "alpha_kd": cfg.alpha_kd,
            "alpha_ce": cfg.alpha_ce,
            "alpha_hidden": cfg.alpha_hidden,
            "soft_target_loss": "mse" if self.regression else "kl",
        }
        if self.kept_layers is not None:
            info["student_layers"] = self.kept_layers
        if self.layer_map is not None:
            info["hidden_loss"] = cfg.hidden_loss
            info["layer_map"] = self.layer_map
            info["projection"] = self.projections is not None
        if self._loss_steps:
            info["mean_weighted_losses"] = {
                k: round(v / self._loss_steps, 6) for k, v in self._loss_sums.items()
            }
        if cfg.cache_teacher_logits:
            info["teacher_cache"] = {"hits": self._cache_hits, "misses": self._cache_misses}
        return info

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"kept_layers": self.kept_layers, "layer_map": self.layer_map}
        if self.projections is not None:
            # Plain lists, like the other modifiers' state, so it can be written as JSON.
            state["projections"] = {
                k: v.detach().cpu().tolist() for k, v in self.projections.state_dict().items()
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.projections is not None and state.get("projections"):
            current = self.projections.state_dict()
            self.projections.load_state_dict(
                {
                    k: torch.tensor(v, dtype=current[k].dtype, device=current[k].device)
                    for k, v in state["projections"].items()
                }
            )


@register_modifier("layer_dropping")
class LayerDroppingModifier(Modifier):
    """Keeps a subset of the model's layers (the same student `distillation` builds, no teacher).

    One-shot (`epochs: 0`) or at the start of a training stage, which then trains the reduced
    model on the gold labels: the control that shows what distillation adds.
    """

    config_class = LayerDroppingConfig
    description = "layer dropping (a student with fewer layers)"
    hub_tags = ("layer-dropping",)

    def __init__(self, config: LayerDroppingConfig) -> None:
        super().__init__(config)
        self.config: LayerDroppingConfig = config
        self.kept_layers: list[int] | None = None
        self.original_layers: int | None = None
        self.influence: list[float] | None = None

    def on_initialize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        _check_reduces_first(self, ctx)
        self.original_layers = get_adapter(model).num_layers(model)
        if self.config.importance == "block_influence":
            batches = ctx.first_training_batches(
                self.config.calibration_batches,
                "layer_dropping: importance `block_influence`",
                "to measure how much each layer changes its input",
                "use `importance: position` or name the `layers`",
            )
            # Averaged over processes so every rank drops the same layers.
            measured = torch.tensor(block_influence(model, batches))
            self.influence = ctx.all_reduce_mean(measured).tolist()
            ranked = sorted(range(self.original_layers), key=lambda i: -self.influence[i])
            self.kept_layers = sorted(ranked[: self.config.num_layers])
        else:
            self.kept_layers = select_layers(
                self.original_layers, self.config.num_layers, self.config.layers
            )
        keep_layers(model, self.kept_layers)
        return None

    def summary(self) -> dict[str, Any]:
        summary = {
            "type": self.type_name,
            "importance": self.config.importance,
            "original_layers": self.original_layers,
            "kept_layers": self.kept_layers,
        }
        if self.influence is not None:
            summary["block_influence"] = [round(x, 5) for x in self.influence]
        return summary
