"""Int8 ONNX export (the recipe's int8 kept) vs ONNX Runtime re-quantization vs PyTorch int8.

Given a checkpoint with int8 Linear layers, writes two exports under `--out`:
- `new`: `hf-compress export` as it is (`export_onnx`: the recipe's int8 weights and scales kept);
- `old`: its float equivalent (every storage layer's `to_float()`) exported and re-quantized by
  ONNX Runtime (`quantize="int8"`, `quantize_dynamic`), what the export did before,
then times the PyTorch checkpoint and both exports in ONE process, interleaved run by run
(`hf_compress.evaluation.measure.round_robin_latency`), random token ids at each batch size x
`--seq`, `--threads` threads for PyTorch and ONNX Runtime alike (ONNX Runtime's threads do not
busy-wait between runs, which would take the cores from the model timed next), and prints JSON:
median ms, bytes on disk, the largest |logit - PyTorch logit| on those inputs (also for PyTorch's
float equivalent: the size of int8 rounding itself), and the CPU.

`--openvino` adds the OpenVINO export (`export_onnx(..., format="openvino")`: the recipe's int8
weights kept as int8 in the IR) to the same loop, run with f32 inference precision (as exported
and checked) and with bf16 (OpenVINO's default on CPUs with AMX / AVX-512 BF16).

`--compare-ops` instead exports the checkpoint once per ONNX form of the int8 MatMul
(`hf_compress.checkpoint.onnx_int8.INT8_MATMUL_OPS`) and times those round-robin: the measurement
behind `INT8_MATMUL_DEFAULT`.

    python benchmarks/onnx_int8_export.py outputs/quickstart --out bench_out/onnx-int8
    python benchmarks/onnx_int8_export.py outputs/quickstart --out bench_out/onnx-ov --openvino
    python benchmarks/onnx_int8_export.py outputs/quickstart --out bench_out/onnx-ops --compare-ops
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from hf_compress.checkpoint.export import (
    OnnxSequenceClassifier,
    OpenVinoSequenceClassifier,
    export_model,
    export_onnx,
    float_model_for_export,
    holds_int8_linear,
)
from hf_compress.checkpoint.loading import load_compressed_with_tokenizer
from hf_compress.checkpoint.onnx_int8 import INT8_MATMUL_OPS
from hf_compress.evaluation.measure import environment, round_robin_latency


def _inputs(vocab: int, batch: int, seq: int, names: list[str]) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, vocab, (batch, seq), generator=torch.Generator().manual_seed(batch))
    feed = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if "token_type_ids" in names:
        feed["token_type_ids"] = torch.zeros_like(ids)
    return feed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a saved hf-compress checkpoint with int8 Linear layers")
    parser.add_argument("--out", required=True, help="exports go to <out>/<variant>")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15, help="timed runs per model and batch")
    parser.add_argument(
        "--compare-ops", action="store_true", help="time the ONNX forms of the int8 MatMul instead"
    )
    parser.add_argument(
        "--openvino", action="store_true", help="also the OpenVINO export (f32 and bf16)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)

    model, tokenizer = load_compressed_with_tokenizer(args.checkpoint)
    if not holds_int8_linear(model):
        raise SystemExit(f"{args.checkpoint} has no int8 Linear layers")
    exports: dict[str, dict] = {}
    if args.compare_ops:
        for op in INT8_MATMUL_OPS:
            target = out / op
            exports[op] = export_onnx(args.checkpoint, target, int8_matmul=op, overwrite=True)
    else:
        exports["new"] = export_onnx(args.checkpoint, out / "new", overwrite=True)
        float_equivalent, _ = load_compressed_with_tokenizer(args.checkpoint)
        exports["old"] = export_model(
            float_model_for_export(float_equivalent),
            tokenizer,
            out / "old",
            source=f"{args.checkpoint} (float equivalent)",
            quantize="int8",
            overwrite=True,
        )
        if args.openvino:
            exports["openvino"] = export_onnx(
                args.checkpoint, out / "openvino", overwrite=True, format="openvino"
            )
    models: dict[str, torch.nn.Module] = {} if args.compare_ops else {"pytorch": model.eval()}
    for name in exports:
        if name == "openvino":
            for precision in ("f32", "bf16"):
                models[f"openvino_{precision}"] = OpenVinoSequenceClassifier(
                    out / name, num_threads=args.threads, precision=precision
                )
            continue
        # no busy-waiting ONNX Runtime threads between runs: they would slow the next model
        models[name] = OnnxSequenceClassifier(
            out / name, num_threads=args.threads, allow_spinning=False
        )

    names = exports[next(iter(exports))]["inputs"]
    vocab = model.config.vocab_size
    # for scale: how far PyTorch's own int8 model is from its float equivalent on these inputs
    float_reference = float_model_for_export(load_compressed_with_tokenizer(args.checkpoint)[0])
    latency: dict[str, dict[str, float]] = {name: {} for name in models}
    max_diff: dict[str, float] = {}
    with torch.inference_mode():
        for batch in map(int, args.batch_sizes.split(",")):
            feed = _inputs(vocab, batch, args.seq, names)
            reference = model(**feed).logits
            candidates = {**models, "pytorch_float_equivalent": float_reference}
            for name, candidate in candidates.items():
                diff = float((candidate(**feed).logits - reference).abs().max())
                max_diff[name] = max(max_diff.get(name, 0.0), diff)
            times = round_robin_latency(models, feed, args.rounds, warmup=2)
            for name, (wall, _) in times.items():
                latency[name][str(batch)] = round(statistics.median(wall), 1)

    checkpoint_bytes = sum(p.stat().st_size for p in Path(args.checkpoint).glob("*.safetensors"))
    sizes = {name: info["size_bytes"] for name, info in exports.items()}
    if not args.compare_ops:
        sizes = {"pytorch": checkpoint_bytes, **sizes}
    report = {
        "checkpoint": args.checkpoint,
        "seq_len": args.seq,
        "rounds": args.rounds,
        "median_ms": latency,
        "size_bytes": sizes,
        "max_abs_logit_diff_vs_pytorch": max_diff,
        "export_check": {
            name: {
                "max_abs_logit_diff_vs_pytorch": info["max_abs_logit_diff_vs_pytorch"],
                "tolerance": info["tolerance"],
            }
            for name, info in exports.items()
        },
        "environment": {**environment(), "threads": args.threads},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
