"""Recipe parsing and every kind of validation error (before any model loads)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import pytest

from hf_compress import Recipe, RecipeError, register_modifier
from hf_compress.methods.modifier import Modifier
from hf_compress.recipe.fields import ModifierConfig
from hf_compress.recipe.schema import option

GOOD = textwrap.dedent(
    """
    base_model: sentence-transformers/all-MiniLM-L6-v2
    task: sst2
    teacher: finetuned-base
    finetune_base: {epochs: 1}
    data: {max_train_samples: 2000, max_seq_length: 64}
    training: {learning_rate: 5.0e-5, per_device_train_batch_size: 32}
    stages:
      - name: tune
        epochs: 2
        modifiers:
          - {type: _test_scale, factor: 0.5}
          - {type: _test_needs_teacher}
      - name: freeze
        epochs: 0
        modifiers:
          - {type: _test_freeze}
    output_dir: outputs/x
    """
)


@dataclass(frozen=True)
class _ScaleConfig(ModifierConfig):
    factor: float = option(1.0, help="a factor", range=(0, 1), exclusive=(True, False))
    mode: str = option("a", help="a mode", choices=("a", "b"))
    layers: tuple[int, ...] | None = option(None, help="layers")


@register_modifier("_test_scale")
class _Scale(Modifier):
    config_class = _ScaleConfig


@dataclass(frozen=True)
class _NeedsTeacherConfig(ModifierConfig):
    requires_teacher = True
    requires_training = True


@register_modifier("_test_needs_teacher")
class _NeedsTeacher(Modifier):
    config_class = _NeedsTeacherConfig


@dataclass(frozen=True)
class _FreezeConfig(ModifierConfig):
    freezes_weights = True


@register_modifier("_test_freeze")
class _Freeze(Modifier):
    config_class = _FreezeConfig


def recipe_from(text: str, **kwargs) -> Recipe:
    return Recipe.from_string(text, source="r.yaml", **kwargs)


def test_good_recipe_parses_into_frozen_dataclasses():
    recipe = recipe_from(GOOD)
    assert recipe.task == "sst2"
    assert recipe.data.max_train_samples == 2000 and recipe.data.max_eval_samples is None
    assert [s.name for s in recipe.stages] == ["tune", "freeze"]
    spec = recipe.stages[0].modifiers[0]
    assert spec.type == "_test_scale" and spec.config.factor == 0.5 and spec.config.mode == "a"
    with pytest.raises(AttributeError):
        spec.config.factor = 0.7  # frozen after validation


def test_round_trip_through_yaml_keeps_everything():
    recipe = recipe_from(GOOD)
    again = recipe_from(recipe.to_yaml())
    assert again.to_dict() == recipe.to_dict()
    assert again.stages[0].modifiers[0].config == recipe.stages[0].modifiers[0].config


def test_from_yaml_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD)
    assert Recipe.from_yaml(path).source == str(path)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("task: sst2", "task: sst3", "task: got 'sst3'; allowed values: cola, sst2"),
        ("  - name: tune\n", "  - name: tune\n    bogus: 1\n", "stages[0]: unknown key 'bogus'"),
        (
            "{type: _test_scale, factor: 0.5}",
            "{type: _test_scale, factor: 1.5}",
            "stages[0].modifiers[0].factor: 1.5 is out of range; allowed: (0, 1]",
        ),
        (
            "{type: _test_scale, factor: 0.5}",
            "{type: _test_scale, factor: 0}",
            "factor: 0.0 is out of range",
        ),
        (
            "{type: _test_scale, factor: 0.5}",
            "{type: _test_scale, factor: high}",
            "factor: expected a number, got 'high'",
        ),
        (
            "{type: _test_scale, factor: 0.5}",
            "{type: _test_scale, mode: c}",
            "mode: got 'c'; allowed values: a, b",
        ),
        (
            "{type: _test_scale, factor: 0.5}",
            "{type: _test_scale, layers: [1, x]}",
            "layers: expected list of int | null",
        ),
        (
            "{type: _test_scale, factor: 0.5}",
            "{type: _test_scael}",
            "unknown modifier '_test_scael'; allowed values:",
        ),
        (
            "{type: _test_scale, factor: 0.5}",
            "{type: _test_scale, start: 0.8, end: 0.2}",
            "start (0.8) must not be after end (0.2)",
        ),
        ("epochs: 2", "epochs: -1", "stages[0].epochs: -1.0 is out of range"),
        ("epochs: 2", "epochs: two", "stages[0].epochs: expected a number"),
        (
            "learning_rate: 5.0e-5",
            "learning_rat: 5.0e-5",
            "training.learning_rat: not a transformers.TrainingArguments field",
        ),
        (
            "learning_rate: 5.0e-5",
            "num_train_epochs: 3",
            "training.num_train_epochs: set by the recipe itself",
        ),
        (
            "max_seq_length: 64",
            "max_seq_length: 100000",
            "data.max_seq_length: 100000 is out of range",
        ),
        ("output_dir: outputs/x", "", "output_dir: required key is missing"),
        ("teacher: finetuned-base\nfinetune_base: {epochs: 1}", "teacher: none", "needs a teacher"),
        (
            "finetune_base: {epochs: 1}",
            "finetune_base: {epochs: 0}",
            "finetune_base.epochs: 0.0 is out of range",
        ),
        (
            "teacher: finetuned-base\nfinetune_base: {epochs: 1}",
            "teacher: finetuned-base",
            "needs a `finetune_base",
        ),
        (
            "  - name: freeze\n    epochs: 0",
            "  - name: tune\n    epochs: 0",
            "stage name 'tune' is used twice",
        ),
    ],
)
def test_validation_errors_name_file_key_and_allowed_values(old, new, message):
    assert old in GOOD
    with pytest.raises(RecipeError) as info:
        recipe_from(GOOD.replace(old, new, 1))
    assert message in str(info.value)
    assert str(info.value).startswith("r.yaml") or "r.yaml" in str(info.value)


def test_training_after_a_freezing_modifier_is_rejected():
    text = GOOD.replace(
        "output_dir:", "  - name: more\n    epochs: 1\n    modifiers: []\noutput_dir:"
    )
    with pytest.raises(
        RecipeError,
        match=r"stages\[2\].*trains .* after stages\[1\]\.modifiers\[0\] \(_test_freeze\) froze",
    ):
        recipe_from(text)


def test_freezing_modifier_in_a_training_stage_is_rejected():
    text = GOOD.replace("name: freeze\n    epochs: 0", "name: freeze\n    epochs: 1")
    with pytest.raises(RecipeError, match="freezes the weights, so its stage cannot train"):
        recipe_from(text)


def test_modifier_needing_training_in_one_shot_stage_is_rejected():
    text = GOOD.replace("name: tune\n    epochs: 2", "name: tune\n    epochs: 0")
    with pytest.raises(RecipeError, match="only works in a training stage"):
        recipe_from(text)


def test_overrides_set_nested_keys_and_list_items():
    recipe = recipe_from(
        GOOD,
        overrides=["training.learning_rate=3e-5", "stages.0.epochs=3", "data.max_eval_samples=100"],
    )
    assert recipe.training["learning_rate"] == 3e-5
    assert recipe.stages[0].epochs == 3
    assert recipe.data.max_eval_samples == 100
    with pytest.raises(RecipeError, match="not an index"):
        recipe_from(GOOD, overrides=["stages.7.epochs=3"])
    with pytest.raises(RecipeError, match="expected KEY.PATH=VALUE"):
        recipe_from(GOOD, overrides=["training.learning_rate"])
    with pytest.raises(RecipeError, match="learning_rate: expected"):
        recipe_from(GOOD, overrides=["finetune_base.learning_rate=fast"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "a recipe is a mapping"),
        ("- a\n- b\n", "a recipe is a mapping"),
        ("task: [unclosed\n", "not valid YAML"),
        ("a: &x [1, 2]\nb: *x\n", "aliases"),
        ("base_model: !!python/object/apply:os.system ['echo hi']\n", "not valid YAML"),
    ],
)
def test_malformed_yaml_is_a_clear_error(text, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from(text)


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        Recipe.from_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"task: \xff\xfe\n")
    with pytest.raises(RecipeError, match="not UTF-8"):
        Recipe.from_yaml(bad)


def test_shipped_recipes_validate():
    from pathlib import Path

    recipes = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
    assert recipes, "recipes/ is empty"
    for path in recipes:
        Recipe.from_yaml(path)


@pytest.mark.parametrize("task", ["mrpc", "stsb", "cola", "rte"])
def test_shipped_small_glue_task_recipes(task):
    from pathlib import Path

    from hf_compress.data.glue_tasks import get_task

    root = Path(__file__).resolve().parents[1] / "recipes"
    best = Recipe.from_yaml(root / f"minilm-{task}-prune-distill-int8.yaml")
    int8 = Recipe.from_yaml(root / f"minilm-{task}-int8.yaml")
    quickstart = Recipe.from_yaml(root / "quickstart.yaml")
    assert best.task == int8.task == task
    assert [[m.type for m in s.modifiers] for s in best.stages] == [
        [m.type for m in s.modifiers] for s in quickstart.stages
    ]
    assert [[m.type for m in s.modifiers] for s in int8.stages] == [["quantization"]]
    # small data sets: all of it, several epochs, room for both sentences of a pair
    assert (
        best.data.max_train_samples is None
        and best.finetune_base.epochs >= 3
        and best.stages[0].epochs >= 3
    )
    assert best.data.max_seq_length == (128 if len(get_task(task).text_fields) == 2 else 64)
    assert best.training["per_device_train_batch_size"] in (16, 32)
    # the same fine-tuning, so both recipes start from (and compare against) one cached teacher
    for key in ("base_model", "teacher", "finetune_base", "data", "training", "seed"):
        assert getattr(best, key) == getattr(int8, key), key
    assert best.finetune_base.cache_dir == f"outputs/minilm-{task}-finetuned-base"
    assert {best.output_dir, int8.output_dir} == {
        f"outputs/minilm-{task}-prune-distill-int8",
        f"outputs/minilm-{task}-int8",
    }
    if task == "mrpc":  # the QAT and fallback recipes start from the same cached teacher
        qat = Recipe.from_yaml(root / "minilm-mrpc-qat-int8-distill.yaml")
        fallback = Recipe.from_yaml(root / "minilm-mrpc-int8-emb-fp32-fallback.yaml")
        for key in ("base_model", "teacher", "finetune_base", "data", "training", "seed"):
            assert getattr(best, key) == getattr(qat, key) == getattr(fallback, key), key
        assert [[m.type for m in s.modifiers] for s in qat.stages] == [
            ["quantization", "distillation"]
        ]
        (entry,) = fallback.stages[0].modifiers
        assert entry.config.fp32_fallback == 4 and entry.config.include_embeddings is True
    if task == "rte":  # shares the teacher of the RTE distillation pair too
        pair = Recipe.from_yaml(root / "minilm-rte-distill-3layer.yaml")
        for key in ("finetune_base", "data", "training", "seed"):
            assert getattr(best, key) == getattr(pair, key), key


def test_distillation_after_vocabulary_pruning_is_rejected():
    @dataclass(frozen=True)
    class _VocabConfig(ModifierConfig):
        changes_vocabulary = True

    @register_modifier("_test_vocab")
    class _Vocab(Modifier):
        config_class = _VocabConfig

    same_stage = GOOD.replace(
        "- {type: _test_needs_teacher}",
        "- {type: _test_needs_teacher}\n      - {type: _test_vocab}",
    )
    recipe_from(same_stage)  # pruning at the end of the distillation stage is fine
    later = GOOD.replace(
        "name: tune",
        "name: vocab\n    epochs: 0\n    modifiers: [{type: _test_vocab}]\n  - name: tune",
    )
    with pytest.raises(
        RecipeError,
        match=r"old vocabulary, but stages\[0\]\.modifiers\[0\] \(_test_vocab\) renumbered",
    ):
        recipe_from(later)


def test_sst2_combination_with_fallback_differs_from_the_combination_only_by_the_fallback():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "recipes"
    plain = Recipe.from_yaml(root / "minilm-sst2-prune-int8-full-data.yaml").to_dict()
    fallback = Recipe.from_yaml(root / "minilm-sst2-prune-int8-fallback-full-data.yaml").to_dict()
    assert fallback["stages"][2]["modifiers"][0]["fp32_fallback"] == 1
    fallback["stages"][2]["modifiers"][0]["fp32_fallback"] = plain["stages"][2]["modifiers"][0].get(
        "fp32_fallback", 0
    )
    assert fallback["output_dir"] == "outputs/minilm-sst2-prune-int8-fallback-full-data"
    fallback["output_dir"] = plain["output_dir"]
    assert fallback == plain


def test_training_fields_read_from_source_match_the_real_training_arguments():
    """The torch-free reader of transformers' source sees exactly TrainingArguments' __init__
    arguments, with the same hints (enums, which it cannot import, become placeholders)."""
    import dataclasses
    import typing

    from transformers import TrainingArguments

    from hf_compress.recipe.training_fields import training_argument_hints

    read = training_argument_hints()
    assert read is not None
    assert set(read) == {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    real = typing.get_type_hints(TrainingArguments)
    same = [k for k in read if repr(read[k]) == repr(real[k])]
    assert {"learning_rate", "per_device_train_batch_size", "report_to", "bf16"} <= set(same)
    for key in set(read) - set(same):  # only hints naming a class of transformers / accelerate
        assert "hf_compress.recipe.training_fields." in repr(read[key]), (key, read[key])
