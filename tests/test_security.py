"""Safe loading only: YAML through a safe loader, weights from safetensors (never pickle),
`trust_remote_code` off unless the caller turns it on, and no token written anywhere.

Behaviour tests use payloads that would create a marker file if they ever ran; source guards
walk the package's syntax trees so a future change cannot quietly turn an unsafe option on.
"""

from __future__ import annotations

import ast
import inspect
import json
import logging
import pickle
from pathlib import Path

import pytest
import yaml
from tiny import tiny_model, tiny_tokenizer

import hf_compress
from hf_compress import Recipe, RecipeError
from hf_compress.checkpoint.loading import load_checked_tokenizer, load_compressed
from hf_compress.cli import main
from hf_compress.errors import CheckpointError

PACKAGE = Path(hf_compress.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _trees():
    for path in SOURCES:
        yield path.relative_to(PACKAGE.parent), ast.parse(path.read_text(encoding="utf-8"))


def test_the_guards_see_the_package():
    # The source guards below would pass vacuously on an empty list.
    names = {p.name for p in SOURCES}
    assert {"recipe.py", "loading.py", "cli.py", "runner.py"} <= names


# YAML ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "payload",
    [
        "base_model: !!python/object/apply:os.mkdir ['{marker}']\n",
        "base_model: !!python/object/new:pathlib.Path ['{marker}']\n",
        "base_model: !!python/name:os.system\n",
        "base_model: !!python/module:os\n",
        "!!python/object/apply:subprocess.call [[touch, '{marker}']]\n",
    ],
)
def test_python_yaml_tags_are_rejected_and_never_run(payload, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(payload.format(marker=marker))
    with pytest.raises(RecipeError, match="evil.yaml: not valid YAML"):
        Recipe.from_yaml(recipe)
    assert main(["validate", str(recipe)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert not marker.exists()


def test_every_yaml_load_in_the_package_uses_a_safe_loader():
    from hf_compress.recipe import yaml_io

    assert issubclass(yaml_io._NoAliasSafeLoader, yaml.SafeLoader)
    unsafe = {"yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all"}
    safe_loaders = {"yaml.SafeLoader", "yaml.CSafeLoader", "_NoAliasSafeLoader"}
    problems = []
    for path, tree in _trees():
        for call in _calls(tree):
            name = _dotted(call.func)
            if name in unsafe:
                problems.append(f"{path}:{call.lineno}: {name}")
            if name in ("yaml.load", "yaml.load_all"):
                loader = next(
                    (k.value for k in call.keywords if k.arg == "Loader"),
                    call.args[1] if len(call.args) > 1 else None,
                )
                if loader is None or _dotted(loader) not in safe_loaders:
                    problems.append(f"{path}:{call.lineno}: {name} without a safe Loader")
    assert not problems, problems


# Pickle --------------------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_weights_are_refused_and_never_unpickled(tmp_path, capsys, glue_dir):
    checkpoint = tmp_path / "model"
    tiny_model("bert").config.save_pretrained(checkpoint)
    tiny_tokenizer(checkpoint).save_pretrained(checkpoint)
    marker = tmp_path / "PWNED"
    (checkpoint / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(
        CheckpointError, match=r"only pickle weights \(pytorch_model\.bin\).*arbitrary code"
    ):
        load_compressed(checkpoint)
    assert main(["eval", str(checkpoint), "--task", "sst2", "--glue-dir", str(glue_dir)]) == 2
    assert "pickle" in capsys.readouterr().err
    assert not marker.exists()


def test_no_pickle_loading_or_saving_in_the_package():
    problems = []
    for path, tree in _trees():
        for call in _calls(tree):
            name = _dotted(call.func)
            keywords = {k.arg: k.value for k in call.keywords}
            if name in (
                "pickle.load",
                "pickle.loads",
                "dill.load",
                "cloudpickle.load",
                "joblib.load",
            ):
                problems.append(f"{path}:{call.lineno}: {name}")
            if name == "torch.load":
                weights_only = keywords.get("weights_only")
                if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                    problems.append(f"{path}:{call.lineno}: torch.load without weights_only=True")
            for key in ("use_safetensors", "safe_serialization"):
                value = keywords.get(key)
                if isinstance(value, ast.Constant) and value.value is False:
                    problems.append(f"{path}:{call.lineno}: {key}=False")
    assert not problems, problems


# trust_remote_code ---------------------------------------------------------------------------
def test_trust_remote_code_is_never_turned_on_by_the_package():
    problems = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                # Allowed: False, or passing on a caller's own `trust_remote_code` parameter.
                ok = (isinstance(node.value, ast.Constant) and node.value.value is False) or (
                    isinstance(node.value, ast.Name) and node.value.id == "trust_remote_code"
                )
                if not ok:
                    problems.append(
                        f"{path}:{node.value.lineno}: trust_remote_code={ast.unparse(node.value)}"
                    )
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values):
                    if (
                        isinstance(key, ast.Constant)
                        and key.value == "trust_remote_code"
                        and not (isinstance(value, ast.Constant) and value.value is False)
                    ):
                        problems.append(
                            f"{path}:{key.lineno}: {{'trust_remote_code': {ast.unparse(value)}}}"
                        )
            if isinstance(node, ast.arg) and node.arg == "trust_remote_code":
                pass  # parameters are checked through their defaults below
    assert not problems, problems
    from hf_compress.checkpoint import loading

    for fn in (
        loading.load_compressed,
        loading.load_checked_config,
        loading.load_checked_tokenizer,
        loading.load_compressed_with_tokenizer,
    ):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False, fn.__name__


def _remote_code_checkpoint(directory: Path, marker: Path) -> Path:
    """A checkpoint whose config asks for code shipped in the repository; the code touches
    `marker`."""
    tiny_model("bert").save_pretrained(directory)
    tiny_tokenizer(directory).save_pretrained(directory)
    config = json.loads((directory / "config.json").read_text())
    config.update(
        model_type="evil_bert",
        architectures=["EvilBertForSequenceClassification"],
        auto_map={
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModelForSequenceClassification": (
                "modeling_evil.EvilBertForSequenceClassification"
            ),
        },
    )
    (directory / "config.json").write_text(json.dumps(config))
    code = (
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import BertConfig\n"
    )
    (directory / "configuration_evil.py").write_text(
        code + "class EvilConfig(BertConfig):\n    model_type = 'evil_bert'\n"
    )
    (directory / "modeling_evil.py").write_text(
        code + "from transformers import BertForSequenceClassification "
        "as EvilBertForSequenceClassification\n"
    )
    return directory


def test_remote_code_is_not_run_unless_the_caller_asks(tmp_path, capsys, glue_dir):
    marker = tmp_path / "PWNED"
    checkpoint = _remote_code_checkpoint(tmp_path / "remote", marker)
    with pytest.raises(CheckpointError, match="trust_remote_code"):
        load_compressed(checkpoint)
    with pytest.raises(CheckpointError, match="trust_remote_code"):
        load_checked_tokenizer(checkpoint)
    assert main(["eval", str(checkpoint), "--task", "sst2", "--glue-dir", str(glue_dir)]) == 2
    assert "trust_remote_code" in capsys.readouterr().err
    assert not marker.exists(), "code from the checkpoint ran without trust_remote_code"


# Tokens --------------------------------------------------------------------------------------
FAKE_TOKEN = "hf_FuzzSecretTokenDoNotWrite0123456789abcdef"


def test_no_token_is_written_by_a_run(tmp_path, monkeypatch, caplog, capfd, glue_dir):
    from pipeline_fixtures import make_tiny_base, tiny_recipe_text

    from hf_compress.training.runner import run_recipe

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", FAKE_TOKEN)
    caplog.set_level(logging.DEBUG)
    base = make_tiny_base(tmp_path / "base")
    output = tmp_path / "out"
    recipe = Recipe.from_string(tiny_recipe_text(base, output, glue_dir), source="token.yaml")
    run_recipe(recipe, latency=False, progress=False)

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"README.md", "report.json", "recipe.yaml", "config.json"} <= {p.name for p in written}
    leaked = [str(p) for p in written if FAKE_TOKEN.encode() in p.read_bytes()]
    assert not leaked, f"the token was written to {leaked}"
    out, err = capfd.readouterr()
    assert FAKE_TOKEN not in out + err + caplog.text
