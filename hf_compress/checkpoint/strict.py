"""Strict loading: a compressed checkpoint (or one saved with the requested head) loads
completely or not at all. transformers re-initialises missing weights and, with
`ignore_mismatched_sizes`, mismatched ones, with only a warning; these checks turn what that
would hide into a `CheckpointError` naming the checkpoint and the fix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel


def raise_mismatch(
    source: str, mismatched: list[tuple[str, Any, Any]], config: PretrainedConfig | None
) -> None:
    shown = "; ".join(
        f"{key} is {disk} in the weights but {want} in the config"
        for key, disk, want in mismatched[:3]
    )
    more = f" (and {len(mismatched) - 3} more)" if len(mismatched) > 3 else ""
    if all(is_head_key(key) for key, _, _ in mismatched):
        fix = (
            "the saved classification head has a different number of labels than the task needs; "
            "set `reinit_head: true` in the recipe (reinit_head=True in Python) to start from a "
            "fresh head, or use a base model without a classification head"
        )
    elif getattr(config, "compression_config", None):
        fix = (
            "config.json (its compression_config) does not describe these weights; restore the "
            "original config.json"
        )
    else:
        fix = "config.json does not describe these weights; restore the original config.json"
    raise CheckpointError(f"{source}: weights do not match config.json: {shown}{more}; {fix}")


def is_head_key(key: str) -> bool:
    return key.split(".")[0] in ("classifier", "pre_classifier", "qa_outputs")


def check_loading_info(
    model: PreTrainedModel,
    info: dict[str, Any],
    source: str,
    task_head: str,
    exact_head: bool,
    compressed: bool,
    reinit_head: bool = False,
) -> None:
    """Refuses loads that left tensors re-initialised or unused where that means a broken
    checkpoint (with `reinit_head`, a re-initialised task head is what was asked for)."""
    mismatched = [
        (k, list(a), list(b))
        for k, a, b in info.get("mismatched_keys") or []
        if not (reinit_head and is_head_key(k))
    ]
    if mismatched:
        raise_mismatch(source, mismatched, getattr(model, "config", None))
    if info.get("error_msgs"):
        raise CheckpointError(
            f"{source}: the weights did not load: {'; '.join(map(str, info['error_msgs']))[:300]}"
        )
    if not (exact_head or compressed):
        # a plain base checkpoint getting a fresh head: transformers' usual behaviour (it warns)
        return
    prefix = f"{model.base_model_prefix}." if model.base_model_prefix else "\0"
    children = {name for name, _ in model.named_children()}

    def in_body(key: str) -> bool:
        # The encoder (everything but the task head). For a base model every child is body.
        if task_head == "base":
            return (key[len(prefix) :] if key.startswith(prefix) else key).split(".")[0] in children
        return key.startswith(prefix)

    missing, unexpected = (
        sorted(info.get("missing_keys") or []),
        sorted(info.get("unexpected_keys") or []),
    )
    if not exact_head:
        # A compressed encoder saved without this head (or with another task's head): the head
        # is new / dropped, but the encoder must load completely.
        missing = [k for k in missing if in_body(k)]
        unexpected = [k for k in unexpected if in_body(k)]
    elif task_head == "base":
        unexpected = [k for k in unexpected if in_body(k)]  # the saved head is dropped on purpose
    if task_head == "base" or not exact_head:
        # The pooler is optional: RoBERTa / DistilBERT heads and every MLM head are built
        # without it, so their checkpoints lack it, and a base model loaded from them gets a new
        # one.
        missing = [k for k in missing if not is_pooler(k, prefix)]
        unexpected = [k for k in unexpected if not is_pooler(k, prefix)]
    problems = []
    if missing:
        problems.append(
            f"{len(missing)} tensors missing from the checkpoint (they would be random), e.g. "
            f"{', '.join(missing[:3])}"
        )
    if unexpected:
        problems.append(
            f"{len(unexpected)} tensors in the checkpoint that the model has no place for, e.g. "
            f"{', '.join(unexpected[:3])}"
        )
    if problems:
        kind = "compressed checkpoint" if compressed else "checkpoint"
        raise CheckpointError(
            f"{source}: the {kind} does not fit its config: {'; '.join(problems)}; the weights "
            "file or config.json is corrupt, edited, or from another model"
        )


def is_pooler(key: str, prefix: str) -> bool:
    return (key[len(prefix) :] if key.startswith(prefix) else key).startswith("pooler.")
