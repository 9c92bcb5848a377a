"""scripts/model_cards.py: the cards in model_cards/ are what the generator makes from their
report.json and recipe.yaml, and a run taken in is published without local paths."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from hub_server import SAMPLE_RECIPE, sample_report

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("model_cards", REPO / "scripts" / "model_cards.py")
model_cards = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model_cards)
FOLDERS = sorted(p for p in (REPO / "model_cards").iterdir() if (p / "report.json").is_file())


def test_model_cards_holds_real_runs():
    assert FOLDERS, "model_cards/ must hold the cards of real runs"


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_each_card_is_what_the_generator_makes(folder):
    assert (folder / "README.md").read_text() == model_cards.card_text(folder), (
        "run `python scripts/model_cards.py` to regenerate"
    )


def test_a_run_is_taken_in_without_local_paths(tmp_path):
    run = tmp_path / "private" / "outputs" / "minilm-small"
    run.mkdir(parents=True)
    report = {**sample_report(None), "output_dir": str(run), "base_model": str(tmp_path / "base")}
    (run / "report.json").write_text(json.dumps(report))
    (run / "recipe.yaml").write_text(SAMPLE_RECIPE + f"teacher: {tmp_path / 'teacher'}\n")
    cards = tmp_path / "cards"
    cards.mkdir()
    folder = model_cards.take_in(run, cards)
    assert folder == cards / "minilm-small"
    model_cards.rebuild(cards)
    for name in ("report.json", "recipe.yaml", "README.md"):
        assert str(tmp_path) not in (folder / name).read_text(), name
    assert json.loads((folder / "report.json").read_text())["output_dir"] == "minilm-small"
