"""The causal-LM task's data: text files and datasets packed into fixed-length sequences, the
held-out split, sample counts, and a one-line DataError for every way the text can be wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny import VOCAB_WORDS
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from hf_compress.data import LANGUAGE_MODELING, TextData, get_task
from hf_compress.data.text import pack_blocks, read_texts, token_stream
from hf_compress.errors import DataError, RecipeError
from hf_compress.recipe.recipe import Recipe
from hf_compress.training.preflight import check_recipe

SPECIALS = ["<unk>", "<s>", "</s>"]
EOS = 2


def word_tokenizer() -> PreTrainedTokenizerFast:
    """One token per word of tests/tiny.py's vocabulary (ids from 3), EOS `</s>` = 2."""
    vocab = {w: i for i, w in enumerate([*SPECIALS, *VOCAB_WORDS, ".", ","])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
    )


def ids(text: str) -> list[int]:
    vocab = {w: i for i, w in enumerate([*SPECIALS, *VOCAB_WORDS, ".", ","])}
    return [vocab[w] for w in text.split()]


def sentences(n: int, start: int = 0) -> list[str]:
    """n distinct 3-word sentences (4 tokens each with the EOS that follows)."""
    words = VOCAB_WORDS
    return [
        f"{words[(start + i) % 24]} {words[(start + i // 24) % 24]} {words[(start + i * 7) % 24]}"
        for i in range(n)
    ]


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_task_looks_like_a_glue_task():
    task = get_task("causal_lm")
    assert task is LANGUAGE_MODELING and get_task("causal-lm") is task
    assert (task.name, task.main_metric, task.metrics) == (
        "causal_lm",
        "perplexity",
        ("perplexity",),
    )
    assert task.lower_is_better and not task.is_regression and task.num_labels is None
    assert task.directory == "causal_lm"
    assert get_task("SST-2").name == "sst2"  # GLUE unchanged
    with pytest.raises(DataError, match="unknown GLUE task 'nope'"):
        get_task("nope")


def test_texts_are_joined_with_eos_and_packed(tmp_path):
    texts = ["the movie was good", "", "a film", "  ", "it is not boring ."]
    path = write(tmp_path / "t.txt", texts)
    assert read_texts(path) == ["the movie was good", "a film", "it is not boring ."]
    tokenizer = word_tokenizer()
    stream = token_stream(read_texts(path), tokenizer)
    expected = [
        *ids("the movie was good"),
        EOS,
        *ids("a film"),
        EOS,
        *ids("it is not boring ."),
    ]
    assert stream.tolist() == expected  # 13 tokens, no BOS, no trailing EOS
    blocks = pack_blocks(stream, 4)
    assert blocks.tolist() == [expected[0:4], expected[4:8], expected[8:12]]  # last 1 dropped
    dev = TextData(eval_text_files=(path,), max_seq_length=4).dev(tokenizer)
    assert dev.column_names == ["input_ids", "attention_mask", "labels"]
    assert dev["input_ids"] == blocks.tolist() and dev["labels"] == dev["input_ids"]
    assert all(mask == [1] * 4 for mask in dev["attention_mask"])


def test_held_out_part_is_the_last_part_and_never_trained_on(tmp_path):
    path = write(tmp_path / "corpus.txt", sentences(50))  # 200 tokens - 1 -> 24 blocks of 8
    tokenizer = word_tokenizer()
    all_blocks = pack_blocks(token_stream(read_texts(path), tokenizer), 8).tolist()
    assert len(all_blocks) == 24
    data = TextData(text_files=(path,), max_seq_length=8, eval_fraction=0.25)
    train, dev = data.train_and_dev(tokenizer)
    assert dev["input_ids"] == all_blocks[-6:]  # ceil(0.25 * 24) = 6, the last ones
    assert train["input_ids"] == all_blocks[:-6]
    assert data.dev(tokenizer)["input_ids"] == dev["input_ids"]
    # Default fraction: 10%, at least one sequence.
    train, dev = TextData(text_files=(path,), max_seq_length=8).train_and_dev(tokenizer)
    assert (len(train), len(dev)) == (21, 3)


