"""The `hf-compress` command: run, eval, compare, bench, validate, export, push.

Errors hf-compress raises on purpose (bad recipe, missing data, unsupported model, corrupt
checkpoint, existing output) are printed as one clear line and exit with status 2, without a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from .errors import HfCompressError, HubUnreachableError
from .evaluation.precision import DTYPES


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_warning()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # transformers' tensor-parallel check lists every layer as "not sharded" when a model with an
    # empty TP plan loads on one process: nothing to act on.
    for noisy in (
        "torchao",
        "bitsandbytes",
        "httpx",
        "datasets",
        "transformers.distributed.tensor_parallel",
        # `export`: the ONNX exporter's optimizer logs every folded node at INFO, and its op
        # registry warns that torchvision (absent, and unused by text models) is not installed.
        "onnxscript",
        "onnx_ir",
        "torch.onnx._internal.exporter._registration",
    ):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # Bars of steps that take a second (tokenizing a split, writing or loading a checkpoint)
    # would interleave with the training bar; training and evaluation keep theirs.
    import datasets

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _read_recipe(args: argparse.Namespace) -> None:
    """`validate` and `run`: the recipe is parsed, and its text files checked, before torch and
    transformers load (seconds on a small machine), so most mistakes are reported at once."""
    from .recipe.recipe import Recipe

    args.parsed_recipe = Recipe.from_yaml(args.recipe, overrides=args.set)
    args.parsed_recipe.check_text_files()


def _cmd_validate(args: argparse.Namespace) -> int:
    from .training.preflight import check_recipe

    recipe = args.parsed_recipe
    try:
        check_recipe(recipe)
    except HubUnreachableError as exc:  # nothing to check against offline; `run` would stop here
        print(f"note: the base model was not checked ({exc})", file=sys.stderr)
    stages = ", ".join(
        f"{s.name} ({s.epochs:g} ep: {', '.join(m.type for m in s.modifiers) or 'no modifiers'})"
        for s in recipe.stages
    )
    print(f"{args.recipe}: valid recipe for {recipe.base_model} on {recipe.task}; stages: {stages}")
    if args.print:
        print(recipe.to_yaml())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .training.runner import run_recipe

    recipe = args.parsed_recipe
    latency_config: dict[str, Any] = {"runs": args.latency_runs}
    run_recipe(
        recipe,
        overwrite=args.overwrite,
        glue_dir=args.glue_dir,
        latency=not args.no_latency,
        latency_config=latency_config,
        push=not args.no_push,
        resume=args.resume,
    )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .data.glue_tasks import get_task
    from .evaluation.evaluate import evaluate_task, load_with_dev_set

    task = get_task(args.task)
    if task.name == "causal_lm":
        return _eval_causal_lm(args)
    text_options = {
        "--text-file": args.text_file,
        "--dataset": args.dataset,
        "--reference": args.reference,
        "--speed": args.speed,
    }
    used = [option for option, value in text_options.items() if value]
    if used:
        raise HfCompressError(
            f"{used[0]} applies to --task causal_lm; --task {task.name} reads its GLUE dev set"
        )
    args.batch_size = args.batch_size or 64
    model, tokenizer, dev = load_with_dev_set(
        args.model,
        task,
        args.glue_dir,
        args.max_seq_length,
        args.max_eval_samples,
        args.load_in,
        args.dtype,
    )
    results = {
        "model": args.model,
        "task": task.name,
        **evaluate_task(model, tokenizer, task, dev, batch_size=args.batch_size),
    }
    print(json.dumps(results, indent=2))
    return 0


def _eval_causal_lm(args: argparse.Namespace) -> int:
    """`eval --task causal_lm`: perplexity on held-out text; with --reference, agreement with
    another model; with --speed, batch-1 generation speed."""
    from .data.text import TextData
    from .evaluation.language import (
        agreement,
        generation_speed,
        load_causal_lm_with_tokenizer,
        perplexity,
    )

    if not (args.text_file or args.dataset):
        raise HfCompressError(
            "--task causal_lm needs held-out text: --text-file FILE (UTF-8, one text per line; "
            "repeatable) or --dataset NAME"
        )
    data = TextData(
        eval_text_files=tuple(args.text_file or ()),
        dataset=args.dataset,
        text_column=args.text_column,
        max_seq_length=args.max_seq_length,
        max_eval_samples=args.max_eval_samples,
    )
    batch_size = args.batch_size or 8
    model, tokenizer = load_causal_lm_with_tokenizer(args.model, args.load_in, args.dtype)
    dev = data.dev(tokenizer)
    results: dict[str, Any] = {
        "model": args.model,
        "task": "causal_lm",
        **perplexity(model, dev, batch_size),
    }
    if args.reference:
        reference, _ = load_causal_lm_with_tokenizer(args.reference)
        measured = agreement(model, reference, dev, batch_size)
        results["reference"] = args.reference
        results["kl_divergence"] = measured["kl_divergence"]
        results["top1_agreement"] = measured["top1_agreement"]
        del reference
    if args.speed:
        results["generation"] = generation_speed(model, tokenizer)
    print(json.dumps(results, indent=2))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    """Paired comparison of two classifiers on the same dev examples
    (hf_compress.evaluation.compare)."""
    from .data.glue_tasks import get_task
    from .evaluation.compare import compare_models

    task = get_task(args.task)
    comparison = compare_models(
        args.model_a,
        args.model_b,
        task,
        args.glue_dir,
        args.max_seq_length,
        args.max_eval_samples,
        args.batch_size,
        args.dtype,
    )
    print(
        json.dumps(
            {
                "task": task.name,
                "model_a": args.model_a,
                "model_b": args.model_b,
                **comparison.to_dict(),
            },
            indent=2,
        )
    )
    return 0


# `bench` options that only mean something when running recipes, by argparse dest
_RECIPE_BENCH_OPTIONS = {
    "recipes": "--recipes",
    "recipes_dir": "--recipes-dir",
    "teacher": "--teacher",
    "set": "--set",
    "base_model": "--base-model",
    "teacher_epochs": "--teacher-epochs",
    "resume": "--resume",
}


def _cmd_bench(args: argparse.Namespace) -> int:
    """Two modes: `bench MODEL...` measures saved models; `bench --task T --out DIR` runs recipes
    from one teacher and measures the teacher and every result (hf_compress.evaluation.frontier)."""
    given = [
        flag
        for dest, flag in _RECIPE_BENCH_OPTIONS.items()
        if getattr(args, dest) not in (None, [])
    ]
    if args.models:
        if args.out or given:
            flags = ", ".join(([] if args.out is None else ["--out"]) + given)
            raise HfCompressError(
                "bench: give model directories to measure, or recipes to run with --out, not both "
                f"({flags} with models)"
            )
        return _bench_models(args)
    if args.dtype is not None:
        raise HfCompressError(
            "bench: --dtype applies when measuring saved models (`bench MODEL... --dtype "
            "float32,bfloat16`), not when running recipes"
        )
    if args.out is None:
        hint = f" ({', '.join(given)} given)" if given else ""
        raise HfCompressError(
            "bench: nothing to benchmark: name model directories / Hub ids to measure, or run "
            f"recipes with --task TASK --out DIR [--recipes FILE ...] [--teacher DIR]{hint}"
        )
    return _bench_recipes(args)


def _bench_models(args: argparse.Namespace) -> int:
    from .evaluation.bench import bench_models
    from .evaluation.tables import format_bench_table

    rows = bench_models(
        args.models,
        task=args.task,
        glue_dir=args.glue_dir,
        batch_sizes=_batch_sizes(args.batch_sizes),
        seq_len=args.seq_len,
        runs=args.runs,
        max_eval_samples=args.max_eval_samples,
        output=args.output,
        dtypes=_dtypes(args.dtype),
    )
    print(format_bench_table(rows))
    return 0


def _bench_recipes(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .data.glue_tasks import get_task
    from .evaluation.frontier import (
        check_recipes,
        default_recipes,
        recipes_teacher_epochs,
        run_benchmark,
    )
    from .evaluation.tables import markdown_results
    from .training.teacher import prepare_teacher

    if args.task is None:
        raise HfCompressError(
            "bench --out: --task is required to run recipes (the GLUE task they all train on)"
        )
    get_task(args.task)
    batch_sizes = _batch_sizes(args.batch_sizes)
    if args.output is not None:
        raise HfCompressError(
            "bench --out: --output is for measuring models; results go to <out>/results.json"
        )
    if args.recipes and args.recipes_dir is not None:
        raise HfCompressError(
            "bench: --recipes names the files and --recipes-dir picks them by task; give one"
        )
    if args.teacher is not None and (
        args.base_model is not None or args.teacher_epochs is not None
    ):
        raise HfCompressError(
            "bench: --base-model and --teacher-epochs fine-tune a teacher; not with --teacher"
        )
    recipes = args.recipes or default_recipes(args.task, args.recipes_dir or "recipes")
    if not recipes:
        raise HfCompressError(
            f"bench: no recipe in {args.recipes_dir or 'recipes'}/ has task: {args.task}; name "
            "them with --recipes"
        )
    check_recipes(args.task, recipes, args.set)  # before a teacher is fine-tuned for them
    teacher = args.teacher
    started = time.perf_counter()
    if teacher is None:
        epochs = (
            args.teacher_epochs
            if args.teacher_epochs is not None
            else recipes_teacher_epochs(recipes, args.set)
        )
        if epochs <= 0:
            raise HfCompressError(
                f"bench: --teacher-epochs {epochs:g}: the teacher needs more than 0 epochs of "
                "fine-tuning"
            )
        finetune: dict[str, Any] = {"epochs": epochs, "max_seq_length": args.seq_len}
        if args.base_model:
            finetune["base_model"] = args.base_model
        teacher = prepare_teacher(
            args.task, Path(args.out) / "teacher", glue_dir=args.glue_dir, **finetune
        )
    results = run_benchmark(
        args.task,
        teacher,
        [str(r) for r in recipes],
        args.out,
        overrides=args.set,
        glue_dir=args.glue_dir,
        latency_runs=args.runs,
        batch_sizes=batch_sizes,
        seq_len=args.seq_len,
        max_eval_samples=args.max_eval_samples,
        teacher_time_s=time.perf_counter() - started,
        resume=bool(args.resume),
    )
    print(markdown_results(results))
    print(f"results: {Path(args.out) / 'results.json'}")  # the table ends with the total time
    return 0


def _dtypes(text: str | None) -> tuple[str, ...]:
    """`--dtype a,b` as a tuple; `bench_models` checks the names."""
    if text is None:
        return ("float32",)
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(b) for b in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise HfCompressError(
            f"--batch-sizes {text!r}: give positive integers separated by commas, e.g. 1,32"
        )
    return sizes


def _export_calibration(args: argparse.Namespace) -> tuple[list | None, int]:
    """`--int8-activations`: the calibration texts (the task's training sentences; the task and
    length default to those in the model's `recipe.yaml`) and their token length."""
    from .checkpoint.export import CALIBRATION_MAX_LENGTH, check_int8_activations_request

    if not args.int8_activations:
        return None, CALIBRATION_MAX_LENGTH
    check_int8_activations_request(args.format)  # before the calibration data loads
    recorded = {}
    recipe_path = Path(args.model) / "recipe.yaml"
    if recipe_path.is_file():
        import yaml

        try:
            recorded = yaml.safe_load(recipe_path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError):
            recorded = None
        if not isinstance(recorded, dict):
            raise HfCompressError(
                f"{recipe_path} is not a readable recipe, so the calibration task is unknown: "
                "pass --calibration-task (a GLUE task such as sst2)"
            )
    task = args.calibration_task or recorded.get("task")
    if task is None:
        raise HfCompressError(
            f"{args.model} records no task: pass --calibration-task (a GLUE task such as sst2) "
            "for the calibration sentences"
        )
    from .data.glue import calibration_texts

    length = args.max_seq_length or (recorded.get("data") or {}).get("max_seq_length")
    texts = calibration_texts(task, args.calibration_samples, args.glue_dir)
    return texts, length or CALIBRATION_MAX_LENGTH


def _cmd_export(args: argparse.Namespace) -> int:
    from .checkpoint.export import ONNX_FILE, export_onnx
    from .checkpoint.openvino_ir import OPENVINO_XML

    texts, max_length = _export_calibration(args)
    info = export_onnx(
        args.model,
        args.out,
        quantize=args.quantize,
        opset=args.opset,
        overwrite=args.overwrite,
        format=args.format,
        openvino_precision=args.openvino_precision,
        calibration_texts=texts,
        calibration_max_length=max_length,
    )
    if info["quantize"]:
        kept = f", {info['quantize']} by ONNX Runtime"
    else:
        layers = info["layers"]
        kept = [f"{layers['int8_linear']} int8 Linear layers"] if layers["int8_linear"] else []
        kept += [f"{name} {bits}-bit" for name, bits in layers["quantized_embeddings"].items()]
        kept = f", kept as stored: {', '.join(kept)}" if kept else ""
    if info.get("int8_activations"):
        kept += f"; int8 activations calibrated on {info['int8_activations']['calibration_texts']}"
        kept += " texts"
    model_file = OPENVINO_XML if info["format"] == "openvino" else ONNX_FILE
    print(
        f"exported {args.model} to {args.out}/{model_file} ({info['size_bytes'] / 1e6:.1f} MB"
        f"{kept}; max |logit - PyTorch logit| = {info['max_abs_logit_diff_vs_pytorch']:.2g}, "
        f"tolerance {info['tolerance']:.2g})"
    )
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from .hub.push import push_to_hub

    url = push_to_hub(
        args.output_dir,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
    )
    print(f"pushed {args.output_dir} to {url}")
    return 0


def _add_dev_set_options(p: argparse.ArgumentParser) -> None:
    """The options of commands that evaluate on a GLUE dev set (eval, compare)."""
    p.add_argument("--task", required=True)
    p.add_argument("--glue-dir")
    p.add_argument("--max-eval-samples", type=int)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-compress", description="Compress Hugging Face models with YAML recipes."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add_set(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY.PATH=VALUE",
            help="override a recipe key (repeatable)",
        )

    p = sub.add_parser(
        "run", help="compress + evaluate + write the checkpoint, report and model card"
    )
    p.add_argument("recipe", help="recipe YAML file")
    add_set(p)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output_dir")
    p.add_argument(
        "--glue-dir", help="local GLUE folder (original TSV layout); default HF_COMPRESS_GLUE_DIR"
    )
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument(
        "--latency-runs", type=int, default=10, help="timed runs per batch size (default 10)"
    )
    p.add_argument(
        "--no-push", action="store_true", help="do not push even if the recipe has push_to_hub"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run of this recipe from <output_dir>.work",
    )
    p.set_defaults(func=_cmd_run, read_first=_read_recipe)

    p = sub.add_parser("validate", help="check a recipe without loading any model")
    p.add_argument("recipe")
    add_set(p)
    p.add_argument(
        "--print", action="store_true", help="print the recipe with every default filled in"
    )
    # validate needs the recipe checks only, not the techniques' implementations (seconds).
    p.set_defaults(func=_cmd_validate, read_first=_read_recipe, needs_techniques=False)

    p = sub.add_parser(
        "eval",
        help="GLUE dev metrics of a model, or a causal LM's perplexity on held-out text, as JSON",
    )
    p.add_argument("model", help="model directory, Hub id, or .gguf file (causal_lm)")
    _add_dev_set_options(p)
    p.set_defaults(batch_size=None)  # 64 sequences for GLUE, 8 for causal_lm (larger logits)
    p.add_argument(
        "--text-file",
        action="append",
        metavar="FILE",
        help="causal_lm: held-out text (UTF-8, one text per line; .jsonl with a `text` field); "
        "repeatable; packed into --max-seq-length-token sequences",
    )
    p.add_argument(
        "--dataset",
        help="causal_lm: a Hub id or local path for datasets.load_dataset (its validation split, "
        "else the last 10%% of its text)",
    )
    p.add_argument(
        "--text-column", default="text", help="causal_lm: the dataset's / .jsonl's text field"
    )
    p.add_argument(
        "--reference",
        metavar="MODEL",
        help="causal_lm: also report kl_divergence (KL(reference || model), nats per token) and "
        "top1_agreement against this model (e.g. the uncompressed original)",
    )
    p.add_argument(
        "--speed",
        action="store_true",
        help="causal_lm: also time batch-1 prefill (128 tokens) and greedy generation (64 tokens)",
    )
    p.add_argument(
        "--load-in",
        choices=("8bit", "4bit-nf4", "4bit-fp4"),
        help="quantize on load with bitsandbytes",
    )
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        help="compute precision (default: float32; bfloat16 is ~2x faster on CPUs with AVX-512 "
        "BF16)",
    )
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "compare",
        help="are two classifiers' dev accuracies really different? paired counts and McNemar's "
        "exact test",
        description="Evaluate two models on the same GLUE dev examples and print, as JSON, both "
        "accuracies, the examples only one of them gets right, and McNemar's exact two-sided "
        "p-value (small: the gap is more than chance). Classification tasks only.",
    )
    p.add_argument("model_a", help="model directory or Hub id")
    p.add_argument("model_b", help="model directory or Hub id")
    _add_dev_set_options(p)
    p.add_argument(
        "--dtype", choices=DTYPES, help="compute precision of both models (default: float32)"
    )
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser(
        "bench",
        help="measure models side by side, or run recipes from one teacher and measure each result",
        description="Measure saved models: `bench MODEL [MODEL ...] [--task T]`. Run recipes and "
        "measure each result and the teacher in one process: `bench --task T --out DIR [--recipes "
        "FILE ...] [--teacher DIR]` (default recipes: every one in --recipes-dir whose task: is T, "
        "except the quickstart).",
    )
    p.add_argument(
        "models",
        nargs="*",
        help="model directories or Hub ids to measure (leave out to run recipes)",
    )
    p.add_argument("--task", help="GLUE task: measure its dev metric; required to run recipes")
    p.add_argument("--glue-dir")
    p.add_argument("--max-eval-samples", type=int)
    p.add_argument("--batch-sizes", default="1,32", help="latency batch sizes (default 1,32)")
    p.add_argument(
        "--seq-len",
        type=int,
        default=128,
        help="latency and evaluation sequence length (default 128)",
    )
    p.add_argument("--runs", type=int, default=10, help="timed runs per batch size (default 10)")
    p.add_argument("--output", help="models: write the results as JSON here")
    p.add_argument(
        "--dtype",
        help="models: compute precision(s), comma-separated, each model measured in each: e.g. "
        f"float32,bfloat16 (default float32; one of {', '.join(DTYPES)})",
    )
    recipes = p.add_argument_group("running recipes (no models given)")
    recipes.add_argument(
        "--out",
        help="run recipes: their outputs and results.json / results.md / frontier.png go here",
    )
    recipes.add_argument(
        "--recipes",
        nargs="+",
        metavar="FILE",
        help="recipe files (default: every recipe of --task in --recipes-dir)",
    )
    recipes.add_argument(
        "--recipes-dir", help="folder the default recipes come from (default: recipes)"
    )
    recipes.add_argument(
        "--teacher",
        help="fine-tuned teacher directory (default: fine-tune one into <out>/teacher, or reuse "
        "it)",
    )
    recipes.add_argument(
        "--base-model", help="model the teacher is fine-tuned from (default: all-MiniLM-L6-v2)"
    )
    recipes.add_argument(
        "--teacher-epochs",
        type=float,
        help="epochs of that fine-tuning (default: the recipes' finetune_base.epochs when they "
        "agree, else 1)",
    )
    recipes.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a key of every recipe (repeatable)",
    )
    recipes.add_argument(
        "--resume",
        action="store_true",
        default=None,  # None when absent, so `bench MODEL...` can tell it was not given
        help="reuse finished recipe outputs in --out and continue interrupted runs from "
        "<out>/<recipe>.work (same recipes, --set and --teacher)",
    )
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser(
        "export",
        help="export a (compressed) model to ONNX or OpenVINO, keeping the recipe's int8 layers",
        description="Export a sequence-classification model to ONNX (model.onnx + tokenizer + "
        "onnx_export.json) or OpenVINO IR (openvino_model.xml / .bin, converted from the ONNX "
        "graph). The recipe's int8 Linear layers and quantized embeddings stay integer in the "
        "graph with their own weights and scales; other storage formats become the float "
        "weights they stand for. The graph's logits are checked against PyTorch's.",
    )
    p.add_argument("model", help="model directory (e.g. an hf-compress run's output_dir) or Hub id")
    p.add_argument(
        "--out",
        required=True,
        help="export directory (model.onnx, tokenizer, config.json, onnx_export.json)",
    )
    p.add_argument(
        "--quantize",
        choices=("int8",),
        help="int8: ONNX Runtime dynamic quantization of MatMuls and embeddings, for float "
        "checkpoints (an int8 checkpoint's export already keeps the recipe's int8)",
    )
    p.add_argument(
        "--format",
        choices=("onnx", "openvino"),
        default="onnx",
        help="onnx (ONNX Runtime, the default) or openvino (OpenVINO IR; pip install "
        "'hf-compress[openvino]')",
    )
    p.add_argument(
        "--openvino-precision",
        choices=("f32", "bf16"),
        default="f32",
        help="--format openvino: the inference precision the IR is checked and run in (bf16: "
        "faster on CPUs with AMX / AVX-512 BF16)",
    )
    p.add_argument(
        "--int8-activations",
        action="store_true",
        help="--format openvino: static int8 activations, calibrated by NNCF on the task's "
        "training sentences (integer kernels end to end: fastest on CPUs with VNNI / AMX)",
    )
    p.add_argument(
        "--calibration-task",
        help="--int8-activations: GLUE task whose training sentences calibrate the activations "
        "(default: the task in the model's recipe.yaml)",
    )
    p.add_argument(
        "--calibration-samples",
        type=int,
        default=300,
        help="--int8-activations: how many training sentences (default 300)",
    )
    p.add_argument(
        "--max-seq-length",
        type=int,
        help="--int8-activations: calibration length in tokens (default: the recipe's, or 128)",
    )
    p.add_argument(
        "--glue-dir", help="local GLUE folder (original TSV layout); default HF_COMPRESS_GLUE_DIR"
    )
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("push", help="push a compressed output directory to the Hub")
    p.add_argument("output_dir")
    p.add_argument("--repo-id", required=True)
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision")
    p.add_argument("--commit-message")
    p.set_defaults(func=_cmd_push)
    return parser


def load_plugins(names: list[str]) -> None:
    """Imports modules that register custom modifiers (`--plugin my_pkg.my_modifier`, or a
    comma-separated `HF_COMPRESS_PLUGINS`), so recipes can use their types from the command line."""
    import importlib

    for name in [*names, *filter(None, os.environ.get("HF_COMPRESS_PLUGINS", "").split(","))]:
        try:
            importlib.import_module(name.strip())
        except ImportError as exc:
            raise HfCompressError(
                f"plugin {name!r} could not be imported ({exc}); is it on PYTHONPATH?"
            ) from exc


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        help="import a module that registers custom modifiers",
    )
    args = parser.parse_args(argv)  # --help and argument errors end here, before heavy imports
    import hf_compress

    try:
        load_plugins(args.plugin)
        if hasattr(args, "read_first"):
            args.read_first(args)  # a recipe's own mistakes, before the heavy imports
        if getattr(args, "needs_techniques", True):
            hf_compress.load_all()
        _quiet_libraries()
        return args.func(args)
    except HfCompressError as exc:
        print(f"hf-compress: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hf-compress: interrupted; no output directory was written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
