"""The recipe's keys as frozen dataclasses: top level, `finetune_base`, `data`, `push_to_hub`, a
stage, and the keys every modifier accepts (`ModifierConfig`). Each field's `help` is its
documentation (docs/recipes.md is generated from it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from .schema import option, show_value


def check_text(key: str, value: str, what: str) -> None:
    """A name or path given in a recipe: not empty, no NUL byte, encodable as UTF-8."""
    if not value.strip():
        raise ValueError(f"{key}: empty; give {what}")
    if "\0" in value:
        raise ValueError(f"{key}: {show_value(value)} holds a NUL byte; give {what}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{key}: {show_value(value)} holds characters that are not text (a lone surrogate); "
            f"give {what}"
        ) from None


def check_patterns(key: str, patterns: tuple[str, ...]) -> None:
    """Every `re:` pattern of a `targets` / `ignore`-style list compiles."""
    for pattern in patterns:
        if pattern.startswith("re:"):
            try:
                re.compile(pattern[3:])
            except re.error as exc:
                raise ValueError(
                    f"{key}: {show_value(pattern)} is not a valid regular expression ({exc}); fix "
                    "it, or drop the `re:` prefix to match a module name as written"
                ) from None


# The recipe's `task` choices: the nine GLUE tasks and causal language modelling (text in
# data.text_files / data.dataset, measured by perplexity).
GLUE_TASK_NAMES = (
    "cola",
    "sst2",
    "mrpc",
    "stsb",
    "qqp",
    "mnli",
    "qnli",
    "rte",
    "wnli",
    "causal_lm",
)

RECIPE_VERSION = 1


@dataclass(frozen=True)
class FinetuneBase:
    """Fine-tune the base model on the task before compressing (it becomes teacher and baseline)."""

    epochs: float = option(
        1.0,
        help="training epochs of the base model on the task",
        range=(0, 100),
        exclusive=(True, False),
    )
    learning_rate: float | None = option(
        None,
        help="overrides training.learning_rate for this fine-tuning",
        range=(0, 1),
        exclusive=(True, False),
    )
    max_train_samples: int | None = option(
        None, help="overrides data.max_train_samples for this fine-tuning", range=(1, None)
    )
    cache_dir: str | None = option(
        None,
        help="directory to save the fine-tuned base in, and reuse it from when it is already there",
    )


@dataclass(frozen=True)
class DataConfig:
    max_train_samples: int | None = option(
        None,
        help="use at most this many training examples (null = all); causal_lm: sequences, a "
        "seeded random choice",
        range=(1, None),
    )
    max_eval_samples: int | None = option(
        None,
        help="evaluate on at most this many dev examples (null = all); causal_lm: the first "
        "held-out sequences",
        range=(1, None),
    )
    max_seq_length: int = option(
        128,
        help="truncate inputs to this many tokens; causal_lm: the length of every packed sequence",
        range=(8, 4096),
    )
    glue_dir: str | None = option(
        None,
        help="local GLUE folder (original TSV layout); default: HF_COMPRESS_GLUE_DIR, else the Hub",
    )
    token_mask_prob: float = option(
        0.0,
        help="training-time augmentation of the compression stages: replace this fraction of each "
        "training sentence's tokens with the mask token, a new draw every step; a distillation "
        "teacher sees the same masked batch (consistent teaching). 0 = off; evaluation and "
        "finetune_base are never masked",
        range=(0, 1),
        exclusive=(False, True),
    )
    text_files: tuple[str, ...] = option(
        (),
        help="causal_lm: training text files (UTF-8, one text per line, blank lines skipped; "
        "`.jsonl`: one JSON object per line with the text under `text_column`); the texts are "
        "joined with the EOS token and packed into max_seq_length-token sequences",
    )
    eval_text_files: tuple[str, ...] = option(
        (),
        help="causal_lm: held-out text files, same format; default: the dataset's validation "
        "(else test) split, else the last eval_fraction of the training text",
    )
    dataset: str | None = option(
        None,
        help="causal_lm: a Hub id or local path read with `datasets.load_dataset`, with or instead "
        "of text_files (its train split, or its only split, is training text)",
    )
    text_column: str = option(
        "text", help="causal_lm: the text column of `dataset` and the text field of `.jsonl` lines"
    )
    eval_fraction: float = option(
        0.1,
        help="causal_lm: without held-out text, this share of the training text's sequences (its "
        "last ones, never trained on) is held out",
        range=(0, 1),
        exclusive=(True, True),
    )

    def __post_init__(self) -> None:
        for key in ("text_files", "eval_text_files"):
            for i, value in enumerate(getattr(self, key)):
                check_text(f"{key}[{i}]", value, "the path of a text file")
        if self.dataset is not None:
            check_text("dataset", self.dataset, "a Hub dataset id or a local path")
        check_text("text_column", self.text_column, "the name of the text column")


@dataclass(frozen=True)
class PushToHub:
    repo_id: str = option(help="Hub repository, `user/name`")
    private: bool = option(False, help="create the repository private")
    revision: str | None = option(None, help="branch to push to (default: main)")
    commit_message: str | None = option(None, help="commit message (default: generated)")

    def __post_init__(self) -> None:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(self.repo_id)
        except HFValidationError:
            raise ValueError(
                f"repo_id: {show_value(self.repo_id)} is not a Hub repository id; write it as "
                "`user/name` (letters, digits, '-', '_', '.')"
            ) from None


@dataclass(frozen=True)
class _StageFields:
    name: str = option(help="stage name, used in logs and the model card")
    epochs: float = option(
        0.0,
        help="training epochs of this stage; 0 = one-shot (apply, no training)",
        range=(0, 1000),
    )
    modifiers: tuple[dict[str, Any], ...] = option(
        (), help="the modifiers applied in this stage, in order"
    )
    training: dict[str, Any] = option(
        default_factory=dict,
        help="TrainingArguments fields for this stage only (override `training`)",
    )


@dataclass(frozen=True)
class _RecipeFields:
    base_model: str = option(help="Hub id or local path of the model to compress")
    task: str = option(
        help="GLUE task, or `causal_lm` (language modelling on data.text_files / data.dataset)",
        choices=GLUE_TASK_NAMES,
    )
    stages: tuple[dict[str, Any], ...] = option(help="compression stages, run in order")
    output_dir: str = option(help="where the compressed model is written")
    teacher: str = option(
        "none",
        help="`base` (a copy of the model the stages start from: the natural teacher of a "
        "pretrained language model), `finetuned-base`, a Hub id or local path, or `none`",
    )
    finetune_base: FinetuneBase | None = option(None, help="fine-tune the base on the task first")
    data: DataConfig = option(default_factory=DataConfig, help="data options")
    training: dict[str, Any] = option(
        default_factory=dict, help="TrainingArguments fields shared by all stages"
    )
    push_to_hub: PushToHub | None = option(
        None, help="push the result to the Hub after a successful run"
    )
    reinit_head: bool = option(
        False,
        help="when the base model's saved classification head does not fit the task (another "
        "number of labels), start from a fresh head instead of stopping with an error",
    )
    seed: int = option(42, help="random seed", range=(0, 2**32 - 1))  # numpy's seed range
    version: int = option(RECIPE_VERSION, help="recipe format version", choices=(RECIPE_VERSION,))

    def __post_init__(self) -> None:
        check_text("base_model", self.base_model, "a Hub id or a local model folder")
        check_text("output_dir", self.output_dir, "the folder the compressed model goes to")
        check_text(
            "teacher", self.teacher, "`base`, `finetuned-base`, a Hub id, a local path or `none`"
        )


@dataclass(frozen=True)
class ModifierConfig:
    """Keys every modifier accepts. Techniques subclass this with their own keys, and set the
    recipe rules of their type here (not on the `Modifier`), so a recipe is checked without
    importing any technique's implementation (torch):

        requires_training: only makes sense in a stage with `epochs > 0` (per configuration:
            override `needs_training`).
        requires_teacher: the recipe must name a teacher.
        freezes_weights: no later stage may train the weights it produced (quantize last).
        allows_training_after_freeze: may train after a frozen modifier (e.g. LoRA).
        trains_before_freezing: trains in its own stage, then freezes at finalize (QAT).
        changes_vocabulary: renumbers token ids at the end of its stage, so a teacher with the
            old vocabulary cannot be used in a later stage.
        once_per_stage: at most one modifier of this type per stage.
        exclusive_with / exclusive_reason: types that may not share its stage, and why.
    """

    requires_training: ClassVar[bool] = False
    requires_teacher: ClassVar[bool] = False
    freezes_weights: ClassVar[bool] = False
    allows_training_after_freeze: ClassVar[bool] = False
    trains_before_freezing: ClassVar[bool] = False
    changes_vocabulary: ClassVar[bool] = False
    once_per_stage: ClassVar[bool] = False
    exclusive_with: ClassVar[tuple[str, ...]] = ()
    exclusive_reason: ClassVar[str] = ""

    targets: tuple[str, ...] = option(
        (),
        help="module names to apply to (`re:` prefix for a regex); empty = the technique's default",
    )
    ignore: tuple[str, ...] = option(
        (), help="module names to leave alone (`re:` prefix for a regex)"
    )
    start: float = option(
        0.0, help="fraction of the stage's steps where a gradual modifier begins", range=(0, 1)
    )
    end: float = option(
        1.0,
        help="fraction of the stage's steps where a gradual modifier reaches its target",
        range=(0, 1),
    )

    def __post_init__(self) -> None:
        if self.start > self.end:
            raise ValueError(f"start ({self.start}) must not be after end ({self.end})")
        check_patterns("targets", self.targets)
        check_patterns("ignore", self.ignore)

    def needs_training(self) -> bool:
        """Whether this configuration needs a training stage (`requires_training`, unless a
        technique decides per configuration, as quantization does for qat_int8)."""
        return self.requires_training
