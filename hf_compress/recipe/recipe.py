"""Recipe format v1 (DESIGN.md section 2): YAML parsed into frozen, validated dataclasses.

    recipe = Recipe.from_yaml("recipes/quickstart.yaml", overrides=["training.learning_rate=3e-5"])

Validation is strict and happens before any model loads: unknown keys, wrong types, out-of-range
values, unknown modifier types, distillation without a teacher, and training stages after a
modifier that freezes weights (quantize last) all raise `RecipeError` naming the file, the key
path and the allowed values.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import RecipeError
from .fields import (
    RECIPE_VERSION,
    DataConfig,
    FinetuneBase,
    ModifierConfig,
    PushToHub,
    _RecipeFields,
    _StageFields,
)
from .schema import build, show_value, to_dict
from .training_fields import training_argument_hints
from .yaml_io import (
    MAX_RECIPE_BYTES,
    _check_plain,
    _RecipeDumper,
    _safe_load,
    apply_overrides,
)

if TYPE_CHECKING:
    from ..methods.modifier import Modifier


@dataclass(frozen=True)
class ModifierSpec:
    """One entry of a stage's `modifiers` list: its registry type and its validated config."""

    type: str
    config: ModifierConfig

    @property
    def modifier_class(self) -> type[Modifier]:
        from .registry import get_modifier_class

        return get_modifier_class(self.type)

    def build(self) -> Modifier:
        return self.modifier_class(self.config)

    def to_dict(self) -> dict[str, Any]:
        # Every key is written, defaults included, so a saved recipe.yaml records exactly what ran.
        return {"type": self.type, **to_dict(self.config)}


@dataclass(frozen=True)
class Stage:
    name: str
    epochs: float = 0.0
    modifiers: tuple[ModifierSpec, ...] = ()
    training: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def trains(self) -> bool:
        return self.epochs > 0

    def __post_init__(self) -> None:
        types = [spec.type for spec in self.modifiers]
        for j, spec in enumerate(self.modifiers):
            cls = type(spec.config)  # the type's recipe rules
            if cls.once_per_stage and types.count(spec.type) > 1:
                raise RecipeError(
                    f"stage {self.name!r}: modifiers[{j}] ({spec.type}) appears "
                    f"{types.count(spec.type)} times; one {spec.type} per stage (merge their keys, "
                    "or put the second in a stage of its own)"
                )
            clash = next((t for t in types if t in cls.exclusive_with), None)
            if clash is not None:
                raise RecipeError(
                    f"stage {self.name!r}: modifiers[{j}] ({spec.type}) cannot share a stage with "
                    f"{clash} ({cls.exclusive_reason or 'they conflict'}); put {clash} in an "
                    "earlier stage"
                )


