"""Decoder language models (Llama, Mistral, Qwen2, Qwen3, GPT-2): every technique that applies to
them compresses a tiny random model whose checkpoint reloads with `AutoModelForCausalLM` to the
same logits and generates the same tokens, with and without the key/value cache."""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset
from tiny import tiny_training_args
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from hf_compress import CompressionTrainer, Recipe, compress
from hf_compress.checkpoint.layout import prepare_layout
from hf_compress.errors import CheckpointError, RecipeError, UnsupportedModelError
from hf_compress.methods.distillation.loss import soft_target_loss
from hf_compress.methods.distillation.student import block_influence

DECODERS = {
    "gpt2": (GPT2Config, GPT2LMHeadModel),
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
}
VOCAB = 128


def tiny_decoder(family: str = "llama", tie: bool = False, layers: int = 4) -> PreTrainedModel:
    """A random decoder; the Llama family with grouped-query attention (6 query heads share 3
    key/value heads), GPT-2 with 6 heads of its own."""
    config_class, model_class = DECODERS[family]
    torch.manual_seed(0)
    if family == "gpt2":
        config = GPT2Config(
            vocab_size=VOCAB,
            n_embd=48,
            n_layer=layers,
            n_head=6,
            n_inner=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=tie,
        )
        return GPT2LMHeadModel(config).eval()
    config = config_class(
        vocab_size=VOCAB,
        hidden_size=48,
        num_hidden_layers=layers,
        num_attention_heads=6,
        num_key_value_heads=3,
        head_dim=8,
        intermediate_size=64,
        pad_token_id=0,
        tie_word_embeddings=tie,
    )
    return model_class(config).eval()


def token_batch(rows: int = 2, length: int = 10, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (rows, length), generator=generator)


def greedy(model: PreTrainedModel, ids: torch.Tensor, use_cache: bool = True) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(
            ids, max_new_tokens=6, do_sample=False, use_cache=use_cache, pad_token_id=0
        )


TECHNIQUES = {
    "head_pruning": [{"type": "head_pruning", "count": 2}],
    "query_head_pruning": [{"type": "head_pruning", "unit": "query_head", "count": 2}],
    "ffn_pruning": [{"type": "ffn_pruning", "sparsity": 0.5}],
    "layer_dropping": [{"type": "layer_dropping", "num_layers": 2}],
    "magnitude_pruning": [{"type": "magnitude_pruning", "sparsity": 0.5}],
    "int8": [{"type": "quantization", "method": "int8_dynamic"}],
    "low_rank": [{"type": "low_rank", "rank_ratio": 0.5}],
    "clustering": [{"type": "weight_clustering", "bits": 4}],
    "layer_sharing": [{"type": "layer_sharing", "groups": [[0, 1], [2, 3]]}],
    "structured_then_int8": [
        {"type": "head_pruning", "count": 1},
        {"type": "ffn_pruning", "sparsity": 0.25},
        {"type": "quantization", "method": "int8_dynamic"},
    ],
}


@pytest.mark.parametrize("family", sorted(DECODERS))
@pytest.mark.parametrize("technique", sorted(TECHNIQUES))
def test_compressed_decoder_reloads_and_generates_the_same(family, technique, tmp_path):
    model = compress(tiny_decoder(family), copy.deepcopy(TECHNIQUES[technique]))
    ids = token_batch()
    with torch.no_grad():
        logits = model(ids).logits
    generated = greedy(model, ids[:1])
    # The key/value cache is keyed by layer position: shared or renumbered layers must still
    # read their own entries.
    assert torch.equal(generated, greedy(model, ids[:1], use_cache=False))

    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, logits, atol=1e-5)
    assert torch.equal(greedy(reloaded, ids[:1]), generated)


def test_gpt2_becomes_linear_layers_without_changing_its_outputs():
    model = tiny_decoder("gpt2")
    ids = token_batch()
    with torch.no_grad():
        before = model(ids).logits
    prepare_layout(model)
    attention = model.transformer.h[0].attn
    assert isinstance(attention.c_attn.query, torch.nn.Linear)
    assert isinstance(model.transformer.h[0].mlp.c_fc, torch.nn.Linear)
    assert model.config.compression_config["layout"] == "gpt2"
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, before, atol=1e-5)


