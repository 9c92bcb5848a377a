"""Generic checks for every technique case in tests/matrix_cases/ on every tiny model family."""

from __future__ import annotations

import json
import tempfile

import pytest
import torch
from matrix import all_cases, apply_case
from tiny import logits, tiny_inputs
from transformers import AutoConfig, AutoModelForSequenceClassification

import hf_compress  # noqa: F401  (registers the compressed format)
from hf_compress.evaluation.measure import count_parameters, saved_size_bytes

PARAMS = [
    pytest.param(case, family, id=f"{case.id}-{family}")
    for case in all_cases()
    for family in case.families
]


@pytest.mark.parametrize(("case", "family"), PARAMS)
def test_technique_matrix(case, family):
    model, dense = apply_case(case, family)
    inputs = tiny_inputs()

    # applies and runs: logits of the right shape, finite
    out = logits(model, inputs)
    assert out.shape == (3, dense.config.num_labels)
    assert torch.isfinite(out).all()

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        # config JSON round trip: the compression_config survives as written
        saved = json.loads((__import__("pathlib").Path(tmp) / "config.json").read_text())
        reread = AutoConfig.from_pretrained(tmp)
        assert getattr(reread, "compression_config", None) == saved.get("compression_config")
        assert getattr(model.config, "compression_config", None) == saved.get("compression_config")
        # save -> from_pretrained gives the same logits
        reloaded = AutoModelForSequenceClassification.from_pretrained(tmp).eval()
        torch.testing.assert_close(logits(reloaded, inputs), out, atol=case.atol, rtol=0)

    # the model really shrinks
    total, nonzero = count_parameters(model)
    dense_total, dense_nonzero = count_parameters(dense)
    if case.shrinks == "parameters":
        assert total < dense_total
    elif case.shrinks == "nonzero":
        assert nonzero < dense_nonzero
    elif case.shrinks == "bytes":
        assert saved_size_bytes(model) < saved_size_bytes(dense)
    else:
        assert case.shrinks == "none"


def test_matrix_has_cases():
    # An empty matrix would make test_technique_matrix vanish silently.
    assert all_cases(), "no technique registered a matrix case"