@dataclass(frozen=True)
class Recipe:
    """A validated compression recipe. Build with `Recipe.from_yaml`, `from_dict` or
    `from_string`."""

    base_model: str
    task: str
    stages: tuple[Stage, ...]
    output_dir: str
    teacher: str = "none"
    finetune_base: FinetuneBase | None = None
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    push_to_hub: PushToHub | None = None
    reinit_head: bool = False
    seed: int = 42
    version: int = RECIPE_VERSION
    source: str | None = None  # the file it came from, for messages

    # Construction -------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
        """Reads and validates a recipe file.

        Args:
            path: the YAML file.
            overrides: `key.path=value` strings (values parsed as YAML), applied before validation.

        Raises:
            RecipeError: the file is missing, not YAML, or invalid; the message names file and key.
        """
        path = Path(path)
        try:
            is_file = path.is_file()
        except OSError:  # e.g. a file name longer than the file system allows
            is_file = False
        if not is_file:
            raise RecipeError(f"{path}: recipe file not found; the shipped recipes are in recipes/")
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(
                f"{path}: recipe is larger than {MAX_RECIPE_BYTES} bytes; is this the right file?"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise RecipeError(f"{path}: not UTF-8 text ({exc}); save the recipe as UTF-8") from exc
        except OSError as exc:  # unreadable (permissions, a FIFO, ...): still a one-line error
            raise RecipeError(f"{path}: cannot read the recipe ({exc})") from exc
        return cls.from_string(text, source=str(path), overrides=overrides)

    @classmethod
    def from_string(
        cls, text: str, source: str = "<string>", overrides: list[str] | None = None
    ) -> Recipe:
        if len(text) > MAX_RECIPE_BYTES:  # same bound as from_yaml, for text that came another way
            raise RecipeError(
                f"{source}: recipe is longer than {MAX_RECIPE_BYTES} characters; is this the right "
                "text?"
            )
        data = _safe_load(text, source)
        return cls.from_dict(data, source=source, overrides=overrides)

    @classmethod
    def from_dict(
        cls, data: Any, source: str = "<dict>", overrides: list[str] | None = None
    ) -> Recipe:
        if not isinstance(data, dict):
            raise RecipeError(
                f"{source}: a recipe is a mapping of keys (base_model, task, stages, ...), got "
                f"{type(data).__name__}"
            )
        _check_plain(data, f"{source}:")
        data = apply_overrides(data, overrides or [], source)
        fields = build(_RecipeFields, data, f"{source}:")
        stages = tuple(
            _build_stage(s, f"{source}: stages[{i}]") for i, s in enumerate(fields.stages)
        )
        values = {f.name: getattr(fields, f.name) for f in dataclasses.fields(_RecipeFields)}
        values["stages"] = stages
        recipe = cls(**values, source=source)
        recipe.validate()
        return recipe

    # Validation ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Cross-field checks: teacher needs, stage order, training argument names."""
        where = f"{self.source}:"
        if not self.stages:
            raise RecipeError(f"{where} stages: a recipe needs at least one stage")
        _check_training_args(self.training, f"{where} training")
        if self.teacher == "finetuned-base" and self.finetune_base is None:
            raise RecipeError(
                f"{where} teacher: `finetuned-base` needs a `finetune_base: {{epochs: 1}}` section "
                "(or name a fine-tuned teacher by path or Hub id)"
            )
        self._check_text_data(where)
        names = [s.name for s in self.stages]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise RecipeError(
                f"{where} stages: stage name {duplicate!r} is used twice; names must be unique"
            )
        frozen_by: str | None = None
        vocabulary_changed_by: str | None = None
        for i, stage in enumerate(self.stages):
            stage_where = f"{where} stages[{i}]"
            _check_training_args(stage.training, f"{stage_where}.training")
            classes = [type(m.config) for m in stage.modifiers]  # the types' recipe rules
            if (
                frozen_by
                and stage.trains
                and not any(c.allows_training_after_freeze for c in classes)
            ):
                raise RecipeError(
                    f"{stage_where}: stage {stage.name!r} trains (epochs={stage.epochs}) after "
                    f"{frozen_by} froze the weights; put quantization in the last stage (or train "
                    "LoRA adapters on it)"
                )
            # Vocabulary pruning acts at the end of its stage: it only constrains later stages.
            stage_vocabulary = next(
                (
                    f"stages[{i}].modifiers[{j}] ({m.type})"
                    for j, (m, c) in enumerate(zip(stage.modifiers, classes))
                    if c.changes_vocabulary
                ),
                None,
            )
            if stage_vocabulary and self.task == "causal_lm":
                raise RecipeError(
                    f"{where} {stage_vocabulary}: a language model predicts tokens over its whole "
                    "vocabulary, so pruning it would stop the model from ever producing the "
                    "removed tokens; vocab_pruning is for task heads (GLUE tasks)"
                )
            for j, (spec, cls) in enumerate(zip(stage.modifiers, classes)):
                mod_where = f"{stage_where}.modifiers[{j}] ({spec.type})"
                if cls.requires_teacher and vocabulary_changed_by:
                    raise RecipeError(
                        f"{mod_where}: the teacher still uses the old vocabulary, but "
                        f"{vocabulary_changed_by} renumbered the token ids in an earlier stage; "
                        "prune the vocabulary in the distillation stage or after it"
                    )
                if cls.requires_teacher and self.teacher == "none":
                    raise RecipeError(
                        f"{mod_where}: needs a teacher; set `teacher: base` (the model before "
                        "compression), `teacher: finetuned-base` (with finetune_base) or a path"
                    )
                # Per configuration: of the quantization methods only qat_int8 trains.
                if spec.config.needs_training() and not stage.trains:
                    raise RecipeError(
                        f"{mod_where}: only works in a training stage; set the stage's epochs > 0"
                    )
                if cls.allows_training_after_freeze and not stage.trains:
                    raise RecipeError(f"{mod_where}: trains adapters; set the stage's epochs > 0")
                if cls.freezes_weights:
                    frozen_by = f"stages[{i}].modifiers[{j}] ({spec.type})"
                    if stage.trains and not cls.trains_before_freezing:
                        raise RecipeError(
                            f"{mod_where}: freezes the weights, so its stage cannot train; use "
                            "epochs: 0 (or qat_int8 to train with quantization)"
                        )
            vocabulary_changed_by = vocabulary_changed_by or stage_vocabulary
            if self.data.token_mask_prob > 0:
                for j, spec in enumerate(stage.modifiers):
                    if getattr(spec.config, "cache_teacher_logits", False):
                        raise RecipeError(
                            f"{stage_where}.modifiers[{j}] ({spec.type}): cache_teacher_logits "
                            "reuses the teacher's logits of the unmasked sentence, but "
                            f"data.token_mask_prob: {self.data.token_mask_prob} masks each batch "
                            "anew; set cache_teacher_logits: false (or data.token_mask_prob: 0)"
                        )

    def _check_text_data(self, where: str) -> None:
        """`task: causal_lm` reads text (data.text_files / data.dataset); GLUE tasks refuse it.
        Whether the files exist is checked when the recipe is validated or run
        (`check_text_files`): a shipped recipe may name files a script writes."""
        text_keys = [
            k for k in ("text_files", "eval_text_files", "dataset") if getattr(self.data, k)
        ]
        if self.task != "causal_lm":
            if text_keys:
                raise RecipeError(
                    f"{where} data.{text_keys[0]}: text data is for `task: causal_lm`; task "
                    f"{self.task!r} reads its GLUE files (data.glue_dir), remove the key"
                )
            return
        if not (self.data.text_files or self.data.dataset):
            raise RecipeError(
                f"{where} data.text_files: `task: causal_lm` needs training text; set "
                "data.text_files: [corpus.txt] (one text per line) or data.dataset (a Hub id or "
                "a local path)"
            )

    def check_text_files(self) -> None:
        """Every file of data.text_files / data.eval_text_files exists (`hf-compress validate` and
        `run` call this; parsing does not, so a recipe may name files a script writes later)."""
        for key in ("text_files", "eval_text_files"):
            for i, name in enumerate(getattr(self.data, key)):
                try:
                    found = Path(name).expanduser().is_file()
                except (OSError, ValueError):  # a name longer than the file system allows
                    found = False
                if not found:
                    raise RecipeError(
                        f"{self.source}: data.{key}[{i}]: {show_value(name)} is not a file; give "
                        "the path of a UTF-8 text file (relative paths start from the working "
                        "directory)"
                    )

    # Output -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "version": self.version,
            "base_model": self.base_model,
            "task": self.task,
            "teacher": self.teacher,
        }
        if self.finetune_base is not None:
            data["finetune_base"] = to_dict(self.finetune_base)
        data["data"] = to_dict(self.data)
        if self.training:
            data["training"] = dict(self.training)
        data["stages"] = [
            {
                "name": s.name,
                "epochs": s.epochs,
                "modifiers": [m.to_dict() for m in s.modifiers],
                **({"training": dict(s.training)} if s.training else {}),
            }
            for s in self.stages
        ]
        data["output_dir"] = self.output_dir
        if self.push_to_hub is not None:
            data["push_to_hub"] = to_dict(self.push_to_hub)
        if self.reinit_head:
            data["reinit_head"] = True
        data["seed"] = self.seed
        return data

    def to_yaml(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_RecipeDumper, sort_keys=False)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    def replace(self, **changes: Any) -> Recipe:
        """A re-validated copy with top-level fields changed."""
        data = {**self.to_dict(), **changes}
        return Recipe.from_dict(data, source=self.source or "<recipe>")


