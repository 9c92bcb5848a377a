"""Distillation (`distillation`), layer-reduced students
(`hf_compress.methods.distillation.student`) and `layer_dropping`."""

from __future__ import annotations

import copy
import tempfile

import pytest
import torch
from tiny import FAMILIES, logits, tiny_dataset, tiny_inputs, tiny_model, tiny_training_args
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
)

import hf_compress  # noqa: F401  (registers the compressed format)
from hf_compress import CompressionTrainer, Recipe, RecipeError, UnsupportedModelError
from hf_compress.architectures.base import get_adapter
from hf_compress.methods.distillation.config import DistillationConfig
from hf_compress.methods.distillation.loss import (
    default_layer_map,
    hidden_state_loss,
    soft_target_loss,
)
from hf_compress.methods.distillation.modifier import DistillationModifier
from hf_compress.methods.distillation.student import (
    keep_layers,
    layer_origin,
    make_student,
    select_layers,
)
from hf_compress.methods.modifier import StageContext
from hf_compress.recipe.recipe import Stage
from hf_compress.recipe.schema import build


def deep_model(
    family: str = "bert", layers: int = 4, seed: int = 0, num_labels: int = 2
) -> torch.nn.Module:
    """A tiny model of `family` with `layers` layers (tiny_model has 2)."""
    template = tiny_model(family, num_labels=num_labels)
    config = copy.deepcopy(template.config)
    config.num_hidden_layers = layers  # DistilBERT maps this to n_layers
    torch.manual_seed(seed)
    return type(template)(config).eval()


def make_modifier(
    teacher_model, student_model, **keys
) -> tuple[DistillationModifier, StageContext]:
    config = build(DistillationConfig, keys, "test")
    modifier = DistillationModifier(config)
    ctx = StageContext(teacher=teacher_model)
    modifier.on_initialize(student_model, ctx)
    return modifier, ctx


def batch(n: int = 4, seed: int = 3) -> dict[str, torch.Tensor]:
    inputs = tiny_inputs(batch=n, seed=seed)
    inputs["labels"] = torch.tensor([i % 2 for i in range(n)])
    return inputs


def run_stage(
    model, teacher, modifiers, epochs=1.0, seed=0, lr=1e-3, trainer_kwargs=None, **arg_overrides
):
    recipe = Recipe.from_dict(
        {
            "base_model": "tiny",
            "task": "sst2",
            "teacher": "tiny-teacher" if teacher is not None else "none",
            "output_dir": "unused",
            "stages": [{"name": "stage", "epochs": epochs, "modifiers": modifiers}],
        }
    )
    args = tiny_training_args(learning_rate=lr, seed=seed, **arg_overrides)
    trainer = CompressionTrainer(
        model=model,
        args=args,
        recipe=recipe,
        teacher=teacher,
        train_dataset=tiny_dataset(),
        **(trainer_kwargs or {}),
    )
    trainer.train()
    return trainer


# Loss terms against hand computations ------------------------------------------------------------
def test_soft_target_loss_matches_hand_computation():
    student = torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.1, -1.0]])
    teacher = torch.tensor([[2.0, 0.0, -1.0], [-0.4, 0.9, 0.5]])
    for temperature in (1.0, 2.0, 4.0):
        p_t = torch.softmax(teacher / temperature, dim=-1)
        p_s = torch.softmax(student / temperature, dim=-1)
        kl_per_example = (p_t * (p_t.log() - p_s.log())).sum(dim=-1)
        expected = kl_per_example.mean() * temperature**2
        got = soft_target_loss(student, teacher, temperature)
        torch.testing.assert_close(got, expected)
    # T^2 scaling: at T=1 the term is the plain KL
    plain = (
        (
            torch.softmax(teacher, -1)
            * (torch.log_softmax(teacher, -1) - torch.log_softmax(student, -1))
        )
        .sum(-1)
        .mean()
    )
    torch.testing.assert_close(soft_target_loss(student, teacher, 1.0), plain)
    # identical logits give zero
    assert soft_target_loss(teacher, teacher, 2.0).abs() < 1e-7


