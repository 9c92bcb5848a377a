"""Peer benchmark: torch-pruning (head + FFN structured pruning) against hf_compress's own result.

Compares torch-pruning 1.6.1, a widely used structured-pruning library, with hf_compress's
"heads 50% + FFN 50%" recipe on SST-2: the same fine-tuned teacher, pruned to the same total
parameter count (`--target-params`), fine-tuned on the same 4,000 training sentences with the
same budget, and measured with hf_compress's own functions (dev accuracy on all 872 sentences,
parameter count, CPU latency), teacher and pruned model in one process.

torch-pruning's documented recipe for Hugging Face BERT: a `MetaPruner` over a dependency graph
traced from example inputs, `num_heads` for query/key/value so whole heads go
(`prune_num_heads=True, prune_head_dims=False`), an importance criterion (Taylor, |w * dL/dw|
from training batches, or group magnitude), and the classifier, pooler and embeddings ignored
(so the hidden size stays 384 and only heads and FFN neurons are removed, as in our recipe).
The heads and FFN neurons share one pruning ratio, found by bisection so the pruned model has
`--target-params` parameters (within `--tolerance`). Unlike our recipe (pruning gradually while
training), torch-pruning prunes in one shot and then fine-tunes.

It runs in its own virtual environment (`$PEER_VENV`, installed as BENCHMARKS.md says: torch
2.13.0, torch-pruning 1.6.1, hf_compress installed editable) so a peer's dependencies can never
change the project's; it imports hf_compress only for the GLUE data (the same seeded
4,000-sentence sample as `data.max_train_samples=4000`) and the measurement functions.

    $PEER_VENV/bin/python benchmarks/peer_torch_pruning.py \
        --teacher outputs/teachers/minilm-sst2 --target-params 17400000 \
        --out bench_out/peers/torch_pruning.json
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from safetensors.torch import save_file
from torch.utils.data import DataLoader
from transformers import (
    AutoTokenizer,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.models.bert.modeling_bert import BertSelfAttention

from hf_compress.data.glue import default_glue_dir
from hf_compress.data.glue_tasks import get_task
from hf_compress.data.preprocess import load_task_datasets
from hf_compress.evaluation.evaluate import evaluate_task
from hf_compress.evaluation.measure import (
    count_parameters,
    environment,
    measure_latency,
    saved_size_bytes,
)

logger = logging.getLogger("peer_torch_pruning")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--teacher",
        default="outputs/teachers/minilm-sst2",
        help="fine-tuned BertForSequenceClassification directory",
    )
    parser.add_argument(
        "--target-params", type=int, default=17_400_000, help="total parameters after pruning"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="allowed relative distance from --target-params",
    )
    parser.add_argument("--importance", choices=("taylor", "magnitude"), default="taylor")
    parser.add_argument(
        "--taylor-batches",
        type=int,
        default=16,
        help="training batches whose gradients feed Taylor importance",
    )
    parser.add_argument(
        "--scope",
        choices=("global", "local"),
        default="global",
        help=(
            "global: rank heads (and FFN neurons) across layers, uneven widths; "
            "local: same ratio per layer"
        ),
    )
    parser.add_argument("--max-train-samples", type=int, default=4000)
    parser.add_argument("--max-eval-samples", type=int, help="default: all 872 SST-2 dev sentences")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--warmup-ratio", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--glue-dir", help="GLUE folder (default: $HF_COMPRESS_GLUE_DIR)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--latency-seq-len", type=int, default=128)
    parser.add_argument("--latency-warmup", type=int, default=2)
    parser.add_argument("--latency-runs", type=int, default=10)
    parser.add_argument("--save-dir", default="bench_out/peers/torch_pruning_model")
    parser.add_argument("--out", default="bench_out/peers/torch_pruning.json")
    return parser.parse_args(argv)


def attention_modules(model: BertForSequenceClassification) -> list[BertSelfAttention]:
    return [layer.attention.self for layer in model.bert.encoder.layer]


def accumulate_gradients(
    model: BertForSequenceClassification, train: Any, tokenizer: Any, batches: int, batch_size: int
) -> None:
    """Sums dL/dw over the first `batches` training batches (eval mode: no dropout) for Taylor
    importance."""
    model.eval()
    model.zero_grad(set_to_none=True)
    loader = DataLoader(train, batch_size=batch_size, collate_fn=DataCollatorWithPadding(tokenizer))
    for index, batch in enumerate(loader):
        if index >= batches:
            break
        model(**batch).loss.backward()


def copy_with_gradients(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy that keeps `.grad` (`copy.deepcopy` drops gradients)."""
    clone = copy.deepcopy(model)
    grads = {name: p.grad for name, p in model.named_parameters()}
    for name, param in clone.named_parameters():
        param.grad = None if grads[name] is None else grads[name].clone()
    return clone


