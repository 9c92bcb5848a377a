"""The generated recipe reference is current, and the README's two commands are what CI runs."""

from pathlib import Path

from hf_compress.recipe.docs import recipe_reference

REPO = Path(__file__).resolve().parents[1]


def test_recipe_reference_is_up_to_date():
    current = (REPO / "docs" / "recipes.md").read_text()
    assert current == recipe_reference(), (
        "run `python -m hf_compress.recipe.docs > docs/recipes.md`"
    )


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()
