"""The command starts at once: `--help` and argument errors import neither torch nor
transformers (several seconds on a small machine), and `import hf_compress` still registers the
compressed format for Python users."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "datasets", "accelerate", "sklearn", "scipy")


def _imported_after(argv: list[str]) -> tuple[list[str], str]:
    code = (
        "import sys, hf_compress_cli\n"
        f"try:\n    hf_compress_cli.main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return eval(done.stdout.strip().splitlines()[-1]), done.stderr  # noqa: S307 (a list repr)


def test_help_imports_nothing_heavy():
    heavy, _ = _imported_after(["--help"])
    assert heavy == []


def test_argument_errors_import_nothing_heavy():
    for argv in (["run"], ["eval", "m"], ["bench", "--batch-sizes"], ["frobnicate"]):
        heavy, err = _imported_after(argv)
        assert heavy == [] and "usage: hf-compress" in err, argv


def test_import_hf_compress_registers_the_format():
    code = (
        "import hf_compress\n"
        "from transformers import AutoConfig\n"
        "print(type(AutoConfig.for_model('compressed_bert')).__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "CompressedBertConfig", done.stderr[-500:]


def test_recipe_mistakes_are_reported_before_torch_loads(tmp_path):
    """`validate` / `run` parse the recipe (modifier keys and rules, `training:` keys against
    transformers' TrainingArguments fields, text files) before the heavy imports."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "base_model: org/model\ntask: sst2\noutput_dir: out\n"
        "stages:\n  - name: s\n    epochs: 0\n    modifiers: [{type: head_pruning, count: 1}]\n"
    )
    cases = [
        (["--set", "stages.0.modifiers.0.count=-3"], "count: -3 is out of range"),
        (["--set", "stages.0.modifiers.0.type=head_prunin"], "unknown modifier 'head_prunin'"),
        (["--set", "training.learning_rat=1"], "learning_rat: not a transformers.Training"),
        (["--set", "training.learning_rate=fast"], "learning_rate: expected a number"),
        (
            ["--set", "stages.0.epochs=1", "--set", "stages.0.modifiers=[{type: distillation}]"],
            "needs a teacher",
        ),
        (["--set", "task=causal_lm", "--set", "data.text_files=[nope.txt]"], "'nope.txt' is not"),
    ]
    for command in ("validate", "run"):
        for extra, message in cases:
            heavy, err = _imported_after([command, str(recipe), *extra])
            assert heavy == [] and message in err and err.count("\n") == 1, (extra, err)


def test_builtin_types_are_known_without_their_implementations():
    code = (
        "import os, sys\nos.environ['HF_COMPRESS_LAZY_IMPORT'] = '1'\n"
        "from hf_compress.recipe.registry import registered_modifier_types\n"
        "print(registered_modifier_types(), sorted(m for m in ('torch', 'transformers') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().endswith("] []"), done.stdout + done.stderr[-500:]
    import hf_compress  # noqa: F401  (every technique's implementation registers)
    from hf_compress.recipe.registry import MODIFIERS

    listed = eval(done.stdout.strip().rsplit("] ", 1)[0] + "]")  # noqa: S307 (a list repr)
    assert set(listed) == {n for n in MODIFIERS if not n.startswith("_")}
