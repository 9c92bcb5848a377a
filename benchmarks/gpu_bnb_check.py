"""bitsandbytes 8-bit and 4-bit on a CUDA GPU: load, forward, save, reload, SST-2 dev accuracy,
latency.

    python benchmarks/gpu_bnb_check.py outputs/teachers/minilm-sst2 --out gpu_bnb_check.json
    python benchmarks/gpu_bnb_check.py <model dir> --methods bnb_8bit bnb_4bit_nf4 \
        --glue-dir $HF_COMPRESS_GLUE_DIR

For each method (default: fp32 baseline, bnb_8bit, bnb_4bit_nf4, bnb_4bit_fp4, bnb_4bit_nf4 with
double quantization and bfloat16 compute) it quantizes the fine-tuned model on the GPU through
hf-compress's `quantization` modifier, checks the logits are finite and close to fp32, saves,
reloads with a plain `AutoModelForSequenceClassification.from_pretrained` (after
`import hf_compress`), checks the reload gives the same logits, and measures SST-2 dev accuracy,
weights on disk and GPU latency (batch 1 and 32, sequence 128). Writes one JSON report with the
GPU model. Needs a CUDA GPU: exits with status 2 and a message on stderr when there is none.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_METHODS = ["fp32", "bnb_8bit", "bnb_4bit_nf4", "bnb_4bit_fp4", "bnb_4bit_nf4_dq_bf16"]


def method_entry(method: str) -> dict[str, Any] | None:
    """The `quantization` modifier entry for a method name of this script (None for fp32)."""
    if method == "fp32":
        return None
    if method == "bnb_4bit_nf4_dq_bf16":
        return {
            "type": "quantization",
            "method": "bnb_4bit_nf4",
            "double_quant": True,
            "compute_dtype": "bfloat16",
        }
    return {"type": "quantization", "method": method}


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"check failed: {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "model", help="fine-tuned SST-2 model directory (e.g. outputs/teachers/minilm-sst2)"
    )
    parser.add_argument(
        "--methods", nargs="*", default=DEFAULT_METHODS, help=f"subset of {DEFAULT_METHODS}"
    )
    parser.add_argument("--glue-dir", help="local GLUE folder (default: $HF_COMPRESS_GLUE_DIR)")
    parser.add_argument("--max-eval-samples", type=int)
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument("--out", default="gpu_bnb_check.json")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print(
            "gpu_bnb_check.py needs a CUDA GPU (torch.cuda.is_available() is False); on CPU use "
            "`hf-compress eval <model> --task sst2` with bitsandbytes' CPU backend instead",
            file=sys.stderr,
        )
        raise SystemExit(2)

    import bitsandbytes
    import transformers
    from transformers import AutoModelForSequenceClassification

    import hf_compress
    from hf_compress import compress
    from hf_compress.checkpoint.loading import load_for_task, load_tokenizer
    from hf_compress.data.glue_tasks import get_task
    from hf_compress.data.preprocess import load_task_datasets
    from hf_compress.evaluation.evaluate import evaluate_task
    from hf_compress.evaluation.measure import measure_latency, weights_size_bytes
    from hf_compress.methods.quantization import modifier as quantization  # noqa: F401  (registers `quantization`)

    unknown = [m for m in args.methods if m not in DEFAULT_METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {DEFAULT_METHODS}")
    device = torch.device("cuda")
    task = get_task("sst2")
    tokenizer = load_tokenizer(args.model)
    _, dev = load_task_datasets(
        task,
        tokenizer,
        max_seq_length=128,
        max_eval_samples=args.max_eval_samples,
        glue_dir=args.glue_dir,
        with_train=False,
    )
    base = load_for_task(args.model, task).to(device).eval()
    probe = tokenizer(
        ["a gripping, beautifully acted film", "a dull and lifeless mess"],
        return_tensors="pt",
        padding=True,
    )
    probe = {k: v.to(device) for k, v in probe.items()}
    with torch.inference_mode():
        reference = base(**probe).logits.float()

    report: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "bitsandbytes": bitsandbytes.__version__,
        "hf_compress": hf_compress.__version__,
        "model": str(args.model),
        "results": {},
    }
    for method in args.methods:
        print(f"== {method}", flush=True)
        started = time.perf_counter()
        entry = method_entry(method)
        model = base if entry is None else compress(copy.deepcopy(base), [entry]).eval()
        quantize_s = time.perf_counter() - started
        with torch.inference_mode():
            logits = model(**probe).logits.float()
        check(bool(torch.isfinite(logits).all()), f"{method}: non-finite logits")
        drift = float((logits - reference).abs().max())
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            size = weights_size_bytes(tmp)
            with torch.inference_mode():
                saved = model(
                    **probe
                ).logits.float()  # as saved (some kernels repack on the first forward)
            reloaded = AutoModelForSequenceClassification.from_pretrained(
                tmp, device_map={"": device}
            ).eval()
            with torch.inference_mode():
                reload_diff = float((reloaded(**probe).logits.float() - saved).abs().max())
        check(reload_diff <= 1e-3, f"{method}: the reloaded model's logits differ by {reload_diff}")
        metrics = evaluate_task(reloaded, tokenizer, task, dev, progress=False)
        latency = measure_latency(
            reloaded, batch_sizes=(1, 32), seq_len=128, runs=args.latency_runs, progress=False
        )
        report["results"][method] = {
            "accuracy": metrics.get("accuracy"),
            "size_bytes": size,
            "latency_ms": {batch: row["median"] for batch, row in latency.items()},
            "max_abs_logit_drift_vs_fp32": drift,
            "reload_max_abs_diff": reload_diff,
            "quantize_s": round(quantize_s, 2),
            "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        }
        print(json.dumps(report["results"][method]), flush=True)
        del model, reloaded
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
