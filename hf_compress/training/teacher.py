"""The fine-tuned teacher a benchmark compares against: `finetune_teacher` trains it,
`prepare_teacher` reuses one fine-tuned with the same settings."""

from __future__ import annotations

import inspect
import json
import logging
import time
from pathlib import Path
from typing import Any

from ..checkpoint.loading import load_for_task, load_tokenizer
from ..data.glue_tasks import get_task
from ..data.preprocess import load_task_datasets
from ..evaluation.evaluate import evaluate_task, model_figures
from ..evaluation.measure import environment

logger = logging.getLogger(__name__)


DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

TEACHER_REPORT = "teacher_report.json"


def finetune_teacher(
    task: str,
    output_dir: str | Path,
    base_model: str = DEFAULT_BASE_MODEL,
    epochs: float = 1.0,
    max_train_samples: int | None = None,
    max_seq_length: int = 64,
    batch_size: int = 32,
    learning_rate: float = 5e-5,
    glue_dir: str | None = None,
    seed: int = 42,
) -> dict[str, Any]:
    """Fine-tunes `base_model` on `task`: the teacher and baseline a benchmark compares against.

    Args:
        task: the GLUE task.
        output_dir: where the model, tokenizer and `teacher_report.json` are written.
        base_model: Hub id or local path.
        epochs: training epochs.
        max_train_samples: a seeded random sample of the training set (default: all of it).
        max_seq_length: truncate inputs to this many tokens.
        batch_size: per-device training batch size.
        learning_rate: peak learning rate (linear decay, 6% warm-up).
        glue_dir: local GLUE folder.
        seed: random seed.

    Returns:
        The report written to `teacher_report.json`: the settings, dev metrics, parameters,
        bytes on disk, CPU latency and training time.
    """
    from transformers import DataCollatorWithPadding, TrainingArguments, set_seed

    from .trainer import CompressionTrainer

    settings = {
        "base_model": base_model,
        "task": get_task(task).name,
        "epochs": epochs,
        "max_train_samples": max_train_samples,
        "max_seq_length": max_seq_length,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
    }
    set_seed(seed)
    glue_task = get_task(task)
    tokenizer = load_tokenizer(base_model)
    model = load_for_task(base_model, glue_task)
    train, dev = load_task_datasets(
        glue_task, tokenizer, max_seq_length, max_train_samples, None, glue_dir, seed
    )
    output = Path(output_dir)
    training_args = TrainingArguments(
        output_dir=str(output.with_name(output.name + ".work")),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=0.06,  # a float below 1 is a ratio of the total steps in transformers 5
        weight_decay=0.01,
        logging_steps=100,
        save_strategy="no",
        report_to=[],
        seed=seed,
    )
    trainer = CompressionTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started

    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    report = {
        **settings,
        "train_examples": len(train) if train is not None else 0,
        "train_seconds": train_seconds,
        "metrics": evaluate_task(model, tokenizer, glue_task, dev),
        **model_figures(model, saved_dir=str(output)),
        "environment": environment(),
    }
    (output / TEACHER_REPORT).write_text(json.dumps(report, indent=2))
    return report


_FINETUNE_SIGNATURE = inspect.signature(finetune_teacher)


def prepare_teacher(task: str, directory: str | Path, **finetune: Any) -> str:
    """A fine-tuned teacher in `directory`: reused when its `teacher_report.json` records the
    same settings, else fine-tuned there with `finetune_teacher(task, directory, **finetune)`."""
    directory = Path(directory)
    report_path = directory / TEACHER_REPORT
    wanted = _FINETUNE_SIGNATURE.bind(task, directory, **finetune)
    wanted.apply_defaults()
    settings = {k: v for k, v in wanted.arguments.items() if k not in ("output_dir", "glue_dir")}
    settings["task"] = get_task(task).name
    if report_path.is_file():
        saved = json.loads(report_path.read_text())
        if {k: saved.get(k) for k in settings} == settings:
            logger.info("reusing the teacher in %s", directory)
            return str(directory)
        logger.warning(
            "%s holds a teacher fine-tuned with other settings; fine-tuning again", directory
        )
        # an interrupted fine-tuning must not leave an old report beside new weights
        report_path.unlink()
    finetune_teacher(task, directory, **finetune)
    return str(directory)
