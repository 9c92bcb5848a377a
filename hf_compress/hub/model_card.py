"""Model cards for compressed models, generated from `report.json` and `recipe.yaml`.

The card is built with huggingface_hub's own `ModelCard` / `ModelCardData` / `EvalResult`, so
its YAML metadata is what the Hub expects: `base_model` (+ `base_model_relation`), `datasets`,
`library_name`, `pipeline_tag`, `license`, `tags` and a `model-index` holding the GLUE results
(which the Hub shows as evaluation results). The body comes from a Jinja template
(`hf_compress/hub/templates/model_card.md`): what each
recipe stage did, a baseline-versus-compressed table, how to load the model, the full recipe and
its limitations.

    card = build_model_card(report, recipe_yaml)     # a huggingface_hub.ModelCard
    write_model_card(output_dir, report, recipe_yaml)  # -> output_dir/README.md
"""

from __future__ import annotations

import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..checkpoint.sources import base_model_license
from ..data.glue_tasks import GLUE_TASKS
from ..errors import HfCompressError
from ..evaluation.tables import (
    METRIC_LABELS,
    PLAIN_METRICS,
    format_metric,
    measure_label,
    measure_order,
    metric_change,
)
from ..recipe.registry import MODIFIERS
from .public import is_hub_id, public_recipe_yaml

TEMPLATE_NAME = "model_card.md"

GLUE_DATASET = "nyu-mll/glue"


def _technique(kind: str) -> tuple[str, tuple[str, ...], bool]:
    """(description, Hub tags, quantizes) of a modifier type, from its registered class; a type
    this installation does not know is named by its own words."""
    cls = MODIFIERS.get(kind)
    if cls is None or not cls.description:
        return kind.replace("_", " "), (_slug(kind),), False
    return cls.description, cls.hub_tags, cls.quantizes


# Pretty names and Hub metric ids of the GLUE metrics.
METRICS = {
    "accuracy": ("Accuracy", "accuracy"),
    "f1": ("F1", "f1"),
    "matthews_correlation": ("Matthews correlation", "matthews_correlation"),
    "pearson": ("Pearson correlation", "pearsonr"),
    "spearmanr": ("Spearman correlation", "spearmanr"),
}

# Numbers a report keeps beside the metrics (losses, timings, counts): not results of the task.
_NOT_METRICS = re.compile(r"(loss|runtime|per_second|epoch|step|samples|tokens)", re.IGNORECASE)

LANGUAGE_MODELING = "causal_lm"


_DETAIL_SKIP = {"type", "targets", "ignore"}


