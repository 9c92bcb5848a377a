"""Loading saved models (compressed or plain) safely, with a clear `CheckpointError` for every way a
checkpoint can be broken.

    model = load_compressed("outputs/minilm-sst2-small")                  # sequence classification
    model, tokenizer = load_compressed_with_tokenizer("outputs/minilm-sst2-small")

What it guarantees beyond a bare `AutoModelFor*.from_pretrained`:

- Weights come from safetensors only (`use_safetensors=True`): a directory that only holds pickle
  files (`pytorch_model.bin`, ...) is refused, because unpickling a file can run arbitrary code.
  `trust_remote_code` stays False unless the caller passes it.
- A missing directory, a missing or non-JSON `config.json`, a truncated or corrupt safetensors
  file, a `compression_config` that is not a mapping, and a config whose shapes do not match the
  weights each get a one-line `CheckpointError` naming the file and the fix. Shapes are compared
  on a meta-device model (no memory) before anything is allocated, so an edited number such as
  an FFN width of 10**8 cannot make the load allocate gigabytes first.
- Nothing is silently re-initialised where it must not be. transformers 5.24 re-initialises
  missing weights with a warning, and `ignore_mismatched_sizes=True` re-initialises mismatched
  ones. A compressed checkpoint (its config has `compression_config`) and a checkpoint that
  has the requested head (e.g. `*ForSequenceClassification`) must load completely: any missing,
  unexpected or mismatched tensor is an error. A plain base checkpoint without that head (e.g.
  all-MiniLM-L6-v2, saved as `BertModel`) still gets a fresh head, as with transformers.
- The files are only read: loading never writes into the checkpoint directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedModel

from ..data.glue_tasks import GlueTask
from ..errors import CheckpointError, HfCompressError
from .format import HEAD_AUTO_CLASSES
from .manifest import verification_enabled, verify_directory
from .sources import resolve_model_source
from .strict import check_loading_info, is_head_key, raise_mismatch

logger = logging.getLogger(__name__)


def load_tokenizer(source: str) -> Any:
    """The model's tokenizer; one without a padding token (GPT-2, many decoders) pads with its
    end-of-sequence token, so batches of sentences can be padded."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source(source))
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_for_task(
    source: str, task: GlueTask, reinit_head: bool = False, **kwargs: Any
) -> PreTrainedModel:
    """A causal LM for the causal-LM task; for a GLUE task, a sequence-classification model: a
    fresh head when the checkpoint has none, the
    saved head when it matches. Loaded through `loading.load_compressed`: safetensors only, and
    a compressed checkpoint or one with a classification head must load completely (a
    `CheckpointError` instead of silently re-initialised weights), except that `reinit_head`
    replaces a saved head whose number of labels differs from the task's by a fresh one."""

    path = resolve_model_source(source)
    if getattr(task, "name", None) == "causal_lm":
        return load_compressed(path, "causal-lm", **kwargs)
    config = load_checked_config(path)
    label_kwargs: dict[str, Any] = {}
    if getattr(config, "pad_token_id", None) is None and _end_of_sequence(config) is not None:
        # A decoder classifies from its last non-padding token, which it finds by the padding id.
        label_kwargs["pad_token_id"] = _end_of_sequence(config)
    saved_labels = getattr(config, "num_labels", None)
    has_head = any(
        a.endswith("ForSequenceClassification")
        for a in (getattr(config, "architectures", None) or [])
    )
    if not has_head or saved_labels != task.num_labels:
        label_kwargs["num_labels"] = task.num_labels
        if task.is_regression:
            label_kwargs["problem_type"] = "regression"
        else:
            label_kwargs["id2label"] = dict(enumerate(task.labels))
            label_kwargs["label2id"] = {label: i for i, label in enumerate(task.labels)}
    return load_compressed(
        path, "sequence-classification", reinit_head=reinit_head, **label_kwargs, **kwargs
    )