def _build_stage(data: Any, where: str) -> Stage:
    from .registry import CONFIGS, get_config_class, registered_modifier_types

    fields = build(_StageFields, data, where)
    specs = []
    for j, entry in enumerate(fields.modifiers):
        mod_where = f"{where}.modifiers[{j}]"
        if not isinstance(entry, dict) or "type" not in entry:
            raise RecipeError(
                f"{mod_where}: a modifier is a mapping with a `type`; types: "
                f"{', '.join(registered_modifier_types())}"
            )
        entry = dict(entry)
        type_name = entry.pop("type")
        known = registered_modifier_types()
        # isinstance first: a list or mapping as `type` is unhashable and `in` would raise
        # TypeError.
        if not isinstance(type_name, str) or type_name not in CONFIGS:
            raise RecipeError(
                f"{mod_where}.type: unknown modifier {show_value(type_name)}; allowed values: "
                f"{', '.join(known)}"
            )
        config = build(get_config_class(type_name), entry, f"{mod_where}")
        specs.append(ModifierSpec(type=type_name, config=config))
    try:
        return Stage(
            name=fields.name,
            epochs=fields.epochs,
            modifiers=tuple(specs),
            training=dict(fields.training),
        )
    except RecipeError as exc:
        raise RecipeError(f"{where}: {exc}") from None


