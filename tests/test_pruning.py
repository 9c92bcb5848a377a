"""Pruning: structured (heads, FFN neurons) and unstructured (magnitude) pruning on tiny models."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import (
    FAMILIES,
    load_script,
    logits,
    tiny_dataset,
    tiny_inputs,
    tiny_model,
    tiny_tokenizer,
    tiny_training_args,
)
from transformers import AutoModelForSequenceClassification

import hf_compress
from hf_compress import CompressionTrainer, Recipe, RecipeError, UnsupportedModelError, compress
from hf_compress.architectures.base import get_adapter
from hf_compress.evaluation.measure import count_parameters, saved_size_bytes
from hf_compress.methods.modifier import StageContext, cubic_schedule
from hf_compress.methods.pruning.importance import choose_units
from hf_compress.methods.pruning.layers import EmptyAttention, SparseLinear, pack_mask, unpack_mask

REPO = Path(__file__).resolve().parents[1]
HIDDEN, HEADS, HEAD_SIZE, FFN, LAYERS = 32, 4, 8, 64, 2


def batches(n: int = 32, size: int = 8):
    """A calibration loader over the tiny data set (a callable, like
    `StageContext.train_dataloader`)."""
    data = tiny_dataset(n)

    def loader():
        for start in range(0, n, size):
            yield {k: torch.tensor(v) for k, v in data[start : start + size].items()}

    return loader


def recipe_stage(entries: list[dict], epochs: float = 0.0):
    recipe = Recipe.from_dict(
        {
            "base_model": "tiny",
            "task": "sst2",
            "output_dir": "unused",
            "stages": [{"name": "s", "epochs": epochs, "modifiers": entries}],
        }
    )
    return recipe.stages[0]


def reload(model):
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return AutoModelForSequenceClassification.from_pretrained(tmp).eval()


def layer_modules(model, i):
    adapter = get_adapter(model)
    layer = adapter.layer(model, i)
    return {
        name: adapter.get(layer, getattr(adapter, name))
        for name in ("query", "key", "value", "attention_output", "ffn_in", "ffn_out")
    }


def plant_dead_head(model, layer: int, head: int) -> None:
    """Zeroes a head's value rows and output-projection columns: it then contributes nothing."""
    mods = layer_modules(model, layer)
    cols = slice(head * HEAD_SIZE, (head + 1) * HEAD_SIZE)
    with torch.no_grad():
        mods["value"].weight[cols] = 0
        mods["value"].bias[cols] = 0
        mods["attention_output"].weight[:, cols] = 0


def plant_dead_neuron(model, layer: int, neuron: int) -> None:
    with torch.no_grad():
        layer_modules(model, layer)["ffn_out"].weight[:, neuron] = 0


