"""Training-time input noise: a random fraction of each training sentence's tokens replaced by the
mask token (recipe key `data.token_mask_prob`).

`CompressionTrainer` masks each training batch before the forward pass, and the distillation
modifier runs the teacher on that same masked batch, so the soft targets describe exactly the
input the student saw: "consistent teaching" (Beyer et al. 2022, "Knowledge distillation: A good
teacher is patient and consistent"), a way to give the student more distinct inputs from the same
sentences. The gold label may no longer fit a masked sentence, so without a teacher this is
plain input noise. Evaluation and the calibration batches of importance scores are never masked.

The positions are drawn by transformers' masked-LM collator (BERT's own noise), here replacing
every chosen token with the mask token; special tokens and padding are never chosen.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DataCollatorForLanguageModeling

from ..errors import RecipeError


class TokenMasker:
    """Replaces each non-special token of a batch with the mask token with probability
    `probability`."""

    def __init__(self, tokenizer: Any, probability: float, seed: int | None = None) -> None:
        if getattr(tokenizer, "mask_token_id", None) is None:
            raise RecipeError(
                f"data.token_mask_prob: {probability} needs a tokenizer with a mask token, and "
                f"{type(tokenizer).__name__} has none; set data.token_mask_prob: 0"
            )
        self.tokenizer = tokenizer
        self.probability = probability
        self._special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self._collator = DataCollatorForLanguageModeling(
            tokenizer, mlm_probability=probability, mask_replace_prob=1.0, random_replace_prob=0.0
        )
        # The collator seeds its generator only inside its own __call__ (built for DataLoader
        # workers); called directly, it would draw from the global RNG, so it gets one here.
        self._collator.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """A copy of `inputs` with masked `input_ids` (the other entries shared, the labels
        kept)."""
        ids = inputs["input_ids"]
        special = torch.isin(ids, self._special_ids.to(ids.device))
        attention = inputs.get("attention_mask")
        if attention is not None:
            special |= attention == 0
        # The collator draws on the CPU with its own seeded generator; the ids go back where they
        # were.
        masked, _ = self._collator.torch_mask_tokens(
            ids.detach().cpu().clone(), special_tokens_mask=special.cpu()
        )
        return {**inputs, "input_ids": masked.to(ids.device)}