def _end_of_sequence(config: Any) -> int | None:
    eos = getattr(config, "eos_token_id", None)
    return eos[0] if isinstance(eos, list) and eos else eos if isinstance(eos, int) else None


# task head -> (architecture-name suffix, Auto class); the Auto classes are the ones the
# compressed model types are registered with.
_HEAD_SUFFIXES = {
    "sequence-classification": "ForSequenceClassification",
    "base": "Model",
    "masked-lm": "ForMaskedLM",
    "token-classification": "ForTokenClassification",
    "question-answering": "ForQuestionAnswering",
    "multiple-choice": "ForMultipleChoice",
    "causal-lm": "ForCausalLM",
}

TASK_HEADS: dict[str, tuple[str, Any]] = {
    head: (suffix, HEAD_AUTO_CLASSES[suffix]) for head, suffix in _HEAD_SUFFIXES.items()
}

# Weights formats that are pickles: never loaded (unpickling runs code), only named in the error.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# One of these makes a tokenizer; tokenizer_config.json alone does not.
TOKENIZER_VOCAB_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)

# Config keys that change the head's shape, passed to the config for the shape check.
_LABEL_KWARGS = ("num_labels", "id2label", "label2id", "problem_type")

# What transformers, safetensors and torch raise on bad files and configs (StrictDataclassError:
# huggingface_hub's validation of config fields, e.g. `"vocab_size": "abc"`).
_LOAD_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError,
                ArithmeticError, SafetensorError, StrictDataclassError)  # fmt: skip


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, shortened: CLI errors are one line."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _naming(exc: HfCompressError, source: str) -> HfCompressError:
    """`exc` with the checkpoint prepended when its message does not name it (errors raised by
    the rebuild inside the model's constructor do not know the path)."""
    if source in str(exc):
        return exc
    renamed = type(exc)(f"{source}: {exc}")
    renamed.__cause__ = exc
    return renamed


def _read_config_json(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{directory}: no config.json, so this is not a saved model directory; write one with "
            "model.save_pretrained(dir)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(
            f"{path}: not valid JSON ({_one_line(exc)}); the file is corrupt, restore it from the "
            "original"
        ) from exc
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path}: expected a JSON object, got {type(data).__name__}; the file is corrupt"
        )
    compression = data.get("compression_config")
    if compression is not None and not isinstance(compression, dict):
        raise CheckpointError(
            f"{path}: compression_config must be a mapping, got {type(compression).__name__}; the "
            "file is corrupt or was edited"
        )
    return data


def _weight_files(directory: Path) -> list[Path]:
    """The safetensors files the checkpoint's weights live in (one file or an index's shards)."""
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"{index}: not a valid safetensors index ({_one_line(exc)}); the file is corrupt"
            ) from exc
        missing = [name for name in shards if not (directory / name).is_file()]
        if missing:
            raise CheckpointError(
                f"{index}: lists shard files that are not there: {', '.join(missing[:5])}; the "
                "download is incomplete"
            )
        return [directory / name for name in shards]
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"{directory}: holds only pickle weights ({', '.join(pickles[:5])}); hf-compress loads "
            "safetensors only, because unpickling a file can run arbitrary code. Convert a "
            "checkpoint you trust with model.save_pretrained(dir) (safetensors is the default)"
        )
    raise CheckpointError(
        f"{directory}: no model.safetensors (or sharded index); the weights are missing"
    )


def _read_weight_shapes(files: Iterable[Path]) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from the safetensors headers (the data is not read). safetensors
    checks that the header parses and that every tensor lies inside the file, so a truncated or
    corrupted file fails here."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118  (safe_open handles are not iterable)
                    shapes[key] = tuple(handle.get_slice(key).get_shape())
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"{file}: truncated or corrupt safetensors file ({_one_line(exc)}); re-download or "
                "re-save the model"
            ) from exc
    return shapes