# TrainingArguments fields a recipe must not set, and what to do instead.
_REFUSED_TRAINING_KEYS = {
    "output_dir": "set by the recipe itself (its output_dir); remove it here",
    "num_train_epochs": "set by the recipe itself (each stage's epochs); remove it here",
    "resume_from_checkpoint": "resume with `hf-compress run --resume`; remove it here",
    "push_to_hub": "push with the recipe's `push_to_hub: {repo_id: user/name}` section, which "
    "uploads the finished output after checking it for secrets; remove it here",
    "hub_token": "log in with `hf auth login` or set HF_TOKEN; a token in a recipe would be "
    "saved with the output",
}
# Numeric TrainingArguments fields that transformers accepts out of range and only fails on (or
# silently misuses) once training starts: (low, low inclusive).
_TRAINING_MINIMUMS = {
    "learning_rate": (0, True),
    "per_device_train_batch_size": (1, True),
    "per_device_eval_batch_size": (1, True),
    "gradient_accumulation_steps": (1, True),
    "eval_accumulation_steps": (1, True),
    "warmup_steps": (0, True),
    "weight_decay": (0, True),
    "max_grad_norm": (0, True),
    "adam_epsilon": (0, False),
    "logging_steps": (0, False),
    "save_steps": (0, False),
    "eval_steps": (0, False),
    "save_total_limit": (1, True),
    "dataloader_num_workers": (0, True),
    "seed": (0, True),
}


def _check_training_args(values: dict[str, Any], where: str) -> None:
    allowed = set(_training_arg_hints())
    for key, value in values.items():
        if key in _REFUSED_TRAINING_KEYS and not (key == "push_to_hub" and value is False):
            raise RecipeError(f"{where}.{key}: {_REFUSED_TRAINING_KEYS[key]}")
        if key not in allowed:
            close = sorted(k for k in allowed if key.split("_")[0] in k)[:8]
            hint = f"; did you mean one of: {', '.join(close)}" if close else ""
            raise RecipeError(f"{where}.{key}: not a transformers.TrainingArguments field{hint}")
        _check_training_arg_type(key, value, f"{where}.{key}")
        _check_training_arg_range(key, value, f"{where}.{key}")


def _check_training_arg_range(key: str, value: Any, where: str) -> None:
    if key not in _TRAINING_MINIMUMS or value is None or isinstance(value, bool):
        return
    if not isinstance(value, (int, float)):
        return  # a wrong type is reported by the type check
    low, inclusive = _TRAINING_MINIMUMS[key]
    if value < low or (value == low and not inclusive):
        bound = f">= {low}" if inclusive else f"> {low}"
        raise RecipeError(f"{where}: {show_value(value)} is out of range; it must be {bound}")


@functools.lru_cache(maxsize=1)
def _training_arg_hints() -> dict[str, Any]:
    """`{field: type hint}` of `TrainingArguments.__init__`: read from transformers' source
    (torch-free), else from the class itself."""
    hints = training_argument_hints()
    if hints is not None:
        return hints
    from transformers import TrainingArguments

    init = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    return {k: v for k, v in typing.get_type_hints(TrainingArguments).items() if k in init}


def _check_training_arg_type(key: str, value: Any, where: str) -> None:
    """Checks a TrainingArguments value against the field's type hint, so `learning_rate: fast`
    fails here and not as a raw error inside transformers after the models loaded. Hints the
    schema cannot check (enums, accelerate configs) are left to TrainingArguments."""
    from .schema import _convert

    hint = _training_arg_hints().get(key)
    if hint is None:
        return
    try:
        _convert(hint, value, where)
    except TypeError:  # an enum or class hint the schema does not know: TrainingArguments checks it
        return
