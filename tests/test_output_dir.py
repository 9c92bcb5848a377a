"""One run per output directory (a lock with a live owner), nothing replaced without --overwrite,
and a final swap that a kill at any moment leaves recoverable."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from pipeline_fixtures import make_tiny_base, tiny_recipe_text

from hf_compress.cli import main
from hf_compress.errors import OutputExistsError
from hf_compress.training.output import (
    OutputBusyError,
    OutputLock,
    move_into_place,
    prepare_output_dir,
)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return make_tiny_base(tmp_path_factory.mktemp("base"))


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_lock(output, pid: int) -> None:
    holder = {"pid": pid, "host": socket.gethostname(), "started": time.time()}
    output.with_name(output.name + ".lock").write_text(json.dumps(holder))


def test_a_live_owner_keeps_a_second_run_out(tmp_path, tiny_base, glue_dir, capsys):
    output = tmp_path / "out"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(tiny_recipe_text(tiny_base, output, glue_dir))
    (tmp_path / "out.work").mkdir()  # the live owner's work in progress
    _write_lock(output, os.getppid())  # a process that is certainly alive
    assert main(["run", str(recipe), "--no-latency", "--overwrite"]) == 2
    error = capsys.readouterr().err.strip()
    assert "is being written by another run (process" in error and error.count("\n") == 0
    assert (tmp_path / "out.work").is_dir() and not output.exists()


def test_a_stale_lock_is_taken_over(tmp_path, tiny_base, glue_dir):
    output = tmp_path / "out"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(tiny_recipe_text(tiny_base, output, glue_dir))
    _write_lock(output, _dead_pid())
    assert main(["run", str(recipe), "--no-latency"]) == 0
    assert (output / "report.json").is_file()
    assert not output.with_name("out.lock").exists()  # released at the end


def test_two_runs_at_once_on_one_output(tmp_path, tiny_base, glue_dir):
    output = tmp_path / "out"
    slow = tiny_recipe_text(tiny_base, output, glue_dir).replace(
        "{type: _halve_ffn}", "{type: _count_steps, sleep: 1.0}"
    )
    slow = slow.replace("    epochs: 1\n    modifiers", "    epochs: 8\n    modifiers")  # ~30 s
    assert "epochs: 8" in slow
    recipe = tmp_path / "slow.yaml"
    recipe.write_text(slow)
    code = (
        "import sys, pipeline_fixtures; from hf_compress.cli import main; "
        f"sys.exit(main(['run', {str(recipe)!r}, '--no-latency']))"
    )
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}
    first = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        lock = output.with_name("out.lock")
        deadline = time.time() + 120
        while not lock.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert lock.exists(), "the first run never took the lock"
        second = subprocess.run(
            [sys.executable, "-c", code.replace("'--no-latency'", "'--no-latency', '--overwrite'")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2
        assert "is being written by another run" in second.stderr
        assert first.wait(timeout=300) == 0  # the first run finished, untouched
    finally:
        if first.poll() is None:
            first.kill()
    assert (output / "report.json").is_file()


def test_lock_is_exclusive_in_one_process(tmp_path):
    output = tmp_path / "out"
    with OutputLock(output):
        with pytest.raises(OutputBusyError, match="wait for it to finish"):
            OutputLock(output).acquire()
    OutputLock(output).acquire()  # released: free again


def test_lock_creates_the_folder_the_output_will_live_in(tmp_path):
    output = tmp_path / "outputs" / "quickstart"  # a fresh clone has no outputs/ yet
    with OutputLock(output) as lock:
        assert lock.path.is_file()
    assert not lock.path.exists()


def _complete(directory, text: str) -> None:
    directory.mkdir()
    (directory / "config.json").write_text(text)
    (directory / "README.md").write_text("card")


def test_a_kill_between_the_two_renames_is_finished_by_the_next_run(tmp_path):
    output = tmp_path / "out"
    _complete(tmp_path / "out.old-1234abcd", "old result")
    _complete(tmp_path / "out.partial-5678abcd", "new result")
    with pytest.raises(OutputExistsError):  # the finished swap put a result in place
        prepare_output_dir(output, overwrite=False)
    assert (output / "config.json").read_text() == "new result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_incomplete_staging_puts_the_old_output_back(tmp_path):
    output = tmp_path / "out"
    _complete(tmp_path / "out.old-1234abcd", "old result")
    (tmp_path / "out.partial-5678abcd").mkdir()  # killed while writing: no card yet
    prepare_output_dir(output, overwrite=True)
    assert (output / "config.json").read_text() == "old result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_nothing_is_replaced_without_overwrite(tmp_path):
    output = tmp_path / "out"
    _complete(output, "someone else's")
    staging = tmp_path / "out.partial-0000abcd"
    _complete(staging, "ours")
    with pytest.raises(OutputExistsError, match="the result stays in"):
        move_into_place(staging, output, overwrite=False)
    assert (output / "config.json").read_text() == "someone else's"
    assert (staging / "config.json").read_text() == "ours"
    move_into_place(staging, output, overwrite=True)
    assert (output / "config.json").read_text() == "ours" and not staging.exists()
