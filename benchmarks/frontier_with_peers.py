"""One frontier (SST-2 or another task) from several benchmark runs plus the peers, with the
dominance check.

Each `hf-compress bench` run measures its own teacher beside its results, and the peer scripts
(`benchmarks/peer_torch_pruning.py`, `benchmarks/peer_openvino_int8.py`, run in their own venvs)
do the same. Absolute latencies move by about 10% between runs on a shared machine, so every
point is expressed against the teacher measured in the same run: accuracy change in points, size
ratio and speed-up. A peer point is dominated when one of our points is at least as good on all
three (accuracy change, size ratio, batch-32 speed-up).

    python benchmarks/frontier_with_peers.py --results bench_out/sst2-*/results.json \
        --peers bench_out/peers/torch_pruning.json bench_out/peers/openvino_int8.json \
        --out docs/benchmarks/sst2-peers

`--bench` adds points from `hf-compress bench TEACHER MODEL... --task sst2 --output F` (the
first model is the teacher), e.g. ONNX exports of our compressed models, and from
`benchmarks/peer_torch_int8.py` (same layout; its rows marked `peer: true` are peers, rows with an
`error` are peers that did not run and are left off the plot).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Point:
    name: str
    source: str
    delta_pt: float
    size_ratio: float
    speedup_bs1: float
    speedup_bs32: float
    peer: bool

    def dominates(self, other: Point) -> bool:
        return (
            self.delta_pt >= other.delta_pt
            and self.size_ratio >= other.size_ratio
            and self.speedup_bs32 >= other.speedup_bs32
        )


def _ratio(base: dict, result: dict, batch: str) -> float:
    return base["latency_ms"][batch]["median"] / result["latency_ms"][batch]["median"]


def points_from_benchmark(path: Path) -> list[Point]:
    data = json.loads(path.read_text())
    metric = data["metric_name"]
    base, *results = data["results"]
    return [
        Point(
            name=r["name"],
            source=path.parent.name,
            delta_pt=100 * (r["metrics"][metric] - base["metrics"][metric]),
            size_ratio=base["size_bytes"] / r["size_bytes"],
            speedup_bs1=_ratio(base, r, "1"),
            speedup_bs32=_ratio(base, r, "32"),
            peer=False,
        )
        for r in results
    ]


def points_from_bench(path: Path, metric: str) -> list[Point]:
    """Points from `hf-compress bench MODEL... --task T --output FILE` (e.g. ONNX exports), each
    against the file's first row, the teacher measured in the same process. A row measured in
    another compute dtype (`--dtype float32,bfloat16`) is its own point, named with its dtype."""
    base, *results = json.loads(path.read_text())["results"]
    results = [
        r for r in results if "error" not in r
    ]  # a peer that failed to run (benchmarks/peer_torch_int8.py)
    names = [Path(r["model"]).name for r in results]
    if len(set(names)) < len({r["model"] for r in results}):  # same folder name, different runs
        names = ["/".join(Path(r["model"]).parts[-2:]) for r in results]
    return [
        Point(
            name=name
            + ("" if r.get("dtype", "float32") in ("float32", "onnx") else f" ({r['dtype']})"),
            source=f"{path.parent.name}/{path.name}",
            delta_pt=100 * (r["metrics"][metric] - base["metrics"][metric]),
            size_ratio=base["size_bytes"] / r["size_bytes"],
            speedup_bs1=_ratio(base, r, "1"),
            speedup_bs32=_ratio(base, r, "32"),
            peer=bool(r.get("peer")),
        )
        for name, r in zip(names, results, strict=True)
    ]


def points_from_peer(path: Path) -> list[Point]:
    data = json.loads(path.read_text())
    if data.get("peer") == "torch-pruning":
        base, pruned = data["teacher"], data["pruned"]
        size = data["saved"]["safetensors_bytes"]
        base_size = (
            data["teacher"].get("size_bytes")
            or Path(data["teacher_dir"], "model.safetensors").stat().st_size
        )
        return [
            Point(
                name=f"torch-pruning {data['torch_pruning_version']} heads+FFN",
                source=path.name,
                delta_pt=100 * (pruned["metrics"]["accuracy"] - base["metrics"]["accuracy"]),
                size_ratio=base_size / size,
                speedup_bs1=_ratio(base, pruned, "1"),
                speedup_bs32=_ratio(base, pruned, "32"),
                peer=True,
            )
        ]
    results = data["results"]
    base = results["pytorch_fp32"]
    ours = bool(
        data.get("ours")
    )  # benchmarks/openvino_on_export.py: our export, OpenVINO as its runtime
    return [
        Point(
            name=r["name"] if ours else f"OpenVINO {name.removeprefix('openvino_')}",
            source=path.name,
            delta_pt=100 * (r["accuracy"] - base["accuracy"]),
            size_ratio=base["size_bytes"] / r["size_bytes"],
            speedup_bs1=_ratio(base, r, "1"),
            speedup_bs32=_ratio(base, r, "32"),
            peer=not ours,
        )
        for name, r in results.items()
        if name != "pytorch_fp32"
    ]


def dominance(ours: list[Point], peers: list[Point]) -> list[tuple[Point, Point | None]]:
    """Each peer with the first of our points that dominates it (None: not dominated)."""
    return [(peer, next((p for p in ours if p.dominates(peer)), None)) for peer in peers]


def markdown(ours: list[Point], peers: list[Point]) -> str:
    lines = [
        "| point | run | Δ pt vs its teacher | size ratio | speed-up bs 1 | speed-up bs 32 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for p in sorted(ours + peers, key=lambda p: (p.peer, -p.delta_pt)):
        label = f"**peer** {p.name}" if p.peer else p.name
        lines.append(
            f"| {label} | {p.source} | {p.delta_pt:+.2f} | {p.size_ratio:.2f}x "
            f"| {p.speedup_bs1:.2f}x | {p.speedup_bs32:.2f}x |"
        )
    lines += [
        "",
        "| peer | dominated by (accuracy, size and bs-32 speed all at least as good) |",
        "|---|---|",
    ]
    for peer, by in dominance(ours, peers):
        lines.append(
            f"| {peer.name} | {by.name + ' (' + by.source + ')' if by else '**not dominated**'} |"
        )
    return "\n".join(lines) + "\n"


def plot(ours: list[Point], peers: list[Point], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, attr, label in (
        (axes[0], "size_ratio", "size ratio vs teacher (x)"),
        (axes[1], "speedup_bs32", "speed-up at batch 32 (x)"),
    ):
        for p in ours + peers:
            style = (
                {"marker": "x", "s": 70, "color": "tab:red"}
                if p.peer
                else {"marker": "o", "s": 35, "color": "tab:blue"}
            )
            ax.scatter([getattr(p, attr)], [p.delta_pt], **style)
            ax.annotate(
                p.name,
                (getattr(p, attr), p.delta_pt),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("metric change vs its teacher (points)")
        ax.grid(alpha=0.3)
    fig.suptitle(
        "hf-compress recipes (blue) and peers (red x), each against the teacher measured in its run"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--results",
        nargs="*",
        default=[],
        help="results.json files of `hf-compress bench --out` runs",
    )
    parser.add_argument(
        "--bench",
        nargs="*",
        default=[],
        help=(
            "JSON files of `hf-compress bench TEACHER MODEL... --task T --output F` "
            "(first row: the teacher)"
        ),
    )
    parser.add_argument(
        "--metric", default="accuracy", help="metric of the --bench files (default accuracy)"
    )
    parser.add_argument(
        "--peers",
        nargs="*",
        default=[],
        help=(
            "JSON files written by benchmarks/peer_*.py "
            "(and benchmarks/openvino_on_export.py: our points)"
        ),
    )
    parser.add_argument("--out", required=True, help="prefix: writes <out>.md and <out>.png")
    args = parser.parse_args(argv)
    ours = [p for path in args.results for p in points_from_benchmark(Path(path))]
    bench_points = [p for path in args.bench for p in points_from_bench(Path(path), args.metric)]
    ours += [p for p in bench_points if not p.peer]
    if not ours:
        parser.error("give at least one --results or --bench file")
    peer_files = [p for path in args.peers for p in points_from_peer(Path(path))]
    ours += [p for p in peer_files if not p.peer]
    peers = [p for p in peer_files + bench_points if p.peer]
    table = markdown(ours, peers)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(table)
    plot(ours, peers, out.with_suffix(".png"))
    print(table)


if __name__ == "__main__":
    main()