def build_model_card(
    report: dict[str, Any], recipe_yaml: str, template_path: str | os.PathLike | None = None
) -> ModelCard:
    """Builds the model card of a compressed model.

    Args:
        report: the run's report (the `report.json` schema: task, metric_name, base_model,
            baseline / compressed measurements, stages, notes, environment, ...). Missing parts
            (no baseline, no latency) leave their rows out.
        recipe_yaml: the applied recipe as YAML text (`recipe.yaml`); shown in full, with any
            token-like value redacted.
        template_path: a Jinja template to use instead of the packaged one.

    Returns:
        A `huggingface_hub.ModelCard`; `card.data` holds the metadata, `str(card)` the README.

    Raises:
        HfCompressError: the report is not a mapping or the template cannot be read.
    """
    if not isinstance(report, dict):
        raise HfCompressError(
            f"the report must be a dict (report.json), got {type(report).__name__}"
        )
    recipe = _parse_recipe(recipe_yaml)
    task = GLUE_TASKS.get(str(report.get("task") or recipe.get("task") or ""))
    language_model = (report.get("task") or recipe.get("task")) == LANGUAGE_MODELING
    task_pretty = task.directory if task else str(report.get("task") or "the task")
    baseline = report.get("baseline") or {}
    compressed = report.get("compressed") or {}
    stages = _stages(report, recipe)
    types = [m.get("type", "") for stage in stages for m in stage["modifiers"]]
    quantized = _is_quantized(stages, compressed.get("methods") or [])
    load_id = report.get("repo_id") or report.get("output_dir") or "<path or repo id>"
    model_name = str(load_id).rstrip("/").split("/")[-1]

    base_model = report.get("base_model") or recipe.get("base_model")
    hub_base = base_model if isinstance(base_model, str) and is_hub_id(base_model) else None
    license_ = report.get("base_license") or (base_model_license(hub_base) if hub_base else None)
    metrics = _metrics(compressed.get("metrics") or {}, report.get("metric_name"))
    eval_results = [
        EvalResult(
            task_type="text-classification",
            task_name="Text Classification",
            dataset_type=GLUE_DATASET,
            dataset_name=f"GLUE {task_pretty}",
            dataset_config=task.name if task else report.get("task"),
            dataset_split=task.hub_validation_split if task else "validation",
            metric_type=METRICS.get(name, (name, name))[1],
            metric_name=METRICS.get(name, (name, name))[0],
            metric_value=value,
        )
        for name, value in metrics.items()
        if not language_model  # held-out text of the user's: no Hub dataset to name
    ]
    card_data = ModelCardData(
        base_model=hub_base,
        # The Hub only accepts base_model_relation next to a base_model.
        base_model_relation=("quantized" if quantized else "finetune") if hub_base else None,
        datasets=None if language_model else [GLUE_DATASET],
        language="en",
        library_name="transformers",
        pipeline_tag="text-generation" if language_model else "text-classification",
        license=license_,
        tags=_tags(
            types,
            stages,
            compressed.get("methods") or [],
            quantized,
            task.name if task else None,
            language_model,
        ),
        metrics=list(metrics) or None,
        # model_name names the model-index entry; without results it would be a stray metadata key.
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )

    context = {
        "title": model_name,
        "summary": _summary(base_model, task_pretty, types, compressed, baseline, language_model),
        "stages": [_describe_stage(stage) for stage in stages],
        "rows": _rows(baseline, compressed, metrics, report),
        "results_intro": _language_results_intro(compressed, baseline)
        if language_model
        else (
            f"GLUE {task_pretty} validation set{_dev_size(compressed)}. "
            f"*{baseline.get('name') or 'baseline'}* is the uncompressed model the recipe started "
            "from; every number comes from `report.json`."
        ),
        "baseline_name": baseline.get("name") or "baseline",
        "compressed_name": compressed.get("name") or "compressed",
        "measurement_note": _measurement_note(report),
        "load_id": load_id,
        "example_text": "A gripping, beautifully acted film.",
        **_usage(language_model),
        "recipe_yaml": public_recipe_yaml(recipe_yaml).rstrip("\n"),
        "limitations": _limitations(report, task_pretty, hub_base, base_model, language_model),
        "environment": _environment_lines(report),
    }
    template_str = _read_template(template_path)
    return ModelCard.from_template(card_data, template_str=template_str, **context)


