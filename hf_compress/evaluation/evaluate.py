"""Task metric plus the size and speed figures, for one model, in one call."""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding

from ..data.glue_tasks import GlueTask
from ..data.metrics import glue_metrics
from ..errors import HfCompressError
from .measure import count_parameters, measure_latency, model_device, weights_size_bytes

LATENCY_DEFAULTS = {"batch_sizes": (1, 32), "seq_len": 128, "warmup": 2, "runs": 10}


@torch.inference_mode()
def predict(
    model: Any, tokenizer: Any, dataset: Dataset, batch_size: int = 64, progress: bool = True
) -> np.ndarray:
    """Logits (or regression scores) for every example of a tokenized dataset.

    Raises:
        HfCompressError: some logits are NaN or infinite: a metric computed from them would be
            meaningless (a corrupt checkpoint, or an overflow in a low precision).
    """
    model.eval()
    device = model_device(model)
    columns = [c for c in dataset.column_names if c != "labels"]
    loader = DataLoader(
        dataset.remove_columns([c for c in dataset.column_names if c not in columns]),
        batch_size=batch_size,
        collate_fn=DataCollatorWithPadding(tokenizer),
    )
    outputs = []
    for batch in tqdm(loader, desc="evaluating", disable=not progress, leave=False):
        batch = {k: v.to(device) for k, v in batch.items()}
        outputs.append(model(**batch).logits.float().cpu())
    logits = torch.cat(outputs).numpy()
    broken = int((~np.isfinite(logits)).any(axis=-1).sum()) if logits.size else 0
    if broken:
        raise HfCompressError(
            f"the model gives NaN or infinite logits on {broken} of {len(logits)} examples, so no "
            "metric is reported; its weights are corrupt (re-download or re-save it) or overflow "
            "in this precision (evaluate in float32)"
        )
    return logits


def evaluate_task(
    model: Any,
    tokenizer: Any,
    task: GlueTask,
    dataset: Dataset,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, float]:
    """The task's official metrics on a tokenized dev set (with a `labels` column); for the
    causal-LM task, `perplexity` on its packed sequences (`hf_compress.evaluation.language`)."""
    if task.name == "causal_lm":
        from .language import perplexity

        return perplexity(model, dataset, batch_size, progress)
    logits = predict(model, tokenizer, dataset, batch_size, progress)
    predictions = logits.squeeze(-1) if task.is_regression else logits.argmax(-1)
    results = glue_metrics(task, predictions, np.asarray(dataset["labels"]))
    results["eval_samples"] = len(dataset)
    return results


def model_figures(
    model: Any,
    saved_dir: str | None = None,
    latency: bool = True,
    latency_config: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Parameters, non-zero parameters, bytes on disk and CPU latency of `model`.

    Args:
        model: the model.
        saved_dir: where it is saved; when None it is saved to a temporary directory to measure.
        latency: whether to time it.
        latency_config: overrides of `LATENCY_DEFAULTS` (batch_sizes, seq_len, warmup, runs).
    """
    total, nonzero = count_parameters(model)
    if saved_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            size = weights_size_bytes(tmp)
    else:
        size = weights_size_bytes(saved_dir)
    figures: dict[str, Any] = {
        "num_parameters": total,
        "nonzero_parameters": nonzero,
        "size_bytes": size,
    }
    if latency:
        config = {**LATENCY_DEFAULTS, **(latency_config or {})}
        figures["latency_ms"] = measure_latency(
            model,
            batch_sizes=tuple(config["batch_sizes"]),
            seq_len=config["seq_len"],
            warmup=config["warmup"],
            runs=config["runs"],
            progress=progress,
        )
    return figures


def load_with_dev_set(
    name: str,
    task: GlueTask,
    glue_dir: str | None = None,
    max_seq_length: int = 128,
    max_eval_samples: int | None = None,
    load_in: str | None = None,
    dtype: str | None = None,
) -> tuple[Any, Any, Dataset]:
    """A model (directory or Hub id), its own tokenizer, and `task`'s dev set tokenized by it.

    Args:
        load_in / dtype: as `hf_compress.evaluation.load.load_model_for_eval`.
    """
    from ..checkpoint.loading import load_checked_tokenizer
    from ..checkpoint.sources import resolve_model_source
    from ..data.preprocess import load_task_datasets
    from .load import load_model_for_eval

    source = resolve_model_source(name)
    tokenizer = load_checked_tokenizer(source)
    model = load_model_for_eval(source, task, load_in, dtype)
    _, dev = load_task_datasets(
        task,
        tokenizer,
        max_seq_length,
        max_eval_samples=max_eval_samples,
        glue_dir=glue_dir,
        with_train=False,
    )
    return model, tokenizer, dev
