"""`vocab_pruning`: keep only the tokens the task uses; shrink the embedding matrix and the
tokenizer.

A GLUE task uses a small part of a 30k (BERT) or 250k (XLM-R) vocabulary, yet every row of the
word-embedding matrix is stored. This technique counts the tokens of the task's training text
(all of it by default, not only the `max_train_samples` slice), optionally of extra text files,
keeps those reaching `min_count` plus every special token, and then

- keeps those rows of the word embeddings (and of a tied or untied output layer and its bias,
  for masked-LM heads), re-indexed densely in old-id order, and sets `config.vocab_size`;
- rewrites the tokenizer the same way (`hf_compress.methods.vocabulary.tokenizer`), so the saved
  model and tokenizer work unchanged with `AutoTokenizer`, `pipeline` and `from_pretrained`. Tokens
  no longer kept become the unknown token (WordPiece, Unigram) or smaller kept pieces (byte-level
  BPE).

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
from collections.abc import Iterable
from typing import Any

import torch
from transformers import PreTrainedModel

from ...checkpoint.format import record_method
from ...errors import DataError, RecipeError, UnsupportedModelError
from ...recipe.registry import register_modifier
from ..modifier import Modifier, StageContext
from .config import VocabPruningConfig
from .embeddings import config_token_ids, position_padding_ids, prune_embeddings
from .token_counts import Text, count_token_ids, dev_token_rates, read_text_files
from .tokenizer import PrunedTokenizer, prune_tokenizer

logger = logging.getLogger(__name__)


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
    keep = (
        set(seen)
        | {int(i) for i in keep_ids}
        | config_token_ids(model)
        | position_padding_ids(model)
    )
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
        logger.info(
            "vocab_pruning: %s has no compressed class; saved as a plain model",
            type(model).__name__,
        )
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


def _task_texts(task: Any, split: str, glue_dir: str | None) -> list[Text]:
    from ...data.glue import load_task_split

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
    description = "vocabulary pruning"
    hub_tags = ("pruned", "vocab-pruned")

    def __init__(self, config: VocabPruningConfig) -> None:
        super().__init__(config)
        self.config: VocabPruningConfig = config
        self.report: dict[str, Any] = {}
        self.kept_ids: list[int] = []
        self.unk_id: int | None = None

    def on_initialize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        if model.get_output_embeddings() is not None:
            raise UnsupportedModelError(
                f"vocab_pruning: {type(model).__name__} predicts tokens over its whole vocabulary "
                "(a language-model head), so removing tokens would stop it from ever producing "
                "them; use vocab_pruning on a model with a task head (e.g. "
                "ForSequenceClassification)"
            )
        return None

    def on_finalize(self, model: PreTrainedModel, ctx: StageContext) -> PreTrainedModel | None:
        tokenizer = ctx.tokenizer
        if tokenizer is None:
            raise RecipeError(
                "vocab_pruning needs the model's tokenizer: pass `processing_class=tokenizer` to "
                "CompressionTrainer or `tokenizer=` to compress()"
            )
        texts: list[Text] = []
        counts = None
        if self.config.use_full_train_set and ctx.task is not None:
            texts = _task_texts(ctx.task, "train", ctx.glue_dir)
            source = f"{ctx.task.name} train split ({len(texts)} examples)"
        elif ctx.train_dataloader is not None:
            counts = _batch_counts(
                ctx, max(len(tokenizer), model.get_input_embeddings().num_embeddings)
            )
            source = "the run's training batches"
            if self.config.use_full_train_set:
                ctx.notes.append(
                    "vocab_pruning: no task given, so tokens were counted over the training batches"
                )
        elif not self.config.extra_text_files:
            raise DataError(
                "vocab_pruning has no text to count tokens on: give the trainer a task (or "
                "training data), or name `extra_text_files`"
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
                report.update(
                    dev_token_rates(
                        old_tokenizer, pruned, _task_texts(ctx.task, "validation", ctx.glue_dir)
                    )
                )
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
