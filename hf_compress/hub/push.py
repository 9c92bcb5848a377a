"""Sharing compressed models on the Hugging Face Hub.

`push_to_hub(output_dir, repo_id)` uploads a finished hf-compress output (weights, config.json with
its `compression_config`, tokenizer, recipe.yaml, report.json and the README.md model card) in
ONE commit through huggingface_hub's own client: `HfApi.create_repo(exist_ok=True)`, then
`HfApi.create_commit` with one `CommitOperationAdd` per file. (`upload_folder` would do the same
for a small folder, but with `hf_xet` installed it switches to a pipeline that may split a folder
into several commits; building the operations ourselves keeps the push atomic either way, and
huggingface_hub still chooses Xet / LFS / inline transfer per file.) The token comes from the
usual place (`HF_TOKEN` or the cached `hf auth login`) and is never logged or written.

A failed push changes nothing locally and raises `HfCompressError` saying which step failed; a
re-run is safe: the repo is created only if missing and files whose content the Hub already has
are skipped (an unchanged folder makes no new commit).

After `import hf_compress`, `AutoModelForSequenceClassification.from_pretrained(repo_id)` and
`pipeline("text-classification", model=repo_id)` download and rebuild the compressed model.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from huggingface_hub import CommitOperationAdd, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import filter_repo_objects, validate_repo_id

from ..checkpoint.manifest import verification_enabled, verify_directory
from ..errors import HfCompressError
from .public import find_token, public_name, public_recipe_yaml, public_report

if TYPE_CHECKING:
    from ..training.trainer import CompressionTrainer

logger = logging.getLogger(__name__)


# Files every hf-compress output holds (DESIGN.md section 3); weights and tokenizer are checked
# apart.
REQUIRED_FILES = ("config.json", "recipe.yaml", "report.json", "README.md")

TOKENIZER_VOCAB_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
)

# Trainer leftovers that are not part of the model (and, for *.bin / *.pt / *.pth, pickles).
IGNORE_PATTERNS = [
    ".*",
    "checkpoint-*",
    "runs",
    "training_args.bin",
    "optimizer.pt",
    "scheduler.pt",
    "scaler.pt",
    "rng_state*.pth",
    "trainer_state.json",
    "*.lock",
]

# Files small and textual enough to scan for an accidentally written token before uploading.
_TEXT_SUFFIXES = (".json", ".md", ".yaml", ".yml", ".txt", ".jinja", ".csv", ".log")

_MAX_SCAN_BYTES = 20 * 1024 * 1024

# Transport failures (refused connection, timeout, TLS) raised by the HTTP library huggingface_hub
# uses; HfHubHTTPError derives from that library's base error, so this follows the library.
_TRANSPORT_ERROR: type[BaseException] = HfHubHTTPError.__bases__[0]

_PUSH_ERRORS = (HfHubHTTPError, _TRANSPORT_ERROR, OSError, ValueError)


def output_files(output_dir: str | os.PathLike) -> list[Path]:
    """Checks that `output_dir` is a complete hf-compress output and lists the files to upload.

    Complete means: config.json, the weights as safetensors (`model.safetensors`, or an index
    and every shard it lists), tokenizer files (tokenizer_config.json plus a vocabulary:
    tokenizer.json, vocab.txt, vocab.json or a sentencepiece model), recipe.yaml, report.json
    and README.md. Only top-level files are uploaded; Trainer checkpoints, logs and training
    state (`IGNORE_PATTERNS`) are left out.

    Args:
        output_dir: the directory `hf-compress run` (or `CompressionTrainer`) wrote.

    Returns:
        The files to upload, sorted by name.

    Raises:
        HfCompressError: the directory is missing, incomplete or holds unreadable JSON / YAML;
            the message lists everything missing.
    """
    directory = Path(output_dir)
    if not directory.is_dir():
        raise HfCompressError(
            f"{directory} is not a directory; pass the output_dir of a finished `hf-compress run`."
        )
    present = {p.name for p in directory.iterdir() if p.is_file()}
    missing = [name for name in REQUIRED_FILES if name not in present]
    if "model.safetensors" not in present:
        index = directory / "model.safetensors.index.json"
        if not index.is_file():
            missing.append("model.safetensors (or model.safetensors.index.json with its shards)")
        else:
            shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
            missing += [
                f"{shard} (listed in model.safetensors.index.json)"
                for shard in shards
                if shard not in present
            ]
    if "tokenizer_config.json" not in present:
        missing.append("tokenizer_config.json")
    if not any(name in present for name in TOKENIZER_VOCAB_FILES):
        missing.append(f"tokenizer vocabulary (one of {', '.join(TOKENIZER_VOCAB_FILES)})")
    if missing:
        raise HfCompressError(
            f"{directory} is not a complete hf-compress output; missing: {'; '.join(missing)}. "
            "Push the output_dir of a finished `hf-compress run` (it writes all of these), or save "
            "the missing parts there (tokenizer.save_pretrained, "
            "hf_compress.hub.write_model_card)."
        )
    if verification_enabled():
        verify_directory(directory)  # what is uploaded is what was saved
    _read_json(directory / "config.json")
    _read_json(directory / "report.json")
    try:
        yaml.safe_load((directory / "recipe.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise HfCompressError(
            f"{directory / 'recipe.yaml'} is not valid YAML ({exc}); rewrite it before pushing."
        ) from exc
    names = filter_repo_objects(sorted(present), ignore_patterns=IGNORE_PATTERNS)
    return [directory / name for name in names]


def push_to_hub(
    output_dir: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Uploads a compressed model directory to the Hub in one commit.

    Creates the repository if it does not exist (`private` applies only then) and the branch
    `revision` if it is new. If README.md / report.json were generated for another repo id (or
    none), the uploaded copies name `repo_id` in their loading lines; the local files are never
    modified, and a README.md edited by hand is uploaded as it is.

    Args:
        output_dir: a finished hf-compress output (see `output_files`).
        repo_id: `user/name` or `org/name` on the Hub.
        private: create the repository private.
        revision: branch to commit to (created from main if missing); default main.
        commit_message: the commit's message; default names the techniques applied.
        token: a Hub token with write access; default `HF_TOKEN` or the cached login.

    Returns:
        The URL of the commit.

    Raises:
        HfCompressError: the directory is incomplete, the repo id is invalid, no token is
            available, a file contains the token, or the upload failed (the message says which
            step; nothing local was changed and the push can be rerun).
    """
    files = output_files(output_dir)
    try:
        validate_repo_id(repo_id)
        if "/" not in repo_id:
            # The card names the repo id in its loading lines, so it must be the full one.
            raise HFValidationError("the namespace is missing")
    except HFValidationError as exc:
        raise HfCompressError(
            f"invalid Hub repo id {repo_id!r}: {exc}. Use `user/name` or `org/name`."
        ) from exc
    token = token or get_token()
    if not token:
        raise HfCompressError(
            "no Hugging Face token found: set the HF_TOKEN environment variable or run `hf auth "
            "login` (the token needs write access)."
        )
    operations, total_bytes = _operations(Path(output_dir), files, repo_id, token)
    report = _read_json(Path(output_dir) / "report.json")
    message = commit_message or _default_commit_message(report)
    logger.info(
        "pushing %d files (%.1f MB) from %s to %s",
        len(operations),
        total_bytes / 1e6,
        output_dir,
        repo_id,
    )

    api = HfApi(token=token)
    step = "creating the repository"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            step = f"creating the branch {revision!r}"
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        step = "uploading the files"
        info = api.create_commit(
            repo_id, operations, commit_message=message, revision=revision, repo_type="model"
        )
    except _PUSH_ERRORS as exc:
        detail = str(exc).replace(token, "<token>")  # never echo the token, even if a server did
        raise HfCompressError(
            f"pushing {output_dir} to the Hub repo {repo_id} failed while {step}: "
            f"{type(exc).__name__}: {detail}\nNothing in {output_dir} was changed and no partial "
            "commit was made; fix the cause (network, token permissions, repo name) and run the "
            "push again, which is safe to repeat."
        ) from exc
    logger.info("pushed %s to %s", output_dir, info.commit_url)
    return info.commit_url