def test_gpt2_head_pruning_narrows_the_split():
    model = compress(tiny_decoder("gpt2", layers=2), [{"type": "head_pruning", "count": 4}])
    heads = model.config.compression_config["heads"]
    assert sum(heads.values()) == 8
    for index, layer in enumerate(model.transformer.h):
        width = heads[str(index)] * 8
        assert layer.attn.split_size == width
        assert layer.attn.c_attn.key.out_features == width
        assert layer.attn.c_proj.in_features == width


def _layer_shapes(model: PreTrainedModel) -> list[tuple[int, int, int]]:
    return [
        (layer.self_attn.q_proj.out_features, layer.self_attn.k_proj.out_features,
         layer.mlp.gate_proj.out_features)
        for layer in model.model.layers
    ]  # fmt: skip


def test_head_pruning_removes_whole_key_value_groups():
    model = compress(tiny_decoder(layers=2), [{"type": "head_pruning", "count": 2}])
    shapes = _layer_shapes(model)
    # 2 of the 6 key/value groups are gone, each with its 2 query heads (head_dim 8).
    assert sum(q for q, _, _ in shapes) == (12 - 4) * 8
    for q_width, kv_width, _ in shapes:
        assert q_width == 2 * kv_width  # every remaining group keeps both of its query heads
    assert sum(model.config.compression_config["heads"].values()) == 8


def test_query_head_pruning_keeps_every_group_and_evens_them():
    model = compress(
        tiny_decoder(layers=2), [{"type": "head_pruning", "unit": "query_head", "count": 1}]
    )
    shapes = _layer_shapes(model)
    # One layer lost one query head in each of its 3 groups; every key/value head stays.
    assert sorted(q for q, _, _ in shapes) == [3 * 8, 6 * 8]
    assert all(kv == 3 * 8 for _, kv, _ in shapes)
    groups = [layer.self_attn.num_key_value_groups for layer in model.model.layers]
    assert sorted(groups) == [1, 2]
    assert model.config.compression_config["kv_heads"] == {"0": 3, "1": 3}


def _nine_query_heads() -> PreTrainedModel:
    torch.manual_seed(0)
    config = LlamaConfig(  # SmolLM2's grouping: 3 query heads share each of 3 key/value heads
        vocab_size=VOCAB,
        hidden_size=72,
        num_hidden_layers=2,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=8,
        intermediate_size=64,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def test_planted_silent_query_heads_are_the_ones_removed_from_their_groups():
    model = _nine_query_heads()
    silent = [1, 5, 6]  # one per group of layer 1 (groups are heads 0-2, 3-5, 6-8)
    with torch.no_grad():
        for head in silent:
            model.model.layers[1].self_attn.o_proj.weight[:, head * 8 : head * 8 + 8] = 0
    ids = token_batch()
    with torch.no_grad():
        before = model(ids).logits
    model = compress(
        model,
        [{"type": "head_pruning", "unit": "query_head", "count": 1, "importance": "magnitude"}],
    )
    assert model.config.compression_config["heads"] == {"0": 9, "1": 6}
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, before, atol=1e-5)


def test_query_heads_then_whole_groups_reload_and_generate_the_same(tmp_path):
    model = compress(
        _nine_query_heads(), [{"type": "head_pruning", "unit": "query_head", "sparsity": 0.5}]
    )
    model = compress(model, [{"type": "head_pruning", "count": 1, "scope": "layer"}])
    config = model.config.compression_config
    assert config["kv_heads"] == {"0": 2, "1": 2}  # re-recorded by the second pruning
    assert all(config["heads"][i] % 2 == 0 and config["heads"][i] < 9 for i in ("0", "1"))
    ids = token_batch()
    with torch.no_grad():
        logits = model(ids).logits
    generated = greedy(model, ids[:1])
    assert torch.equal(generated, greedy(model, ids[:1], use_cache=False))
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, logits, atol=1e-5)
    assert torch.equal(greedy(reloaded, ids[:1]), generated)


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"kv_heads": {"0": 2, "1": 3}}, "each key/value head must be shared"),  # 9 queries, 2 kv
        ({"heads": {}, "kv_heads": {"0": 1, "1": 3}}, "`heads` has no entry"),
    ],
)
def test_an_edited_key_value_head_count_is_a_clear_error(edit, message, tmp_path):
    import json

    model = compress(
        _nine_query_heads(), [{"type": "head_pruning", "unit": "query_head", "count": 1}]
    )
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["compression_config"].update(edit)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):  # past the checksum: edited on purpose
        AutoModelForCausalLM.from_pretrained(tmp_path, verify_checksums=False)


