"""Recipe keys of `vocab_pruning`."""

from __future__ import annotations

from dataclasses import dataclass

from ...recipe.fields import ModifierConfig
from ...recipe.registry import recipe_type
from ...recipe.schema import option


# Modifier --------------------------------------------------------------------------------------
@recipe_type("vocab_pruning")
@dataclass(frozen=True)
class VocabPruningConfig(ModifierConfig):
    """Recipe keys of `vocab_pruning`."""

    changes_vocabulary = True

    min_count: int = option(
        1, help="keep a token when it occurs at least this often in the text", range=(1, None)
    )
    use_full_train_set: bool = option(
        True,
        help="count tokens over the task's whole training split (false: only the training batches "
        "of the run)",
    )
    extra_text_files: tuple[str, ...] = option(
        (),
        help="UTF-8 text files (one text per line) whose tokens are kept too, e.g. expected "
        "inference text",
    )
    measure_dev: bool = option(
        True,
        help="report the share of dev-set tokens that become unknown (needs the task's dev split)",
    )
