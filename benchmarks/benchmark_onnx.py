"""Export models to ONNX (float32 and ONNX Runtime int8) and measure them beside PyTorch, in one
process.

    python benchmarks/benchmark_onnx.py --task sst2 --teacher outputs/teachers/minilm-sst2-full \
        --models bench_out/sst2-h/minilm-sst2-prune-heads-ffn-50 --out bench_out/onnx

For the teacher and every model: the PyTorch checkpoint as saved, its ONNX float32 export and its
ONNX int8 export (`hf-compress export --quantize int8` for a float checkpoint; a checkpoint that
already holds int8 layers exports its own int8 as it is), each with the dev metric, parameters,
bytes on disk and CPU latency (`hf-compress bench`), the teacher first so every ratio is taken
against a teacher measured in the same run. Writes `<out>/bench.json` (the input of
`benchmarks/frontier_with_peers.py --bench`) and prints the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hf_compress.checkpoint.export import export_onnx
from hf_compress.evaluation.bench import bench_models
from hf_compress.evaluation.tables import format_bench_table


def holds_int8(source: str) -> bool:
    """Whether a saved checkpoint's int8 Linear layers come from its recipe (kept by the export)."""
    config = Path(source) / "config.json"
    if not config.is_file():
        return False
    structure = json.loads(config.read_text()).get("compression_config") or {}
    return bool(structure.get("int8_linear"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sst2")
    parser.add_argument(
        "--teacher", required=True, help="the fine-tuned teacher (first row: the baseline)"
    )
    parser.add_argument("--models", nargs="*", default=[], help="compressed model directories")
    parser.add_argument(
        "--out",
        required=True,
        help="exports go to <out>/<name>-onnx[-int8]; results to <out>/bench.json",
    )
    parser.add_argument(
        "--float", action="store_true", help="also measure the float32 exports of --models"
    )
    parser.add_argument("--glue-dir")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--overwrite", action="store_true", help="replace earlier exports in --out")
    args = parser.parse_args(argv)

    out = Path(args.out)
    rows = []
    for index, source in enumerate([args.teacher, *args.models]):
        rows.append(source)
        int8 = None if holds_int8(source) else "int8"
        exports = (
            [("-onnx", None), ("-onnx-int8", int8)]
            if (index == 0 or args.float) and int8
            else [("-onnx-int8", int8)]
        )
        for suffix, quantize in exports:
            target = out / f"{Path(source).name}{suffix}"
            export_onnx(source, target, quantize=quantize, overwrite=args.overwrite)
            rows.append(str(target))
    results = bench_models(
        rows, task=args.task, glue_dir=args.glue_dir, runs=args.runs, output=str(out / "bench.json")
    )
    print(format_bench_table(results))


if __name__ == "__main__":
    main()