def test_gradual_query_head_pruning_trains_masked_and_removes_at_the_end(tmp_path):
    model = _nine_query_heads()
    ids = token_batch(rows=8, length=12)
    data = Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": [[1] * 12] * 8, "labels": ids.tolist()}
    )
    pruning = {"type": "head_pruning", "unit": "query_head", "count": 2, "end": 0.5}
    recipe = Recipe.from_dict(
        {
            "base_model": "t",
            "task": "sst2",
            "output_dir": "u",
            "stages": [{"name": "p", "epochs": 4, "modifiers": [{**pruning, "update_every": 1}]}],
        },
        source="test",
    )
    trainer = CompressionTrainer(
        model=model,
        args=tiny_training_args(per_device_train_batch_size=4),
        stages=recipe.stages,
        train_dataset=data,
    )
    trainer.train()
    summary = trainer.stage_summaries[0]["modifiers"][0]
    assert summary["mode"] == "gradual" and summary["unit"] == "query_head"
    assert sum(summary["query_heads_after"].values()) == 18 - 2 * 3
    shapes = _layer_shapes(trainer.model)
    assert sum(q for q, _, _ in shapes) == (18 - 6) * 8 and all(kv == 24 for _, kv, _ in shapes)
    trainer.model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(trainer.model.eval()(ids).logits, reloaded(ids).logits)


def test_ffn_pruning_cuts_gate_up_and_down_together():
    model = compress(tiny_decoder(layers=2), [{"type": "ffn_pruning", "sparsity": 0.5}])
    for layer in model.model.layers:
        width = layer.mlp.gate_proj.out_features
        assert layer.mlp.up_proj.out_features == width
        assert layer.mlp.down_proj.in_features == width
    assert sum(layer.mlp.gate_proj.out_features for layer in model.model.layers) == 64


def test_empty_layers_are_refused_for_decoders():
    with pytest.raises(RecipeError, match="allow_empty_layers"):
        compress(
            tiny_decoder(layers=2),
            [{"type": "head_pruning", "count": 3, "allow_empty_layers": True}],
        )


def _make_layer_a_no_op(model: PreTrainedModel, index: int) -> None:
    layer = model.model.layers[index]
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()


def test_block_influence_is_zero_for_a_layer_that_changes_nothing():
    model = tiny_decoder()
    _make_layer_a_no_op(model, 2)
    ids = token_batch()
    influence = block_influence(model, [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}])
    assert influence[2] == pytest.approx(0.0, abs=1e-6)
    assert min(influence[i] for i in (0, 1, 3)) > 1e-3


def test_layer_dropping_by_block_influence_drops_the_idle_layers():
    model = tiny_decoder()
    _make_layer_a_no_op(model, 1)
    _make_layer_a_no_op(model, 2)
    ids = token_batch()
    calibration = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}]
    model = compress(
        model,
        [
            {
                "type": "layer_dropping",
                "num_layers": 2,
                "importance": "block_influence",
                "calibration_batches": 1,
            }
        ],
        calibration_data=calibration,
    )
    assert model.config.num_hidden_layers == 2
    kept_attention = [layer.self_attn.layer_idx for layer in model.model.layers]
    assert kept_attention == [0, 1]  # renumbered for the cache
    assert all(layer.self_attn.o_proj.weight.abs().sum() > 0 for layer in model.model.layers)


def test_block_influence_needs_data():
    with pytest.raises(RecipeError, match="block_influence"):
        compress(
            tiny_decoder(),
            [{"type": "layer_dropping", "num_layers": 2, "importance": "block_influence"}],
        )


def test_tied_embeddings_are_not_quantized():
    with pytest.raises(UnsupportedModelError, match="tied to the output layer"):
        compress(tiny_decoder(tie=True), [{"type": "embedding_quantization"}])


def test_vocabulary_pruning_is_refused_for_language_models():
    with pytest.raises(UnsupportedModelError, match="language-model head"):
        compress(
            tiny_decoder(), [{"type": "vocab_pruning"}], tokenizer=object(), return_tokenizer=True
        )


