"""Regenerate the model cards in model_cards/ from the report.json and recipe.yaml of real runs.

    python scripts/model_cards.py                            # rebuild every model_cards/*/README.md
    python scripts/model_cards.py --add outputs/quickstart   # take in a finished run, then rebuild

Each `model_cards/<name>/` holds a finished run's `report.json` and `recipe.yaml` as they would be
published (local paths reduced to folder names, secrets redacted) and the `README.md` model card
hf-compress generates from them: the card that run's model carries on the Hub.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hf_compress.hub.model_card import build_model_card
from hf_compress.hub.public import public_recipe_yaml, public_report

CARDS = Path(__file__).resolve().parents[1] / "model_cards"


def take_in(output_dir: Path, cards: Path = CARDS) -> Path:
    """Copies a run's report.json and recipe.yaml, as published, into `cards/<run name>/`."""
    report = json.loads((output_dir / "report.json").read_text(encoding="utf-8"))
    recipe = (output_dir / "recipe.yaml").read_text(encoding="utf-8")
    target = cards / output_dir.resolve().name
    target.mkdir(parents=True, exist_ok=True)
    (target / "report.json").write_text(json.dumps(public_report(report), indent=2) + "\n")
    (target / "recipe.yaml").write_text(public_recipe_yaml(recipe), encoding="utf-8")
    return target


def card_text(folder: Path) -> str:
    """The model card generated from a folder's report.json and recipe.yaml."""
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    recipe = (folder / "recipe.yaml").read_text(encoding="utf-8")
    return str(build_model_card(report, recipe))


def rebuild(cards: Path = CARDS) -> list[Path]:
    """Writes README.md in every folder of `cards` that holds a report.json; returns them."""
    written = []
    for folder in sorted(p for p in cards.iterdir() if (p / "report.json").is_file()):
        (folder / "README.md").write_text(card_text(folder), encoding="utf-8")
        written.append(folder / "README.md")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--add", nargs="*", default=[], metavar="OUTPUT_DIR",
                        help="finished `hf-compress run` outputs to take in first")  # fmt: skip
    args = parser.parse_args(argv)
    for output in args.add:
        path = Path(output)
        if not (path / "report.json").is_file() or not (path / "recipe.yaml").is_file():
            print(f"{path}: not a finished hf-compress output (report.json and recipe.yaml needed)",
                  file=sys.stderr)  # fmt: skip
            return 2
        print(f"took in {take_in(path)}")
    for readme in rebuild():
        print(f"wrote {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
