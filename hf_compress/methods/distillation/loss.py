"""The distillation losses: soft targets at temperature T (Hinton et al. 2015) and hidden-state
matching (DistilBERT's cosine loss, or MSE), with the student-to-teacher layer map."""

from __future__ import annotations

import torch
import torch.nn.functional as F


# Loss terms ---------------------------------------------------------------------------------
def soft_target_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    regression: bool = False,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The soft-target term of Hinton et al. (2015).

    Args:
        student_logits: `(batch, num_labels)` student logits, or `(batch, seq, vocab)` of a
            language model (one distribution per token).
        teacher_logits: the teacher's logits of the same shape (no gradient).
        temperature: softmax temperature T; the KL is multiplied by T^2 so its gradient keeps the
            same scale as the hard-label loss when T changes.
        regression: one output (STS-B): the mean squared error to the teacher's prediction
            instead (a temperature has no meaning there).
        attention_mask: `(batch, seq)`, 1 for real tokens: per-token logits average the KL over
            these tokens only (`None` counts every token).

    Returns:
        A scalar: `T^2 * KL(p_teacher || p_student)` averaged over the examples (or the real
        tokens), or the MSE.
    """
    student_logits, teacher_logits = student_logits.float(), teacher_logits.float()
    if regression:
        return F.mse_loss(student_logits.view(-1), teacher_logits.view(-1))
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    if student_logits.dim() == 2:
        kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
        return kl * temperature**2
    per_token = F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(-1)
    if attention_mask is None:
        return per_token.mean() * temperature**2
    mask = attention_mask.to(per_token.device, per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp_min(1.0) * temperature**2


def hidden_state_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    attention_mask: torch.Tensor | None,
    kind: str = "cosine",
) -> torch.Tensor:
    """Distance between one student and one teacher hidden-state tensor over non-padding tokens.

    Args:
        student_hidden: `(batch, seq, hidden)`, already projected to the teacher's hidden size.
        teacher_hidden: `(batch, seq, hidden)`.
        attention_mask: `(batch, seq)`, 1 for real tokens; `None` counts every token.
        kind: `cosine` (mean of 1 - cosine similarity per token, as DistilBERT) or `mse` (mean
            squared error per element).
    """
    student_hidden, teacher_hidden = student_hidden.float(), teacher_hidden.float()
    if attention_mask is None:
        attention_mask = torch.ones(student_hidden.shape[:2], device=student_hidden.device)
    mask = attention_mask.to(student_hidden.device, torch.float32)
    tokens = mask.sum().clamp_min(1.0)
    if kind == "cosine":
        per_token = 1.0 - F.cosine_similarity(student_hidden, teacher_hidden, dim=-1)
        return (per_token * mask).sum() / tokens
    if kind == "mse":
        per_token = (student_hidden - teacher_hidden).pow(2).mean(dim=-1)
        return (per_token * mask).sum() / tokens
    raise ValueError(f"hidden_loss {kind!r}: allowed values: cosine, mse")


def default_layer_map(
    student_layers: int, teacher_layers: int, origin: list[int] | None = None
) -> list[int]:
    """The teacher layer each student layer imitates by default.

    A student layer copied from teacher layer `k_i` replaces the block of teacher layers up to
    the next kept one, `k_i .. k_{i+1} - 1`. Its output is what the next student layer (a copy
    of `k_{i+1}`) receives, and in the teacher `k_{i+1}` receives the output of `k_{i+1} - 1`:
    so the student layer imitates the block's last layer, and the last student layer imitates
    the teacher's last layer (the one the classifier reads, as in DistilBERT's final-state
    cosine loss). Without a known origin the blocks are evenly spaced.

    Args:
        student_layers: number of student layers.
        teacher_layers: number of teacher layers.
        origin: the teacher layer each student layer was copied from (`layer_origin`), if known.
    """
    if (
        origin is not None
        and len(origin) == student_layers
        and max(origin, default=0) < teacher_layers
    ):
        return [origin[i + 1] - 1 for i in range(student_layers - 1)] + [teacher_layers - 1]
    return [(i + 1) * teacher_layers // student_layers - 1 for i in range(student_layers)]
