"""Causal-LM metrics against hand computations on toy models whose logits are known, and
`hf-compress eval --task causal_lm` on a tiny saved Llama."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from test_text_data import sentences, word_tokenizer
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.modeling_outputs import CausalLMOutput

from hf_compress.cli import main
from hf_compress.data import LANGUAGE_MODELING, TextData
from hf_compress.errors import HfCompressError
from hf_compress.evaluation.evaluate import evaluate_task
from hf_compress.evaluation.language import agreement, generation_speed, perplexity

VOCAB = 6


class Bigram(nn.Module):
    """A causal LM whose next-token logits depend on the current token only: `table[token]`."""

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.tensor(table, dtype=torch.float32))

    def forward(self, input_ids, attention_mask=None):
        return CausalLMOutput(logits=self.table[input_ids])


def table(seed: int, vocab: int = VOCAB) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(vocab, vocab)) * 2


def log_softmax(row: np.ndarray) -> np.ndarray:
    return row - np.log(np.exp(row - row.max()).sum()) - row.max()


SEQUENCES = [[0, 3, 5, 1, 1, 2], [4, 4, 0, 2, 5, 3], [1, 2, 3, 4, 5, 0]]


def packed(sequences=SEQUENCES) -> Dataset:
    return Dataset.from_dict(
        {
            "input_ids": sequences,
            "attention_mask": [[1] * len(s) for s in sequences],
            "labels": sequences,
        }
    )


def pairs(sequences=SEQUENCES):
    """(current, next) token pairs: every position but the last predicts the next token."""
    return [(s[t], s[t + 1]) for s in sequences for t in range(len(s) - 1)]


def test_perplexity_is_exp_of_the_token_mean_nll():
    logits = table(0)
    nll = [-log_softmax(logits[a])[b] for a, b in pairs()]
    for batch_size in (1, 2, 8):
        result = perplexity(Bigram(logits), packed(), batch_size=batch_size, progress=False)
        assert result["eval_samples"] == 3 and result["eval_tokens"] == 15
        assert result["perplexity"] == pytest.approx(math.exp(np.mean(nll)), rel=1e-5)


def test_padding_is_not_predicted_and_tokens_are_weighted():
    logits = table(1)
    uneven = [[0, 3, 5, 1, 1, 2], [4, 4], [1, 2, 3, 4]]
    padded = Dataset.from_dict(
        {"input_ids": uneven, "attention_mask": [[1] * len(s) for s in uneven]}
    )
    nll = [-log_softmax(logits[a])[b] for a, b in pairs(uneven)]  # 5 + 1 + 3 tokens
    result = perplexity(Bigram(logits), padded, batch_size=3, progress=False)
    assert result["eval_tokens"] == 9
    assert result["perplexity"] == pytest.approx(math.exp(np.mean(nll)), rel=1e-5)


def test_kl_and_top1_agreement_against_hand_computation():
    model, reference = table(2), table(3)
    kl, agree = [], []
    for a, _ in pairs():
        log_p, log_q = log_softmax(model[a]), log_softmax(reference[a])
        kl.append(float(np.sum(np.exp(log_q) * (log_q - log_p))))  # KL(reference || model)
        agree.append(model[a].argmax() == reference[a].argmax())
    result = agreement(Bigram(model), Bigram(reference), packed(), batch_size=2, progress=False)
    assert result["kl_divergence"] == pytest.approx(np.mean(kl), rel=1e-5)
    assert result["top1_agreement"] == pytest.approx(np.mean(agree))
    assert 0 < result["top1_agreement"] < 1 and result["eval_tokens"] == 15
    same = agreement(Bigram(model), Bigram(model), packed(), progress=False)
    assert same["kl_divergence"] == pytest.approx(0.0, abs=1e-6)
    assert same["top1_agreement"] == 1.0


def test_different_vocabularies_only_when_the_caller_says_so():
    small, large = table(4), table(5, vocab=VOCAB + 2)
    with pytest.raises(HfCompressError, match="6 output logits and the reference 8"):
        agreement(Bigram(small), Bigram(large), packed(), progress=False)
    result = agreement(Bigram(small), Bigram(large), packed(), vocab_size=VOCAB, progress=False)
    cut = large[:VOCAB, :VOCAB]
    expected = agreement(Bigram(small), Bigram(cut), packed(), progress=False)
    assert result["kl_divergence"] == pytest.approx(expected["kl_divergence"], rel=1e-6)
    with pytest.raises(HfCompressError, match="vocab_size=7 exceeds"):
        agreement(Bigram(small), Bigram(large), packed(), vocab_size=7, progress=False)


def test_non_finite_logits_are_refused():
    broken = table(6)
    broken[3, 1] = np.nan
    with pytest.raises(HfCompressError, match="NaN or infinite logits"):
        perplexity(Bigram(broken), packed(), progress=False)


# A tiny Llama --------------------------------------------------------------------------------
def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def saved_llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    tiny_llama().save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    text = folder.parent / "held_out.txt"
    text.write_text("\n".join(sentences(60)) + "\n", encoding="utf-8")
    return folder, text


def test_evaluate_task_gives_perplexity_for_causal_lm(saved_llama):
    folder, text = saved_llama
    model = LlamaForCausalLM.from_pretrained(folder).eval()
    dev = TextData(eval_text_files=(str(text),), max_seq_length=16).dev(word_tokenizer())
    result = evaluate_task(model, None, LANGUAGE_MODELING, dev, batch_size=4, progress=False)
    assert set(result) == {"perplexity", "eval_samples", "eval_tokens"}
    assert result["eval_samples"] == len(dev) == 14 and result["eval_tokens"] == 14 * 15
    # The model's own loss (mean next-token NLL over the same tokens) agrees.
    with torch.no_grad():
        batch = torch.tensor(dev["input_ids"])
        loss = model(input_ids=batch, labels=batch).loss
    assert result["perplexity"] == pytest.approx(math.exp(float(loss)), rel=1e-4)
    # A random 128-token model is close to uniform over its vocabulary.
    assert 60 < result["perplexity"] < 300


def test_cli_eval_causal_lm_with_reference(saved_llama, capsys):
    folder, text = saved_llama
    args = ["eval", str(folder), "--task", "causal_lm", "--text-file", str(text)]
    assert main([*args, "--max-seq-length", "16", "--max-eval-samples", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "causal_lm" and out["eval_samples"] == 5 and out["eval_tokens"] == 75
    model = LlamaForCausalLM.from_pretrained(folder).eval()
    dev = TextData(eval_text_files=(str(text),), max_seq_length=16, max_eval_samples=5)
    expected = perplexity(model, dev.dev(word_tokenizer()), progress=False)
    assert out["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-5)
    assert main([*args, "--max-seq-length", "16", "--reference", str(folder)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["eval_samples"] == 14 and out["top1_agreement"] == 1.0
    assert out["kl_divergence"] == pytest.approx(0.0, abs=1e-6)


def test_cli_eval_causal_lm_errors(saved_llama, capsys):
    folder, text = saved_llama
    assert main(["eval", str(folder), "--task", "causal_lm"]) == 2
    err = capsys.readouterr().err
    assert "--task causal_lm needs held-out text: --text-file" in err and err.count("\n") == 1
    assert main(["eval", str(folder), "--task", "sst2", "--text-file", str(text)]) == 2
    assert "--text-file applies to --task causal_lm" in capsys.readouterr().err
    missing = str(text.parent / "nope.txt")
    assert main(["eval", str(folder), "--task", "causal_lm", "--text-file", missing]) == 2
    assert "nope.txt: no such text file" in capsys.readouterr().err
    other = tiny_llama(seed=1)
    other.resize_token_embeddings(96)
    other_dir = folder.parent / "other"
    other.save_pretrained(other_dir)
    word_tokenizer().save_pretrained(other_dir)
    args = ["eval", str(folder), "--task", "causal_lm", "--text-file", str(text)]
    assert main([*args, "--max-seq-length", "16", "--reference", str(other_dir)]) == 2
    assert "128 output logits and the reference 96" in capsys.readouterr().err


def test_generation_speed_on_a_tiny_llama():
    result = generation_speed(
        tiny_llama(), word_tokenizer(), prompt_tokens=12, new_tokens=5, runs=2
    )
    assert result["prompt_tokens"] == 12 and result["new_tokens"] == 5 and result["runs"] == 2
    assert result["prefill_ms"] > 0 and result["generate_ms"] > result["prefill_ms"]
    assert result["tokens_per_second"] == pytest.approx(5 / (result["generate_ms"] / 1000))
    assert result["threads"] == torch.get_num_threads()
