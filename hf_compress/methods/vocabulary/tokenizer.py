"""Vocabulary surgery on a fast tokenizer: keep a subset of token ids, re-index them densely.

A Hugging Face fast tokenizer is a `tokenizers.Tokenizer` (the "backend") wrapped in a
transformers class. The backend serialises to one JSON document whose `model` section holds the
vocabulary (WordPiece / WordLevel / BPE: a token -> id map, BPE also its merges; Unigram: a list
of `[piece, score]` whose index is the id) and whose `added_tokens`, `post_processor` and
`padding` sections name special token ids. `prune_tokenizer` edits exactly those sections and
rebuilds the backend with `Tokenizer.from_str`, so the normaliser, pre-tokeniser, decoder and
the transformers class (and with it `AutoTokenizer`, `pipeline` and `save_pretrained`) stay as
they were.

Written here because neither `tokenizers` nor `transformers` offers "keep this subset of the
vocabulary": `train_new_from_iterator` learns a new vocabulary (new ids, so the embedding rows
of a trained model no longer match), and the vocabulary setters only add tokens.

Guarantees, for every text whose old encoding used only kept tokens:

- the new encoding is the old one with every id mapped through `old_to_new` (kept ids are
  re-indexed densely in old-id order, so the map is monotonic and one-to-one);
- WordPiece: a word whose pieces were not kept becomes the unknown token (WordPiece's own rule:
  if any piece of a word is missing the whole word is unknown), unless a shorter kept piece still
  covers it (then it is split differently);
- BPE: the intermediate tokens of every kept token's merge chain are kept too (without them the
  merge that builds the kept token could never fire), and only merges whose parts and result are
  kept remain, so a kept word encodes exactly as before. Byte-level BPE (RoBERTa, GPT-2) keeps
  its 256 byte tokens, so any text still encodes, as smaller pieces, never as unknown. A BPE
  without byte level and with an unknown token maps unseen characters to it; a BPE with neither
  silently drops unseen characters (the `tokenizers` library's behaviour);
- Unigram (XLM-R, ALBERT, T5 style): the best segmentation over the old vocabulary uses only
  kept pieces, so it is still the best over the kept subset; pieces that are gone are
  segmented from kept pieces or become the unknown piece. Byte-fallback tokens (`<0x..>`) are
  kept when the model uses byte fallback.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer, pre_tokenizers

from ...errors import UnsupportedModelError

SUPPORTED_MODELS = ("WordPiece", "WordLevel", "BPE", "Unigram")

# init_kwargs of the transformers wrapper that point at the old vocabulary; dropped so that the
# rebuilt tokenizer never re-reads (or, on save, copies) a stale vocabulary file.
_STALE_INIT_KWARGS = (
    "vocab_file",
    "merges_file",
    "tokenizer_file",
    "vocab",
    "merges",
    "tokenizer_object",
)


@dataclass
class PrunedTokenizer:
    """The result of `prune_tokenizer`.

    Args:
        tokenizer: the new tokenizer, of the same class as the old one.
        kept_ids: the old ids that were kept, ascending; new id `i` is old id `kept_ids[i]`.
        old_to_new: old id -> new id for every kept id.
        unk_id: the new tokenizer's unknown-token id (None when it has none).
        model_type: the backend model type (`WordPiece`, `BPE`, `Unigram`, `WordLevel`).
        byte_level: whether the backend is byte-level (all bytes kept, nothing becomes unknown).
    """

    tokenizer: Any
    kept_ids: list[int]
    old_to_new: dict[int, int]
    unk_id: int | None
    model_type: str
    byte_level: bool


def backend_json(tokenizer: Any) -> dict[str, Any]:
    """The backend tokenizer's JSON document.

    Raises:
        UnsupportedModelError: the tokenizer is a slow (Python) tokenizer without a backend.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UnsupportedModelError(
            f"{type(tokenizer).__name__} is not a fast tokenizer (it has no `backend_tokenizer`); "
            "vocabulary pruning edits the `tokenizers` backend. Load the tokenizer with "
            "`AutoTokenizer.from_pretrained(...)` (fast)."
        )
    data = json.loads(backend.to_str())
    model_type = data.get("model", {}).get("type")
    if model_type is None:  # old serialisations omit the type; infer it from the fields
        model = data["model"]
        model_type = (
            "BPE"
            if "merges" in model
            else "Unigram"
            if isinstance(model.get("vocab"), list)
            else "WordPiece"
        )
        model["type"] = model_type
    if model_type not in SUPPORTED_MODELS:
        raise UnsupportedModelError(
            f"vocabulary pruning supports {', '.join(SUPPORTED_MODELS)} tokenizers; this one's "
            f"model is {model_type!r}"
        )
    return data


def _contains_byte_level(component: Any) -> bool:
    if not isinstance(component, dict):
        return False
    if component.get("type") == "ByteLevel":
        return True
    children = [
        *component.get("pretokenizers", []),
        *component.get("decoders", []),
        *component.get("processors", []),
    ]
    return any(_contains_byte_level(child) for child in children)


