"""`run_recipe`: the whole job behind `hf-compress run`.

Fine-tune the base (optional), measure it, run the recipe's stages with `CompressionTrainer`,
measure the result, and write the compressed checkpoint (config with `compression_config`,
safetensors weights, tokenizer, recipe.yaml, report.json, model card) atomically: everything is
written into a staging directory beside `output_dir` and renamed into place at the end, so a
crash never leaves a half-written model that looks complete.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import (
    DataCollatorWithPadding,
    PreTrainedModel,
    default_data_collator,
    set_seed,
)

from ..checkpoint.loading import load_for_task, load_tokenizer
from ..checkpoint.sources import base_model_license, resolve_model_source
from ..data.glue_tasks import GlueTask, get_task
from ..data.metrics import chance_warning
from ..data.preprocess import TaskData
from ..data.text import TextData
from ..errors import OutputExistsError
from ..evaluation.evaluate import LATENCY_DEFAULTS, evaluate_task, model_figures
from ..evaluation.measure import compare_latency, environment
from ..evaluation.tables import comparison_table, speed_warning
from ..hub.model_card import write_model_card
from ..hub.public import public_name
from ..hub.push import push_to_hub
from ..recipe.recipe import Recipe
from ..version import __version__
from .arguments import training_arguments
from .output import OutputLock, move_into_place, prepare_output_dir, staging_dir
from .preflight import check_recipe
from .trainer import CompressionTrainer
from .workdir import WorkDir, _is_main_process

logger = logging.getLogger(__name__)


FINETUNE_MARKER = "hf_compress_finetune.json"


@dataclass
class RunResult:
    output_dir: Path
    report: dict[str, Any]
    model: PreTrainedModel
    tokenizer: Any


def task_data(recipe: Recipe, glue_dir: str | None = None) -> TaskData | TextData:
    """The examples a recipe trains and evaluates on (`glue_dir` overrides `data.glue_dir`): a
    GLUE task's, or the packed text sequences of `task: causal_lm`."""
    if is_language_modeling(recipe.task):
        return TextData.from_config(recipe.data, seed=recipe.seed)
    return TaskData(
        task=get_task(recipe.task),
        max_seq_length=recipe.data.max_seq_length,
        max_train_samples=recipe.data.max_train_samples,
        max_eval_samples=recipe.data.max_eval_samples,
        glue_dir=glue_dir or recipe.data.glue_dir,
        seed=recipe.seed,
    )


def is_language_modeling(task: Any) -> bool:
    """Whether `task` (a name or a task object) is the causal-LM task."""
    name = getattr(task, "name", task)
    return str(name).lower().replace("-", "").replace("_", "") == "causallm"


def data_collator(task: Any, tokenizer: Any) -> Any:
    """Batches of a task's examples: packed LM sequences all have one length (and a decoder's
    tokenizer often has no padding token); GLUE sentences are padded per batch."""
    if is_language_modeling(task):
        return default_data_collator
    return DataCollatorWithPadding(tokenizer)


