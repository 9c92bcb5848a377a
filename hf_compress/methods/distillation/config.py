"""Recipe keys of `distillation` and `layer_dropping`, and of the layer-reduced `student`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...recipe.fields import ModifierConfig
from ...recipe.registry import recipe_type
from ...recipe.schema import option


def check_layer_choice(num_layers: int | None, layers: Sequence[int] | None) -> None:
    """Static checks on a `{num_layers: N}` / `{layers: [...]}` choice (config `__post_init__`).

    Raises:
        ValueError: neither or both given, or `layers` empty, negative, unsorted or repeated.
    """
    if (num_layers is None) == (layers is None):
        raise ValueError(
            "give exactly one of `num_layers: N` (every other layer) or `layers: [0, 2, 4]`"
        )
    if layers is not None:
        if not layers:
            raise ValueError("`layers` is empty; keep at least one layer, e.g. layers: [0, 2, 4]")
        if min(layers) < 0:
            raise ValueError(
                f"`layers` {list(layers)} has a negative index; layer indices start at 0"
            )
        if list(layers) != sorted(set(layers)):
            raise ValueError(
                f"`layers` {list(layers)} must be in increasing order without repeats, e.g. "
                f"{sorted(set(layers))}"
            )


@dataclass(frozen=True)
class StudentConfig:
    """Which of the teacher's layers the student keeps (the `student:` key of `distillation`)."""

    num_layers: int | None = option(
        None,
        help="keep this many layers, evenly spaced from the first (every other layer for half)",
        range=(1, None),
    )
    layers: tuple[int, ...] | None = option(
        None, help="keep exactly these layer indices (0-based, increasing)"
    )

    def __post_init__(self) -> None:
        check_layer_choice(self.num_layers, self.layers)


@recipe_type("distillation")
@dataclass(frozen=True)
class DistillationConfig(ModifierConfig):
    """Recipe keys of `distillation`."""

    requires_teacher = True
    requires_training = True

    temperature: float = option(
        2.0,
        help="softmax temperature T of the soft targets (loss scaled by T^2)",
        range=(0, None),
        exclusive=(True, False),
    )
    alpha_kd: float = option(
        0.5,
        help="weight of the soft-target loss (KL to the teacher; MSE for regression)",
        range=(0, None),
    )
    alpha_ce: float = option(
        0.5, help="weight of the task loss on the gold labels", range=(0, None)
    )
    alpha_hidden: float = option(
        0.0, help="weight of the hidden-state loss between mapped layers (0 = off)", range=(0, None)
    )
    hidden_loss: str = option(
        "cosine",
        help="hidden-state loss: 1 - cosine similarity (DistilBERT) or mse",
        choices=("cosine", "mse"),
    )
    layer_map: tuple[int, ...] | None = option(
        None,
        help="teacher layer (0-based) each student layer imitates, one per student layer, "
        "increasing; default: the teacher layer that ends the block each student layer replaces",
    )
    cache_teacher_logits: bool = option(
        False, help="cache the teacher's logits per example across epochs (saves teacher compute)"
    )
    student: StudentConfig | None = option(
        None,
        help="reduce the model to a student first: {num_layers: N} (every other layer) or {layers: "
        "[0, 2, 4]}",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha_kd + self.alpha_ce + self.alpha_hidden == 0:
            raise ValueError(
                "alpha_kd, alpha_ce and alpha_hidden are all 0, so nothing would be trained; set "
                "alpha_kd > 0"
            )
        if self.layer_map is not None:
            if self.alpha_hidden == 0:
                raise ValueError(
                    "layer_map only affects the hidden-state loss; set alpha_hidden > 0 or remove "
                    "layer_map"
                )
            try:
                check_layer_choice(None, self.layer_map)
            except ValueError as exc:
                raise ValueError(str(exc).replace("`layers`", "layer_map")) from exc
            expected = self.student and (self.student.num_layers or len(self.student.layers or ()))
            if expected and len(self.layer_map) != expected:
                raise ValueError(
                    f"layer_map has {len(self.layer_map)} entries but the student has {expected} "
                    "layers; give one teacher layer per student layer"
                )
        if self.cache_teacher_logits and self.alpha_hidden > 0:
            raise ValueError(
                "cache_teacher_logits caches logits only, but alpha_hidden > 0 needs the teacher's "
                "hidden states every step; set alpha_hidden: 0 or cache_teacher_logits: false"
            )


# Layer dropping without a teacher -------------------------------------------------------------
@recipe_type("layer_dropping")
@dataclass(frozen=True)
class LayerDroppingConfig(ModifierConfig):
    """Recipe keys of `layer_dropping`."""

    num_layers: int | None = option(
        None,
        help="keep this many layers: evenly spaced from the first (every other layer for half), "
        "or the most important ones with `importance: block_influence`",
        range=(1, None),
    )
    layers: tuple[int, ...] | None = option(
        None, help="keep exactly these layer indices (0-based, increasing)"
    )
    importance: str = option(
        "position",
        help="which `num_layers` layers stay: `position` (evenly spaced) or `block_influence` "
        "(the layers that change their input most, measured on training batches: one minus the "
        "cosine similarity of each layer's input and output, Men et al. 2024)",
        choices=("position", "block_influence"),
    )
    calibration_batches: int = option(
        8, help="block_influence: training batches to measure on", range=(1, None)
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_layer_choice(self.num_layers, self.layers)
        if self.importance == "block_influence" and self.num_layers is None:
            raise ValueError("importance block_influence chooses `num_layers` layers; set it")