def test_regression_uses_mse_on_teacher_output():
    student = torch.tensor([[0.5], [2.0], [-1.0]])
    teacher = torch.tensor([[1.0], [1.5], [0.0]])
    expected = ((0.5 - 1.0) ** 2 + (2.0 - 1.5) ** 2 + (-1.0 - 0.0) ** 2) / 3
    got = soft_target_loss(student, teacher, temperature=3.0, regression=True)
    assert got.item() == pytest.approx(expected)


def test_hidden_state_loss_matches_hand_computation():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    cos_terms, mse_terms = [], []
    for b in range(2):
        for k in range(3):
            if mask[b, k]:
                u, v = s[b, k], t[b, k]
                cos_terms.append(1 - (u @ v) / (u.norm() * v.norm()))
                mse_terms.append(((u - v) ** 2).mean())
    torch.testing.assert_close(
        hidden_state_loss(s, t, mask, "cosine"), torch.stack(cos_terms).mean()
    )
    torch.testing.assert_close(hidden_state_loss(s, t, mask, "mse"), torch.stack(mse_terms).mean())
    assert hidden_state_loss(s, s, mask, "cosine").abs() < 1e-6


def test_modifier_loss_combines_weighted_terms():
    teacher, student = deep_model(layers=4, seed=0), deep_model(layers=4, seed=1)
    modifier, ctx = make_modifier(
        teacher, student, temperature=3.0, alpha_kd=0.7, alpha_ce=0.2, alpha_hidden=0.5
    )
    inputs = batch()
    out = student(**inputs, output_hidden_states=True)
    total = modifier.compute_loss(out.loss, student, inputs, out, ctx)
    with torch.no_grad():
        t_out = teacher(
            **{k: v for k, v in inputs.items() if k != "labels"}, output_hidden_states=True
        )
    p_t = torch.softmax(t_out.logits / 3.0, -1)
    kd = (p_t * (p_t.log() - torch.log_softmax(out.logits / 3.0, -1))).sum(-1).mean() * 9.0
    # same depth: student layer i imitates teacher layer i
    assert modifier.layer_map == [0, 1, 2, 3]
    hidden = torch.stack(
        [
            hidden_state_loss(
                out.hidden_states[i + 1], t_out.hidden_states[i + 1], inputs["attention_mask"]
            )
            for i in range(4)
        ]
    ).mean()
    torch.testing.assert_close(total, 0.7 * kd + 0.2 * out.loss + 0.5 * hidden)


def test_regression_modifier_uses_mse():
    teacher, student = (
        deep_model(layers=2, seed=0, num_labels=1),
        deep_model(layers=2, seed=1, num_labels=1),
    )
    modifier, ctx = make_modifier(teacher, student, alpha_kd=1.0, alpha_ce=0.0, temperature=5.0)
    inputs = tiny_inputs()
    out = student(**inputs)
    got = modifier.compute_loss(None, student, inputs, out, ctx)
    torch.testing.assert_close(got, ((out.logits - logits(teacher, inputs)) ** 2).mean())
    assert modifier.summary()["soft_target_loss"] == "mse"


# Students --------------------------------------------------------------------------------------
def test_select_layers_every_other_by_default():
    assert select_layers(6, num_layers=3) == [0, 2, 4]
    assert select_layers(12, num_layers=6) == [0, 2, 4, 6, 8, 10]
    assert select_layers(6, num_layers=6) == list(range(6))
    assert select_layers(6, layers=[1, 5]) == [1, 5]