# Structured pruning: heads -----------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_heads_physically_removed_and_reload(family):
    model = tiny_model(family)
    total_before = count_parameters(model)[0]
    model = compress(model, [{"type": "head_pruning", "count": 3, "importance": "magnitude"}])
    adapter = get_adapter(model)
    heads = [adapter.num_heads(model, i) for i in range(LAYERS)]
    assert sum(heads) == 2 * HEADS - 3 and min(heads) >= 1
    for i, n in enumerate(heads):
        mods = layer_modules(model, i)
        for name in ("query", "key", "value"):
            assert mods[name].weight.shape == (n * HEAD_SIZE, HIDDEN)
        assert mods["attention_output"].weight.shape == (HIDDEN, n * HEAD_SIZE)
    # each head: q/k/v rows (3 x (32 x 8 + 8)) and 8 output columns (32 x 8)
    assert count_parameters(model)[0] == total_before - 3 * (
        3 * (HIDDEN * HEAD_SIZE + HEAD_SIZE) + HIDDEN * HEAD_SIZE
    )
    assert model.config.compression_config["heads"] == {str(i): n for i, n in enumerate(heads)}
    inputs = tiny_inputs()
    reloaded = reload(model)
    assert [get_adapter(reloaded).num_heads(reloaded, i) for i in range(LAYERS)] == heads
    torch.testing.assert_close(logits(reloaded, inputs), logits(model, inputs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("importance", ["taylor", "magnitude"])
def test_planted_dead_head_is_removed_first(family, importance):
    model = tiny_model(family)
    plant_dead_head(model, layer=1, head=2)
    kept_value_rows = (
        layer_modules(model, 1)["value"].weight[[*range(0, 16), *range(24, 32)]].detach().clone()
    )
    before = logits(model, tiny_inputs())
    model = compress(
        model,
        [{"type": "head_pruning", "count": 1, "importance": importance}],
        calibration_data=batches(),
    )
    adapter = get_adapter(model)
    assert [adapter.num_heads(model, i) for i in range(LAYERS)] == [HEADS, HEADS - 1]
    # heads 0, 1, 3 of layer 1 are the ones left, and the model computes the same function
    torch.testing.assert_close(layer_modules(model, 1)["value"].weight, kept_value_rows)
    torch.testing.assert_close(logits(model, tiny_inputs()), before, atol=1e-5, rtol=0)


def test_taylor_score_of_a_dead_head_is_zero():
    model = tiny_model("bert")
    plant_dead_head(model, layer=0, head=1)
    stage = recipe_stage([{"type": "head_pruning", "count": 1}])
    modifier = stage.modifiers[0].build()
    modifier.layers, modifier.units_before = [0, 1], {0: HEADS, 1: HEADS}
    modifier.gate_units = dict(modifier.units_before)
    scores = modifier._taylor_on_calibration(
        model, StageContext(stage=stage, train_dataloader=batches())
    )
    assert scores[0][1] == 0 and (scores[0][[0, 2, 3]] > 0).all() and (scores[1] > 0).all()
    assert all(
        p.grad is None for p in model.parameters()
    )  # scoring leaves the training grads alone


def test_head_scope_layer_and_min_keep():
    model = compress(
        tiny_model("bert"),
        [{"type": "head_pruning", "count": 2, "scope": "layer", "importance": "magnitude"}],
    )
    assert model.config.compression_config["heads"] == {"0": 2, "1": 2}
    model = compress(
        tiny_model("bert"), [{"type": "head_pruning", "sparsity": 0.99, "importance": "magnitude"}]
    )
    assert model.config.compression_config["heads"] == {
        "0": 1,
        "1": 1,
    }  # at least one head per layer
    with pytest.raises(RecipeError, match="count 7"):
        compress(
            tiny_model("bert"), [{"type": "head_pruning", "count": 7, "importance": "magnitude"}]
        )
    with pytest.raises(RecipeError, match="layer 0"):
        compress(
            tiny_model("bert"),
            [{"type": "head_pruning", "count": 4, "scope": "layer", "importance": "magnitude"}],
        )


def test_head_targets_select_layers():
    model = compress(
        tiny_model("bert"),
        [{"type": "head_pruning", "count": 3, "importance": "magnitude", "targets": ["layer.1"]}],
    )
    assert model.config.compression_config["heads"] == {"0": HEADS, "1": 1}


@pytest.mark.parametrize("family", FAMILIES)
def test_allow_empty_layers_removes_a_whole_attention_block(family):
    model = tiny_model(family)
    for head in range(HEADS):
        plant_dead_head(model, layer=0, head=head)
    inputs = tiny_inputs()
    before = logits(model, inputs)
    kept_one = compress(
        copy.deepcopy(model), [{"type": "head_pruning", "count": 4, "importance": "magnitude"}]
    )
    assert kept_one.config.compression_config["heads"] == {
        "0": 1,
        "1": HEADS - 1,
    }  # one kept, one more elsewhere
    model = compress(
        model,
        [
            {
                "type": "head_pruning",
                "count": 4,
                "importance": "magnitude",
                "allow_empty_layers": True,
            }
        ],
    )
    adapter = get_adapter(model)
    assert model.config.compression_config["heads"] == {"0": 0, "1": HEADS}
    assert isinstance(adapter.get(adapter.layer(model, 0), adapter.attention), EmptyAttention)
    torch.testing.assert_close(logits(model, inputs), before, atol=1e-5, rtol=0)
    reloaded = reload(model)
    assert isinstance(adapter.get(adapter.layer(reloaded, 0), adapter.attention), EmptyAttention)
    torch.testing.assert_close(logits(reloaded, inputs), before, atol=1e-5, rtol=0)


# Structured pruning: FFN --------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_ffn_neurons_removed_planted_first_and_reload(family):
    model = tiny_model(family)
    plant_dead_neuron(model, layer=0, neuron=5)
    total_before = count_parameters(model)[0]
    inputs = tiny_inputs()
    before = logits(model, inputs)
    model = compress(model, [{"type": "ffn_pruning", "count": 1}], calibration_data=batches())
    mods = layer_modules(model, 0)
    assert mods["ffn_in"].weight.shape == (FFN - 1, HIDDEN) and mods["ffn_out"].weight.shape == (
        HIDDEN,
        FFN - 1,
    )
    assert layer_modules(model, 1)["ffn_in"].out_features == FFN
    assert count_parameters(model)[0] == total_before - (2 * HIDDEN + 1)
    torch.testing.assert_close(
        logits(model, inputs), before, atol=1e-5, rtol=0
    )  # only the dead neuron went

    model = compress(
        model,
        [{"type": "ffn_pruning", "sparsity": 0.5, "scope": "layer", "importance": "magnitude"}],
    )
    assert model.config.compression_config["ffn_width"] == {
        "0": 31,
        "1": 32,
    }  # half of 63 rounds up
    assert model.config.compression_config["methods"] == ["ffn_pruning"]
    torch.testing.assert_close(
        logits(reload(model), inputs), logits(model, inputs), atol=1e-5, rtol=0
    )


def test_choose_units_global_normalized_and_monotone():
    scores = {0: torch.tensor([1.0, 2.0, 3.0]), 1: torch.tensor([10.0, 20.0, 30.0])}
    alive = {0: torch.ones(3, dtype=torch.bool), 1: torch.ones(3, dtype=torch.bool)}
    raw = choose_units(scores, alive, 2, min_keep=1)
    assert raw[0].tolist() == [False, False, True] and raw[1].all()
    normalized = choose_units(scores, alive, 2, min_keep=1, normalize=True)
    assert normalized[0].tolist() == [False, True, True] and normalized[1].tolist() == [
        False,
        True,
        True,
    ]
    grown = choose_units({0: torch.tensor([9.0, 0.0, 0.0]), 1: scores[1]}, raw, 3, min_keep=1)
    assert grown[0].tolist() == [False, False, True]  # pruned units are never revived
    assert grown[1].tolist() == [False, True, True]


# Gradual schedules --------------------------------------------------------------------------------
def _train_steps(model, modifier, ctx, steps: int, on_step=None, weight_decay: float = 0.1):
    """A minimal training loop calling the hooks the way ModifierCallback does."""
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=weight_decay
    )
    data = list(batches()())
    model.train()
    for step in range(1, steps + 1):
        loss = model(**data[step % len(data)]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        ctx.step = step
        modifier.on_step_end(model, ctx)
        if on_step is not None:
            on_step(step)
    model.eval()


@pytest.mark.parametrize("importance", ["taylor", "magnitude"])
def test_gradual_head_pruning_follows_the_cubic_schedule(importance):
    model = tiny_model("distilbert", attention_dropout=0.0, dropout=0.0)
    entry = {
        "type": "head_pruning",
        "count": 4,
        "importance": importance,
        "start": 0.2,
        "end": 0.6,
        "update_every": 1,
    }
    stage = recipe_stage([entry], epochs=1)
    modifier = stage.modifiers[0].build()
    ctx = StageContext(stage=stage, train_dataloader=batches(), total_steps=20)
    modifier.on_initialize(model, ctx)
    assert get_adapter(model).num_heads(model, 0) == HEADS  # masked while training, not removed yet
    seen = {}
    _train_steps(
        model, modifier, ctx, 20, on_step=lambda s: seen.setdefault(s, modifier._pruned_now())
    )
    expected = {s: int(cubic_schedule(s / 20, 0.2, 0.6, 1.0) * 4 + 0.5) for s in range(1, 21)}
    assert seen == expected
    assert seen[4] == 0 and 0 < seen[5] < 4 and seen[12] == 4
    inputs = tiny_inputs()
    masked = logits(model, inputs)
    modifier.on_finalize(model, ctx)
    # masked heads contributed nothing, so removing them changes nothing
    assert sum(get_adapter(model).num_heads(model, i) for i in range(LAYERS)) == 2 * HEADS - 4
    assert not any(m._forward_pre_hooks for m in model.modules())
    torch.testing.assert_close(logits(model, inputs), masked, atol=1e-5, rtol=0)
    summary = modifier.summary()
    assert summary["mode"] == "gradual" and summary["removed"] == 4
    assert summary["schedule"][-1][1] == 4


def test_gradual_ffn_pruning_in_the_trainer_reaches_its_target():
    model = tiny_model("bert")
    entries = [
        {"type": "ffn_pruning", "sparsity": 0.25, "scope": "layer", "end": 0.5, "update_every": 1},
        {
            "type": "head_pruning",
            "sparsity": 0.5,
            "importance": "magnitude",
            "end": 0.5,
            "update_every": 2,
        },
    ]
    recipe = Recipe.from_dict(
        {
            "base_model": "tiny",
            "task": "sst2",
            "output_dir": "unused",
            "stages": [{"name": "s", "epochs": 2, "modifiers": entries}],
        }
    )
    args = tiny_training_args()
    trainer = CompressionTrainer(
        model=model, args=args, recipe=recipe, train_dataset=tiny_dataset()
    )
    trainer.train()
    ffn, heads = trainer.stage_summaries[0]["modifiers"]
    assert ffn["neurons_after"] == {"0": 48, "1": 48} and heads["removed"] == 4
    # 8 steps, pruning until step 4: a schedule entry wherever the cubic target grew
    targets = [2 * int(cubic_schedule(s / 8, 0.0, 0.5, 1.0) * 16 + 0.5) for s in range(9)]
    expected = [[s, t] for s, t in enumerate(targets) if s == 0 or t > targets[s - 1]]
    assert ffn["schedule"] == expected and expected[-1] == [3, 32]
    assert trainer.model.config.compression_config["ffn_width"] == {"0": 48, "1": 48}
    inputs = tiny_inputs()
    model = trainer.model.eval()
    torch.testing.assert_close(
        logits(reload(model), inputs), logits(model, inputs), atol=1e-5, rtol=0
    )


# Unstructured magnitude pruning -----------------------------------------------------------------
def test_pack_mask_matches_numpy_packbits():
    mask = torch.rand(7, 13, generator=torch.Generator().manual_seed(0)) > 0.6
    packed = pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (7 * 13 + 7) // 8
    assert packed.numpy().tolist() == np.packbits(mask.numpy().reshape(-1)).tolist()
    assert torch.equal(unpack_mask(packed, 7 * 13).view(7, 13), mask)


@pytest.mark.parametrize("family", FAMILIES)
def test_magnitude_pruning_oneshot_sparse_checkpoint(family):
    model = tiny_model(family)
    dense = copy.deepcopy(model)
    dense_logits = logits(dense, tiny_inputs())
    model = compress(model, [{"type": "magnitude_pruning", "sparsity": 0.8}])
    sparse = {n: m for n, m in model.named_modules() if isinstance(m, SparseLinear)}
    assert len(sparse) == 6 * LAYERS  # q, k, v, attention output, FFN in, FFN out
    assert not any("classifier" in n or "pooler" in n or "embeddings" in n for n in sparse)
    for name, module in sparse.items():
        assert module.sparsity == pytest.approx(0.8, abs=1 / module.in_features)
        # the kept weights are the largest-magnitude ones of the dense layer
        original = dense.get_submodule(name).weight.detach().abs()
        kept = original[module.mask()]
        assert kept.min() >= original[~module.mask()].max()
    assert model.config.compression_config["sparse_linear"] == {n: m.nnz for n, m in sparse.items()}
    assert not torch.allclose(logits(model, tiny_inputs()), dense_logits)
    total, nonzero = count_parameters(model)
    assert total == count_parameters(dense)[0] and nonzero < 0.6 * total
    # bytes on disk fall with sparsity: values (fp32) + 1 bit per weight instead of 4 bytes
    assert saved_size_bytes(model) < 0.6 * saved_size_bytes(dense)
    inputs = tiny_inputs()
    reloaded = reload(model)
    assert {n for n, m in reloaded.named_modules() if isinstance(m, SparseLinear)} == set(sparse)
    torch.testing.assert_close(logits(reloaded, inputs), logits(model, inputs), atol=1e-5, rtol=0)
    weight = reloaded.get_submodule(next(iter(sparse))).dense_weight()
    assert float((weight == 0).float().mean()) == pytest.approx(0.8, abs=0.02)


def test_magnitude_pruning_global_scope_and_bf16_reload():
    model = compress(
        tiny_model("bert"), [{"type": "magnitude_pruning", "sparsity": 0.7, "scope": "global"}]
    )
    sparse = [m for m in model.modules() if isinstance(m, SparseLinear)]
    total = sum(m.in_features * m.out_features for m in sparse)
    assert sum(m.nnz for m in sparse) == total - int(0.7 * total + 0.5)
    assert len({round(m.sparsity, 3) for m in sparse}) > 1  # ranked across layers, not per layer
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        half = AutoModelForSequenceClassification.from_pretrained(tmp, dtype=torch.bfloat16).eval()
    module = next(m for m in half.modules() if isinstance(m, SparseLinear))
    assert module.values.dtype == torch.bfloat16 and module.mask_packed.dtype == torch.uint8
    torch.testing.assert_close(
        logits(half, tiny_inputs()).float(), logits(model, tiny_inputs()), atol=0.05, rtol=0
    )


def test_magnitude_masks_survive_optimizer_steps_and_follow_the_schedule():
    model = tiny_model("roberta")
    entry = {
        "type": "magnitude_pruning",
        "sparsity": 0.9,
        "start": 0.0,
        "end": 0.5,
        "update_every": 2,
    }
    stage = recipe_stage([entry], epochs=1)
    modifier = stage.modifiers[0].build()
    ctx = StageContext(stage=stage, total_steps=12)
    modifier.on_initialize(model, ctx)
    assert modifier.current == 0.0
    first = dict(modifier.modules)
    start = {n: m.weight.detach().clone() for n, m in first.items()}

    def check(step):
        for name, linear in first.items():
            assert (linear.weight[modifier.pruned[name]] == 0).all(), (
                f"pruned weights moved at step {step}"
            )
        updated = step % 2 == 0 or step / 12 >= 0.5
        if updated:
            # every layer sits exactly at the schedule's sparsity at the update steps
            expected = cubic_schedule(step / 12, 0.0, 0.5, 0.9)
            for mask in modifier.pruned.values():
                assert int(mask.sum()) == int(expected * mask.numel() + 0.5)

    _train_steps(model, modifier, ctx, 12, on_step=check, weight_decay=0.5)
    assert modifier.current == pytest.approx(0.9, abs=0.01)
    assert any(
        not torch.equal(start[n], m.weight) for n, m in first.items()
    )  # the kept weights trained
    modifier.on_finalize(model, ctx)
    summary = modifier.summary()
    assert set(summary["layer_sparsity"]) == set(first)
    assert all(v == pytest.approx(0.9, abs=0.01) for v in summary["layer_sparsity"].values())

    # A later training stage trains the kept values of SparseLinear; the zeros stay zeros.
    module = next(m for m in model.modules() if isinstance(m, SparseLinear))
    mask, values = module.mask().clone(), module.values.detach().clone()
    _train_steps(model, type("NoOp", (), {"on_step_end": lambda *a: None})(), ctx, 2)
    assert not torch.equal(module.values.detach(), values)
    assert torch.equal(module.mask(), mask) and (module.dense_weight()[~mask] == 0).all()


def test_magnitude_pruning_continues_from_an_earlier_stage():
    model = compress(tiny_model("bert"), [{"type": "magnitude_pruning", "sparsity": 0.5}])
    first = {n: m.mask().clone() for n, m in model.named_modules() if isinstance(m, SparseLinear)}
    model = compress(model, [{"type": "magnitude_pruning", "sparsity": 0.75}])
    for name, module in model.named_modules():
        if isinstance(module, SparseLinear):
            assert module.sparsity == pytest.approx(0.75, abs=0.01)
            assert not (module.mask() & ~first[name]).any()  # pruned weights stay pruned
    torch.testing.assert_close(
        logits(reload(model), tiny_inputs()), logits(model, tiny_inputs()), atol=1e-5, rtol=0
    )


def test_structured_then_magnitude_pruning_reload():
    model = compress(
        tiny_model("bert"), [{"type": "head_pruning", "count": 2, "importance": "magnitude"}]
    )
    model = compress(model, [{"type": "ffn_pruning", "sparsity": 0.5, "importance": "magnitude"}])
    model = compress(model, [{"type": "magnitude_pruning", "sparsity": 0.6}])
    assert set(model.config.compression_config) >= {"heads", "ffn_width", "sparse_linear"}
    torch.testing.assert_close(
        logits(reload(model), tiny_inputs()), logits(model, tiny_inputs()), atol=1e-5, rtol=0
    )
    with pytest.raises(UnsupportedModelError, match="before magnitude pruning"):
        compress(model, [{"type": "head_pruning", "count": 1, "importance": "magnitude"}])


# Bad configurations -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "head_pruning", "sparsity": 1.0}, "out of range"),
        ({"type": "ffn_pruning", "sparsity": 0.5, "count": 3}, "exactly one of"),
        ({"type": "head_pruning"}, "exactly one of"),
        ({"type": "head_pruning", "count": 0}, "out of range"),
        ({"type": "head_pruning", "sparsity": 0.5, "importance": "fisher"}, "allowed values"),
        ({"type": "ffn_pruning", "sparsity": 0.5, "allow_empty_layers": True}, "unknown key"),
        ({"type": "magnitude_pruning", "sparsity": 1.0}, "out of range"),
        ({"type": "magnitude_pruning"}, "required"),
        ({"type": "magnitude_pruning", "sparsity": 0.5, "scope": "row"}, "allowed values"),
    ],
)
def test_bad_configs_are_recipe_errors(entry, message):
    with pytest.raises(RecipeError, match=message):
        recipe_stage([entry])