def push_trainer_output(
    trainer: CompressionTrainer,
    repo_id: str | None = None,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    output_dir: str | os.PathLike | None = None,
) -> str:
    """Saves a `CompressionTrainer`'s model and pushes it with `push_to_hub`.

    Saves the model and tokenizer (`processing_class`) into `output_dir` (default
    `trainer.args.output_dir`) and, where they are not already there, writes recipe.yaml (from
    `trainer.recipe`, else its stages), a report.json with what the trainer knows (stages,
    parameter counts, size, last eval metrics; no baseline or latency) and the model card.
    Every process saves (sharded setups gather there); only the main process pushes.

    Args:
        trainer: the trainer whose model to push.
        repo_id: Hub repo; default `trainer.args.hub_model_id`, then the recipe's
            `push_to_hub.repo_id`.
        private: create the repository private.
        revision: branch to commit to.
        commit_message: the commit's message.
        token: a Hub token; default `trainer.args.hub_token`, `HF_TOKEN` or the cached login.
        output_dir: where to save before pushing.

    Returns:
        The commit URL (an empty string on processes other than the main one).

    Raises:
        HfCompressError: no repo id, no tokenizer, or the push failed.
    """
    recipe = getattr(trainer, "recipe", None)
    repo_id = (
        repo_id
        or trainer.args.hub_model_id
        or (recipe.push_to_hub.repo_id if recipe and recipe.push_to_hub else None)
    )
    if not repo_id:
        raise HfCompressError(
            "no Hub repo id: pass repo_id=..., set TrainingArguments.hub_model_id or the recipe's "
            "push_to_hub.repo_id."
        )
    directory = Path(output_dir or trainer.args.output_dir)
    # `_internal_call` stops Trainer.save_model from starting transformers' own push
    # (args.push_to_hub).
    trainer.save_model(str(directory), _internal_call=True)
    if not trainer.is_world_process_zero():
        return ""
    if trainer.processing_class is None and not (directory / "tokenizer_config.json").is_file():
        raise HfCompressError(
            "the trainer has no tokenizer to save: pass processing_class=tokenizer to "
            f"CompressionTrainer or save the tokenizer into {directory} before pushing."
        )
    recipe_path = directory / "recipe.yaml"
    if not recipe_path.is_file():
        recipe_path.write_text(_trainer_recipe_yaml(trainer), encoding="utf-8")
    report_path = directory / "report.json"
    if report_path.is_file():
        report = _read_json(report_path)
    else:
        report = trainer_report(trainer, directory, repo_id)
        report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if not (directory / "README.md").is_file():
        from .model_card import write_model_card

        write_model_card(directory, report, recipe_path.read_text(encoding="utf-8"))
    return push_to_hub(
        directory,
        repo_id,
        private=private,
        revision=revision,
        commit_message=commit_message,
        token=token or trainer.args.hub_token,
    )