@pytest.mark.parametrize("family", FAMILIES)
def test_student_copies_exactly_the_chosen_layers(family):
    teacher = deep_model(family, layers=4)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = make_student(teacher, layers=[1, 3])
    adapter = get_adapter(student)
    assert adapter.num_layers(student) == 2 and adapter.num_layers(teacher) == 4
    assert getattr(student.config, adapter.config_layers) == 2
    for new, old in enumerate([1, 3]):
        s_state = adapter.layer(student, new).state_dict()
        t_state = adapter.layer(teacher, old).state_dict()
        assert s_state.keys() == t_state.keys()
        for key in s_state:
            assert torch.equal(s_state[key], t_state[key]), key
        assert adapter.layer(student, new) is not adapter.layer(teacher, old)  # a copy, not shared
    # everything outside the layers (embeddings, head) is copied as is
    prefix = adapter.layer_prefix(teacher, 0).rsplit(".", 1)[0] + "."
    for key, value in student.state_dict().items():
        if not key.startswith(prefix):
            assert torch.equal(value, teacher.state_dict()[key]), key
    # the teacher is untouched
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert layer_origin(student) == [1, 3]
    # default: every other layer
    assert layer_origin(make_student(teacher, num_layers=2)) == [0, 2]
    assert layer_origin(make_student(teacher)) == [0, 2]


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_reduced_student_saves_and_reloads_as_plain_model(family):
    student = make_student(deep_model(family, layers=4), num_layers=2)
    inputs = tiny_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        student.save_pretrained(tmp)
        reloaded = AutoModelForSequenceClassification.from_pretrained(tmp).eval()
    assert reloaded.config.model_type == family  # a plain model of its family
    assert getattr(reloaded.config, "compression_config", None) is None
    assert get_adapter(reloaded).num_layers(reloaded) == 2
    torch.testing.assert_close(logits(reloaded, inputs), logits(student, inputs), atol=0, rtol=0)


def test_reducing_a_pruned_model_rekeys_its_structure():
    pruning = pytest.importorskip("hf_compress.methods.pruning.surgery")
    from hf_compress.checkpoint.format import record_structure

    model = deep_model("bert", layers=4)
    adapter = get_adapter(model)
    widths = [60, 50, 40, 30]
    for i, width in enumerate(widths):
        pruning.remove_neurons(model, i, list(range(width)))
    pruning.remove_heads(model, 3, [0, 2])
    record_structure(model, "ffn_width", {str(i): w for i, w in enumerate(widths)})
    record_structure(model, "heads", {str(i): adapter.num_heads(model, i) for i in range(4)})
    keep_layers(model, [1, 3])
    structure = model.config.compression_config
    assert structure["ffn_width"] == {"0": 50, "1": 30}
    assert structure["heads"] == {"0": 4, "1": 2}
    assert "layer_dropping" in structure["methods"]
    inputs = tiny_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        reloaded = AutoModelForSequenceClassification.from_pretrained(tmp).eval()
    assert get_adapter(reloaded).ffn_width(reloaded, 1) == 30
    torch.testing.assert_close(logits(reloaded, inputs), logits(model, inputs), atol=1e-6, rtol=0)


def test_shared_layers_cannot_be_dropped():
    from hf_compress.checkpoint.format import record_structure

    model = deep_model(layers=4)
    record_structure(model, "shared_layers", [[0, 1]])  # as layer_sharing records it
    with pytest.raises(UnsupportedModelError, match="later stage"):
        keep_layers(model, [0, 2])


def test_rekey_renames_module_name_entries():
    from hf_compress.methods.distillation.student import _rekey_structure

    structure = {
        "version": 1,
        "methods": ["x"],
        "ranks": {
            "bert.encoder.layer.1.output.dense": 4,
            "bert.encoder.layer.2.output.dense": 8,
            "classifier": 2,
        },
        "int8_linear": [
            "bert.encoder.layer.2.intermediate.dense",
            "bert.encoder.layer.12.output.dense",
        ],
    }
    got = _rekey_structure(structure, [0, 2, 12], "encoder.layer")
    assert got["ranks"] == {"bert.encoder.layer.1.output.dense": 8, "classifier": 2}
    assert got["int8_linear"] == [
        "bert.encoder.layer.1.intermediate.dense",
        "bert.encoder.layer.2.output.dense",
    ]
    assert got["methods"] == ["x"]


# Hidden-state mapping ----------------------------------------------------------------------------
def test_default_layer_map():
    # DistilBERT-style student of layers [0, 2, 4] of 6: each imitates the end of the block it
    # replaces
    assert default_layer_map(3, 6, [0, 2, 4]) == [1, 3, 5]
    assert default_layer_map(2, 4, [1, 3]) == [2, 3]
    assert default_layer_map(2, 4) == [1, 3]  # origin unknown: even blocks
    assert default_layer_map(4, 4) == [0, 1, 2, 3]  # same depth (e.g. a pruned student)