def test_sample_counts_are_sequences(tmp_path):
    path = write(tmp_path / "corpus.txt", sentences(50))
    held = write(tmp_path / "held.txt", sentences(20, start=5))  # 80 - 1 tokens -> 9 blocks
    tokenizer = word_tokenizer()
    full_train, full_dev = TextData(
        text_files=(path,), eval_text_files=(held,), max_seq_length=8
    ).train_and_dev(tokenizer)
    assert (len(full_train), len(full_dev)) == (24, 9)  # with held-out files, all text trains
    data = TextData(
        text_files=(path,),
        eval_text_files=(held,),
        max_seq_length=8,
        max_train_samples=5,
        max_eval_samples=4,
        seed=3,
    )
    train, dev = data.train_and_dev(tokenizer)
    assert len(train) == 5 and dev["input_ids"] == full_dev["input_ids"][:4]  # the first ones
    assert set(map(tuple, train["input_ids"])) <= set(map(tuple, full_train["input_ids"]))
    again, _ = data.train_and_dev(tokenizer)
    assert again["input_ids"] == train["input_ids"]  # seeded
    other, _ = TextData(**{**data.__dict__, "seed": 4}).train_and_dev(tokenizer)
    assert other["input_ids"] != train["input_ids"]


def test_jsonl_files_and_several_files(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(["the plot", "a story"]))
        + "\n\n",
        encoding="utf-8",
    )
    plain = write(tmp_path / "b.txt", ["it was fun"])
    assert read_texts(jsonl) == ["the plot", "a story"]
    dev = TextData(eval_text_files=(str(jsonl), plain), max_seq_length=3).dev(word_tokenizer())
    stream = [*ids("the plot"), EOS, *ids("a story"), EOS, *ids("it was fun")]
    assert dev["input_ids"] == [stream[0:3], stream[3:6], stream[6:9]]


def test_dataset_from_a_local_path(tmp_path):
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "ds"
    DatasetDict(
        train=Dataset.from_dict({"body": sentences(30)}),
        validation=Dataset.from_dict({"body": sentences(10, start=3)}),
    ).save_to_disk(str(folder))
    tokenizer = word_tokenizer()
    data = TextData(dataset=str(folder), text_column="body", max_seq_length=8)
    train, dev = data.train_and_dev(tokenizer)
    assert (len(train), len(dev)) == (14, 4)  # 119 and 39 tokens: the validation split is held out
    with pytest.raises(DataError, match="no column 'text'.*body.*text_column"):
        TextData(dataset=str(folder), max_seq_length=8).dev(tokenizer)
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in sentences(20)), "utf-8")
    train, dev = TextData(dataset=str(jsonl), max_seq_length=8).train_and_dev(tokenizer)
    assert (len(train), len(dev)) == (8, 1)  # one split: its last 10% is held out


@pytest.mark.parametrize(
    "content, name, match",
    [
        (None, "missing.txt", r"missing.txt: no such text file; check the path"),
        ("", "empty.txt", r"empty.txt: empty \(no non-blank lines\)"),
        ("\n  \n\n", "blank.txt", r"blank.txt: empty"),
        ('{"text": "a"}\n{"body": "b"}\n', "x.jsonl", r"x.jsonl:2: no 'text' string field"),
        ('{"text": "a"}\nnot json\n', "y.jsonl", r"y.jsonl:2: not a JSON object"),
        (b"\xff\xfe bad", "latin.txt", r"latin.txt: not UTF-8 text"),
    ],
)
def test_bad_text_files_are_one_line_data_errors(tmp_path, content, name, match):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=match) as info:
        TextData(text_files=(str(path),), max_seq_length=8).train_and_dev(word_tokenizer())
    assert "\n" not in str(info.value) and name in str(info.value)


