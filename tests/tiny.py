"""Tiny random models and data for tests: built from configs, nothing downloaded."""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import torch
from datasets import Dataset
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    PreTrainedModel,
    RobertaConfig,
    RobertaForSequenceClassification,
    TrainingArguments,
)

FAMILIES = ("bert", "roberta", "distilbert")
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str) -> ModuleType:
    """`benchmarks/<name>.py` imported as a module (not a package), fresh each call."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


VOCAB_WORDS = [
    "the",
    "a",
    "movie",
    "film",
    "good",
    "bad",
    "great",
    "awful",
    "is",
    "was",
    "not",
    "very",
    "fun",
    "boring",
    "and",
    "but",
    "it",
    "plot",
    "actors",
    "story",
    "love",
    "hate",
    "best",
    "worst",
]


def tiny_model(
    family: str = "bert", num_labels: int = 2, seed: int = 0, **overrides
) -> PreTrainedModel:
    """A 2-layer, hidden-32, 4-head, FFN-64 model of `family` with random weights (eval mode)."""
    torch.manual_seed(seed)
    if family == "bert":
        config = BertConfig(
            vocab_size=128,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            num_labels=num_labels,
            **overrides,
        )
        model = BertForSequenceClassification(config)
    elif family == "roberta":
        config = RobertaConfig(
            vocab_size=128,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=70,
            num_labels=num_labels,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            **overrides,
        )
        model = RobertaForSequenceClassification(config)
    elif family == "distilbert":
        config = DistilBertConfig(
            vocab_size=128,
            dim=32,
            n_layers=2,
            n_heads=4,
            hidden_dim=64,
            max_position_embeddings=64,
            num_labels=num_labels,
            **overrides,
        )
        model = DistilBertForSequenceClassification(config)
    else:
        raise ValueError(family)
    return model.eval()


def tiny_inputs(
    batch: int = 3, length: int = 12, seed: int = 1, vocab: int = 128
) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0  # some padding, so masks are exercised
    return {"input_ids": ids, "attention_mask": mask}


def tiny_dataset(
    n: int = 32, length: int = 12, num_labels: int = 2, seed: int = 2, vocab: int = 128
) -> Dataset:
    """A learnable toy classification set: the label is whether token 7 appears."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, vocab, (n, length), generator=generator)
    labels = torch.randint(0, num_labels, (n,), generator=generator)
    ids[labels == 1, 3] = 7
    return Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": [[1] * length] * n, "labels": labels.tolist()}
    )


def tiny_tokenizer(directory: str | Path | None = None) -> BertTokenizerFast:
    """A WordPiece tokenizer over a small English vocabulary (written to a temp dir)."""
    directory = Path(directory or tempfile.mkdtemp())
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *VOCAB_WORDS,
        "##s",
        "##ing",
        "##ly",
        ".",
        ",",
    ]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5's BertTokenizer builds its WordPiece from `vocab` (a dict); given only
    # `vocab_file` it keeps just the five special tokens and every word becomes [UNK].
    return BertTokenizerFast(
        vocab={token: i for i, token in enumerate(vocab)}, vocab_file=str(directory / "vocab.txt")
    )


def save_with_tokenizer(model: PreTrainedModel, directory: Path) -> Path:
    """Saves `model` and the tiny tokenizer into `directory`, as a run's output would hold them."""
    model.save_pretrained(directory)
    tiny_tokenizer(directory).save_pretrained(directory)
    return directory


def logits(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def rebuild_narrowed_ffn(model: PreTrainedModel, widths: dict[str, int]) -> None:
    """A test-only rebuilder (register it under a key of your own with `register_rebuild(key, 40)`):
    empty FFN Linears of the recorded width per layer, for `narrow_ffn` checkpoints."""
    from torch import nn

    from hf_compress.architectures.base import get_adapter

    adapter = get_adapter(model)
    for index, width in widths.items():
        layer = adapter.layer(model, int(index))
        ffn_in, ffn_out = adapter.get(layer, adapter.ffn_in), adapter.get(layer, adapter.ffn_out)
        adapter.set(layer, adapter.ffn_in, nn.Linear(ffn_in.in_features, width))
        adapter.set(layer, adapter.ffn_out, nn.Linear(width, ffn_out.out_features))


def narrow_ffn(model: PreTrainedModel, widths: dict[int, int], key: str) -> PreTrainedModel:
    """Test-only structural change: keeps the first `width` FFN neurons of each listed layer and
    records it under `key` (which must have `rebuild_narrowed_ffn` registered)."""
    from transformers.pytorch_utils import prune_linear_layer

    from hf_compress.architectures.base import get_adapter
    from hf_compress.checkpoint.format import record_structure

    adapter = get_adapter(model)
    for index, width in widths.items():
        layer = adapter.layer(model, index)
        keep = torch.arange(width)
        adapter.set(
            layer,
            adapter.ffn_in,
            prune_linear_layer(adapter.get(layer, adapter.ffn_in), keep, dim=0),
        )
        adapter.set(
            layer,
            adapter.ffn_out,
            prune_linear_layer(adapter.get(layer, adapter.ffn_out), keep, dim=1),
        )
    record_structure(model, key, {str(i): w for i, w in widths.items()})
    return model


def tiny_training_args(**overrides) -> TrainingArguments:
    """Quiet, CPU, no-checkpoint TrainingArguments for tiny training runs in tests."""
    values = {
        "output_dir": tempfile.mkdtemp(),
        "per_device_train_batch_size": 8,
        "report_to": [],
        "save_strategy": "no",
        "disable_tqdm": True,
        "use_cpu": True,
        "learning_rate": 1e-3,
        "logging_strategy": "no",
        **overrides,
    }
    return TrainingArguments(**values)