def test_hidden_mapping_uses_mapped_layers():
    teacher = deep_model(layers=4)
    student = copy.deepcopy(teacher)
    modifier, ctx = make_modifier(teacher, student, alpha_hidden=1.0, student={"layers": [0, 2]})
    assert modifier.layer_map == [1, 3] and modifier.projections is None
    # synthetic hidden states: the student equals the teacher exactly at the mapped layers
    teacher_hidden = tuple(torch.randn(2, 5, 32) for _ in range(5))
    student_hidden = (teacher_hidden[0], teacher_hidden[2], teacher_hidden[4])
    assert modifier.mapped_hidden_loss(student_hidden, teacher_hidden, None) < 1e-6
    shifted = (teacher_hidden[0], teacher_hidden[1], teacher_hidden[3])
    assert modifier.mapped_hidden_loss(shifted, teacher_hidden, None) > 0.1
    # an explicit map overrides the default
    explicit, _ = make_modifier(
        teacher,
        copy.deepcopy(teacher),
        alpha_hidden=1.0,
        student={"layers": [0, 2]},
        layer_map=[0, 2],
    )
    assert explicit.layer_map == [0, 2]
    assert explicit.mapped_hidden_loss(shifted, teacher_hidden, None) < 1e-6


def test_hidden_mapping_with_projection_trains_it():
    teacher_config = BertConfig(
        vocab_size=128,
        hidden_size=48,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(teacher_config).eval()
    student = tiny_model("bert")  # hidden 32, 2 layers
    modifier, ctx = make_modifier(
        teacher, copy.deepcopy(student), alpha_hidden=1.0, hidden_loss="mse"
    )
    assert modifier.layer_map == [1, 3]  # 2 student layers over 4 teacher layers
    assert [tuple(p.weight.shape) for p in modifier.projections] == [(48, 32), (48, 32)]
    assert modifier.trainable_modules() == [modifier.projections]
    # resume state round trip (JSON-able lists)
    state = modifier.state_dict()
    fresh, _ = make_modifier(teacher, copy.deepcopy(student), alpha_hidden=1.0, hidden_loss="mse")
    fresh.load_state_dict(__import__("json").loads(__import__("json").dumps(state)))
    torch.testing.assert_close(fresh.projections[1].weight, modifier.projections[1].weight)
    inputs = batch()
    out = student(**inputs, output_hidden_states=True)
    loss = modifier.compute_loss(out.loss, student, inputs, out, ctx)
    assert torch.isfinite(loss)

    # end to end: the trainer's optimizer holds the projections and they learn
    seen = {}
    original_finalize, original_setup = (
        DistillationModifier.on_finalize,
        DistillationModifier._setup_hidden,
    )

    def setup_spy(self, *args):
        original_setup(self, *args)
        seen["before"] = copy.deepcopy(self.projections)

    def finalize_spy(self, model, ctx):
        seen["after"] = copy.deepcopy(self.projections)
        return original_finalize(self, model, ctx)

    DistillationModifier._setup_hidden, DistillationModifier.on_finalize = setup_spy, finalize_spy
    try:
        trainer = run_stage(student, teacher, [{"type": "distillation", "alpha_hidden": 1.0}])
    finally:
        DistillationModifier._setup_hidden, DistillationModifier.on_finalize = (
            original_setup,
            original_finalize,
        )
    assert not torch.equal(seen["after"][0].weight, seen["before"][0].weight)
    assert trainer.model.config.hidden_size == 32


# Teacher ------------------------------------------------------------------------------------------
def test_teacher_gets_no_gradient_in_compute_loss():
    teacher, student = deep_model(layers=2, seed=0), deep_model(layers=2, seed=1)
    teacher.requires_grad_(True)  # even if the caller left it trainable
    modifier, ctx = make_modifier(teacher, student, alpha_hidden=1.0)
    teacher.requires_grad_(True)
    inputs = batch()
    out = student(**inputs, output_hidden_states=True)
    modifier.compute_loss(out.loss, student, inputs, out, ctx).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in student.parameters())
    assert not teacher.training


