"""The frontier plot of a benchmark: task metric against size on disk and against CPU latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_frontier(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = results["metric_name"]
    batch = str(results["latency_config"]["batch_sizes"][-1])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, (key, label) in zip(
        axes, (("size", "size on disk (MB)"), ("latency", f"CPU latency, batch {batch} (ms)"))
    ):
        for r in results["results"]:
            x = r["size_bytes"] / 1e6 if key == "size" else r["latency_ms"][batch]["median"]
            y = 100 * r["metrics"][metric]
            style = (
                {"marker": "*", "s": 200, "color": "black"}
                if r.get("is_baseline")
                else {"marker": "o", "s": 40}
            )
            if r.get("peer"):
                style = {"marker": "x", "s": 60, "color": "tab:red"}
            ax.scatter([x], [y], **style)
            ax.annotate(r["name"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{results['task']} {metric} (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"hf-compress on {results['task']}: teacher (star) and compressed models")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