def _finetune_fingerprint(recipe: Recipe) -> str:
    fb = recipe.finetune_base
    assert fb is not None
    key = {
        "base_model": recipe.base_model,
        "task": recipe.task,
        "epochs": fb.epochs,
        "learning_rate": fb.learning_rate,
        "max_train_samples": fb.max_train_samples or recipe.data.max_train_samples,
        "max_seq_length": recipe.data.max_seq_length,
        "training": recipe.training,
        "seed": recipe.seed,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finetune_base(
    recipe: Recipe,
    data: TaskData,
    tokenizer: Any,
    work_dir: Path,
    progress: bool = True,
    train_dataset: Any = None,
) -> PreTrainedModel:
    """Fine-tunes the base model on the task (or reuses `finetune_base.cache_dir` when it matches).

    Args:
        train_dataset: the training slice already tokenized by the caller with `tokenizer`; it must
            be the slice this function would load (`finetune_base.max_train_samples`, else
            `data.max_train_samples`). Loaded and tokenized here when not given.
    """
    fb = recipe.finetune_base
    assert fb is not None
    fingerprint = _finetune_fingerprint(recipe)
    cache = Path(fb.cache_dir) if fb.cache_dir else None
    if cache is not None and (cache / FINETUNE_MARKER).is_file():
        saved = json.loads((cache / FINETUNE_MARKER).read_text())
        if saved.get("fingerprint") == fingerprint:
            logger.info("reusing the fine-tuned base in %s", cache)
            return load_for_task(str(cache), data.task)
        logger.warning("%s holds a base fine-tuned with other settings; fine-tuning again", cache)
    model = load_for_task(recipe.base_model, data.task, reinit_head=recipe.reinit_head)
    if train_dataset is None:
        sample = fb.max_train_samples or data.max_train_samples
        train_dataset, _ = dataclasses.replace(data, max_train_samples=sample).train_and_dev(
            tokenizer
        )
    overrides: dict[str, Any] = {
        "num_train_epochs": fb.epochs,
        "disable_tqdm": not progress,
        "save_strategy": "no",
    }
    if fb.learning_rate is not None:
        overrides["learning_rate"] = fb.learning_rate
    args = training_arguments(recipe, str(work_dir / "finetune_base"), **overrides)
    trainer = CompressionTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=data_collator(data.task, tokenizer),
        processing_class=tokenizer,
    )
    started = time.perf_counter()
    trainer.train()
    logger.info("fine-tuned the base in %.0f s", time.perf_counter() - started)
    if cache is not None and _is_main_process():
        staging = cache.with_name(cache.name + f".partial-{uuid.uuid4().hex[:8]}")
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / FINETUNE_MARKER).write_text(
            json.dumps({"fingerprint": fingerprint, "recipe_source": recipe.source})
        )
        if cache.exists():
            shutil.rmtree(cache)
        staging.rename(cache)
    return model


def run_recipe(
    recipe: Recipe,
    overwrite: bool = False,
    glue_dir: str | None = None,
    latency: bool = True,
    latency_config: dict[str, Any] | None = None,
    progress: bool = True,
    push: bool = True,
    resume: bool = False,
) -> RunResult:
    """Runs a recipe end to end and writes the compressed checkpoint to `recipe.output_dir`.

    Work in progress lives in `<output_dir>.work`: the fine-tuned base, the model after each
    completed stage, the Trainer's checkpoints inside a stage (with the modifiers' state) and
    `progress.json`. With `resume`, a run that was interrupted continues from there.

    Args:
        recipe: the validated recipe.
        overwrite: replace a non-empty `output_dir` (it is only removed once the new output is
            complete).
        glue_dir: local GLUE folder (default: recipe.data.glue_dir, then HF_COMPRESS_GLUE_DIR, ...).
        latency: measure CPU latency of the baseline and the result.
        latency_config: overrides of batch sizes / sequence length / runs for the latency
            measurement.
        progress: show progress bars.
        push: push to the Hub when the recipe has `push_to_hub`.
        resume: continue an interrupted run of the same recipe from `<output_dir>.work`.
    """
    started = time.perf_counter()
    output_dir = Path(recipe.output_dir)
    main = _is_main_process()
    with OutputLock(output_dir) if main else contextlib.nullcontext():  # one run per output
        if main:
            prepare_output_dir(output_dir, overwrite)
        check_recipe(recipe)  # what needs the base model's config fails here, before any work
        set_seed(recipe.seed)
        run = _RecipeRun(
            recipe,
            task_data(recipe, glue_dir),
            WorkDir(output_dir.with_name(output_dir.name + ".work"), recipe, resume, overwrite),
            latency=latency,
            latency_config={**LATENCY_DEFAULTS, **(latency_config or {})},
            progress=progress,
        )
        model, teacher, baseline = run.models()
        baseline_report = run.measure_baseline(baseline)
        if baseline is model:
            model = copy.deepcopy(model)  # keep the measured baseline intact for the card
        trainer, compression_time = run.compress(model, teacher, resume)
        del teacher, model  # the baseline stays: it is timed beside the result
        trainer.teacher = trainer.context.teacher = None
        tokenizer = trainer.context.tokenizer or run.tokenizer
        if not main:  # only the main process measures and writes
            return RunResult(output_dir, {}, trainer.model, tokenizer)
        report = run.write_output(
            trainer, baseline, baseline_report, compression_time, output_dir, overwrite, started
        )
        run.work.remove_all()
        print(comparison_table(report))
        for warning in (baseline_report.get("warning"), speed_warning(report)):
            if warning:
                print(f"warning: {warning}")
        if push and recipe.push_to_hub is not None:
            url = push_to_hub(
                output_dir,
                recipe.push_to_hub.repo_id,
                private=recipe.push_to_hub.private,
                revision=recipe.push_to_hub.revision,
                commit_message=recipe.push_to_hub.commit_message,
            )
            logger.info("pushed to %s", url)
    return RunResult(output_dir, report, trainer.model, tokenizer)


