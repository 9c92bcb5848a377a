"""`data.token_mask_prob`: training batches masked anew every step, the distillation teacher run
on the same masked batch as the student, evaluation never masked, and clear recipe errors."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_dataset, tiny_model, tiny_tokenizer, tiny_training_args

from hf_compress import CompressionTrainer, Recipe, RecipeError
from hf_compress.data.augment import TokenMasker

MASK = 4  # tiny_tokenizer: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor(
        [[2] + list(range(10, 40)) + [3], [2] + list(range(40, 60)) + [3] + [0] * 10]
    )
    attention = (ids != 0).long()
    return {"input_ids": ids, "attention_mask": attention, "labels": torch.tensor([0, 1])}


def test_masker_masks_only_real_tokens_at_about_the_rate_and_draws_anew():
    masker = TokenMasker(tiny_tokenizer(), 0.3, seed=0)
    batch = _batch()
    first, second = masker(batch), masker(batch)
    for out in (first, second):
        chosen = out["input_ids"] != batch["input_ids"]
        assert (out["input_ids"][chosen] == MASK).all()
        real = (batch["attention_mask"] == 1) & ~torch.isin(
            batch["input_ids"], torch.tensor([2, 3])
        )
        assert not chosen[~real].any()  # [CLS], [SEP] and padding are never masked
        assert 0.1 < chosen.sum().item() / real.sum().item() < 0.5
        assert out["labels"] is batch["labels"] and out["attention_mask"] is batch["attention_mask"]
    assert not torch.equal(first["input_ids"], second["input_ids"])
    assert batch["input_ids"][0, 1].item() == 10  # the caller's batch is untouched
    again = TokenMasker(tiny_tokenizer(), 0.3, seed=0)(batch)
    assert torch.equal(again["input_ids"], first["input_ids"])  # seeded


def test_a_tokenizer_without_mask_token_is_a_clear_error():
    tokenizer = tiny_tokenizer()
    tokenizer.mask_token = None
    with pytest.raises(RecipeError, match="mask token.*token_mask_prob: 0"):
        TokenMasker(tokenizer, 0.1)


def _recipe(token_mask_prob: float, cache: bool = False) -> Recipe:
    distill = {
        "type": "distillation",
        "alpha_kd": 1.0,
        "alpha_ce": 0.0,
        "cache_teacher_logits": cache,
    }
    return Recipe.from_dict(
        {
            "base_model": "tiny",
            "task": "sst2",
            "teacher": "unused",
            "data": {"token_mask_prob": token_mask_prob},
            "output_dir": "unused",
            "stages": [{"name": "distill", "epochs": 1, "modifiers": [distill]}],
        }
    )


def test_recipe_refuses_cached_teacher_logits_with_masking_and_bad_rates():
    with pytest.raises(RecipeError, match="cache_teacher_logits.*token_mask_prob"):
        _recipe(0.15, cache=True)
    with pytest.raises(RecipeError, match="token_mask_prob"):
        _recipe(1.0)
    assert _recipe(0.0, cache=True).data.token_mask_prob == 0.0


def _record_inputs(
    model: torch.nn.Module, seen: list[torch.Tensor]
) -> torch.utils.hooks.RemovableHandle:
    return model.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(kwargs["input_ids"].clone()), with_kwargs=True
    )


@pytest.mark.parametrize("probability", [0.0, 0.3])
def test_teacher_sees_the_students_masked_batch_and_evaluation_is_unmasked(probability):
    student_seen: list[torch.Tensor] = []
    teacher_seen: list[torch.Tensor] = []
    teacher, student = tiny_model("bert", seed=1), tiny_model("bert", seed=0)
    _record_inputs(teacher, teacher_seen)
    hook = _record_inputs(student, student_seen)
    data = tiny_dataset(n=16)
    trainer = CompressionTrainer(
        model=student,
        args=tiny_training_args(),
        recipe=_recipe(probability),
        teacher=teacher,
        train_dataset=data,
        eval_dataset=data,
        processing_class=tiny_tokenizer(),
    )
    trainer.train()
    assert len(student_seen) == len(teacher_seen) == 2  # 16 examples, batches of 8
    for student_ids, teacher_ids in zip(student_seen, teacher_seen):
        assert torch.equal(student_ids, teacher_ids)
    masked = sum(int((ids == MASK).sum()) for ids in student_seen)
    assert (masked > 0) == (probability > 0)
    hook.remove()
    evaluated: list[torch.Tensor] = []
    _record_inputs(student, evaluated)
    trainer.evaluate()
    assert evaluated and all(int((ids == MASK).sum()) == 0 for ids in evaluated)