def test_runtime_misuse_is_a_clear_error():
    with pytest.raises(RecipeError, match="taylor"):  # asked for, without calibration data
        compress(
            tiny_model("bert"), [{"type": "head_pruning", "sparsity": 0.5, "importance": "taylor"}]
        )
    with pytest.raises(RecipeError, match="labels"):
        unlabeled = [{"input_ids": tiny_inputs()["input_ids"]}]
        compress(
            tiny_model("bert"),
            [{"type": "ffn_pruning", "sparsity": 0.5}],
            calibration_data=unlabeled,
        )
    with pytest.raises(RecipeError, match="share a stage"):
        compress(
            tiny_model("bert"),
            [
                {"type": "ffn_pruning", "count": 1, "importance": "magnitude"},
                {"type": "magnitude_pruning", "sparsity": 0.5},
            ],
        )


# Recipes and the head importance script -----------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "minilm-sst2-prune-heads-ffn-50-gradual",
        "minilm-sst2-magnitude-80",
        "minilm-sst2-magnitude-80-distill",
        "minilm-sst2-magnitude-90",
    ],
)
def test_shipped_gradual_recipes_validate(name):
    recipe = Recipe.from_yaml(REPO / "recipes" / f"{name}.yaml")
    assert recipe.output_dir == f"outputs/{name}"
    assert all(stage.trains for stage in recipe.stages)
    types = [spec.type for spec in recipe.stages[0].modifiers]
    expected = ["head_pruning", "ffn_pruning"] if "heads" in name else ["magnitude_pruning"]
    assert types == expected + (["distillation"] if name.endswith("distill") else [])