def prune(
    model: BertForSequenceClassification,
    example_inputs: dict[str, torch.Tensor],
    ratio: float,
    importance: str,
    scope: str,
) -> tuple[BertForSequenceClassification, tp.pruner.MetaPruner]:
    """Prunes a copy of `model`: `ratio` of all heads and `ratio` of all FFN neurons."""
    pruned = copy_with_gradients(model)
    num_heads: dict[torch.nn.Module, int] = {}
    for attention in attention_modules(pruned):
        for linear in (attention.query, attention.key, attention.value):
            num_heads[linear] = attention.num_attention_heads
    ffn = tuple(layer.intermediate.dense for layer in pruned.bert.encoder.layer)
    scorer = (
        tp.importance.GroupTaylorImportance()
        if importance == "taylor"
        else tp.importance.GroupMagnitudeImportance(p=2)
    )
    pruner = tp.pruner.MetaPruner(
        pruned,
        example_inputs,
        importance=scorer,
        global_pruning=scope == "global",
        pruning_ratio=ratio,
        # One ranking scope for all FFN layers, so their ratio is not mixed up with the head dims.
        pruning_ratio_dict={ffn: ratio},
        num_heads=num_heads,
        prune_num_heads=True,
        prune_head_dims=False,
        head_pruning_ratio=ratio,
        output_transform=lambda out: out.logits.sum(),
        # Keep the hidden size (embeddings) and the pooler/classifier: heads and FFN only.
        ignored_layers=[pruned.bert.embeddings, pruned.bert.pooler, pruned.classifier],
    )
    for group in pruner.step(interactive=True):
        group.prune()
    for attention in attention_modules(pruned):
        heads = pruner.num_heads[attention.query]
        attention.num_attention_heads = heads
        attention.attention_head_size = attention.query.out_features // heads if heads else 0
        attention.all_head_size = attention.query.out_features
    return pruned, pruner


def widths(model: BertForSequenceClassification) -> dict[str, list[int]]:
    return {
        "heads": [a.num_attention_heads for a in attention_modules(model)],
        "head_size": [a.attention_head_size for a in attention_modules(model)],
        "ffn": [layer.intermediate.dense.out_features for layer in model.bert.encoder.layer],
    }


def prune_to_target(
    model: BertForSequenceClassification,
    example_inputs: dict[str, torch.Tensor],
    target: int,
    tolerance: float,
    importance: str,
    scope: str,
    max_steps: int = 30,
) -> tuple[BertForSequenceClassification, float, list[dict[str, float]]]:
    """Bisects the pruning ratio until the parameter count is within `tolerance` of `target`."""
    low, high = 0.0, 0.95
    best: tuple[float, float, BertForSequenceClassification] | None = None
    trials: list[dict[str, float]] = []
    for _ in range(max_steps):
        ratio = (low + high) / 2
        pruned, _ = prune(model, example_inputs, ratio, importance, scope)
        params = count_parameters(pruned)[0]
        error = (params - target) / target
        trials.append({"ratio": ratio, "params": params, "rel_error": error})
        logger.info("ratio %.5f -> %d params (%+.3f%%)", ratio, params, 100 * error)
        if best is None or abs(error) < abs(best[0]):
            best = (error, ratio, pruned)
        if abs(error) <= tolerance / 4:
            break
        if params > target:
            low = ratio
        else:
            high = ratio
    assert best is not None
    error, ratio, pruned = best
    if abs(error) > tolerance:
        raise SystemExit(
            f"no pruning ratio reaches {target} parameters within {tolerance:.1%} "
            f"(best {error:+.2%} at {ratio:.4f})"
        )
    if min(widths(pruned)["heads"]) == 0 or min(widths(pruned)["ffn"]) == 0:
        raise SystemExit(f"global pruning emptied a layer: {widths(pruned)}; try --scope local")
    return pruned, ratio, trials


