"""GGUF files (llama.cpp's format) as base models: converted once to a float32 transformers
checkpoint in a cache folder, then used like any saved model directory.

    folder = gguf_checkpoint("models/SmolLM2-135M-Instruct.Q4_1.gguf")   # converts, or reuses

transformers reads a GGUF file with `from_pretrained(folder, gguf_file=name)` and de-quantizes it
(the `gguf` package does the reading), but the model it returns carries a GGUF
`quantization_config` and refuses `save_pretrained`. The conversion therefore rebuilds the model
from its config without `quantization_config`, loads the de-quantized weights into it, ties the
embeddings again and saves it with the tokenizer (chat template included). The folder is named
by the file's SHA-256, written under a staging name and renamed when complete, so an interrupted
conversion never leaves a half-written checkpoint that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import CheckpointError, HfCompressError

logger = logging.getLogger(__name__)

GGUF_SUFFIX = ".gguf"
# Beside the weights: which file the checkpoint was converted from.
SOURCE_FILE = "gguf_source.json"
_DIGEST_CHARS = 16

# (path, size, mtime) -> sha256, so a run that resolves the same file several times hashes once.
_DIGESTS: dict[tuple[str, int, int], str] = {}


def cache_root() -> Path:
    """Where converted checkpoints live: `$HF_COMPRESS_CACHE`, else `~/.cache/hf_compress`."""
    return Path(os.environ.get("HF_COMPRESS_CACHE") or "~/.cache/hf_compress").expanduser()


def is_gguf_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(GGUF_SUFFIX)


def file_digest(path: Path) -> str:
    """The file's SHA-256 (hex), computed once per file version in this process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def converted_dir(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder the converted checkpoint of the GGUF file `path` lives (or will live) in."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    return root / "gguf" / file_digest(Path(path))[:_DIGEST_CHARS]


def is_converted(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / SOURCE_FILE).is_file()


def require_gguf() -> None:
    """Raises a one-line `HfCompressError` when the optional `gguf` package is missing."""
    from transformers.utils import is_gguf_available

    if not is_gguf_available():
        raise HfCompressError(
            "reading a .gguf file needs the gguf package (0.10 or newer): `pip install gguf` "
            "(or `pip install hf-compress[gguf]`)"
        )


def gguf_checkpoint(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The float32 transformers checkpoint (model + tokenizer) of a GGUF file: converted on the
    first call, reused from the cache afterwards.

    Args:
        path: the `.gguf` file.
        cache_dir: where converted checkpoints are kept (default: `cache_root()`); each goes to
            `<cache_dir>/gguf/<first 16 hex digits of the file's SHA-256>`.

    Returns:
        The checkpoint folder (config.json, model.safetensors, tokenizer files, `gguf_source.json`).

    Raises:
        HfCompressError: the `gguf` package is not installed.
        CheckpointError: the file is missing, or transformers cannot read it (a corrupt file or an
            architecture transformers does not convert from GGUF).
    """
    source = Path(path).expanduser()
    if not source.is_file():
        raise CheckpointError(f"{source}: no such GGUF file; pass the path of a .gguf file")
    target = converted_dir(source, cache_dir)
    if is_converted(target):
        return target
    require_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide a shared cache from other users
    try:
        logger.info("converting %s to a float32 checkpoint in %s (done once)", source, target)
        _convert(source, staging)
        (staging / SOURCE_FILE).write_text(
            json.dumps({"file": source.name, "sha256": file_digest(source)}, indent=2) + "\n",
            encoding="utf-8",
        )
        try:
            os.rename(staging, target)
        except OSError:
            if not is_converted(target):  # not another process that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert(source: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(source.parent), source.name
    try:
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except HfCompressError:
        raise
    except Exception as exc:  # noqa: BLE001  (gguf / transformers raise many kinds on bad files)
        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        raise CheckpointError(
            f"{source}: transformers cannot read this GGUF file ({type(exc).__name__}: "
            f"{first[:200]}); the file is corrupt or its architecture has no GGUF conversion in "
            "transformers"
        ) from exc
    # The GGUF-loaded model refuses save_pretrained ("quantized with gguf"): rebuild it plainly.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    model.generation_config = loaded.generation_config
    del loaded
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