def test_text_without_a_sequence_is_a_data_error(tmp_path):
    short = write(tmp_path / "short.txt", ["the movie"])
    with pytest.raises(
        DataError, match=r"short.txt: 2 tokens make no sequence of max_seq_length=8"
    ):
        TextData(eval_text_files=(short,), max_seq_length=8).dev(word_tokenizer())
    one = write(tmp_path / "one.txt", sentences(2))  # 7 tokens: one block of 4, nothing to train
    with pytest.raises(DataError, match="cannot be split into training and held-out"):
        TextData(text_files=(one,), max_seq_length=4).train_and_dev(word_tokenizer())
    with pytest.raises(DataError, match="no text: set data.text_files"):
        TextData().dev(word_tokenizer())
    with pytest.raises(DataError, match="no training text"):
        TextData(eval_text_files=(one,), max_seq_length=4).train_and_dev(word_tokenizer())


RECIPE = """
base_model: some/llm
task: {task}
data: {data}
stages:
  - name: s
    epochs: 0
    modifiers: []
output_dir: out
"""


def test_recipe_keys_and_cross_checks(tmp_path):
    corpus = write(tmp_path / "c.txt", sentences(5))
    recipe = Recipe.from_string(
        RECIPE.format(
            task="causal_lm",
            data=f"{{text_files: [{corpus}], eval_fraction: 0.2, max_eval_samples: 16}}",
        )
    )
    assert recipe.data.text_files == (corpus,) and recipe.data.eval_fraction == 0.2
    data = TextData.from_config(recipe.data, seed=recipe.seed)
    assert data.text_files == (corpus,) and data.max_eval_samples == 16
    assert (
        Recipe.from_string(
            RECIPE.format(task="causal_lm", data="{dataset: wikitext, text_column: body}")
        ).data.dataset
        == "wikitext"
    )
    cases = [
        ("causal_lm", "{}", "data.text_files: `task: causal_lm` needs training text"),
        ("sst2", f"{{text_files: [{corpus}]}}", "data.text_files: text data is for `task: causal"),
        ("sst2", "{dataset: wikitext}", "data.dataset: text data is for"),
        ("causal_lm", f"{{text_files: [{corpus}], eval_fraction: 1.0}}", "eval_fraction"),
        ("causal_lm", "{text_files: ['']}", r"text_files\[0\]: empty"),
    ]
    for task, data_text, match in cases:
        with pytest.raises(RecipeError, match=match) as info:
            Recipe.from_string(RECIPE.format(task=task, data=data_text))
        assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "data_text, match",
    [
        ("{text_files: [nope.txt]}", r"data.text_files\[0\]: 'nope.txt' is not a file"),
        ("{text_files: [CORPUS], eval_text_files: [x.txt]}", r"eval_text_files\[0\]: 'x.txt'"),
    ],
)
def test_missing_text_files_fail_the_preflight_not_the_parse(tmp_path, data_text, match):
    """A recipe may name files a script writes later (recipes/smollm2-combined.yaml): parsing it
    succeeds, `hf-compress validate` / `run` stop on the missing file before any model loads."""
    corpus = write(tmp_path / "c.txt", sentences(5))
    recipe = Recipe.from_string(
        RECIPE.format(task="causal_lm", data=data_text.replace("CORPUS", corpus))
    )
    with pytest.raises(RecipeError, match=match) as info:
        recipe.check_text_files()
    assert "\n" not in str(info.value)
    with pytest.raises(RecipeError, match=match):
        check_recipe(recipe)  # first of the checks: the base model (some/llm) is never looked up


def test_packing_matches_numpy_reshape():
    stream = np.arange(23)
    assert pack_blocks(stream, 5).tolist() == np.arange(20).reshape(4, 5).tolist()
    assert pack_blocks(stream, 30).shape == (0, 30)
