"""Side-by-side tables of baseline and compressed figures (terminal and Markdown)."""

from __future__ import annotations

import math
from typing import Any

# How each metric reads: its label, and whether it is a fraction shown in percent (GLUE scores,
# agreement) or a plain number (perplexity, KL divergence; lower is better for both).
METRIC_LABELS = {
    "accuracy": "Accuracy",
    "f1": "F1",
    "matthews_correlation": "Matthews correlation",
    "pearson": "Pearson correlation",
    "spearmanr": "Spearman correlation",
    "perplexity": "Perplexity (lower is better)",
    "kl_divergence": "KL divergence to the baseline (nats/token)",
    "top1_agreement": "Top-1 next-token agreement with the baseline",
}
PLAIN_METRICS = {"perplexity": 2, "kl_divergence": 4}  # name -> decimals
# Counts a report keeps beside the metrics: not results.
COUNT_KEYS = ("eval_samples", "eval_tokens")


def format_metric(name: str, value: float) -> str:
    """A metric's value as the tables show it (fractions in percent, with two decimals)."""
    if name in PLAIN_METRICS:
        return f"{value:.{PLAIN_METRICS[name]}f}"
    return f"{100 * value:.2f}"


def metric_change(name: str, old: float | None, new: float | None) -> str:
    """The change from `old` to `new`: percentage points for fractions, else the difference and
    the relative change."""
    if old is None or new is None or not (math.isfinite(old) and math.isfinite(new)):
        return ""
    if name in PLAIN_METRICS:
        digits = PLAIN_METRICS[name]
        relative = f" ({(new - old) / old * 100:+.1f}%)" if old else ""
        return f"{new - old:+.{digits}f}{relative}"
    return f"{100 * (new - old):+.2f} pt"


def metric_names(*entries: dict[str, Any]) -> list[str]:
    """The metrics of report entries (their `metrics` mappings), in first-seen order, counts left
    out."""
    names: dict[str, None] = {}
    for entry in entries:
        for name in entry.get("metrics") or {}:
            if name not in COUNT_KEYS:
                names[name] = None
    return list(names)


def measure_label(measure: str, report: dict[str, Any]) -> str:
    """What a timed measure is: a batch size of the forward pass, or an LM's prefill / generation
    at batch 1."""
    timing = report.get("latency") or {}
    threads = report.get("environment", {}).get("threads", "?")
    if measure == "prefill":
        return f"prefill {timing.get('prompt_tokens', '?')} tokens, bs=1 ({threads} thr)"
    if measure == "generate":
        return (
            f"generate {timing.get('new_tokens', '?')} tokens after "
            f"{timing.get('prompt_tokens', '?')}, bs=1 ({threads} thr)"
        )
    seq = report.get("latency_config", {}).get("seq_len", 128)
    return f"latency bs={measure} seq={seq} ({threads} thr)"


def measure_order(measure: str) -> tuple[int, int]:
    """Sort key: batch sizes in numeric order, then prefill, then generation."""
    if measure.isdigit():
        return (0, int(measure))
    return (1, {"prefill": 0, "generate": 1}.get(measure, 2))


def _ratio(row: dict[str, Any], base: dict[str, Any], batch: str) -> float:
    """The speed-up against the baseline: the median of per-round ratios when timed round-robin
    (`speedup`), else the ratio of the medians; 1 for the baseline itself."""
    if row is base:
        return 1.0
    ratio = ((row.get("speedup") or {}).get(batch) or {}).get("median")
    return ratio or base["latency_ms"][batch]["median"] / row["latency_ms"][batch]["median"]


def markdown_results(results: dict[str, Any]) -> str:
    metric = results["metric_name"]
    batches = [str(b) for b in results["latency_config"]["batch_sizes"]]
    base = results["results"][0]
    head = (
        f"| recipe | {metric} | Δ pt | params | non-zero | size | size ratio | "
        + " | ".join(f"bs={b} ms (speed-up)" for b in batches)
        + " | compress time |\n|---|"
        + "---:|" * (6 + len(batches) + 1)
        + "\n"
    )
    lines = []
    for r in results["results"]:
        value = r["metrics"][metric]
        lat = " | ".join(
            f"{r['latency_ms'][b]['median']:.1f} ({_ratio(r, base, b):.2f}x)" for b in batches
        )
        lines.append(
            f"| {r['name']} | {100 * value:.2f} | {100 * (value - base['metrics'][metric]):+.2f} | "
            f"{r['num_parameters'] / 1e6:.2f}M | {r['nonzero_parameters'] / 1e6:.2f}M | "
            f"{human_bytes(r['size_bytes'])} | {base['size_bytes'] / r['size_bytes']:.2f}x | {lat} "
            f"| {r.get('compression_time_s', 0):.0f} s |"
        )
    failed = "".join(f"\n- {f['name']}: failed: {f['error']}" for f in results.get("failed", []))
    env = results["environment"]
    footer = (
        f"\n\n{env['cpu']}, {env['threads']} threads, torch {env['torch']}, transformers "
        f"{env['transformers']}; latency: median of {results['latency_config']['runs']} runs, "
        f"sequence length {results['latency_config']['seq_len']}."
    )
    if "total_time_s" in results:
        teacher = results.get("teacher_time_s", 0.0)
        footer += f" Total time {results['total_time_s'] / 60:.1f} min" + (
            f", of which fine-tuning the teacher {teacher / 60:.1f} min."
            if teacher >= 1
            else " (no teacher fine-tuned in this run)."
        )
    if (results.get("latency") or {}).get("reliable") is False:
        footer += f" Speed figures unreliable: {results['latency']['reason']}."
    return head + "\n".join(lines) + failed + footer + "\n"


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1000
    return f"{size:.1f} GB"