def load_checked_config(
    path_or_repo: str, trust_remote_code: bool = False, **config_kwargs: Any
) -> PretrainedConfig:
    """`AutoConfig.from_pretrained` with a `CheckpointError` for configs that cannot be read.

    Args:
        path_or_repo: a model directory or Hub id.
        trust_remote_code: allow configs that need code from the repository (off by default).
        config_kwargs: config attributes to override (e.g. `num_labels`).

    Raises:
        CheckpointError: config.json is missing, not JSON, has an unknown `model_type` or bad
            values.
    """
    source = resolve_model_source(path_or_repo)
    if Path(source).is_dir():
        _read_config_json(Path(source))
    try:
        return AutoConfig.from_pretrained(
            source, trust_remote_code=trust_remote_code, **config_kwargs
        )
    except HfCompressError:
        raise
    except _LOAD_ERRORS as exc:
        raise CheckpointError(
            f"{source}: config.json cannot be read as a model config ({_one_line(exc)}); the file "
            "is corrupt, was edited, or needs `import hf_compress` / trust_remote_code"
        ) from exc


def saved_task_head(config: PretrainedConfig) -> str:
    """The task head the checkpoint was saved with (from `config.architectures`), else "base".

    Some compressed structures name modules with the head's prefix (`bert.encoder...`), so they
    rebuild only in the class they were saved from; "auto" loads that class."""
    for name in getattr(config, "architectures", None) or []:
        for head, (suffix, _) in TASK_HEADS.items():
            if head != "base" and str(name).endswith(suffix):
                return head
    return "base"


def _head_info(task_head: str) -> tuple[str, Any]:
    if task_head not in TASK_HEADS:
        raise HfCompressError(
            f"task_head {task_head!r} is not one of: auto, {', '.join(TASK_HEADS)}"
        )
    return TASK_HEADS[task_head]


def _check_shapes(
    auto_class: Any,
    config: PretrainedConfig,
    shapes: dict[str, tuple[int, ...]],
    source: str,
    trust_remote_code: bool,
    reinit_head: bool = False,
) -> None:
    """Compares the config's module shapes, built on the meta device (no memory), with the
    shapes in the safetensors headers, before from_pretrained allocates anything."""
    try:
        with torch.device("meta"):
            model = auto_class.from_config(config, trust_remote_code=trust_remote_code)
    except (
        HfCompressError
    ) as exc:  # apply_structure refused the compression_config: that is the answer
        raise _naming(exc, source) from exc.__cause__
    except Exception as exc:  # noqa: BLE001
        # Some module cannot be built on the meta device (a rebuilder that computes on real
        # tensors): skip this early check; from_pretrained still checks every shape.
        logger.debug("meta-device shape check skipped for %s: %s", source, exc)
        return
    expected = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    prefix = f"{model.base_model_prefix}." if model.base_model_prefix else "\0"
    mismatched = []
    for key, on_disk in shapes.items():
        # Checkpoints of a base model lack the head's prefix; a head checkpoint loaded as a base
        # model has one too many: try the key as saved, then with the prefix added or removed.
        for candidate in (
            key,
            prefix + key,
            key[len(prefix) :] if key.startswith(prefix) else None,
        ):
            if candidate in expected:
                if expected[candidate] != on_disk and not (reinit_head and is_head_key(key)):
                    mismatched.append((key, on_disk, expected[candidate]))
                break
    if mismatched:
        raise_mismatch(source, [(k, list(a), list(b)) for k, a, b in mismatched], config)