def test_teacher_weights_do_not_change_during_training():
    teacher = deep_model(layers=4)
    frozen = copy.deepcopy(teacher.state_dict())
    student = copy.deepcopy(teacher)
    predictions = []

    def metrics(prediction):  # evaluation between steps sees the logits only, not hidden states
        predictions.append(prediction.predictions)
        return {}

    trainer = run_stage(
        student,
        teacher,
        [{"type": "distillation", "alpha_hidden": 1.0, "student": {"num_layers": 2}}],
        trainer_kwargs={"eval_dataset": tiny_dataset(n=8, seed=5), "compute_metrics": metrics},
        eval_strategy="steps",
        eval_steps=2,
    )
    assert predictions and all(getattr(p, "shape", None) == (8, 2) for p in predictions)
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    assert not teacher.training
    assert all(p.grad is None for p in teacher.parameters())
    assert get_adapter(trainer.model).num_layers(trainer.model) == 2
    # the student did train
    summary = trainer.stage_summaries[0]["modifiers"][0]
    assert summary["student_layers"] == [0, 2] and summary["layer_map"] == [1, 3]
    assert set(summary["mean_weighted_losses"]) == {"kd", "ce", "hidden"}


# Cache --------------------------------------------------------------------------------------------
def test_cache_gives_the_same_loss_and_survives_shuffling_and_padding():
    teacher, student = deep_model(layers=2, seed=0), deep_model(layers=2, seed=1)
    cached, ctx = make_modifier(teacher, student, cache_teacher_logits=True)
    plain, _ = make_modifier(teacher, student)
    student.train()  # the cache serves training batches
    inputs = batch()
    out = student(**inputs)
    first = cached.compute_loss(out.loss, student, inputs, out, ctx)
    torch.testing.assert_close(first, plain.compute_loss(out.loss, student, inputs, out, ctx))
    # the same examples, reordered and padded further: all served from the cache
    order = torch.tensor([2, 0, 3, 1])
    pad = torch.zeros(4, 3, dtype=torch.long)
    shuffled = {
        "input_ids": torch.cat([inputs["input_ids"][order], pad], dim=1),
        "attention_mask": torch.cat([inputs["attention_mask"][order], pad], dim=1),
        "labels": inputs["labels"][order],
    }
    out2 = student(**shuffled)
    second = cached.compute_loss(out2.loss, student, shuffled, out2, ctx)
    assert cached.summary()["teacher_cache"] == {"hits": 4, "misses": 4}
    # a dataset's own `idx` column, when present, is the key
    assert DistillationModifier._cache_keys({"idx": torch.tensor([7, 3])}) == [
        ("idx", 7),
        ("idx", 3),
    ]
    torch.testing.assert_close(
        second, plain.compute_loss(out2.loss, student, shuffled, out2, ctx), atol=1e-5, rtol=0
    )


def test_cache_trains_the_same_student_as_no_cache():
    teacher = deep_model(layers=2, seed=0)
    results = []
    for cache in (False, True):
        student = deep_model(layers=2, seed=1)
        trainer = run_stage(
            student, teacher, [{"type": "distillation", "cache_teacher_logits": cache}], epochs=2
        )
        results.append((trainer.model, trainer.stage_summaries[0]["modifiers"][0]))
    (plain, _), (cached, summary) = results
    assert summary["teacher_cache"]["hits"] == 32  # the second epoch came from the cache
    for (name, a), b in zip(plain.state_dict().items(), cached.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=name)