def _latency(entry: dict[str, Any], batch: str) -> float | None:
    value = (entry.get("latency_ms") or {}).get(batch)
    return None if value is None else float(value["median"])


def comparison_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(measure, baseline, compressed, change) rows of a run report."""
    base, comp = report["baseline"], report["compressed"]
    rows: list[tuple[str, str, str, str]] = []
    for name in metric_names(base, comp):
        old, new = base["metrics"].get(name), comp["metrics"].get(name)
        rows.append(
            (
                f"{report['task']} {name}",
                format_metric(name, old) if old is not None else "-",
                format_metric(name, new) if new is not None else "-",
                metric_change(name, old, new),
            )
        )
    for key, label in (
        ("num_parameters", "parameters"),
        ("nonzero_parameters", "non-zero parameters"),
    ):
        b, c = base[key], comp[key]
        rows.append(
            (label, f"{b / 1e6:.2f}M", f"{c / 1e6:.2f}M", f"{b / c:.2f}x smaller" if c else "")
        )
    b, c = base["size_bytes"], comp["size_bytes"]
    rows.append(
        ("size on disk", human_bytes(b), human_bytes(c), f"{b / c:.2f}x smaller" if c else "")
    )
    timing = report.get("latency") or {}
    unreliable = timing.get("reliable") is False
    for measure in sorted(base.get("latency_ms") or {}, key=measure_order):
        lb, lc = _latency(base, measure), _latency(comp, measure)
        if lb is None or lc is None:
            continue
        ratio = ((timing.get("speedup") or {}).get(measure) or {}).get("median") or lb / lc
        rows.append(
            (
                measure_label(measure, report),
                f"{lb:.1f} ms",
                f"{lc:.1f} ms",
                f"{ratio:.2f}x faster" + (" (unreliable)" if unreliable else ""),
            )
        )
    if base.get("tokens_per_second") and comp.get("tokens_per_second"):
        b, c = base["tokens_per_second"], comp["tokens_per_second"]
        rows.append(
            (
                "generation tokens/s",
                f"{b:.1f}",
                f"{c:.1f}",
                f"{c / b:.2f}x" + (" (unreliable)" if unreliable else ""),
            )
        )
    return rows


def speed_warning(report: dict[str, Any]) -> str | None:
    """Why a run's speed figures are not to be trusted, and how to measure them again."""
    timing = report.get("latency") or {}
    if timing.get("reliable") is not False:
        return None
    return (
        f"speed figures are unreliable: {timing.get('reason')}; time the models again on a quiet "
        "machine with `hf-compress bench <baseline> <output_dir>`"
    )


def comparison_table(report: dict[str, Any]) -> str:
    """A plain-text table for the terminal."""
    rows = [
        ("", report["baseline"].get("name", "baseline"), "compressed", "change"),
        *comparison_rows(report),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _timed(row: dict[str, Any], batch: str) -> str:
    text = f"{row['latency_ms'][batch]['median']:.1f}"
    ratio = ((row.get("speedup") or {}).get(batch) or {}).get("median")
    return text + (f" ({ratio:.2f}x)" if ratio else "")


def format_bench_table(rows: list[dict[str, Any]]) -> str:
    batch_sizes = list(rows[0]["latency_ms"]) if rows and "latency_ms" in rows[0] else []
    header = [
        "model",
        "params",
        "non-zero",
        "size",
        *[f"bs={b} ms (vs first)" for b in batch_sizes],
    ]
    has_metric = any("metrics" in r for r in rows)
    if has_metric:
        header.append("metric")
    table = [header]
    for r in rows:
        precision = r.get("dtype", "float32")
        line = [
            r["model"]
            if precision in ("float32", "onnx", "openvino")
            else f"{r['model']} ({precision})",
            f"{r['num_parameters'] / 1e6:.2f}M",
            f"{r['nonzero_parameters'] / 1e6:.2f}M",
            human_bytes(r["size_bytes"]),
            *[_timed(r, b) for b in batch_sizes],
        ]
        if has_metric:
            metrics = {k: v for k, v in r.get("metrics", {}).items() if k != "eval_samples"}
            line.append(", ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items()))
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in table
    ]
    if rows and rows[0].get("latency_reliable") is False:
        lines.append("speed figures unreliable: the machine was busy; run bench again later")
    return "\n".join(lines)
