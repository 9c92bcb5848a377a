"""What every technique is judged by: parameters, non-zero parameters, bytes on disk, CPU latency.

A compressed module that stores its weight in another form (int8 + scale, codebook + packed
indices, values + bitmask) implements `compressed_numel() -> (total, nonzero)` giving the
element counts of the dense weight it stands for; everything else is counted from its
parameters.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, non-zero) parameter counts, shared tensors counted once."""
    seen: set[int] = set()
    total = nonzero = 0

    def visit(module: nn.Module) -> None:
        nonlocal total, nonzero
        counter = getattr(module, "compressed_numel", None)
        if callable(counter):
            if id(module) not in seen:
                seen.add(id(module))
                t, nz = counter()
                total += t
                nonzero += nz
            return
        for param in module.parameters(recurse=False):
            key = param.data_ptr() if param.device.type != "meta" else id(param)
            if key in seen:
                continue
            seen.add(key)
            total += param.numel()
            nonzero += int(torch.count_nonzero(param.detach()).item())
        for child in module.children():
            visit(child)

    visit(model)
    return total, nonzero


def weights_size_bytes(directory: str | os.PathLike) -> int:
    """Bytes of the weight files (safetensors, adapters, extra tensor files) in a saved model
    directory."""
    directory = Path(directory)
    suffixes = (".safetensors", ".bin", ".pt", ".onnx")
    graphs = ("openvino_model.xml",)  # an OpenVINO IR's graph, whose weights are in its .bin
    return sum(
        p.stat().st_size
        for p in directory.rglob("*")
        if p.is_file() and (p.name.endswith(suffixes) or p.name in graphs)
    )


def saved_size_bytes(model: Any) -> int:
    """Bytes on disk of `model.save_pretrained(...)` (saved to a temporary directory)."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return weights_size_bytes(tmp)


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    import transformers

    return {
        "cpu": cpu_model_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def model_device(model: nn.Module) -> torch.device:
    """Where the model's first tensor lives; the CPU for a model without tensors (an ONNX Runtime
    session)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.inference_mode()
def measure_latency(
    model: nn.Module,
    batch_sizes: tuple[int, ...] = (1, 32),
    seq_len: int = 128,
    warmup: int = 2,
    runs: int = 10,
    vocab_size: int | None = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Forward-pass latency in milliseconds per batch size: median, p10, p90 over `runs`.

    Inputs are random token ids (every position attended, so the cost is the full sequence).
    The thread count is whatever `torch.get_num_threads()` is; `environment()` records it.
    """
    model.eval()
    config = getattr(model, "config", None)
    vocab = vocab_size or getattr(config, "vocab_size", 1000)
    device = model_device(model)
    results: dict[str, dict[str, float]] = {}
    for batch in batch_sizes:
        inputs = latency_inputs(batch, seq_len, vocab, device)
        for _ in range(warmup):
            model(**inputs)
        times = []
        for _ in tqdm(range(runs), desc=f"latency bs={batch}", disable=not progress, leave=False):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(**inputs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - start) * 1000)
        results[str(batch)] = latency_summary(times)
    return results


def latency_inputs(
    batch: int, seq_len: int, vocab: int, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """The latency benchmark's batch: random token ids (seeded by the batch size, never the first 5
    ids), every position attended, so the cost is the full sequence."""
    generator = torch.Generator().manual_seed(batch)
    ids = torch.randint(5, vocab, (batch, seq_len), generator=generator).to(device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def latency_summary(times: list[float]) -> dict[str, float]:
    """Median, p10 and p90 (nearest rank) of per-run milliseconds, and the run count."""
    ordered = sorted(times)
    return {
        "median": statistics.median(ordered),
        "p10": ordered[max(0, int(0.1 * len(ordered)))],
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "runs": len(ordered),
    }


@torch.inference_mode()
def round_robin_latency(
    models: dict[str, nn.Module], inputs: dict[str, torch.Tensor], runs: int, warmup: int = 1
) -> dict[str, tuple[list[float], list[float]]]:
    """(wall ms, process CPU ms) per run of each model on `inputs`, the models interleaved run by
    run so that load on a shared machine hits them alike (for comparing variants in one process)."""
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in models}
    for _ in range(warmup):
        for model in models.values():
            model(**inputs)
    for _ in range(runs):
        for name, model in models.items():
            start, cpu = time.perf_counter(), time.process_time()
            model(**inputs)
            times[name][0].append((time.perf_counter() - start) * 1000)
            times[name][1].append((time.process_time() - cpu) * 1000)
    return times


# When to call speed figures unreliable. On a quiet machine the per-round speed-up ratios of two
# models timed round-robin spread by a few percent (p90 / p10 below ~1.2 at batch 32 on the
# 2-core development machines); a machine busy with other work stretches single runs by 2x or
# more, so their ratios spread far wider. A load average above the core count says the same
# from the operating system's side.
MAX_RATIO_SPREAD = 1.5


def machine_load() -> float | None:
    """The 1-minute load average per CPU core (None where the OS has none, e.g. Windows)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return None


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered))))]