# Combined with pruning ----------------------------------------------------------------------------
def test_distillation_with_pruning_in_the_same_stage():
    pytest.importorskip("hf_compress.methods.pruning.modifier")
    teacher = deep_model(layers=4)
    student = copy.deepcopy(teacher)
    trainer = run_stage(
        student,
        teacher,
        [
            {"type": "distillation", "alpha_hidden": 1.0, "student": {"num_layers": 2}},
            {
                "type": "ffn_pruning",
                "sparsity": 0.5,
                "importance": "magnitude",
                "end": 0.5,
                "update_every": 1,
            },
        ],
    )
    model = trainer.model.eval()
    adapter = get_adapter(model)
    assert adapter.num_layers(model) == 2
    assert sum(adapter.ffn_width(model, i) for i in range(2)) == 64  # half of 2 x 64
    assert adapter.ffn_width(teacher, 0) == 64  # the teacher stays whole
    inputs = tiny_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        reloaded = AutoModelForSequenceClassification.from_pretrained(tmp).eval()
    torch.testing.assert_close(logits(reloaded, inputs), logits(model, inputs), atol=1e-5, rtol=0)


def test_layer_reduction_after_another_modifier_is_refused():
    pytest.importorskip("hf_compress.methods.pruning.modifier")
    teacher = deep_model(layers=4)
    with pytest.raises(RecipeError, match="list it first"):
        run_stage(
            copy.deepcopy(teacher),
            teacher,
            [
                {"type": "ffn_pruning", "sparsity": 0.5, "importance": "magnitude"},
                {"type": "distillation", "student": {"num_layers": 2}},
            ],
        )


def test_layer_dropping_without_teacher():
    model = deep_model("distilbert", layers=4)
    trainer = run_stage(model, None, [{"type": "layer_dropping", "num_layers": 2}], epochs=0)
    assert get_adapter(trainer.model).num_layers(trainer.model) == 2
    assert trainer.model.distilbert.transformer.n_layers == 2
    assert trainer.stage_summaries[0]["modifiers"][0]["kept_layers"] == [0, 2]


# Errors -------------------------------------------------------------------------------------------
def recipe_with(modifier: dict) -> Recipe:
    return Recipe.from_dict(
        {
            "base_model": "tiny",
            "task": "sst2",
            "teacher": "t",
            "output_dir": "o",
            "stages": [{"name": "s", "epochs": 1, "modifiers": [modifier]}],
        }
    )


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"alpha_hidden": 1.0, "layer_map": [2, 1]}, "increasing order"),
        ({"alpha_hidden": 1.0, "layer_map": [1, 1]}, "increasing order"),
        ({"alpha_hidden": 1.0, "layer_map": [-1, 1]}, "negative"),
        ({"layer_map": [0, 1]}, "alpha_hidden"),
        ({"alpha_hidden": 1.0, "layer_map": [0, 1], "student": {"num_layers": 3}}, "3 layers"),
        ({"student": {"layers": [2, 0]}}, "increasing order"),
        ({"student": {}}, "exactly one"),
        ({"student": {"num_layers": 2, "layers": [0, 1]}}, "exactly one"),
        ({"alpha_kd": 0.0, "alpha_ce": 0.0}, "nothing would be trained"),
        ({"cache_teacher_logits": True, "alpha_hidden": 1.0}, "cache_teacher_logits"),
        ({"hidden_loss": "l1"}, "allowed values"),
        ({"temperature": 0}, "out of range"),
    ],
)
def test_bad_configs_are_rejected(keys, message):
    with pytest.raises(RecipeError, match=message):
        recipe_with({"type": "distillation", **keys})


def test_distillation_needs_a_teacher_and_training_stage():
    with pytest.raises(RecipeError, match="needs a teacher"):
        Recipe.from_dict(
            {
                "base_model": "x",
                "task": "sst2",
                "output_dir": "o",
                "stages": [{"name": "s", "epochs": 1, "modifiers": [{"type": "distillation"}]}],
            }
        )
    with pytest.raises(RecipeError, match="training stage"):
        Recipe.from_dict(
            {
                "base_model": "x",
                "task": "sst2",
                "output_dir": "o",
                "teacher": "t",
                "stages": [{"name": "s", "epochs": 0, "modifiers": [{"type": "distillation"}]}],
            }
        )


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"alpha_hidden": 1.0, "layer_map": [1, 5]}, "teacher has 4 layers"),
        ({"alpha_hidden": 1.0, "layer_map": [1, 2, 3]}, "student has 2 layers"),
        ({"student": {"layers": [0, 4]}}, "has 4 layers"),
        ({"student": {"num_layers": 5}}, "only 4 layers"),
    ],
)
def test_layer_maps_that_do_not_fit_are_rejected(keys, message):
    teacher = deep_model(layers=4)
    student = deep_model(layers=2) if "student" not in keys else copy.deepcopy(teacher)
    with pytest.raises(RecipeError, match=message):
        make_modifier(teacher, student, **keys)