def test_soft_targets_of_a_language_model_average_over_real_tokens():
    torch.manual_seed(0)
    teacher = torch.randn(2, 5, VOCAB)
    student = teacher.clone()
    mask = torch.ones(2, 5)
    mask[1, 3:] = 0
    assert float(soft_target_loss(student, teacher, 2.0, attention_mask=mask)) == pytest.approx(0.0)
    student[1, 3:] = torch.randn(2, VOCAB)  # padding positions differ: no loss
    assert float(soft_target_loss(student, teacher, 2.0, attention_mask=mask)) == pytest.approx(
        0.0, abs=1e-6
    )
    student[0, 0] = torch.randn(VOCAB)  # one real token differs: its KL over 8 real tokens
    per_token = soft_target_loss(student[:1, :1], teacher[:1, :1], 2.0)
    masked = soft_target_loss(student, teacher, 2.0, attention_mask=mask)
    assert float(masked) == pytest.approx(float(per_token) / 8, rel=1e-5)


def test_a_layer_dropped_decoder_distils_from_its_teacher(tmp_path):
    teacher = tiny_decoder()
    student = copy.deepcopy(teacher)
    ids = token_batch(rows=8, length=12)
    data = Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": [[1] * 12] * 8, "labels": ids.tolist()}
    )
    recipe = Recipe.from_dict(
        {
            "base_model": "tiny",
            "task": "sst2",
            "teacher": "tiny-teacher",
            "output_dir": "unused",
            "stages": [
                {
                    "name": "distil",
                    "epochs": 1,
                    "modifiers": [
                        {"type": "distillation", "student": {"num_layers": 2}, "alpha_hidden": 0}
                    ],
                }
            ],
        },
        source="test",
    )
    trainer = CompressionTrainer(
        model=student,
        args=tiny_training_args(output_dir=str(tmp_path)),
        stages=recipe.stages,
        teacher=teacher,
        train_dataset=data,
    )
    trainer.train()
    assert student.config.num_hidden_layers == 2
    summary = trainer.stage_summaries[0]["modifiers"][0]
    assert summary["student_layers"] == [0, 2]
    assert 0 < summary["mean_weighted_losses"]["kd"] < float("inf")
    generated = greedy(student, ids[:1, :4])
    assert torch.equal(generated, greedy(student, ids[:1, :4], use_cache=False))


def test_a_planted_silent_key_value_group_is_the_one_removed():
    model = tiny_decoder(layers=2)
    attention = model.model.layers[1].self_attn
    with torch.no_grad():  # group 2 of layer 1: its values and its query heads' outputs are zero
        attention.v_proj.weight[16:24] = 0
        attention.o_proj.weight[:, 32:48] = 0
    ids = token_batch()
    with torch.no_grad():
        before = model(ids).logits
    model = compress(model, [{"type": "head_pruning", "count": 1, "importance": "magnitude"}])
    assert model.config.compression_config["heads"] == {"0": 6, "1": 4}
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, before, atol=1e-5)


@pytest.mark.parametrize("method", ["bnb_4bit_nf4", "bnb_8bit"])
def test_bitsandbytes_decoder_reloads_and_generates_the_same(method, tmp_path):
    pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    config = LlamaConfig(  # widths the CPU 4-bit kernel takes (in % 64, out % 32)
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=128,
        pad_token_id=0,
    )
    model = compress(LlamaForCausalLM(config).eval(), [{"type": "quantization", "method": method}])
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = token_batch()
    with torch.no_grad():  # after saving: bitsandbytes repacks CPU 4-bit weights on save
        assert torch.equal(reloaded(ids).logits, model(ids).logits)
    generated = greedy(reloaded, ids[:1])
    assert torch.equal(generated, greedy(reloaded, ids[:1], use_cache=False))
    assert torch.equal(generated, greedy(model, ids[:1]))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_tied_embeddings_become_one_int8_matrix_read_at_both_ends(family, tmp_path):
    from hf_compress.evaluation.measure import saved_size_bytes
    from hf_compress.methods.quantization.layers import Int8Linear, TiedInt8Embedding

    int8 = [{"type": "quantization", "method": "int8_dynamic"}]
    model = tiny_decoder(family, tie=True)
    ids = token_batch()
    with torch.no_grad():
        before = model(ids).logits
    without = saved_size_bytes(compress(tiny_decoder(family, tie=True), copy.deepcopy(int8)))
    model = compress(model, [{**int8[0], "include_embeddings": True}])
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    assert isinstance(embedding, TiedInt8Embedding) and isinstance(head, Int8Linear)
    assert embedding.head is head  # one matrix
    with torch.no_grad():
        logits = model(ids).logits
    assert (logits - before).abs().max() < 0.05
    model.save_pretrained(tmp_path)
    names = __import__("safetensors").safe_open(tmp_path / "model.safetensors", "pt").keys()
    assert not any("embed_tokens" in n or "wte" in n for n in names)  # stored once, as the head
    assert saved_size_bytes(model) < without
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, logits)
    assert torch.equal(greedy(reloaded, ids[:1]), greedy(model, ids[:1], use_cache=False))


