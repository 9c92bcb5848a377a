"""Side-by-side tables of baseline and compressed figures (terminal and Markdown)."""

from __future__ import annotations

from typing import Any


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
    for name, value in base["metrics"].items():
        if name == "eval_samples":
            continue
        new = comp["metrics"].get(name)
        change = f"{100 * (new - value):+.2f} pt" if new is not None else ""
        rows.append((f"{report['task']} {name}", f"{100 * value:.2f}", f"{100 * new:.2f}" if new is not None else "-", change))
    for key, label in (("num_parameters", "parameters"), ("nonzero_parameters", "non-zero parameters")):
        b, c = base[key], comp[key]
        rows.append((label, f"{b / 1e6:.2f}M", f"{c / 1e6:.2f}M", f"{b / c:.2f}x smaller" if c else ""))
    b, c = base["size_bytes"], comp["size_bytes"]
    rows.append(("size on disk", human_bytes(b), human_bytes(c), f"{b / c:.2f}x smaller" if c else ""))
    seq = report.get("latency_config", {}).get("seq_len", 128)
    threads = report.get("environment", {}).get("threads", "?")
    for batch in (base.get("latency_ms") or {}):
        lb, lc = _latency(base, batch), _latency(comp, batch)
        if lb is None or lc is None:
            continue
        rows.append((f"latency bs={batch} seq={seq} ({threads} thr)", f"{lb:.1f} ms", f"{lc:.1f} ms", f"{lb / lc:.2f}x faster"))
    return rows


def comparison_table(report: dict[str, Any]) -> str:
    """A plain-text table for the terminal."""
    rows = [("", report["baseline"].get("name", "baseline"), "compressed", "change"), *comparison_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(report: dict[str, Any]) -> str:
    rows = comparison_rows(report)
    head = f"| | {report['baseline'].get('name', 'baseline')} | compressed | change |\n|---|---:|---:|---:|\n"
    return head + "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows)