def trainer_report(
    trainer: CompressionTrainer, output_dir: str | os.PathLike, repo_id: str | None = None
) -> dict[str, Any]:
    """A report.json from what a trainer knows: stages, parameter counts, saved size, eval metrics.

    The baseline, latency and GLUE evaluation of `hf-compress run` are not measured here; the
    report's notes say so.

    Args:
        trainer: a `CompressionTrainer` after `train()` (or any `Trainer`).
        output_dir: the directory the model was saved in (for the size on disk).
        repo_id: the Hub repo the model goes to, if known.
    """
    from ..evaluation.measure import count_parameters, environment, weights_size_bytes
    from ..version import __version__

    model = trainer.accelerator.unwrap_model(trainer.model)
    total, nonzero = count_parameters(model)
    compression = getattr(model.config, "compression_config", None) or {}
    metrics: dict[str, Any] = {}
    for entry in trainer.state.log_history:
        if any(key.startswith("eval_") for key in entry):
            metrics = {
                key[len("eval_") :]: value
                for key, value in entry.items()
                if key.startswith("eval_")
            }
    task = getattr(trainer, "task", None)
    recipe = getattr(trainer, "recipe", None)
    task_name = getattr(task, "name", None) or (recipe.task if recipe else None)
    metric_name = getattr(task, "main_metric", None) or next(iter(metrics), None)
    return {
        "hf_compress_version": __version__,
        "task": task_name,
        "metric_name": metric_name,
        "base_model": public_name(
            recipe.base_model if recipe else getattr(model.config, "_name_or_path", None) or None
        ),
        "base_license": None,
        "output_dir": public_name(str(output_dir)),
        "repo_id": repo_id,
        "environment": environment(),
        "latency_config": None,
        "baseline": None,
        "compressed": {
            "name": "compressed",
            "metrics": metrics,
            "num_parameters": total,
            "nonzero_parameters": nonzero,
            "size_bytes": weights_size_bytes(output_dir),
            "latency_ms": {},
            "methods": list(compression.get("methods", [])),
        },
        "stages": list(getattr(trainer, "stage_summaries", [])),
        "notes": [
            "Pushed from CompressionTrainer.push_to_hub: no baseline comparison, latency or full "
            "GLUE evaluation was run; `hf-compress run <recipe>` produces the complete report."
        ],
        "compression_time_s": None,
    }