def test_shipped_one_shot_pruning_recipe_prunes_then_fine_tunes():
    recipe = Recipe.from_yaml(REPO / "recipes" / "minilm-sst2-prune-heads-ffn-50.yaml")
    prune, finetune = recipe.stages
    assert not prune.trains and finetune.trains and finetune.epochs == 2
    assert [spec.type for spec in prune.modifiers] == ["head_pruning", "ffn_pruning"]
    assert all(spec.config.sparsity == 0.5 for spec in prune.modifiers)


def test_head_importance_script_runs_on_a_tiny_model(tmp_path):
    glue = tmp_path / "glue" / "SST-2"
    glue.mkdir(parents=True)
    rows = ["sentence\tlabel"] + [
        f"the movie was {'great' if i % 2 else 'awful'} and fun\t{i % 2}" for i in range(24)
    ]
    for split in ("train", "dev"):
        (glue / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    model_dir = tmp_path / "model"
    tiny_model("bert").save_pretrained(model_dir)
    tiny_tokenizer(tmp_path).save_pretrained(model_dir)
    script = load_script("head_importance_check")
    report = script.main(
        [
            str(model_dir),
            "--glue-dir",
            str(tmp_path / "glue"),
            "--batch-size",
            "8",
            "--calibration-batches",
            "2",
            "--random-seeds",
            "2",
            "--output",
            str(tmp_path / "report.json"),
        ]
    )
    assert (tmp_path / "report.json").is_file()
    for key in ("lowest_taylor", "lowest_magnitude"):
        assert sum(report[key]["heads"].values()) == HEADS  # half of the 8 heads removed
        assert 0.0 <= report[key]["metric"] <= 1.0
    assert len(report["random"]["metrics"]) == 2 and hf_compress.__version__