def load_compressed(
    path_or_repo: str,
    task_head: str = "sequence-classification",
    *,
    trust_remote_code: bool = False,
    reinit_head: bool = False,
    **kwargs: Any,
) -> PreTrainedModel:
    """Loads a compressed or plain model safely (safetensors only), strictly where it must be.

    Args:
        path_or_repo: a directory written by `save_pretrained` / `hf-compress run`, or a Hub id.
        task_head: one of `TASK_HEADS`: "sequence-classification" (default), "base" (AutoModel),
            "masked-lm", "token-classification", "question-answering", "multiple-choice",
            "causal-lm" (AutoModelForCausalLM); or "auto": the head the checkpoint was saved with.
        trust_remote_code: run code from the repository (never needed for hf-compress checkpoints).
        reinit_head: a saved task head whose shape differs (another number of labels) is replaced
            by a fresh one instead of being an error; the rest must still fit exactly.
        kwargs: passed to `from_pretrained` (e.g. `num_labels`, `dtype`, `quantization_config`).
            `use_safetensors=False` and `ignore_mismatched_sizes=True` are refused.

    Returns:
        The model, as `from_pretrained` returns it.

    Raises:
        CheckpointError: the directory, config.json or weights are missing or corrupt, the weights
            are pickles only, or they do not match the config (see the module docstring).
        HfCompressError: a Hub id while the Hub is unreachable; an unknown `task_head`.
    """
    if task_head != "auto":
        _head_info(task_head)
    if kwargs.pop("use_safetensors", True) is not True:
        raise HfCompressError(
            "use_safetensors=False: hf-compress loads safetensors only (unpickling a file can run "
            "code)"
        )
    if kwargs.pop("ignore_mismatched_sizes", False):
        raise HfCompressError(
            "ignore_mismatched_sizes=True would silently re-initialise mismatched weights; fix the "
            "checkpoint instead"
        )
    kwargs.pop("output_loading_info", None)
    source = resolve_model_source(path_or_repo)
    local = Path(source).is_dir()
    shapes = None
    verified = False
    if local:
        _read_config_json(Path(source))
        files = _weight_files(Path(source))  # weights missing, pickles only: said as such
        if verification_enabled(kwargs.pop("verify_checksums", None)):
            verified = verify_directory(source)  # before anything reads the weights
        shapes = _read_weight_shapes(files)
    config_kwargs = {key: kwargs[key] for key in _LABEL_KWARGS if key in kwargs}
    config = load_checked_config(source, trust_remote_code=trust_remote_code, **config_kwargs)
    if task_head == "auto":
        task_head = saved_task_head(config)
    suffix, auto_class = _head_info(task_head)
    compressed = bool(getattr(config, "compression_config", None))
    architectures = getattr(config, "architectures", None) or []
    exact_head = any(str(name).endswith(suffix) for name in architectures)
    quantized = (
        "quantization_config" in kwargs or getattr(config, "quantization_config", None) is not None
    )
    # Pre-quantized weights (bitsandbytes / torchao) have packed shapes the meta model lacks:
    # from_pretrained checks those itself.
    if shapes is not None and not quantized:
        _check_shapes(auto_class, config, shapes, source, trust_remote_code, reinit_head)
    if verified and compressed:
        kwargs["verify_checksums"] = False  # checked above; the compressed class would again
    fresh_head = not exact_head and not compressed and task_head != "base"
    if fresh_head or reinit_head:
        logger.info("%s: no saved %s head for this task: starting from a fresh one", source, suffix)
    try:
        with _load_report_silenced():  # every problem it would list is checked below, in one line
            model, info = auto_class.from_pretrained(
                source,
                use_safetensors=True,
                trust_remote_code=trust_remote_code,
                output_loading_info=True,
                ignore_mismatched_sizes=reinit_head,  # the head alone: checked below
                **kwargs,
            )
    except HfCompressError as exc:
        raise _naming(exc, source) from exc.__cause__
    except _LOAD_ERRORS as exc:
        if "ignore_mismatched_sizes" in str(exc):
            raise CheckpointError(
                f"{source}: weights do not match config.json (size mismatch, see the load report "
                "above); restore the original config.json or re-save the model"
            ) from exc
        raise CheckpointError(
            f"{source}: the model cannot be loaded ({_one_line(exc)}); the checkpoint is corrupt "
            "or incomplete"
        ) from exc
    check_loading_info(model, info, source, task_head, exact_head, compressed, reinit_head)
    if getattr(model, "is_quantized", False):
        allow_resaving(model)
    return model