def test_mismatched_teacher_is_rejected():
    teacher = deep_model(layers=2)
    with pytest.raises(UnsupportedModelError, match="student has 3"):
        make_modifier(teacher, deep_model(layers=2, num_labels=3))
    named = deep_model(layers=2)
    named.config.id2label = {0: "negative", 1: "positive"}
    other = deep_model(layers=2)
    other.config.id2label = {0: "positive", 1: "negative"}
    with pytest.raises(UnsupportedModelError, match="label sets must match"):
        make_modifier(named, other)
    make_modifier(named, deep_model(layers=2))  # generic LABEL_i names do not conflict
    big_vocab = BertForSequenceClassification(
        BertConfig(
            vocab_size=200,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    )
    with pytest.raises(UnsupportedModelError, match="tokenizer"):
        make_modifier(big_vocab, deep_model(layers=2))
    with pytest.raises(RecipeError, match="separate copy"):
        make_modifier(teacher, teacher)


def test_missing_teacher_at_runtime_is_explained():
    modifier = DistillationModifier(build(DistillationConfig, {}, "test"))
    with pytest.raises(RecipeError, match="teacher="):
        modifier.on_initialize(deep_model(layers=2), StageContext(stage=Stage(name="s", epochs=1)))


# Shipped recipes ----------------------------------------------------------------------------------
RECIPES = __import__("pathlib").Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize("task", ["sst2", "rte"])
def test_shipped_recipe_pair_is_a_fair_comparison(task):
    distill = Recipe.from_yaml(RECIPES / f"minilm-{task}-distill-3layer.yaml")
    control = Recipe.from_yaml(RECIPES / f"minilm-{task}-3layer-no-distill.yaml")
    assert distill.task == control.task == task
    (d_stage,), (c_stage,) = distill.stages, control.stages
    (d_mod,), (c_mod,) = d_stage.modifiers, c_stage.modifiers
    assert (d_mod.type, c_mod.type) == ("distillation", "layer_dropping")
    # the same student, data, steps and optimizer; only the loss differs
    assert d_mod.config.student.num_layers == c_mod.config.num_layers == 3
    assert d_stage.epochs == c_stage.epochs and d_stage.training == c_stage.training
    assert distill.data == control.data and distill.training == control.training
    assert distill.finetune_base == control.finetune_base and distill.seed == control.seed
    assert distill.output_dir != control.output_dir
    assert d_mod.config.temperature == 2.0 and 0.5 <= d_mod.config.alpha_kd <= 0.9
    assert d_mod.config.alpha_hidden > 0 and d_mod.config.hidden_loss == "cosine"


def test_evaluation_between_steps_skips_hidden_states():
    teacher, student = deep_model(layers=2, seed=0), deep_model(layers=2, seed=1)
    modifier, ctx = make_modifier(teacher, student, alpha_kd=0.5, alpha_ce=0.5, alpha_hidden=1.0)
    assert modifier.forward_kwargs() == {"output_hidden_states": True}
    modifier.on_step_begin(student, ctx)
    assert modifier.forward_kwargs() == {"output_hidden_states": True}
    modifier.on_step_end(student, ctx)
    assert modifier.forward_kwargs() == {}
    inputs = batch()
    out = student(**inputs)  # eval mode, no hidden states: logit terms only
    got = modifier.compute_loss(out.loss, student, inputs, out, ctx)
    expected = (
        0.5 * soft_target_loss(out.logits, logits(teacher, tiny_inputs(batch=4, seed=3)), 2.0)
        + 0.5 * out.loss
    )
    torch.testing.assert_close(got, expected)
    student.train()
    with pytest.raises(RuntimeError, match="forward_kwargs"):
        modifier.compute_loss(out.loss, student, inputs, out, ctx)