def is_byte_level(data: dict[str, Any]) -> bool:
    """Whether the backend works on bytes (GPT-2 / RoBERTa style), seen in its pre-tokenizer or
    decoder."""
    return _contains_byte_level(data.get("pre_tokenizer")) or _contains_byte_level(
        data.get("decoder")
    )


def vocabulary(data: dict[str, Any]) -> dict[str, int]:
    """token -> id of the backend's model vocabulary (without added tokens)."""
    vocab = data["model"]["vocab"]
    if data["model"]["type"] == "Unigram":
        return {piece: index for index, (piece, _score) in enumerate(vocab)}
    return dict(vocab)


def _split_merge(merge: Any) -> tuple[str, str]:
    # tokenizers >= 0.20 writes merges as [left, right]; older files as "left right".
    if isinstance(merge, str):
        left, right = merge.split(" ", 1)
        return left, right
    return merge[0], merge[1]


def _merge_result(left: str, right: str, prefix: str | None) -> str:
    # With a continuing-subword prefix (e.g. "##"), BPE drops it from the right part when merging.
    if prefix and right.startswith(prefix):
        right = right[len(prefix) :]
    return left + right


def _referenced_ids(component: Any) -> set[int]:
    """Ids a post-processor names (TemplateProcessing special tokens, Bert/Roberta cls and sep)."""
    found: set[int] = set()
    if isinstance(component, dict):
        for spec in (component.get("special_tokens") or {}).values():
            found.update(spec.get("ids", []))
        for key in ("cls", "sep"):
            if isinstance(component.get(key), list) and len(component[key]) == 2:
                found.add(component[key][1])
        for child in component.get("processors", []):
            found |= _referenced_ids(child)
    return found


def _remap_processor(component: Any, old_to_new: dict[int, int]) -> None:
    if not isinstance(component, dict):
        return
    for spec in (component.get("special_tokens") or {}).values():
        spec["ids"] = [old_to_new[i] for i in spec.get("ids", [])]
    for key in ("cls", "sep"):
        if isinstance(component.get(key), list) and len(component[key]) == 2:
            component[key][1] = old_to_new[component[key][1]]
    for child in component.get("processors", []):
        _remap_processor(child, old_to_new)


def required_ids(tokenizer: Any, data: dict[str, Any] | None = None) -> set[int]:
    """Ids that every pruned vocabulary must keep, whatever the text.

    Special tokens (named by the wrapper, listed as added tokens, or used by the post-processor
    and padding), the unknown token, the 256 byte tokens of a byte-level backend, and the
    byte-fallback tokens of a Unigram / BPE model that falls back to bytes.
    """
    data = data if data is not None else backend_json(tokenizer)
    vocab = vocabulary(data)
    keep: set[int] = set(getattr(tokenizer, "all_special_ids", []) or [])
    keep.update(token["id"] for token in data.get("added_tokens") or [])
    keep |= _referenced_ids(data.get("post_processor"))
    padding = data.get("padding") or {}
    if padding.get("pad_id") is not None:
        keep.add(padding["pad_id"])
    model = data["model"]
    if model["type"] == "Unigram" and model.get("unk_id") is not None:
        keep.add(model["unk_id"])
    elif model.get("unk_token") is not None and model["unk_token"] in vocab:
        keep.add(vocab[model["unk_token"]])
    if is_byte_level(data):
        keep.update(vocab[ch] for ch in pre_tokenizers.ByteLevel.alphabet() if ch in vocab)
    if model.get("byte_fallback"):
        keep.update(vocab[f"<0x{b:02X}>"] for b in range(256) if f"<0x{b:02X}>" in vocab)
    return keep


def close_over_merges(data: dict[str, Any], keep: set[int]) -> set[int]:
    """Adds to `keep` the parts of every BPE merge whose result is kept, until nothing changes.

    Each token a BPE produces is built by a chain of merges; the merge that builds it needs both
    parts present first, so the parts (and their parts) must stay in the vocabulary.
    """
    if data["model"]["type"] != "BPE":
        return keep
    vocab = vocabulary(data)
    prefix = data["model"].get("continuing_subword_prefix")
    by_result: dict[str, list[tuple[str, str]]] = {}
    for merge in data["model"].get("merges", []):
        left, right = _split_merge(merge)
        by_result.setdefault(_merge_result(left, right, prefix), []).append((left, right))
    id_to_token = {i: t for t, i in vocab.items()}
    keep = set(keep)
    pending = [id_to_token[i] for i in keep if i in id_to_token]
    while pending:
        token = pending.pop()
        for left, right in by_result.get(token, []):
            for part in (left, right):
                part_id = vocab.get(part)
                if part_id is not None and part_id not in keep:
                    keep.add(part_id)
                    pending.append(part)
    return keep


