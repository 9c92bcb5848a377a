"""Cutting the embedding matrix (and tied output layers) to the kept token ids, and mapping old
ids to new ones."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedModel

from ...errors import UnsupportedModelError
from ..quantization.layers import QuantizedEmbedding

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


# Model surgery -------------------------------------------------------------------------------
def _select_embedding(
    embedding: nn.Module, index: torch.Tensor, padding_idx: int | None
) -> nn.Module:
    if isinstance(embedding, QuantizedEmbedding):
        return embedding.select_rows(index, padding_idx)
    if not isinstance(embedding, nn.Embedding):
        raise UnsupportedModelError(
            f"vocab_pruning: the input embedding is a {type(embedding).__name__}, not an "
            "nn.Embedding; apply vocab_pruning before techniques that replace the embedding"
        )
    weight = embedding.weight
    new = nn.Embedding(
        len(index),
        embedding.embedding_dim,
        padding_idx=padding_idx,
        device=weight.device,
        dtype=weight.dtype,
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
            f"vocab_pruning: the tokenizer produces ids up to {max(kept_ids, default=-1)} but the "
            f"model has only {rows} embedding rows; the tokenizer does not belong to this model"
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
            raise UnsupportedModelError(
                f"vocab_pruning: the output layer is a {type(output).__name__}, not nn.Linear"
            )
        new_output = nn.Linear(
            output.in_features,
            len(kept_ids),
            bias=output.bias is not None,
            device=device,
            dtype=output.weight.dtype,
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
        if not isinstance(module, (nn.Embedding, QuantizedEmbedding)) and isinstance(
            padding_idx, int
        ):
            ids.update(range(padding_idx + 1))
    return ids


def remap_token_ids(
    input_ids: torch.Tensor, kept_ids: Sequence[int], unk_id: int | None
) -> torch.Tensor:
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
