"""`vocab_pruning`: keep only the tokens the task uses; shrink the embedding matrix and the tokenizer.

A GLUE task uses a small part of a 30k (BERT) or 250k (XLM-R) vocabulary, yet every row of the
word-embedding matrix is stored. This technique counts the tokens of the task's training text
(all of it by default, not only the `max_train_samples` slice), optionally of extra text files,
keeps those reaching `min_count` plus every special token, and then

- keeps those rows of the word embeddings (and of a tied or untied output layer and its bias,
  for masked-LM heads), re-indexed densely in old-id order, and sets `config.vocab_size`;
- rewrites the tokenizer the same way (`hf_compress.tokenizer_pruning`), so the saved model and
  tokenizer work unchanged with `AutoTokenizer`, `pipeline` and `from_pretrained`. Tokens no longer
  kept become the unknown token (WordPiece, Unigram) or smaller kept pieces (byte-level BPE).

The result is a plain model of its family with a smaller vocabulary: it reloads without any
rebuild step. The new tokenizer is assigned to `ctx.tokenizer`; whoever saves the model must save
that tokenizer with it, and any data tokenized before must be tokenized again (`CompressionTrainer`
does it through its `retokenize` callback; `remap_token_ids` maps ids of text whose tokens were all
kept). Pruning happens in `on_finalize`, so a training stage that holds this modifier trains on
the old ids first. A teacher keeps the old vocabulary: distil before pruning, not after.

Public API: `prune_vocabulary(model, tokenizer, texts, min_count=1, keep_ids=())` (usable without
GLUE), `count_token_ids`, `prune_embeddings`, `dev_token_rates`, `remap_token_ids`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from ..checkpoint import record_method
from ..errors import DataError, RecipeError, UnsupportedModelError
from ..registry import register_modifier
from ..schema import option
from ..tokenizer_pruning import PrunedTokenizer, prune_tokenizer
from .base import Modifier, ModifierConfig, StageContext
from .embedding_quantization import QuantizedEmbedding

logger = logging.getLogger(__name__)

Text = str | tuple[str, str] | Sequence[str]
# Config fields that hold token ids; remapped with the vocabulary (and kept by it).
_CONFIG_TOKEN_IDS = (
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "sep_token_id",
    "cls_token_id",
    "unk_token_id",
    "mask_token_id",
    "decoder_start_token_id",
)
_ENCODE_BATCH = 2048


# Counting ----------------------------------------------------------------------------------
def _flatten(texts: Iterable[Text]) -> Iterator[str]:
    for text in texts:
        if isinstance(text, str):
            yield text
        else:  # a sentence pair: its tokens are those of both sentences
            yield from (t for t in text if t)


def _batches(texts: Iterable[Text], size: int = _ENCODE_BATCH) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in _flatten(texts):
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def count_token_ids(tokenizer: Any, texts: Iterable[Text], counts: torch.Tensor | None = None) -> torch.Tensor:
    """How often each token id occurs in `texts` (no special tokens added, no truncation).

    Args:
        tokenizer: a transformers tokenizer.
        texts: strings or (text, text) pairs.
        counts: a counts vector to add to (length at least `len(tokenizer)`).

    Returns:
        An int64 vector of length `len(tokenizer)` (or that of `counts`).
    """
    if counts is None:
        counts = torch.zeros(len(tokenizer), dtype=torch.long)
    for batch in _batches(texts):
        encoded = tokenizer(batch, add_special_tokens=False, truncation=False, padding=False)["input_ids"]
        flat = torch.tensor([i for ids in encoded for i in ids], dtype=torch.long)
        if flat.numel():
            counts += torch.bincount(flat, minlength=counts.numel())[: counts.numel()]
    return counts


def read_text_files(paths: Iterable[str | Path]) -> Iterator[str]:
    """Lines of UTF-8 text files, one text per non-empty line.

    Raises:
        DataError: a file is missing or not UTF-8.
    """
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise DataError(
                f"vocab_pruning.extra_text_files: {path} not found (paths are relative to the working directory)"
            )
        try:
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        yield line.rstrip("\n")
        except UnicodeDecodeError as exc:
            raise DataError(f"vocab_pruning.extra_text_files: {path} is not UTF-8 text ({exc})") from exc


# Model surgery -------------------------------------------------------------------------------
def _select_embedding(embedding: nn.Module, index: torch.Tensor, padding_idx: int | None) -> nn.Module:
    if isinstance(embedding, QuantizedEmbedding):
        return embedding.select_rows(index, padding_idx)
    if not isinstance(embedding, nn.Embedding):
        raise UnsupportedModelError(
            f"vocab_pruning: the input embedding is a {type(embedding).__name__}, not an nn.Embedding; apply "
            "vocab_pruning before techniques that replace the embedding"
        )
    weight = embedding.weight
    new = nn.Embedding(
        len(index), embedding.embedding_dim, padding_idx=padding_idx, device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        new.weight.copy_(weight.index_select(0, index.to(weight.device)))
    new.weight.requires_grad_(weight.requires_grad)
    return new


def _replace_parameters(model: nn.Module, replacements: dict[int, nn.Parameter]) -> None:
    # A tied parameter is referenced from several modules (BERT's MLM bias lives both in
    # `cls.predictions.bias` and `cls.predictions.decoder.bias`): swap every reference.
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and id(param) in replacements:
                module._parameters[name] = replacements[id(param)]


def prune_embeddings(model: PreTrainedModel, kept_ids: Sequence[int]) -> None:
    """Keeps rows `kept_ids` (ascending old ids) of the word embeddings and of the output layer.

    Updates `config.vocab_size` and the config's special token ids. In place.

    Raises:
        UnsupportedModelError: a kept id is beyond the embedding matrix, or the embedding is not
            an `nn.Embedding` / `QuantizedEmbedding`.
    """
    embedding = model.get_input_embeddings()
    rows = embedding.num_embeddings
    if not kept_ids or max(kept_ids) >= rows or min(kept_ids) < 0:
        raise UnsupportedModelError(
            f"vocab_pruning: the tokenizer produces ids up to {max(kept_ids, default=-1)} but the model has only {rows} "
            "embedding rows; the tokenizer does not belong to this model"
        )
    old_to_new = {old: new for new, old in enumerate(kept_ids)}
    device = next(iter(list(embedding.buffers()) + list(embedding.parameters()))).device
    index = torch.tensor(list(kept_ids), dtype=torch.long, device=device)
    old_padding = embedding.padding_idx
    new_padding = old_to_new.get(old_padding) if old_padding is not None else None
    output = model.get_output_embeddings()
    old_weight = getattr(embedding, "weight", None) if isinstance(embedding, nn.Embedding) else None
    tied = output is not None and old_weight is not None and output.weight is old_weight

    new_embedding = _select_embedding(embedding, index, new_padding)
    model.set_input_embeddings(new_embedding)
    if output is not None:
        if not isinstance(output, nn.Linear):
            raise UnsupportedModelError(f"vocab_pruning: the output layer is a {type(output).__name__}, not nn.Linear")
        new_output = nn.Linear(
            output.in_features, len(kept_ids), bias=output.bias is not None, device=device, dtype=output.weight.dtype
        )
        replacements: dict[int, nn.Parameter] = {}
        if tied:
            new_output.weight = new_embedding.weight
        else:
            with torch.no_grad():
                new_output.weight.copy_(output.weight.index_select(0, index))
        if output.bias is not None:
            with torch.no_grad():
                new_output.bias.copy_(output.bias.index_select(0, index))
            replacements[id(output.bias)] = new_output.bias
        model.set_output_embeddings(new_output)
        _replace_parameters(model, replacements)

    config = model.config
    config.vocab_size = len(kept_ids)
    for attr in _CONFIG_TOKEN_IDS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            setattr(config, attr, old_to_new.get(value))


def config_token_ids(model: PreTrainedModel) -> set[int]:
    """Special token ids named in the model config (kept so the config stays valid)."""
    ids = set()
    for attr in _CONFIG_TOKEN_IDS:
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            ids.add(value)
    return ids


def position_padding_ids(model: nn.Module) -> set[int]:
    """Ids `0..padding_idx` of embedding modules that derive position ids from the padding id.

    RoBERTa numbers positions from `padding_idx + 1`; keeping every id up to it keeps the padding
    id (and so every position id) unchanged after re-indexing.
    """
    ids: set[int] = set()
    for module in model.modules():
        padding_idx = getattr(module, "padding_idx", None)
        if not isinstance(module, (nn.Embedding, QuantizedEmbedding)) and isinstance(padding_idx, int):
            ids.update(range(padding_idx + 1))
    return ids


def remap_token_ids(input_ids: torch.Tensor, kept_ids: Sequence[int], unk_id: int | None) -> torch.Tensor:
    """Maps old token ids to new ones; ids that were not kept become `unk_id`.

    Exact for text whose tokens were all kept (e.g. the training set the vocabulary came from).
    For other text, tokenizing again with the new tokenizer is the true behaviour (WordPiece may
    split a dropped word into kept pieces instead of one unknown token).
    """
    table = torch.full((max(kept_ids) + 1,), -1 if unk_id is None else unk_id, dtype=torch.long)
    table[torch.tensor(list(kept_ids))] = torch.arange(len(kept_ids))
    clipped = input_ids.clamp(max=len(table) - 1)
    mapped = table.to(input_ids.device)[clipped]
    if unk_id is not None:
        mapped = torch.where(input_ids < len(table), mapped, torch.full_like(mapped, unk_id))
    return mapped


# Reporting ------------------------------------------------------------------------------------
def dev_token_rates(old_tokenizer: Any, pruned: PrunedTokenizer, texts: Iterable[Text]) -> dict[str, Any]:
    """How the pruned vocabulary covers held-out text.

    Returns:
        `dev_tokens` (old tokens counted), `dev_oov_rate` (share of old tokens not kept),
        `dev_unknown_rate` (share of new tokens that are the unknown token) and
        `dev_unknown_rate_before` (the same share under the old tokenizer).
    """
    texts = list(_flatten(texts))
    old_unk = getattr(old_tokenizer, "unk_token_id", None)
    old_total = old_missing = old_unknown = new_total = new_unknown = 0
    for batch in _batches(texts):
        for ids in old_tokenizer(batch, add_special_tokens=False)["input_ids"]:
            old_total += len(ids)
            old_missing += sum(1 for i in ids if i not in pruned.old_to_new)
            old_unknown += sum(1 for i in ids if i == old_unk) if old_unk is not None else 0
        for ids in pruned.tokenizer(batch, add_special_tokens=False)["input_ids"]:
            new_total += len(ids)
            new_unknown += sum(1 for i in ids if i == pruned.unk_id) if pruned.unk_id is not None else 0
    return {
        "dev_texts": len(texts),
        "dev_tokens": old_total,
        "dev_oov_rate": old_missing / old_total if old_total else 0.0,
        "dev_unknown_rate": new_unknown / new_total if new_total else 0.0,
        "dev_unknown_rate_before": old_unknown / old_total if old_total else 0.0,
    }


def prune_vocabulary(
    model: PreTrainedModel,
    tokenizer: Any,
    texts: Iterable[Text],
    min_count: int = 1,
    keep_ids: Iterable[int] = (),
    counts: torch.Tensor | None = None,
) -> tuple[PreTrainedModel, Any, dict[str, Any]]:
    """Prunes the vocabulary of `model` and `tokenizer` to the tokens of `texts`.

    Args:
        model: a transformers model whose input embeddings match `tokenizer`.
        tokenizer: its fast tokenizer (WordPiece, WordLevel, BPE or Unigram backend).
        texts: strings or (text, text) pairs whose tokens to keep.
        min_count: keep a token when it occurs at least this often in `texts` (plus `counts`).
        keep_ids: old ids to keep in any case.
        counts: token counts gathered elsewhere (e.g. from already tokenized batches), added to
            those of `texts`.

    Returns:
        `(model, new_tokenizer, report)`: the model changed in place, the new tokenizer (same
        class), and a report with `vocab_before`, `vocab_kept`, `kept_fraction`, `kept_ids`
        (ascending old ids: new id i is old id `kept_ids[i]`), `unk_id` and the embedding
        parameter counts before and after.
    """
    size = max(len(tokenizer), model.get_input_embeddings().num_embeddings)
    total = torch.zeros(size, dtype=torch.long)
    if counts is not None:
        total[: counts.numel()] += counts[:size].to(torch.long)
    total = count_token_ids(tokenizer, texts, total)
    seen = torch.nonzero(total >= min_count).flatten().tolist()
    keep = set(seen) | {int(i) for i in keep_ids} | config_token_ids(model) | position_padding_ids(model)
    keep = {i for i in keep if i < len(tokenizer)}
    pruned = prune_tokenizer(tokenizer, keep)

    embedding = model.get_input_embeddings()
    params_before = embedding.num_embeddings * embedding.embedding_dim
    vocab_before = embedding.num_embeddings
    prune_embeddings(model, pruned.kept_ids)
    try:
        record_method(model, "vocab_pruning")
    except UnsupportedModelError:
        # A family without a compressed class still reloads as itself: the smaller vocabulary is
        # plain config (vocab_size), no rebuild step is needed.
        logger.info("vocab_pruning: %s has no compressed class; saved as a plain model", type(model).__name__)
    report = {
        "tokenizer_model": pruned.model_type,
        "byte_level": pruned.byte_level,
        "vocab_before": vocab_before,
        "vocab_kept": len(pruned.kept_ids),
        "kept_fraction": len(pruned.kept_ids) / vocab_before,
        "seen_in_text": len(seen),
        "min_count": min_count,
        "embedding_params_before": params_before,
        "embedding_params_after": len(pruned.kept_ids) * embedding.embedding_dim,
        "unk_id": pruned.unk_id,
        "kept_ids": pruned.kept_ids,
        "pruned": pruned,
    }
    return model, pruned.tokenizer, report


# Modifier --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VocabPruningConfig(ModifierConfig):
    """Recipe keys of `vocab_pruning`."""

    min_count: int = option(1, help="keep a token when it occurs at least this often in the text", range=(1, None))
    use_full_train_set: bool = option(
        True, help="count tokens over the task's whole training split (false: only the training batches of the run)"
    )
    extra_text_files: tuple[str, ...] = option(
        (), help="UTF-8 text files (one text per line) whose tokens are kept too, e.g. expected inference text"
    )
    measure_dev: bool = option(
        True, help="report the share of dev-set tokens that become unknown (needs the task's dev split)"
    )


def _task_texts(task: Any, split: str, glue_dir: str | None) -> list[Text]:
    from ..data.glue import load_task_split

    dataset = load_task_split(task.name, split, glue_dir)
    columns = [dataset[field] for field in task.text_fields]
    return list(columns[0]) if len(columns) == 1 else list(zip(*columns))


def _batch_counts(ctx: StageContext, size: int) -> torch.Tensor:
    """Token counts over the run's training batches (every process's shard, summed)."""
    counts = torch.zeros(size, dtype=torch.float64)
    for batch in ctx.train_dataloader():
        ids = batch["input_ids"]
        if "attention_mask" in batch:
            ids = ids[batch["attention_mask"].bool()]
        counts += torch.bincount(ids.reshape(-1).cpu(), minlength=size)[:size].double()
    if ctx.world_size > 1:
        counts = ctx.all_reduce_mean(counts.to(ctx.device)).cpu() * ctx.world_size
    return counts.round().long()


@register_modifier("vocab_pruning")
class VocabPruningModifier(Modifier):
    """Keeps only the vocabulary the task uses (see the module docstring).

    Needs the tokenizer (`processing_class` of `CompressionTrainer`, `tokenizer=` of `compress`)
    and text: the task's training split (`ctx.task` + GLUE files or the Hub), else the run's
    training batches, plus `extra_text_files`.
    """

    config_class = VocabPruningConfig
    changes_vocabulary = True

    def __init__(self, config: VocabPruningConfig) -> None:
        super().__init__(config)
        self.config: VocabPruningConfig = config
        self.report: dict[str, Any] = {}
        self.kept_ids: list[int] = []
        self.unk_id: int | None = None

    def on_finalize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        tokenizer = ctx.tokenizer
        if tokenizer is None:
            raise RecipeError(
                "vocab_pruning needs the model's tokenizer: pass `processing_class=tokenizer` to CompressionTrainer "
                "or `tokenizer=` to compress()"
            )
        texts: list[Text] = []
        counts = None
        if self.config.use_full_train_set and ctx.task is not None:
            texts = _task_texts(ctx.task, "train", ctx.glue_dir)
            source = f"{ctx.task.name} train split ({len(texts)} examples)"
        elif ctx.train_dataloader is not None:
            counts = _batch_counts(ctx, max(len(tokenizer), model.get_input_embeddings().num_embeddings))
            source = "the run's training batches"
            if self.config.use_full_train_set:
                ctx.notes.append("vocab_pruning: no task given, so tokens were counted over the training batches")
        elif not self.config.extra_text_files:
            raise DataError(
                "vocab_pruning has no text to count tokens on: give the trainer a task (or training data), or name "
                "`extra_text_files`"
            )
        else:
            source = "extra_text_files only"
        extra = list(read_text_files(self.config.extra_text_files))
        old_tokenizer = tokenizer
        _, new_tokenizer, report = prune_vocabulary(
            model, tokenizer, [*texts, *extra], min_count=self.config.min_count, counts=counts
        )
        pruned: PrunedTokenizer = report.pop("pruned")
        self.kept_ids = report.pop("kept_ids")
        self.unk_id = report["unk_id"]
        report.update(text_source=source, extra_texts=len(extra))
        if self.config.measure_dev and ctx.task is not None:
            try:
                report.update(dev_token_rates(old_tokenizer, pruned, _task_texts(ctx.task, "validation", ctx.glue_dir)))
            except DataError as exc:
                ctx.notes.append(f"vocab_pruning: dev unknown-token rate not measured ({exc})")
        ctx.tokenizer = new_tokenizer
        self.report = report
        logger.info(
            "vocab_pruning: kept %d of %d tokens (%.1f%%)",
            report["vocab_kept"],
            report["vocab_before"],
            100 * report["kept_fraction"],
        )
        return model

    def summary(self) -> dict[str, Any]:
        return {"type": self.type_name, "min_count": self.config.min_count, **self.report}

    def state_dict(self) -> dict[str, Any]:
        return {"kept_ids": self.kept_ids, "unk_id": self.unk_id, "report": self.report}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kept_ids = list(state.get("kept_ids", []))
        self.unk_id = state.get("unk_id")
        self.report = dict(state.get("report", {}))
