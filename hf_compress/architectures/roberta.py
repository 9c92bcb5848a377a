"""RoBERTa layout: the same module tree as BERT under `roberta.`."""

from __future__ import annotations

import dataclasses

from .base import register_adapter
from .bert import BERT

ROBERTA = register_adapter(dataclasses.replace(BERT, family="roberta"))