def write_model_card(
    output_dir: str | os.PathLike, report: dict[str, Any], recipe_yaml: str
) -> Path:
    """Writes the model card as `output_dir/README.md` (see `build_model_card`).

    Args:
        output_dir: the compressed model's directory.
        report: the run's report (`report.json` content).
        recipe_yaml: the applied recipe as YAML text.

    Returns:
        The path of the written README.md.
    """
    path = Path(output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    build_model_card(report, recipe_yaml).save(path)
    return path


# Pieces -------------------------------------------------------------------------------------
def _read_template(template_path: str | os.PathLike | None) -> str:
    try:
        if template_path is not None:
            return Path(template_path).read_text(encoding="utf-8")
        # Package data, so it works when installed from a wheel.
        return (
            resources.files(__package__)
            .joinpath("templates", TEMPLATE_NAME)
            .read_text(encoding="utf-8")
        )
    except OSError as exc:
        raise HfCompressError(
            f"cannot read the model card template {template_path or TEMPLATE_NAME}: {exc}"
        ) from exc


def _parse_recipe(recipe_yaml: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(recipe_yaml or "") or {}
    except yaml.YAMLError as exc:
        raise HfCompressError(
            f"recipe.yaml does not parse as YAML ({exc}); cannot build the model card"
        ) from exc
    return data if isinstance(data, dict) else {}


def _stages(report: dict[str, Any], recipe: dict[str, Any]) -> list[dict[str, Any]]:
    """Stages with each modifier's recipe settings merged with what it reported (report wins)."""
    reported = report.get("stages") or []
    planned = recipe.get("stages") or []
    stages = []
    for index in range(max(len(reported), len(planned))):
        done = (
            reported[index] if index < len(reported) and isinstance(reported[index], dict) else {}
        )
        plan = planned[index] if index < len(planned) and isinstance(planned[index], dict) else {}
        done_mods, plan_mods = done.get("modifiers") or [], plan.get("modifiers") or []
        modifiers = []
        for j in range(max(len(done_mods), len(plan_mods))):
            entry = (
                dict(plan_mods[j]) if j < len(plan_mods) and isinstance(plan_mods[j], dict) else {}
            )
            if j < len(done_mods) and isinstance(done_mods[j], dict):
                entry.update(done_mods[j])
            modifiers.append(entry)
        stages.append(
            {
                "name": done.get("name") or plan.get("name") or f"stage {index + 1}",
                "epochs": done.get("epochs", plan.get("epochs", 0)),
                "modifiers": modifiers,
            }
        )
    return stages


def _is_quantized(stages: list[dict[str, Any]], methods: list[str]) -> bool:
    if any(_technique(str(m.get("type")))[2] for stage in stages for m in stage["modifiers"]):
        return True
    return any(
        re.search(r"quant|int8|int4|[48]bit|nf4|fp4", str(m), re.IGNORECASE) for m in methods
    )


def _quantization_tags(modifier: dict[str, Any]) -> list[str]:
    text = f"{modifier.get('method', '')} {modifier.get('bits', '')}".lower()
    tags = []
    if "8" in text:
        tags.append("int8")
    if "4" in text:
        tags.append("4-bit")
    for word in ("nf4", "fp4", "qat"):
        if word in text:
            tags.append(word)
    if "bnb" in text:
        tags.append("bitsandbytes")
    return tags


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")


def _tags(
    types: list[str],
    stages: list[dict[str, Any]],
    methods: list[str],
    quantized: bool,
    task: str | None,
    language_model: bool = False,
) -> list[str]:
    if language_model:
        tags = ["hf-compress", "compressed", "text-generation"]
    else:
        tags = ["hf-compress", "compressed", "glue"] + ([task] if task else [])
    for name in types:
        tags += list(_technique(name)[1])
    for stage in stages:
        for modifier in stage["modifiers"]:
            if _technique(str(modifier.get("type")))[2]:
                tags += _quantization_tags(modifier)
    tags += [_slug(m) for m in methods if _slug(m)]
    if quantized:
        tags.append("quantized")
    return list(dict.fromkeys(t for t in tags if t))  # unique, in order


def _language_results_intro(compressed: dict[str, Any], baseline: dict[str, Any]) -> str:
    metrics = compressed.get("metrics") or {}
    sequences, tokens = metrics.get("eval_samples"), metrics.get("eval_tokens")
    size = (
        f" ({sequences:,} sequences, {tokens:,} predicted tokens)" if sequences and tokens else ""
    )
    return (
        f"Held-out text{size}, never trained on. *{baseline.get('name') or 'baseline'}* is the "
        "uncompressed model the recipe started from; the KL divergence and top-1 agreement "
        "compare this model's next-token distribution with its at every position. Every number "
        "comes from `report.json`."
    )


def _usage(language_model: bool) -> dict[str, str]:
    """The template's loading example: the Auto class, the pipeline and a call of it."""
    if language_model:
        return {
            "auto_class": "AutoModelForCausalLM",
            "pipeline_task": "text-generation",
            "pipeline_name": "generator",
            "example_call": '"The capital of France is", max_new_tokens=20',
        }
    return {
        "auto_class": "AutoModelForSequenceClassification",
        "pipeline_task": "text-classification",
        "pipeline_name": "classifier",
        "example_call": '"A gripping, beautifully acted film."',
    }


def _dev_size(entry: dict[str, Any]) -> str:
    samples = (entry.get("metrics") or {}).get("eval_samples")
    return f" ({samples:,} examples)" if isinstance(samples, int) and samples > 0 else ""


def _metrics(values: dict[str, Any], main: str | None) -> dict[str, float]:
    """Numeric task metrics (losses, runtimes and counters left out), the main metric first."""
    metrics: dict[str, float] = {}
    for key, value in values.items():
        name = str(key).removeprefix("eval_")
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or _NOT_METRICS.search(name)
        ):
            continue
        if math.isfinite(value):
            metrics[name] = round(float(value), 4)
    if main and main in metrics:
        metrics = {main: metrics[main], **{k: v for k, v in metrics.items() if k != main}}
    return metrics


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(_format_value(v) for v in value[:8])
        return f"[{shown}{', ...' if len(value) > 8 else ''}]"
    if isinstance(value, dict):
        items = list(value.items())
        shown = ", ".join(f"{k}: {_format_value(v)}" for k, v in items[:8])
        return f"{{{shown}{', ...' if len(items) > 8 else ''}}}"
    return str(value)


def describe_modifier(modifier: dict[str, Any]) -> str:
    """One modifier in words: what the technique is, then its settings and results."""
    kind = str(modifier.get("type", "unknown"))
    label = _technique(kind)[0]
    details = [
        f"{str(k).replace('_', ' ')}: {_format_value(v)}"
        for k, v in modifier.items()
        if k not in _DETAIL_SKIP and v is not None and v != {} and v != []
    ]
    return f"{label} (`{kind}`)" + (f": {'; '.join(details)}" if details else "")


def _describe_stage(stage: dict[str, Any]) -> dict[str, Any]:
    epochs = stage.get("epochs") or 0
    training = (
        "one-shot, no training"
        if not epochs
        else f"{epochs:g} epoch{'s' if epochs != 1 else ''} of training"
    )
    lines = [describe_modifier(m) for m in stage["modifiers"]] or ["no modifiers"]
    return {"name": stage["name"], "training": training, "lines": lines}


def _summary(
    base_model: Any,
    task_pretty: str,
    types: list[str],
    compressed: dict,
    baseline: dict,
    language_model: bool = False,
) -> str:
    techniques = list(dict.fromkeys(_technique(t)[0] for t in types if t))
    if language_model:
        base = f"`{base_model}`" if base_model else "A transformers language model"
        text = f"{base} compressed with hf-compress"
    else:
        base = f"`{base_model}`" if base_model else "A transformers encoder"
        text = f"{base} fine-tuned on GLUE {task_pretty} and compressed with hf-compress"
    text += f" ({', '.join(techniques)})." if techniques else "."
    size, base_size = compressed.get("size_bytes"), baseline.get("size_bytes")
    if size and base_size:
        text += (
            f" Weights on disk: {_mb(size)} (baseline {_mb(base_size)}, "
            f"{base_size / size:.2f}x smaller)."
        )
    return text


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def _count(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "n/a"
    return f"{n / 1e6:.2f}M" if n >= 100_000 else f"{int(n):,}"


def _percent_change(old: Any, new: Any) -> str:
    if not isinstance(old, (int, float)) or not isinstance(new, (int, float)) or not old:
        return ""
    return f"{(new - old) / old * 100:+.1f}%"


def _rows(
    baseline: dict, compressed: dict, metrics: dict[str, float], report: dict[str, Any]
) -> list[dict[str, str]]:
    rows = []
    base_metrics = _metrics(baseline.get("metrics") or {}, None)
    for name, value in metrics.items():
        old = base_metrics.get(name)
        if name in PLAIN_METRICS:  # perplexity, KL: plain numbers, lower is better
            shown = (
                (format_metric(name, old) if old is not None else "n/a"),
                format_metric(name, value),
            )
            change = metric_change(name, old, value)
        else:  # fractions (accuracy, F1, agreement) as the Hub's model index holds them
            shown = (f"{old:.4f}" if old is not None else "n/a"), f"{value:.4f}"
            change = f"{(value - old) * 100:+.2f} pts" if old is not None else ""
        rows.append(
            {
                "label": METRIC_LABELS.get(name, name),
                "baseline": shown[0],
                "compressed": shown[1],
                "change": change,
            }
        )
    for key, label in (
        ("num_parameters", "Parameters"),
        ("nonzero_parameters", "Non-zero parameters"),
    ):
        if compressed.get(key) is not None:
            rows.append(
                {
                    "label": label,
                    "baseline": _count(baseline.get(key)),
                    "compressed": _count(compressed[key]),
                    "change": _percent_change(baseline.get(key), compressed[key]),
                }
            )
    if compressed.get("size_bytes") is not None:
        old, new = baseline.get("size_bytes"), compressed["size_bytes"]
        change = _percent_change(old, new) + (
            f" ({old / new:.2f}x smaller)" if old and new and new < old else ""
        )
        rows.append(
            {
                "label": "Size on disk (weights)",
                "baseline": _mb(old) if old else "n/a",
                "compressed": _mb(new),
                "change": change,
            }
        )
    if not _speed_reliable(report):
        return rows  # the measurement note says why the speed figures are left out
    seq_len = (report.get("latency_config") or {}).get("seq_len")
    speedup = (report.get("latency") or {}).get("speedup") or {}
    for measure, new in sorted(
        (compressed.get("latency_ms") or {}).items(), key=lambda kv: measure_order(kv[0])
    ):
        old = (baseline.get("latency_ms") or {}).get(measure) or {}
        if measure.isdigit():
            label = (
                f"Latency, batch {measure}"
                + (f" x {seq_len} tokens" if seq_len else "")
                + " (median ms)"
            )
        else:
            label = measure_label(measure, report).capitalize() + ", median ms"
        change = ""
        # the median of per-round ratios (both timed round-robin); older reports: the medians' ratio
        ratio = (speedup.get(measure) or {}).get("median")
        if ratio is None and old.get("median") and new.get("median"):
            ratio = old["median"] / new["median"]
        if ratio:
            change = f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
        rows.append(
            {
                "label": label,
                "baseline": _latency(old),
                "compressed": _latency(new),
                "change": change,
            }
        )
    old_rate, new_rate = baseline.get("tokens_per_second"), compressed.get("tokens_per_second")
    if old_rate and new_rate:
        rows.append(
            {
                "label": "Generation speed (tokens/s)",
                "baseline": f"{old_rate:.1f}",
                "compressed": f"{new_rate:.1f}",
                "change": f"{new_rate / old_rate:.2f}x",
            }
        )
    return rows


def _speed_reliable(report: dict[str, Any]) -> bool:
    return (report.get("latency") or {}).get("reliable", True) is not False


def _latency(entry: dict) -> str:
    if not entry or entry.get("median") is None:
        return "n/a"
    text = f"{entry['median']:.1f}"
    if entry.get("p10") is not None and entry.get("p90") is not None:
        text += f" ({entry['p10']:.1f}-{entry['p90']:.1f})"
    return text


def _measurement_note(report: dict[str, Any]) -> str:
    env = report.get("environment") or {}
    config = report.get("latency_config") or {}
    parts = []
    if config and not _speed_reliable(report):
        parts.append(
            "Speed figures are left out: the machine was busy while they were measured "
            f"({report['latency']['reason']}). Time the two models on a quiet machine with "
            "`hf-compress bench <baseline> <this model>`."
        )
    elif config and (report.get("latency") or {}).get("new_tokens"):
        timing = report["latency"]
        parts.append(
            "Speed: the baseline and this model timed round-robin in one process at batch 1: a "
            f"forward pass over a {timing.get('prompt_tokens', '?')}-token prompt (prefill), and "
            f"greedy generation of {timing['new_tokens']} tokens with the KV cache (prompt "
            f"included); median of {config.get('runs', '?')} rounds, "
            f"{env.get('threads', '?')} threads on {env.get('cpu', 'an unknown CPU')}."
        )
    elif config:
        device = env.get("device")
        where = (
            f"{device} ({env.get('cpu', 'unknown CPU')} host)"
            if device and device != "cpu"
            else env.get("cpu", "an unknown CPU")
        )
        parts.append(
            "Latency: the baseline and this model timed round-robin in one process (run 1 of each, "
            "then run 2 of each, ...), one forward pass of random token ids, sequence length "
            f"{config.get('seq_len', '?')}, batch sizes "
            f"{', '.join(str(b) for b in config.get('batch_sizes', []))}; median of "
            f"{config.get('runs', '?')} runs (p10-p90 in brackets; the speed-up is the median of "
            "the per-round ratios) after "
            f"{config.get('warmup', '?')} warm-up runs, {env.get('threads', '?')} threads on "
            f"{where} ({env.get('cpu_count', '?')} logical cores)."
        )
    parts.append(
        "Size on disk counts the weight files (safetensors) only; parameters count "
        "dense-equivalent elements (int8 / packed / factorized storage counted as the weights they "
        "stand for, shared tensors once)."
    )
    if report.get("compression_time_s"):
        parts.append(f"Compression took {report['compression_time_s'] / 60:.1f} minutes.")
    return " ".join(parts)


def _limitations(
    report: dict[str, Any],
    task_pretty: str,
    hub_base: str | None,
    base_model: Any,
    language_model: bool = False,
) -> list[str]:
    notes = [str(n) for n in report.get("notes") or []]
    if language_model:
        notes.append(
            "Perplexity and agreement were measured only on the held-out text named in the "
            "recipe; quality on other text, tasks or languages, and the safety of its "
            "generations, are unknown, and the model inherits the biases of its base model."
        )
    else:
        notes.append(
            f"Evaluated only on the GLUE {task_pretty} validation set; accuracy on other text, "
            "domains or languages is unknown and the model inherits the biases of its base model "
            "and of the training data."
        )
    notes.append(
        "Loading needs `import hf_compress` first: the compressed modules are rebuilt by "
        "hf-compress, so plain transformers without it cannot load this checkpoint."
    )
    notes.append(
        "Latency depends on the hardware, thread count, batch size and sequence length; the "
        "numbers above were measured once on the machine listed below."
    )
    if base_model and not hub_base:
        notes.append(
            f"The base model was loaded from a local path (`{base_model}`), so the card names no "
            "Hub base model."
        )
    return notes


def _environment_lines(report: dict[str, Any]) -> list[str]:
    env = report.get("environment") or {}
    lines = [f"hf-compress {report.get('hf_compress_version', 'unknown')}"]
    versions = [f"{name} {env[name]}" for name in ("torch", "transformers") if env.get(name)]
    if env.get("python"):
        versions.append(f"Python {env['python']}")
    if versions:
        lines.append(", ".join(versions))
    if env.get("cpu"):
        lines.append(
            f"CPU: {env['cpu']} ({env.get('cpu_count', '?')} logical cores, "
            f"{env.get('threads', '?')} threads used)"
        )
    return lines