def finetune(
    model: BertForSequenceClassification,
    train: Any,
    tokenizer: Any,
    args: argparse.Namespace,
    work: str,
) -> float:
    """Plain cross-entropy fine-tuning with the budget and Trainer defaults of hf_compress's
    runner."""
    model.zero_grad(set_to_none=True)  # drop the Taylor gradients
    training_args = TrainingArguments(
        output_dir=work,
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        # transformers 5: a float below 1 is a fraction of the steps
        warmup_steps=args.warmup_ratio,
        seed=args.seed,
        save_strategy="no",
        report_to=[],
        logging_steps=50,
        dataloader_num_workers=0,
        average_tokens_across_devices=False,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started


def save_pruned(
    model: BertForSequenceClassification,
    tokenizer: Any,
    save_dir: Path,
    example: dict[str, torch.Tensor],
) -> dict[str, Any]:
    """torch.save of the whole module (the way torch-pruning models are saved), a safetensors state
    dict for the size figure, and whether each reloads."""
    save_dir.mkdir(parents=True, exist_ok=True)
    module_path, weights_path = save_dir / "model.pt", save_dir / "model.safetensors"
    model.eval()
    torch.save(model, module_path)
    save_file(
        {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()},
        str(weights_path),
    )
    tokenizer.save_pretrained(save_dir)
    with torch.inference_mode():
        reference = model(**example).logits
        reloaded = torch.load(module_path, weights_only=False)
        reloaded.eval()
        identical = torch.equal(reloaded(**example).logits, reference)
    info: dict[str, Any] = {
        "module_path": str(module_path),
        "module_file_bytes": module_path.stat().st_size,
        "safetensors_path": str(weights_path),
        "safetensors_bytes": weights_path.stat().st_size,
        "torch_load_reloads_identical": identical,
    }
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        try:
            again = BertForSequenceClassification.from_pretrained(tmp)
            again.eval()
            with torch.inference_mode():
                same = torch.allclose(again(**example).logits, reference, atol=1e-5)
            info["from_pretrained"] = {"loads": True, "same_logits": same}
        except Exception as exc:  # the expected outcome: the config cannot express pruned widths
            info["from_pretrained"] = {
                "loads": False,
                "error": f"{type(exc).__name__}: {str(exc)[:1500]}",
            }
    return info


def figures(
    model: Any, tokenizer: Any, task: Any, dev: Any, args: argparse.Namespace
) -> dict[str, Any]:
    total, nonzero = count_parameters(model)
    return {
        "metrics": evaluate_task(model, tokenizer, task, dev, progress=False),
        "num_parameters": total,
        "nonzero_parameters": nonzero,
        "latency_ms": measure_latency(
            model,
            batch_sizes=tuple(args.latency_batch_sizes),
            seq_len=args.latency_seq_len,
            warmup=args.latency_warmup,
            runs=args.latency_runs,
            progress=False,
        ),
    }


def markdown_row(result: dict[str, Any]) -> str:
    teacher, pruned = result["teacher"], result["pruned"]
    acc_t, acc_p = teacher["metrics"]["accuracy"], pruned["metrics"]["accuracy"]
    cells = [
        f"torch-pruning {result['torch_pruning_version']} heads+FFN "
        f"({result['importance']}, {result['scope']}, ratio {result['prune_ratio']:.3f}), "
        f"{result['training']['epochs']:g} epochs",
        f"{100 * acc_p:.2f}",
        f"{100 * (acc_p - acc_t):+.2f}".replace("-", "−"),
        f"{pruned['num_parameters'] / 1e6:.2f}M",
        f"{pruned['size_bytes'] / 1e6:.1f} MB",
        f"{teacher['size_bytes'] / pruned['size_bytes']:.2f}x",
    ]
    for batch in map(str, result["latency_config"]["batch_sizes"]):
        t, p = teacher["latency_ms"][batch]["median"], pruned["latency_ms"][batch]["median"]
        cells.append(f"{p:.1f} ({t / p:.2f}x)")
    cells.append(f"{result['compress_time_s']:.0f} s")
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    started = time.perf_counter()

    task = get_task("sst2")
    glue_dir = args.glue_dir or default_glue_dir()
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    teacher = BertForSequenceClassification.from_pretrained(args.teacher)
    # The same seeded sample as hf_compress's runner with data.max_train_samples
    # (shuffle(seed).select(range(n))).
    train, dev = load_task_datasets(
        task,
        tokenizer,
        args.max_seq_length,
        args.max_train_samples,
        args.max_eval_samples,
        glue_dir,
        args.seed,
    )
    example = dict(
        DataCollatorWithPadding(tokenizer)(
            [{k: v for k, v in train[i].items() if k != "labels"} for i in range(2)]
        )
    )

    # Prune -----------------------------------------------------------------------------------
    prune_started = time.perf_counter()
    scored = copy.deepcopy(teacher)
    if args.importance == "taylor":
        accumulate_gradients(scored, train, tokenizer, args.taylor_batches, args.batch_size)
    pruned, ratio, trials = prune_to_target(
        scored, example, args.target_params, args.tolerance, args.importance, args.scope
    )
    del scored
    prune_time = time.perf_counter() - prune_started
    layer_widths = widths(pruned)
    logger.info("pruned with ratio %.4f in %.1f s: %s", ratio, prune_time, layer_widths)
    pruned_config = pruned.config
    # The config is shared by all layers and cannot express per-layer widths (hidden_size /
    # num_attention_heads also sets the head size): keep it and record the real widths beside it.
    pruned_config.torch_pruning_heads_per_layer = layer_widths["heads"]
    pruned_config.torch_pruning_intermediate_per_layer = layer_widths["ffn"]

    # Fine-tune -------------------------------------------------------------------------------
    set_seed(args.seed)
    with tempfile.TemporaryDirectory() as work:
        train_time = finetune(pruned, train, tokenizer, args, work)
    compress_time = prune_time + train_time

    # Save and measure ------------------------------------------------------------------------
    saved = save_pruned(pruned, tokenizer, Path(args.save_dir), example)
    logger.info("measuring the teacher and the pruned model")
    teacher_figures = {
        "name": "teacher (fp32)",
        **figures(teacher, tokenizer, task, dev, args),
        "size_bytes": saved_size_bytes(teacher),
    }
    pruned_figures = {
        "name": "torch-pruning",
        **figures(pruned, tokenizer, task, dev, args),
        "size_bytes": saved["safetensors_bytes"],
    }
    pruned_figures["widths"] = layer_widths

    result: dict[str, Any] = {
        "peer": "torch-pruning",
        # The 1.6.1 wheel's module still says 1.6.0 in torch_pruning.__version__.
        "torch_pruning_version": importlib.metadata.version("torch-pruning"),
        "torch_pruning_module_version": tp.__version__,
        "teacher_dir": args.teacher,
        "task": task.name,
        "importance": args.importance,
        "scope": args.scope,
        "taylor_batches": args.taylor_batches if args.importance == "taylor" else None,
        "target_params": args.target_params,
        "prune_ratio": ratio,
        "bisection": trials,
        "training": {
            "max_train_samples": args.max_train_samples,
            "train_samples": len(train),
            "epochs": args.epochs,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "max_seq_length": args.max_seq_length,
            "warmup_ratio": args.warmup_ratio,
            "seed": args.seed,
            "glue_dir": str(glue_dir),
        },
        "latency_config": {
            "batch_sizes": args.latency_batch_sizes,
            "seq_len": args.latency_seq_len,
            "warmup": args.latency_warmup,
            "runs": args.latency_runs,
        },
        "environment": environment(),
        "teacher": teacher_figures,
        "pruned": pruned_figures,
        "saved": saved,
        "prune_time_s": prune_time,
        "train_time_s": train_time,
        "compress_time_s": compress_time,
        "total_time_s": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    print(markdown_row(result))


if __name__ == "__main__":
    main()
