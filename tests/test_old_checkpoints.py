"""Checkpoints written by an earlier layout of the package still load, with their saved logits.

The fixtures in tests/fixtures/ were saved by `save_pretrained` before the package was
reorganised; `expected_logits.safetensors` holds the logits of the in-memory model that was saved,
on `tiny_inputs()`, on the CPU that saved it. Another CPU's float32 kernels may round differently
(seen: 2e-9 on logits of about 1e-2), so the logits must agree to 1e-6, far below what a wrongly
rebuilt layer gives (1e-3 and more).
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import tiny_inputs
from transformers import AutoModelForSequenceClassification

import hf_compress  # noqa: F401  (registers the compressed model types)

FIXTURES = Path(__file__).parent / "fixtures"
CHECKPOINTS = sorted(p for p in FIXTURES.iterdir() if (p / "config.json").is_file())


def test_fixtures_are_present():
    assert [p.name for p in CHECKPOINTS] == [
        "bert-pruned-lowrank-int8",
        "roberta-shared-sparse-clustered",
    ]


@pytest.mark.parametrize("directory", CHECKPOINTS, ids=lambda p: p.name)
def test_old_checkpoint_reloads_with_the_saved_logits(directory):
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    with torch.no_grad():
        logits = model(**tiny_inputs()).logits
    expected = load_file(str(directory / "expected_logits.safetensors"))["logits"]
    torch.testing.assert_close(logits, expected, rtol=0.0, atol=1e-6)