# Helpers ----------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise HfCompressError(
            f"{path} is not valid JSON ({exc}); rewrite it before pushing."
        ) from exc
    if not isinstance(data, dict):
        raise HfCompressError(f"{path} must hold a JSON object.")
    return data


def _operations(
    directory: Path, files: list[Path], repo_id: str, token: str
) -> tuple[list[CommitOperationAdd], int]:
    """One add operation per file; README.md / report.json retargeted to `repo_id` in memory."""
    replaced = {**_public_copies(directory), **_retargeted_card(directory, repo_id)}
    operations, total = [], 0
    for path in files:
        content = replaced.get(path.name)
        if path.suffix in _TEXT_SUFFIXES and path.stat().st_size <= _MAX_SCAN_BYTES:
            text = content if content is not None else path.read_bytes()
            found = "your token" if token.encode() in text else find_token(text)
            if found:
                raise HfCompressError(
                    f"{path} contains a Hugging Face token ({found}); remove it before pushing "
                    "(tokens belong in HF_TOKEN or `hf auth login`). Nothing was uploaded."
                )
        operations.append(
            CommitOperationAdd(path.name, content if content is not None else str(path))
        )
        total += len(content) if content is not None else path.stat().st_size
    return operations, total


def _public_copies(directory: Path) -> dict[str, bytes]:
    """recipe.yaml and report.json as published: local paths reduced to names (hub/public.py)."""
    recipe = (directory / "recipe.yaml").read_text(encoding="utf-8")
    report = public_report(_read_json(directory / "report.json"))
    return {
        "recipe.yaml": public_recipe_yaml(recipe).encode("utf-8"),
        "report.json": (json.dumps(report, indent=2) + "\n").encode("utf-8"),
    }


def _retargeted_card(directory: Path, repo_id: str) -> dict[str, bytes]:
    """README.md and report.json naming `repo_id`, when the generated card named something else.

    The card's loading lines name the repo id known when it was written (often none: the local
    directory). When the card is exactly what hf-compress generated from the local report, the
    uploaded copies are regenerated for `repo_id`; a hand-edited card is left as it is.
    """
    from .model_card import build_model_card

    report = _read_json(directory / "report.json")
    if report.get("repo_id") == repo_id:
        return {}
    recipe_yaml = (directory / "recipe.yaml").read_text(encoding="utf-8")
    readme = (directory / "README.md").read_text(encoding="utf-8")
    try:
        generated = str(build_model_card(report, recipe_yaml))
    except (HfCompressError, ValueError, TypeError, KeyError) as exc:
        logger.warning("README.md kept as it is (the report could not be rendered again: %s)", exc)
        return {}
    if _normalized(generated) != _normalized(readme):
        logger.warning(
            "README.md was edited after it was generated: uploading it as it is (its loading lines "
            "may not name %s)",
            repo_id,
        )
        return {}
    retargeted = {**public_report(report), "repo_id": repo_id}
    return {
        "README.md": str(build_model_card(retargeted, recipe_yaml)).encode("utf-8"),
        "report.json": (json.dumps(retargeted, indent=2) + "\n").encode("utf-8"),
    }


def _normalized(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").strip().splitlines())


def _default_commit_message(report: dict[str, Any]) -> str:
    methods = (report.get("compressed") or {}).get("methods") or []
    version = report.get("hf_compress_version", "")
    what = f" ({', '.join(map(str, methods))})" if methods else ""
    return f"Upload model compressed with hf-compress {version}{what}".replace("  ", " ")


def _trainer_recipe_yaml(trainer: CompressionTrainer) -> str:
    recipe = getattr(trainer, "recipe", None)
    if recipe is not None:
        return recipe.to_yaml()
    stages = [
        {"name": s.name, "epochs": s.epochs, "modifiers": [m.to_dict() for m in s.modifiers]}
        for s in getattr(trainer, "stages", ())
    ]
    return yaml.safe_dump({"stages": stages}, sort_keys=False)
