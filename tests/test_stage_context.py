"""StageContext.first_training_batches: the one place modifiers take measuring batches from."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_model

from hf_compress import compress
from hf_compress.errors import RecipeError
from hf_compress.methods.modifier import StageContext


def _counting_loader(n: int, pulled: list[int]):
    def loader():
        for i in range(n):
            pulled.append(i)
            yield {"input_ids": torch.full((2, 3), i)}

    return loader


def _first(ctx: StageContext, count: int) -> list[dict]:
    return list(ctx.first_training_batches(count, "tool X", "to measure Y", "set z: 0"))


def test_yields_at_most_count_batches_and_pulls_no_more():
    pulled: list[int] = []
    batches = _first(StageContext(train_dataloader=_counting_loader(10, pulled)), 3)
    assert [int(b["input_ids"][0, 0]) for b in batches] == [0, 1, 2]
    assert pulled == [0, 1, 2]


def test_fewer_batches_than_asked_is_fine():
    assert len(_first(StageContext(train_dataloader=_counting_loader(2, [])), 8)) == 2


def test_no_training_data_names_the_user_and_the_alternative():
    with pytest.raises(
        RecipeError,
        match=r"tool X needs training batches to measure Y; .*train_dataset.* or set z: 0",
    ):
        _first(StageContext(), 4)


def test_empty_training_data_is_its_own_error():
    with pytest.raises(
        RecipeError, match="tool X found no training batches; the training data set is empty"
    ):
        _first(StageContext(train_dataloader=_counting_loader(0, [])), 4)


@pytest.mark.parametrize(
    ("modifier", "alternative"),
    [
        ({"type": "head_pruning", "count": 1, "importance": "taylor"}, "importance: magnitude"),
        ({"type": "ffn_pruning", "sparsity": 0.5, "importance": "taylor"}, "importance: magnitude"),
        ({"type": "low_rank", "rank": 4, "fisher": True}, "set fisher: false"),
        (
            {"type": "quantization", "method": "int8_dynamic", "fp32_fallback": 1},
            "set fp32_fallback: 0",
        ),
    ],
)
def test_every_measuring_modifier_without_data_says_how_to_do_without(modifier, alternative):
    with pytest.raises(RecipeError, match=f"needs training batches.*{alternative}"):
        compress(tiny_model("bert"), [modifier])


def test_one_shot_pruning_without_data_ranks_by_magnitude():
    model = compress(tiny_model("bert"), [{"type": "ffn_pruning", "sparsity": 0.5}])
    assert sum(model.config.compression_config["ffn_width"].values()) == 64  # half of 2 x 64
    heads = compress(tiny_model("bert"), [{"type": "head_pruning", "count": 2}])
    assert sum(heads.config.compression_config["heads"].values()) == 6