@contextlib.contextmanager
def _load_report_silenced() -> Iterator[None]:
    """transformers' multi-line LOAD REPORT (missing / unexpected / mismatched tensors) held back
    while hf-compress loads: the loader checks the same facts and says them in one line."""
    report_logger = logging.getLogger("transformers.modeling_utils")  # where the report is logged
    level = report_logger.level
    report_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        report_logger.setLevel(level)


def load_checked_tokenizer(
    path_or_repo: str, trust_remote_code: bool = False, **kwargs: Any
) -> Any:
    """`AutoTokenizer.from_pretrained` with a `CheckpointError` naming the files when they are
    missing or corrupt.

    Args:
        path_or_repo: a model directory or Hub id.
        trust_remote_code: allow tokenizers that need code from the repository (off by default).
        kwargs: passed to `AutoTokenizer.from_pretrained`.
    """
    source = resolve_model_source(path_or_repo)
    directory = Path(source)
    if directory.is_dir() and (directory / "config.json").exists():
        # AutoTokenizer reads config.json too: check it first, so a broken config is reported
        # as such and not as a broken tokenizer.
        load_checked_config(source, trust_remote_code=trust_remote_code)
    if directory.is_dir() and not any(
        (directory / name).is_file() for name in TOKENIZER_VOCAB_FILES
    ):
        raise CheckpointError(
            f"{directory}: no tokenizer files (expected tokenizer_config.json and one of "
            f"{', '.join(TOKENIZER_VOCAB_FILES)}); save the tokenizer beside the model with "
            "tokenizer.save_pretrained(dir)"
        )
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **kwargs)
    except HfCompressError:
        raise
    except Exception as exc:  # noqa: BLE001  (the Rust `tokenizers` library raises plain Exception)
        raise CheckpointError(
            f"{source}: the tokenizer cannot be loaded ({_one_line(exc)}); its files are corrupt "
            "or incomplete, re-save them with tokenizer.save_pretrained(dir)"
        ) from exc


def load_compressed_with_tokenizer(
    path_or_repo: str,
    task_head: str = "sequence-classification",
    *,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> tuple[PreTrainedModel, Any]:
    """`load_compressed` plus the tokenizer saved beside the model (checked first: it is cheaper).

    Returns:
        `(model, tokenizer)`.

    Raises:
        CheckpointError: as `load_compressed`, or the tokenizer files are missing or corrupt.
    """
    tokenizer = load_checked_tokenizer(path_or_repo, trust_remote_code=trust_remote_code)
    model = load_compressed(path_or_repo, task_head, trust_remote_code=trust_remote_code, **kwargs)
    return model, tokenizer


def allow_resaving(model: nn.Module) -> None:
    """Lets `save_pretrained` write a model loaded from a bitsandbytes checkpoint again.

    Loading pre-quantized bitsandbytes weights, transformers (5.24) records a weight conversion
    (`Bnb4bitDeserialize` / `Bnb8bitDeserialize`) that `save_pretrained` then tries to reverse, and
    it has no reverse (`NotImplementedError`; see huggingface/transformers pull request #45743):
    the reloaded model cannot be saved, neither by the runner after a stage nor by the Trainer at
    a checkpoint. The reverse is the identity, because bitsandbytes' layers already write their
    state dict in the serialized layout the conversion reads (`weight`, `weight.absmax`, ...,
    `SCB`), so those conversions are dropped: the model then saves exactly as one that was
    quantized from float weights. Conversions that do anything else are left alone.
    """
    conversions = getattr(model, "_weight_conversions", None)
    if not conversions:
        return
    try:
        from transformers.integrations.bitsandbytes import (
            Bnb4bitDeserialize,
            Bnb8bitDeserialize,
        )
    except ImportError:  # another transformers layout: nothing of this kind to drop
        return
    deserialize = (Bnb4bitDeserialize, Bnb8bitDeserialize)

    def only_deserializes(conversion: Any) -> bool:
        operations = getattr(conversion, "operations", None)
        return bool(operations) and all(isinstance(op, deserialize) for op in operations)

    model._weight_conversions = [c for c in conversions if not only_deserializes(c)]