class _RecipeRun:
    """The steps of `run_recipe`, sharing the recipe, its data, the work directory and the
    measurement settings."""

    def __init__(
        self,
        recipe: Recipe,
        data: TaskData,
        work: WorkDir,
        latency: bool,
        latency_config: dict[str, Any],
        progress: bool,
    ) -> None:
        self.recipe, self.data, self.work = recipe, data, work
        self.latency, self.latency_config, self.progress = latency, latency_config, progress
        self.tokenizer = load_tokenizer(resolve_model_source(recipe.base_model))
        # Tokenized once; fine-tuning the base reuses the slice when it trains on the same one.
        self.train, self.dev = data.train_and_dev(self.tokenizer)

    def models(self) -> tuple[PreTrainedModel, PreTrainedModel | None, PreTrainedModel]:
        """(student, teacher or None, baseline): the baseline is the fine-tuned base when the
        recipe fine-tunes one, else the teacher when there is one, else the base."""
        recipe, task = self.recipe, self.data.task
        if recipe.finetune_base is None:
            model = load_for_task(
                resolve_model_source(recipe.base_model), task, reinit_head=recipe.reinit_head
            )
        elif self.work.has_model("finetuned-base"):
            model = load_for_task(str(self.work.path / "finetuned-base"), task)
        else:
            same_slice = recipe.finetune_base.max_train_samples in (
                None,
                self.data.max_train_samples,
            )
            model = finetune_base(
                recipe,
                self.data,
                self.tokenizer,
                self.work.path,
                self.progress,
                train_dataset=self.train if same_slice else None,
            )
            self.work.save_model("finetuned-base", model, self.tokenizer)
        teacher = None
        if recipe.teacher in ("base", "finetuned-base"):  # the model before compression
            teacher = copy.deepcopy(model)
        elif recipe.teacher != "none":
            teacher = load_for_task(recipe.teacher, task)
        baseline = model if recipe.finetune_base is not None or teacher is None else teacher
        return model, teacher, baseline

    def measure_baseline(self, baseline: PreTrainedModel) -> dict[str, Any]:
        """The baseline's metrics and figures (measured once; a resumed run reads them back)."""
        if self.recipe.finetune_base is not None:
            name = "fine-tuned base"
        else:
            name = "teacher" if self.recipe.teacher not in ("none", "base") else "base"
        report: dict[str, Any] = self.work.progress.get("baseline") or {"name": name}
        if _is_main_process() and "metrics" not in report:
            logger.info("measuring the baseline (%s)", name)
            report["metrics"] = evaluate_task(
                baseline, self.tokenizer, self.data.task, self.dev, progress=self.progress
            )
            report.update(model_figures(baseline, latency=False))  # timed later, with the result
            warning = (
                None
                if is_language_modeling(self.data.task)
                else chance_warning(self.data.task, self.dev["labels"], report["metrics"])
            )
            if warning:
                report["warning"] = warning
            self.work.update(baseline=report)
        if report.get("warning"):
            logger.warning("%s", report["warning"])
        return report

    def compress(
        self, model: PreTrainedModel, teacher: PreTrainedModel | None, resume: bool
    ) -> tuple[CompressionTrainer, float]:
        """Runs the recipe's stages (from the first one not completed); returns the trainer and
        the compression time in seconds."""
        work, task = self.work, self.data.task
        start_stage = work.progress.get("completed_stages", 0)
        tokenizer, train, dev = self.tokenizer, self.train, self.dev
        if start_stage:
            stage_dir = str(work.path / f"after-stage-{start_stage - 1}")
            logger.info("resuming after stage %d from %s", start_stage - 1, stage_dir)
            model = load_for_task(stage_dir, task)
            tokenizer = load_tokenizer(stage_dir)
            train, dev = self.data.train_and_dev(tokenizer)
        started = time.perf_counter() - work.progress.get("compression_time_s", 0.0)

        def on_stage_end(index: int, stage_trainer: CompressionTrainer) -> None:
            work.save_model(
                f"after-stage-{index}",
                stage_trainer.model,
                stage_trainer.context.tokenizer or tokenizer,
            )
            work.remove(f"after-stage-{index - 1}")
            work.update(
                completed_stages=index + 1,
                stage_summaries=stage_trainer.stage_summaries,
                notes=stage_trainer.context.notes,
                compression_time_s=time.perf_counter() - started,
            )

        trainer = CompressionTrainer(
            model=model,
            args=training_arguments(
                self.recipe, str(work.path / "stages"), disable_tqdm=not self.progress
            ),
            recipe=self.recipe,
            teacher=teacher,
            task=task,
            train_dataset=train,
            eval_dataset=dev,
            data_collator=data_collator(task, tokenizer),
            processing_class=tokenizer,
            retokenize=self.data.train_and_dev,
            start_stage=start_stage,
            on_stage_end=on_stage_end,
        )
        trainer.context.glue_dir = getattr(self.data, "glue_dir", None)
        trainer.stage_summaries = list(work.progress.get("stage_summaries", []))
        trainer.context.notes = list(work.progress.get("notes", []))
        trainer.train(resume_from_checkpoint=resume or None)
        return trainer, time.perf_counter() - started

    def write_output(
        self,
        trainer: CompressionTrainer,
        baseline_model: PreTrainedModel,
        baseline: dict[str, Any],
        compression_time: float,
        output_dir: Path,
        overwrite: bool,
        started: float,
    ) -> dict[str, Any]:
        """Saves, measures and documents the compressed model in a staging directory, then moves
        it into place as a whole; returns the report. The baseline and the result are timed
        together, round-robin, so their speed ratio holds even on a busy machine (or is marked
        unreliable when the machine was too busy)."""
        compressed, tokenizer = trainer.model, trainer.context.tokenizer or self.tokenizer
        staging = staging_dir(output_dir)
        try:
            compressed.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            self.recipe.save(staging / "recipe.yaml")
            logger.info("measuring the compressed model")
            structure = getattr(compressed.config, "compression_config", None) or {}
            compressed_report = {
                "name": "compressed",
                "methods": list(structure.get("methods", [])),
                "metrics": self._metrics(
                    compressed, tokenizer, trainer.eval_dataset, baseline_model
                ),
                **model_figures(compressed, saved_dir=str(staging), latency=False),
            }
            timing = self._timing(baseline_model, compressed, tokenizer)
            for name, entry in (("baseline", baseline), ("compressed", compressed_report)):
                entry["latency_ms"] = timing.get("latency_ms", {}).get(name)
                if "tokens_per_second" in timing:
                    entry["tokens_per_second"] = timing["tokens_per_second"][name]
            report = build_report(
                self.recipe,
                self.data.task,
                baseline,
                compressed_report,
                trainer,
                self.latency_config,
                compression_time,
            )
            report["latency"] = {
                k: v for k, v in timing.items() if k not in ("latency_ms", "tokens_per_second")
            }
            report["total_time_s"] = time.perf_counter() - started
            (staging / "report.json").write_text(json.dumps(report, indent=2))
            write_model_card(staging, report, self.recipe.to_yaml())  # last: marks it complete
            move_into_place(staging, output_dir, overwrite)
        except OutputExistsError:
            raise  # the complete result stays in `staging`, as the message says
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return report

    def _metrics(
        self, model: PreTrainedModel, tokenizer: Any, dev: Any, baseline: PreTrainedModel
    ) -> dict[str, Any]:
        """The task's metrics of `model`; a language model's also say how closely it follows the
        baseline (KL divergence of the next-token distributions, top-1 agreement)."""
        metrics = evaluate_task(model, tokenizer, self.data.task, dev, progress=self.progress)
        if is_language_modeling(self.data.task):
            from ..evaluation.language import agreement

            follows = agreement(model, baseline, dev, progress=self.progress)
            metrics.update(
                kl_divergence=follows["kl_divergence"], top1_agreement=follows["top1_agreement"]
            )
        return metrics

    def _timing(
        self, baseline: PreTrainedModel, compressed: PreTrainedModel, tokenizer: Any
    ) -> dict[str, Any]:
        """The two timed round-robin (the result's speed-up is against the baseline): forward
        latency per batch size, or for a language model batch-1 prefill and generation."""
        if not self.latency:
            return {}
        logger.info("timing the baseline and the compressed model, interleaved")
        config = self.latency_config
        if is_language_modeling(self.data.task):
            from ..evaluation.generation import compare_generation_speed

            timing = compare_generation_speed(
                {"baseline": baseline, "compressed": compressed},
                tokenizer,
                prompt_tokens=config["seq_len"],
                new_tokens=config.get("new_tokens", 64),
                runs=min(config["runs"], 5),
                progress=self.progress,
            )
            if not timing["reliable"]:
                logger.warning("speed figures are unreliable: %s", timing["reason"])
            return {**timing, "speedup": timing["speedup"]["compressed"]}
        timing = compare_latency(
            {"baseline": baseline, "compressed": compressed},
            batch_sizes=tuple(config["batch_sizes"]),
            seq_len=config["seq_len"],
            runs=config["runs"],
            warmup=config["warmup"],
            progress=self.progress,
        )
        if not timing["reliable"]:
            logger.warning("speed figures are unreliable: %s", timing["reason"])
        return {**timing, "speedup": timing["speedup"]["compressed"]}


def build_report(
    recipe: Recipe,
    task: GlueTask,
    baseline: dict[str, Any],
    compressed: dict[str, Any],
    trainer: CompressionTrainer,
    latency_config: dict[str, Any],
    compression_time: float,
) -> dict[str, Any]:
    return {
        "hf_compress_version": __version__,
        "task": task.name,
        "metric_name": task.main_metric,
        # Published with the card: Hub ids or folder names, never the user's directory layout.
        "base_model": public_name(recipe.base_model),
        "base_license": base_model_license(recipe.base_model),
        "output_dir": public_name(recipe.output_dir),
        "repo_id": recipe.push_to_hub.repo_id if recipe.push_to_hub else None,
        "environment": environment(),
        "latency_config": {
            k: list(v) if isinstance(v, tuple) else v for k, v in latency_config.items()
        },
        "baseline": baseline,
        "compressed": compressed,
        "stages": trainer.stage_summaries,
        "notes": [n for n in (baseline.get("warning"), *trainer.context.notes) if n],
        "compression_time_s": compression_time,
    }