@torch.inference_mode()
def compare_latency(
    models: dict[str, nn.Module],
    batch_sizes: tuple[int, ...] = (1, 32),
    seq_len: int = 128,
    runs: int = 10,
    warmup: int = 2,
    progress: bool = False,
) -> dict[str, Any]:
    """Times every model's forward pass round-robin (run 1 of each, then run 2 of each, ...) per
    batch size, so a slow moment of the machine hits them alike, and compares each with the
    first.

    Each model gets its own random token ids (within its vocabulary: a pruned vocabulary is
    smaller), of the same shape, every position attended.

    Returns:
        `{"latency_ms": {model: {batch: {median, p10, p90, runs}}},
          "speedup": {model: {batch: {median, p10, p90}}}` (per-round ratios against the first
          model; the first is left out), `"reliable"`, `"reason"` (why not, else None),
          `"load_per_core"` (before and after)}.
    """

    def forward(model: nn.Module, batch: int) -> Callable[[], Any]:
        vocab = getattr(getattr(model, "config", None), "vocab_size", 1000)
        inputs = latency_inputs(batch, seq_len, vocab, model_device(model))
        model.eval()
        return lambda: model(**inputs)

    steps = {
        str(batch): {name: forward(model, batch) for name, model in models.items()}
        for batch in batch_sizes
    }
    return compare_round_robin(steps, runs, warmup, progress)


def compare_round_robin(
    steps: dict[str, dict[str, Callable[[], Any]]],
    runs: int = 10,
    warmup: int = 2,
    progress: bool = False,
) -> dict[str, Any]:
    """Times `steps[measure][model]()` for every measure (a batch size, prefill, generation)
    round-robin over the models, and compares each model with the first.

    Returns:
        `{"latency_ms": {model: {measure: {median, p10, p90, runs}}}, "speedup": {model:
        {measure: {median, p10, p90}}}` (per-round time ratios against the first model, which is
        left out), `"reliable"`, `"reason"` (why not, else None), `"load_per_core"`}.
    """
    names = list(next(iter(steps.values()))) if steps else []
    load_before = machine_load()
    times: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    for measure, by_model in steps.items():
        for _ in range(warmup):
            for step in by_model.values():
                step()
        rounds = tqdm(range(runs), desc=f"timing {measure}", disable=not progress, leave=False)
        for _ in rounds:
            for name, step in by_model.items():
                start = time.perf_counter()
                step()
                times[name].setdefault(measure, []).append((time.perf_counter() - start) * 1000)
    load_after = machine_load()
    reference = times[names[0]] if names else {}
    speedup: dict[str, dict[str, dict[str, float]]] = {}
    spreads = []
    for name in names[1:]:
        speedup[name] = {}
        for measure, ref_times in reference.items():
            ratios = [r / t for r, t in zip(ref_times, times[name][measure])]
            low, high = _quantile(ratios, 0.1), _quantile(ratios, 0.9)
            speedup[name][measure] = {
                "median": statistics.median(ratios),
                "p10": low,
                "p90": high,
            }
            spreads.append(high / low)
    reasons = []
    loads = [x for x in (load_before, load_after) if x is not None]
    if spreads and max(spreads) > MAX_RATIO_SPREAD:
        reasons.append(
            f"per-round speed-ups spread {max(spreads):.2f}x between their 10th and 90th "
            f"percentiles (a quiet machine stays under {MAX_RATIO_SPREAD}x)"
        )
    if loads and max(loads) > 1.0:
        reasons.append(f"the load average was {max(loads):.2f} per core while timing")
    reason = "; ".join(reasons) or None
    return {
        "latency_ms": {
            name: {measure: latency_summary(t) for measure, t in per_measure.items()}
            for name, per_measure in times.items()
        },
        "speedup": speedup,
        "reliable": reason is None,
        "reason": reason,
        "load_per_core": [load_before, load_after],
    }
