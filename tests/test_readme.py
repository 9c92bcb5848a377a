"""The README runs as written: every Python block executes (against tiny stand-ins at the paths
it names), and every `hf-compress` command line in it parses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from pipeline_fixtures import make_tiny_base
from tiny import tiny_tokenizer  # noqa: F401  (keeps the test helpers importable)

import hf_compress
from hf_compress.cli import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.DOTALL)
COMMANDS = [
    line.split("#")[0].strip().removeprefix(".venv/bin/")
    for block in re.findall(r"```bash\n(.*?)```", README, re.DOTALL)
    for line in block.splitlines()
    if re.match(r"\s*(\.venv/bin/)?hf-compress ", line)
]


@pytest.fixture
def quickstart_outputs(tmp_path, monkeypatch):
    """`outputs/quickstart-base` (a fine-tuned base) and `outputs/quickstart` (its compressed
    version) as tiny models, in a scratch working directory."""
    monkeypatch.chdir(tmp_path)
    base = make_tiny_base(tmp_path / "outputs" / "quickstart-base")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(base)
    small = hf_compress.compress(
        model,
        [
            {"type": "head_pruning", "count": 2},
            {"type": "quantization", "method": "int8_dynamic", "include_embeddings": True},
        ],
    )
    small.save_pretrained(tmp_path / "outputs" / "quickstart")
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp_path / "outputs" / "quickstart")
    return tmp_path


def test_the_readme_has_python_examples_and_commands():
    assert len(PYTHON_BLOCKS) >= 2 and len(COMMANDS) >= 8


def test_every_python_block_runs_as_written(quickstart_outputs, glue_dir, capsys):
    namespace: dict = {}
    for block in PYTHON_BLOCKS:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    printed = capsys.readouterr().out
    assert "'label'" in printed and "'score'" in printed  # the pipeline's prediction
    assert (quickstart_outputs / "outputs" / "quickstart-oneshot" / "config.json").is_file()
    assert (quickstart_outputs / "outputs" / "trainer-demo" / "config.json").is_file()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_line_parses(command):
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert callable(args.func)