def _prune_model_section(model: dict[str, Any], kept: set[int], old_to_new: dict[int, int]) -> None:
    model_type = model["type"]
    if model_type == "Unigram":
        pieces = [
            [piece, score] for index, (piece, score) in enumerate(model["vocab"]) if index in kept
        ]
        new_ids = [old_to_new[index] for index in range(len(model["vocab"])) if index in kept]
        if new_ids != list(range(len(pieces))):
            # A Unigram vocabulary is a list (id = position): added tokens with ids between its
            # pieces would leave holes in it.
            raise UnsupportedModelError(
                "this Unigram tokenizer has added tokens with ids inside its piece vocabulary; "
                "vocabulary pruning cannot re-index it densely"
            )
        model["vocab"] = pieces
        if model.get("unk_id") is not None:
            model["unk_id"] = old_to_new[model["unk_id"]]
        return
    vocab = model["vocab"]
    model["vocab"] = {
        token: old_to_new[i]
        for token, i in sorted(vocab.items(), key=lambda item: item[1])
        if i in kept
    }
    if model_type == "BPE":
        prefix = model.get("continuing_subword_prefix")
        kept_tokens = model["vocab"]
        merges = []
        for merge in model.get("merges", []):
            left, right = _split_merge(merge)
            if (
                left in kept_tokens
                and right in kept_tokens
                and _merge_result(left, right, prefix) in kept_tokens
            ):
                merges.append(merge)
        model["merges"] = merges


def _rebuild_wrapper(tokenizer: Any, backend: Tokenizer, old_to_new: dict[int, int]) -> Any:
    """The same transformers tokenizer class around the new backend (as `train_new_from_iterator`
    does)."""
    kwargs = {k: v for k, v in tokenizer.init_kwargs.items() if k not in _STALE_INIT_KWARGS}
    decoder = kwargs.get("added_tokens_decoder")
    if decoder:
        kwargs["added_tokens_decoder"] = {
            old_to_new[i]: copy.deepcopy(t) for i, t in decoder.items() if i in old_to_new
        }
    kwargs["tokenizer_object"] = backend
    try:
        new = type(tokenizer)(**kwargs)
    except TypeError as exc:
        # A class that builds its backend itself and passes it on explicitly rejects a second
        # `tokenizer_object`; build it plainly and swap the backend in (what transformers'
        # `train_new_from_iterator` does too).
        if "tokenizer_object" not in str(exc):
            raise
        kwargs.pop("tokenizer_object")
        new = type(tokenizer)(**kwargs)
        new._tokenizer = backend
    for attr in ("model_max_length", "padding_side", "truncation_side"):
        if hasattr(tokenizer, attr):
            setattr(new, attr, getattr(tokenizer, attr))
    return new


def prune_tokenizer(tokenizer: Any, keep_ids: Iterable[int]) -> PrunedTokenizer:
    """Keeps only `keep_ids` (plus `required_ids` and, for BPE, the merge closure) of a fast
    tokenizer.

    Args:
        tokenizer: a transformers fast tokenizer (WordPiece, WordLevel, BPE or Unigram backend).
        keep_ids: old token ids to keep (typically every id seen in the task's text).

    Returns:
        A `PrunedTokenizer` with the new tokenizer (same class, same normaliser, pre-tokeniser,
        post-processor and decoder) and the kept old ids in ascending order.

    Raises:
        UnsupportedModelError: a slow tokenizer, or a backend model type that cannot be pruned.
    """
    data = backend_json(tokenizer)
    vocab = vocabulary(data)
    added_ids = {token["id"] for token in data.get("added_tokens") or []}
    all_ids = set(vocab.values()) | added_ids
    kept = {int(i) for i in keep_ids if int(i) in all_ids} | required_ids(tokenizer, data)
    kept = close_over_merges(data, kept)
    kept_ids = sorted(kept)
    old_to_new = {old: new for new, old in enumerate(kept_ids)}

    _prune_model_section(data["model"], kept, old_to_new)
    # Added tokens are few (special tokens and user additions): keep them all, re-indexed.
    for token in data.get("added_tokens") or []:
        token["id"] = old_to_new[token["id"]]
    _remap_processor(data.get("post_processor"), old_to_new)
    if data.get("padding") and data["padding"].get("pad_id") is not None:
        data["padding"]["pad_id"] = old_to_new[data["padding"]["pad_id"]]
    backend = Tokenizer.from_str(json.dumps(data))

    new_tokenizer = _rebuild_wrapper(tokenizer, backend, old_to_new)
    unk_id = None
    if (
        getattr(tokenizer, "unk_token_id", None) is not None
        and tokenizer.unk_token_id in old_to_new
    ):
        unk_id = old_to_new[tokenizer.unk_token_id]
    elif data["model"]["type"] == "Unigram":
        unk_id = data["model"].get("unk_id")
    return PrunedTokenizer(
        tokenizer=new_tokenizer,
        kept_ids=kept_ids,
        old_to_new=old_to_new,
        unk_id=unk_id,
        model_type=data["model"]["type"],
        byte_level=is_byte_level(data),
    )
