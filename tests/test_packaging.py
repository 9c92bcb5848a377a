"""The package builds and installs from the repository: a wheel with every module, the model card
template and the command's entry point, which works from outside the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("hf_compress-*.whl")
    return path


def test_the_wheel_holds_every_module_and_the_template(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(REPO)) for p in (REPO / "hf_compress").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    assert {"hf_compress_cli.py", "hf_compress/hub/templates/model_card.md"} <= names
    assert not any(n.startswith(("tests/", "benchmarks/", "recipes/")) for n in names)
    meta = next(n for n in names if n.endswith("METADATA"))
    metadata = zipfile.ZipFile(wheel).read(meta).decode()
    assert "License-Expression: Apache-2.0" in metadata
    entry_points = zipfile.ZipFile(wheel).read(meta.replace("METADATA", "entry_points.txt"))
    assert b"hf-compress = hf_compress_cli:main" in entry_points


def test_the_installed_copy_runs_outside_the_repository(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    code = (
        "import hf_compress_cli, hf_compress\n"
        "assert hf_compress.__file__.startswith(sys.argv[1]), hf_compress.__file__\n"
        "hf_compress_cli.main(['--help'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", "import sys\n" + code, str(target)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "usage: hf-compress" in done.stdout, done.stderr[-2000:]
