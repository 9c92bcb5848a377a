import os
from pathlib import Path

import pytest

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the threads of
# parallel test processes fight each other (8-step runs went from <1 s to 10-17 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

REPO = Path(__file__).resolve().parents[1]


def _glue_dir() -> Path | None:
    # `make test` sets it (to ../shared/data/glue when that copy exists beside the repository).
    candidate = os.environ.get("HF_COMPRESS_GLUE_DIR")
    if candidate and (Path(candidate) / "SST-2" / "dev.tsv").is_file():
        return Path(candidate)
    return None


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    path = _glue_dir()
    if path is None:
        pytest.skip("real GLUE files not found; set HF_COMPRESS_GLUE_DIR")
    return path


def pytest_configure(config):
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session", autouse=True)
def _temp_files_inside_pytest_tmp(tmp_path_factory):
    """`tempfile.mkdtemp()` calls in tests land in pytest's own (rotated) temp tree, not /tmp."""
    import tempfile

    previous = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("tempfiles"))
    yield
    tempfile.tempdir = previous


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run GLUE-scale / real-model tests")


def pytest_collection_modifyitems(config, items):
    import torch

    skip_slow = pytest.mark.skip(reason="slow: run with --run-slow")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