def test_a_model_trained_in_bf16_hands_on_what_it_saves(tmp_path):
    # accelerate wraps forward in autocast for bf16 training; the stage must unwrap it, or the
    # run measures a half-precision model while the checkpoint reloads in float32.
    teacher = tiny_decoder()
    student = compress(copy.deepcopy(teacher), [{"type": "ffn_pruning", "sparsity": 0.25}])
    ids = token_batch(rows=8, length=12)
    data = Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": [[1] * 12] * 8, "labels": ids.tolist()}
    )
    stage = {"name": "d", "epochs": 1, "modifiers": [{"type": "distillation", "alpha_hidden": 0}]}
    recipe = Recipe.from_dict(
        {"base_model": "t", "task": "sst2", "teacher": "t", "output_dir": "u", "stages": [stage]},
        source="test",
    )
    trainer = CompressionTrainer(
        model=student,
        args=tiny_training_args(bf16=True),
        stages=recipe.stages,
        teacher=teacher,
        train_dataset=data,
    )
    trainer.train()
    trainer.model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(trainer.model.eval()(ids).logits, reloaded(ids).logits)


def _with_outlier_channel(family: str) -> PreTrainedModel:
    """A decoder whose second FFN input has one channel ~60x the others (as real LLMs do)."""
    model = tiny_decoder(family)
    layer = model.model.layers[1] if family != "gpt2" else model.transformer.h[1]
    norm = layer.post_attention_layernorm if family != "gpt2" else layer.ln_2
    with torch.no_grad():
        norm.weight[5] = 60.0
    return model


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_smoothing_is_exact_in_float_and_shrinks_the_int8_error(family, tmp_path):
    from hf_compress.methods.quantization.smoothing import input_maxima, smooth, smoothing_groups

    ids = token_batch(4, 12)
    calibration = [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}] * 2
    model = _with_outlier_channel(family)
    prepare_layout(model)
    with torch.no_grad():
        reference = model(ids).logits
    smoothed = copy.deepcopy(model)
    groups = smoothing_groups(smoothed)
    assert len(groups) == (8 if family == "gpt2" else 12)  # 2 or 3 places x 4 layers
    smooth(groups, input_maxima(smoothed, groups, calibration), 0.5)
    with torch.no_grad():
        assert torch.allclose(smoothed(ids).logits, reference, atol=1e-4)

    int8 = {"type": "quantization", "method": "int8_dynamic", "skip_modules": []}
    plain = compress(copy.deepcopy(model), [int8])
    smooth_int8 = compress(model, [{**int8, "smoothing": 0.5}], calibration_data=calibration)
    with torch.no_grad():
        plain_error = (plain(ids).logits - reference).abs().max()
        smooth_error = (smooth_int8(ids).logits - reference).abs().max()
    assert smooth_error < plain_error / 1.5
    smooth_int8.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, smooth_int8(ids).logits)


def test_smoothing_needs_data_and_a_pre_norm_layout():
    int8 = {"type": "quantization", "method": "int8_dynamic", "smoothing": 0.5}
    with pytest.raises(RecipeError, match="smoothing"):
        compress(tiny_decoder(), [int8])
    from tiny import tiny_model

    ids = token_batch(2, 8)
    with pytest.raises(UnsupportedModelError, match="set smoothing: 0"):
        compress(
            tiny_model("bert"),
            [int8],
            calibration_data=[{"input_ids": ids, "attention_mask": torch.ones_like(ids)}],
        )
