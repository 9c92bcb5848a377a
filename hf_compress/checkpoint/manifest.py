"""The integrity manifest of a compressed checkpoint: sha256 digests of what `save_pretrained`
wrote.

safetensors has no checksum of its own, so a flipped byte in an int8 code or a scale, a tensor
swapped between layers, or an edited `config.json` (an FFN width, `hidden_act`, a removed
`compression_config` entry) loads without complaint and gives a wrong model. Every compressed
model class writes `hf_compress_manifest.json` beside its weights when it is saved:

    {"version": 1, "algorithm": "sha256",
     "files": {"config.json": {"sha256": "...", "bytes": 1234},
               "model.safetensors": {"sha256": "...", "bytes": 5678}}}

and checks it before loading: a file that differs is a `CheckpointError` naming it. A model the
user edited on purpose loads with `from_pretrained(..., verify_checksums=False)` or the
environment variable `HF_COMPRESS_VERIFY_CHECKSUMS=0`. Checkpoints written before manifests
existed have none and load as before.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

MANIFEST_FILE = "hf_compress_manifest.json"
MANIFEST_VERSION = 1
VERIFY_ENV = "HF_COMPRESS_VERIFY_CHECKSUMS"
_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """The sha256 of a file, read in chunks (weights can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def covered_files(directory: Path) -> list[Path]:
    """The files a manifest covers: config.json and the safetensors weights (one file or shards
    with their index)."""
    names = ["config.json", "model.safetensors", "model.safetensors.index.json"]
    files = [directory / n for n in names if (directory / n).is_file()]
    return files + sorted(directory.glob("model-*-of-*.safetensors"))


def write_manifest(directory: str | os.PathLike) -> Path:
    """Writes `hf_compress_manifest.json` for the checkpoint in `directory`; returns its path."""
    directory = Path(directory)
    files = {
        p.name: {"sha256": file_digest(p), "bytes": p.stat().st_size}
        for p in covered_files(directory)
    }
    manifest = {"version": MANIFEST_VERSION, "algorithm": "sha256", "files": files}
    path = directory / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def verification_enabled(requested: bool | None = None) -> bool:
    """Whether to verify: the caller's choice when given, else the environment (default on)."""
    if requested is not None:
        return bool(requested)
    return os.environ.get(VERIFY_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict) or manifest.get("algorithm") != "sha256":
            raise ValueError("unexpected layout")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{path}: not a valid checkpoint manifest ({exc}); the file is corrupt: restore it, or "
            f"load with verify_checksums=False ({VERIFY_ENV}=0) if you edited the model on purpose"
        ) from exc
    return manifest


def verify_files(manifest_path: Path, locate: Any) -> None:
    """Checks every file the manifest lists against its size and digest.

    Args:
        manifest_path: the manifest file.
        locate: `locate(name) -> Path | None`, where the file `name` of the checkpoint is (a local
            folder, or the Hub cache after download).

    Raises:
        CheckpointError: a listed file is missing or differs from what was saved.
    """
    manifest = _read_manifest(manifest_path)
    fix = (
        "the checkpoint is corrupt or was edited: restore or re-download it, or load with "
        f"verify_checksums=False ({VERIFY_ENV}=0) if you changed it on purpose"
    )
    for name, entry in sorted(manifest["files"].items()):
        path = locate(name)
        if path is None or not Path(path).is_file():
            shown = path or name
            raise CheckpointError(f"{shown}: listed in {MANIFEST_FILE} but missing; {fix}")
        path = Path(path)
        expected_size = entry.get("bytes") if isinstance(entry, dict) else None
        if expected_size is not None and path.stat().st_size != expected_size:
            raise CheckpointError(
                f"{path}: {path.stat().st_size} bytes, but {expected_size} were saved; {fix}"
            )
        if not isinstance(entry, dict) or file_digest(path) != entry.get("sha256"):
            raise CheckpointError(f"{path}: content differs from what was saved (sha256); {fix}")


def verify_directory(directory: str | os.PathLike) -> bool:
    """Verifies the manifest of a local checkpoint folder; False when it has none.

    Raises:
        CheckpointError: a file differs from what was saved.
    """
    directory = Path(directory)
    manifest = directory / MANIFEST_FILE
    if not manifest.is_file():
        return False
    verify_files(manifest, lambda name: directory / name)
    return True


def verify_source(source: str, options: dict[str, Any]) -> None:
    """Verifies the manifest of a checkpoint given to `from_pretrained`: a local folder, or a Hub
    repository (its files are fetched into the Hub cache, where loading then finds them).

    Args:
        source: the folder or repository id.
        options: the `from_pretrained` keyword arguments (`revision`, `subfolder`, `token`,
            `cache_dir`, `local_files_only` are honoured).

    Raises:
        CheckpointError: a file differs from what was saved.
    """
    subfolder = options.get("subfolder") or ""
    local = Path(source) / subfolder
    if local.is_dir():
        verify_directory(local)
        return
    from transformers.utils import cached_file

    keys = ("revision", "token", "cache_dir", "local_files_only", "subfolder")
    hub = {key: options[key] for key in keys if key in options}
    try:
        manifest = cached_file(
            source,
            MANIFEST_FILE,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **hub,
        )
    except Exception:  # noqa: BLE001  (no such repository, no access: loading itself will say so)
        return
    if manifest is None:
        return

    def locate(name: str) -> Path | None:
        path = cached_file(source, name, _raise_exceptions_for_missing_entries=False, **hub)
        return Path(path) if path else None

    verify_files(Path(manifest), locate)
