"""Fuzzing recipes: seeded random mutations of valid recipes, hostile YAML and bad bytes.

Every case must end in a valid `Recipe` or a `RecipeError` whose message names where the bad
input came from (the file, the source label or the `--set` override), within a bounded time:
never a raw TypeError / KeyError / RecursionError / MemoryError from deep inside the parser.

The mutation corpus is built from the modifier types registered when the test runs (plus a
test-only probe type with one field of every kind the schema supports), so new techniques are
fuzzed as they land. Run with `-s` to see how many cases were tried.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from hf_compress import Recipe, RecipeError, register_modifier
from hf_compress.methods.modifier import Modifier
from hf_compress.recipe.fields import ModifierConfig
from hf_compress.recipe.registry import CONFIGS, registered_modifier_types
from hf_compress.recipe.schema import option, show_value
from hf_compress.recipe.yaml_io import MAX_RECIPE_BYTES

SEED = 20261127
DICT_MUTATIONS = 260
TEXT_MUTATIONS = 120
RANDOM_BYTE_FILES = 24
OVERRIDE_CASES = 60
# Per-case bound, in CPU seconds of this process (wall-clock time on a shared 2-core machine
# varied 10x with other jobs). A recipe parses in milliseconds; the slowest legitimate case (a
# file just under MAX_RECIPE_BYTES) takes about a second.
MAX_SECONDS_PER_CASE = 5.0


# A probe modifier with one field of every kind the schema converts, so the fuzzer reaches
# every branch of `schema._convert` whether or not real techniques are registered.
@dataclass(frozen=True)
class _ProbeStudent:
    num_layers: int | None = option(None, help="layers to keep", range=(1, 48))
    layers: tuple[int, ...] | None = option(None, help="which layers to keep")

    def __post_init__(self) -> None:
        if self.num_layers is not None and self.layers is not None:
            raise ValueError("give num_layers or layers, not both")


@dataclass(frozen=True)
class _ProbeConfig(ModifierConfig):
    sparsity: float = option(0.5, help="a fraction", range=(0, 1), exclusive=(False, True))
    bits: int = option(8, help="bit width", choices=(4, 8))
    method: str = option("a", help="a method", choices=("a", "b"))
    rank: int | None = option(None, help="a rank", range=(1, None))
    fisher: bool = option(False, help="a flag")
    mode: Literal["x", "y"] = option("x", help="a literal")
    groups: tuple[tuple[int, ...], ...] = option((), help="nested lists")
    options: dict[str, Any] = option(default_factory=dict, help="free-form mapping")
    student: _ProbeStudent | None = option(None, help="an optional section")


@register_modifier("_fuzz_probe")
class _Probe(Modifier):
    config_class = _ProbeConfig


# Base recipes --------------------------------------------------------------------------------
def _minimal() -> dict[str, Any]:
    return {
        "base_model": "org/model",
        "task": "sst2",
        "output_dir": "out",
        "stages": [{"name": "only"}],
    }


def _full() -> dict[str, Any]:
    probe = {
        "type": "_fuzz_probe",
        "sparsity": 0.3,
        "bits": 4,
        "method": "b",
        "rank": 8,
        "fisher": True,
        "mode": "y",
        "groups": [[0, 1], [2]],
        "options": {"k": [1, {"deep": None}], "s": "v"},
        "student": {"num_layers": 2},
        "targets": ["encoder", "re:layer\\.[0-9]+"],
        "ignore": ["classifier"],
        "start": 0.1,
        "end": 0.9,
    }
    return {
        "version": 1,
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "task": "mrpc",
        "teacher": "finetuned-base",
        "finetune_base": {
            "epochs": 1,
            "learning_rate": 3e-5,
            "max_train_samples": 100,
            "cache_dir": "cache",
        },
        "data": {
            "max_train_samples": 200,
            "max_eval_samples": 50,
            "max_seq_length": 64,
            "glue_dir": "glue",
        },
        "training": {"learning_rate": 5e-5, "per_device_train_batch_size": 8, "weight_decay": 0.01},
        "stages": [
            {"name": "probe", "epochs": 1, "modifiers": [probe], "training": {"warmup_steps": 2}},
            {"name": "after", "epochs": 0, "modifiers": [{"type": "_fuzz_probe"}]},
        ],
        "output_dir": "outputs/x",
        "push_to_hub": {"repo_id": "user/x", "private": True, "revision": "main"},
        "seed": 7,
    }


_TECHNIQUE_BASE = {
    "base_model": "m",
    "task": "rte",
    "teacher": "finetuned-base",
    "finetune_base": {"epochs": 1},
    "output_dir": "o",
}


def _technique_recipes(types: list[str]) -> list[dict[str, Any]]:
    """One single-stage recipe per registered technique that validates with its default keys
    (in a training stage if it allows one, else one-shot)."""
    recipes = []
    for type_name in types:
        for epochs in (1, 0):
            data = {
                **_TECHNIQUE_BASE,
                "stages": [
                    {"name": f"s_{type_name}", "epochs": epochs, "modifiers": [{"type": type_name}]}
                ],
            }
            try:
                Recipe.from_dict(copy.deepcopy(data), source="probe")
            except RecipeError:
                continue
            recipes.append(data)
            break
    return recipes


def _bases() -> list[dict[str, Any]]:
    types = [t for t in registered_modifier_types() if t != "_fuzz_probe"]
    bases = [_minimal(), _full(), *_technique_recipes(types)]
    for base in bases:
        Recipe.from_dict(copy.deepcopy(base), source="base")  # the corpus starts from valid recipes
    return bases


# Mutations -----------------------------------------------------------------------------------
def _deep_list(depth: int) -> list:
    node: list = []
    for _ in range(depth):
        node = [node]
    return node


def _deep_dict(depth: int) -> dict:
    node: dict = {}
    for _ in range(depth):
        node = {"a": node}
    return node


def _nasty_values(rng: random.Random) -> list[Any]:
    return [
        "", "x", " ", "ü日本語🙂\u202e", "\x00\x07\x1b", "a" * 100_000, "None", "null", "1e-5",
        "${HF_TOKEN}", 0, 1, -1, 7, -(10**30), 10**30, 10**400, 10**5000, 2**63,
        0.5, -0.0, 1e308, 5e-324, -1e-9, float("nan"), float("inf"), -float("inf"),
        True, False, None,
        [], {}, [None], [[]], [1, "a", None], {"k": "v"}, {1: 2}, {None: None}, (1, 2),
        b"\xff\xfe", {1, 2}, object(), complex(1, 2), _deep_list(rng.choice((40, 3000))),
        _deep_dict(3000),
    ]  # fmt: skip


_UNKNOWN_KEYS = [
    "unknown",
    "",
    " ",
    "Type",
    "ÿ",
    "__class__",
    "__init__",
    "x" * 10_000,
    0,
    None,
    True,
    1.5,
    (1, 2),
]


def _nodes(data: Any, path: tuple = ()) -> list[tuple]:
    """Every path into the nested structure (mapping keys and list indices), 12 levels deep at most
    (an earlier mutation may have planted a 3000-deep list)."""
    out = [path]
    if len(path) >= 12:
        return out
    if isinstance(data, dict):
        for key, value in data.items():
            out.extend(_nodes(value, (*path, key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            out.extend(_nodes(value, (*path, index)))
    return out


def _get(data: Any, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data


def _set(data: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    _get(data, path[:-1])[path[-1]] = value
    return data


def _mutate(data: Any, rng: random.Random, types: list[str]) -> tuple[Any, str]:
    paths = _nodes(data)
    containers = [p for p in paths if isinstance(_get(data, p), dict)]
    op = rng.choice(
        [
            "delete",
            "delete",
            "add_key",
            "replace",
            "replace",
            "replace",
            "stages",
            "type",
            "wrap",
            "boundary",
            "boundary",
        ]
    )
    if not containers:  # an earlier step replaced the whole recipe by a scalar or list
        op = "replace"
    if op == "delete":
        path = rng.choice(containers)
        node = _get(data, path)
        if node:
            key = rng.choice(list(node))
            del node[key]
            return data, f"delete {path + (key,)}"
    if op == "add_key":
        path = rng.choice(containers)
        key = rng.choice(_UNKNOWN_KEYS)
        _get(data, path)[key] = rng.choice(_nasty_values(rng)[:20])
        return data, f"add key {key!r:.20} at {path}"
    if (
        op == "stages"
        and isinstance(data, dict)
        and isinstance(data.get("stages"), list)
        and data["stages"]
    ):
        stages = data["stages"]
        how = rng.choice(
            ["reverse", "shuffle", "duplicate", "empty", "drop_modifiers", "swap_modifiers"]
        )
        if how == "reverse":
            stages.reverse()
        elif how == "shuffle":
            rng.shuffle(stages)
        elif how == "duplicate":
            stages.append(
                rng.choice(stages)
            )  # the same object twice: no deepcopy of planted deep lists
        elif how == "empty":
            stages.clear()
        else:
            stage = rng.choice(stages)
            if isinstance(stage, dict) and isinstance(stage.get("modifiers"), list):
                if how == "drop_modifiers":
                    stage["modifiers"] = []
                else:
                    stage["modifiers"].reverse()
                    stage["epochs"] = rng.choice([0, 1, 0.5, 3])
        return data, f"stages {how}"
    if op == "type":
        entries = [p for p in containers if "type" in _get(data, p)]
        if entries:
            path = rng.choice(entries)
            new = rng.choice(
                [*types, "not_a_technique", "", 3, None, ["head_pruning"], {"a": 1}, "HEAD_PRUNING"]
            )
            _get(data, path)["type"] = new
            return data, f"type {new!r} at {path}"
    if op == "boundary":
        entries = [
            p
            for p in containers
            if isinstance(_get(data, p).get("type"), str) and _get(data, p)["type"] in CONFIGS
        ]
        if entries:
            path = rng.choice(entries)
            entry = _get(data, path)
            fields = dataclasses.fields(CONFIGS[entry["type"]])
            field = rng.choice(fields)
            value = rng.choice(_boundary_values(field))
            entry[field.name] = value
            return data, f"boundary {field.name}={value!r:.30} at {path}"
    if op == "wrap":
        path = rng.choice(paths)
        node = _get(data, path)
        as_text = show_value(node)  # str() of a planted 3000-deep list would recurse too deep
        return _set(data, path, rng.choice([[node], {"x": node}, as_text])), f"wrap {path}"
    path = rng.choice(paths)
    value = rng.choice(_nasty_values(rng))
    return _set(data, path, value), f"replace {path} with {type(value).__name__}"


def _boundary_values(field: dataclasses.Field) -> list[Any]:
    """Values at and just past a config field's declared range and choices: where cross-field
    checks in `__post_init__` (divisions, index arithmetic) are most likely to break."""
    values: list[Any] = [0, 1, -1, 0.0, 1.0, 2, 1024, 10**9, None, [], [0], ["x"], "", "re:("]
    low, high = field.metadata.get("range") or (None, None)
    for bound in (low, high):
        if bound is not None:
            values += [bound, bound - 1, bound + 1, bound - 1e-9, bound + 1e-9]
            if isinstance(bound, int):
                values += [int(bound) - 1, int(bound) + 1]
    values += list(field.metadata.get("choices") or ())
    return values


def _mutate_text(text: str, rng: random.Random) -> str:
    alphabet = ":-[]{}&*!%@`|>#'\",?\t\n\r \x00\x85\u2028ü🙂" + "abc123"
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(text) + 1)
        op = rng.choice(["insert", "delete", "dup_line", "indent"])
        if op == "insert":
            text = (
                text[:i]
                + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5)))
                + text[i:]
            )
        elif op == "delete":
            text = text[:i] + text[i + rng.randint(1, 20) :]
        else:
            lines = text.split("\n")
            j = rng.randrange(len(lines))
            if op == "dup_line":
                lines.insert(j, lines[j])
            else:
                lines[j] = rng.choice(["  ", "\t", "    - "]) + lines[j]
            text = "\n".join(lines)
    return text


# Hostile YAML --------------------------------------------------------------------------------
def _billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n"


def _hostile_texts(valid: str) -> list[tuple[str, str]]:
    return [
        ("billion_laughs", _billion_laughs()),
        ("merge_alias", "base: &b {task: sst2}\nrecipe:\n  <<: *b\n"),
        ("anchor_only", valid.replace("task: mrpc", "task: &t mrpc")),
        ("alias_in_stage", valid + "extra: &e [1]\nmore: *e\n"),
        ("deep_flow_seq", "[" * 5000 + "]" * 5000),
        ("deep_flow_map", "{a: " * 5000 + "1" + "}" * 5000),
        ("deep_block", "".join("  " * i + "a:\n" for i in range(300)) + "  " * 300 + "1\n"),
        ("python_object_apply", "base_model: !!python/object/apply:os.system ['echo pwned']\n"),
        ("python_object_new", "base_model: !!python/object/new:os.system ['echo pwned']\n"),
        ("python_name", "base_model: !!python/name:os.system\n"),
        ("python_module", "base_model: !!python/module:os\n"),
        ("custom_tag", "base_model: !Custom {a: 1}\n"),
        ("binary_tag", "base_model: !!binary aGVsbG8=\n"),
        ("bad_binary", "base_model: !!binary '%%%'\n"),
        ("set_tag", "stages: !!set {a, b}\n"),
        ("omap_tag", "stages: !!omap [a: 1, b: 2]\n"),
        ("bad_timestamp", "base_model: !!timestamp 2020-13-45\n"),
        ("timestamp", valid.replace("seed: 7", "seed: 2020-01-01")),
        ("int_tag_on_text", "seed: !!int forty\n"),
        ("float_tag_on_text", "seed: !!float many\n"),
        ("huge_int", valid.replace("seed: 7", "seed: " + "9" * 5000)),
        ("huge_int_short", valid.replace("seed: 7", "seed: " + "9" * 400)),
        ("huge_float", valid.replace("learning_rate: 5.0e-05", "learning_rate: 1e99999")),
        ("nan", valid.replace("learning_rate: 5.0e-05", "learning_rate: .nan")),
        ("inf", valid.replace("epochs: 1", "epochs: .inf", 1)),
        ("negative", valid.replace("max_seq_length: 64", "max_seq_length: -64")),
        ("sexagesimal", valid.replace("seed: 7", "seed: 1:30")),
        (
            "hex_octal",
            valid.replace("seed: 7", "seed: 0x1F").replace(
                "max_seq_length: 64", "max_seq_length: 0o777"
            ),
        ),
        ("duplicate_keys", valid + "task: sst2\ntask: cola\n"),
        ("multiple_documents", valid + "---\n" + valid),
        ("empty", ""),
        ("comments_only", "# nothing\n# here\n"),
        ("document_marker_only", "---\n...\n"),
        ("directives", "%YAML 1.1\n%TAG ! tag:example.com,2000:\n---\n" + valid),
        ("bad_directive", "%YAML 9.9\n---\na: 1\n"),
        ("tabs", valid.replace("  ", "\t")),
        ("crlf", valid.replace("\n", "\r\n")),
        ("bom", "\ufeff" + valid),
        ("nul_chars", valid.replace("task", "ta\x00sk", 1)),
        ("control_chars", valid.replace("task", "ta\x07sk", 1)),
        ("lone_surrogate", valid.replace("user/x", "user/\ud800")),
        ("unicode_keys", valid.replace("seed", "sééd")),
        ("rtl_override", valid.replace("outputs/x", "outputs/\u202ex")),
        ("unterminated_quote", 'base_model: "abc\ntask: sst2\n'),
        ("unclosed_flow", "stages: [{name: a, epochs: 1\n"),
        ("scalar_doc", "just a string"),
        ("list_doc", "- a\n- b\n"),
        ("int_doc", "42"),
        ("null_doc", "null"),
        ("complex_key", "? [a, b]\n: 1\n"),
        ("long_line", "base_model: " + "m" * 100_000 + "\n"),
        ("over_limit_text", "a: " + "x" * (MAX_RECIPE_BYTES + 10)),
        (
            "many_keys_under_limit",
            "training: {" + ", ".join(f"k{i}: {i}" for i in range(MAX_RECIPE_BYTES // 16)) + "}\n",
        ),
    ]


# The harness ---------------------------------------------------------------------------------
class _Tally:
    def __init__(self) -> None:
        self.tried = 0
        self.valid = 0
        self.clean = 0
        self.failures: list[str] = []
        self.slowest = (0.0, "")

    def attempt(
        self, label: str, names: tuple[str, ...], fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        """Runs `fn(*args, **kwargs)` as one case; records a failure for raw exceptions, messages
        that do not name any of `names` (the source), non-Recipe results and slow parses."""
        self.tried += 1
        start = time.process_time()
        try:
            result = fn(*args, **kwargs)
        except RecipeError as exc:
            self.clean += 1
            message = str(exc)
            if not any(name in message for name in names):
                self.failures.append(f"{label}: message does not name {names}: {message[:200]}")
        except Exception as exc:  # noqa: BLE001  (the point: nothing but RecipeError may escape)
            self.failures.append(f"{label}: raw {type(exc).__name__}: {str(exc)[:200]}")
        else:
            if isinstance(result, Recipe):
                self.valid += 1
                self._check_round_trip(label, result)
            else:
                self.failures.append(f"{label}: returned {type(result).__name__}, not a Recipe")
        elapsed = time.process_time() - start
        if elapsed > self.slowest[0]:
            self.slowest = (elapsed, label)
        if elapsed > MAX_SECONDS_PER_CASE:
            self.failures.append(f"{label}: took {elapsed:.1f} s")

    def _check_round_trip(self, label: str, recipe: Recipe) -> None:
        # What validates must also save (recipe.yaml beside the weights) and re-validate.
        try:
            again = Recipe.from_string(recipe.to_yaml(), source="round-trip")
        except Exception as exc:  # noqa: BLE001
            self.failures.append(
                f"{label}: a valid recipe did not round-trip: "
                f"{type(exc).__name__}: {str(exc)[:200]}"
            )
            return
        before, after = _comparable(recipe.to_dict()), _comparable(again.to_dict())
        if before != after:
            changed = sorted(k for k in before if before.get(k) != after.get(k))
            self.failures.append(
                f"{label}: round trip changed {changed}: {str(before)[:300]} -> {str(after)[:300]}"
            )

    def report(self, name: str) -> str:
        return (
            f"\n[{name}] tried {self.tried} bad or mutated inputs: "
            f"{self.valid} still valid recipes, "
            f"{self.clean} clean RecipeErrors, {len(self.failures)} failures; "
            f"slowest case {self.slowest[0]:.2f} s ({self.slowest[1]})"
        )


def _comparable(data: Any) -> Any:
    # nan != nan: compare a marker instead, so a round-tripped nan (in free-form `options`) matches.
    if isinstance(data, float) and math.isnan(data):
        return "nan"
    if isinstance(data, dict):
        return {k: _comparable(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_comparable(v) for v in data]
    return data


def _dump(data: Any) -> str | None:
    try:
        return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    except Exception:  # noqa: BLE001  (object(), complex, 3000-deep lists: not YAML-representable)
        return None


def _assert_all_clean(tally: _Tally, name: str) -> None:
    print(tally.report(name))
    assert tally.tried > 0
    assert not tally.failures, (
        f"{len(tally.failures)} of {tally.tried} cases escaped:\n" + "\n".join(tally.failures[:30])
    )


# Tests ---------------------------------------------------------------------------------------
def test_mutated_recipes_end_in_a_recipe_or_a_clear_error(tmp_path):
    rng = random.Random(SEED)
    bases = _bases()
    types = registered_modifier_types()
    tally = _Tally()
    for i in range(DICT_MUTATIONS):
        data = copy.deepcopy(rng.choice(bases))
        steps = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            data, step = _mutate(data, rng, types)
            steps.append(step)
        label = f"dict-{i} ({'; '.join(steps)})"
        source = f"fuzz-dict-{i}"
        # No deepcopy here: a planted 3000-deep list would break copy.deepcopy itself.
        tally.attempt(label, (source,), Recipe.from_dict, data, source=source)
        text = _dump(data)
        if text is not None and i % 2 == 0:
            text_source = f"fuzz-text-{i}"
            tally.attempt(
                label + " as YAML", (text_source,), Recipe.from_string, text, source=text_source
            )
        if text is not None and i % 10 == 0:
            path = tmp_path / f"fuzz-{i}.yaml"
            path.write_text(text, encoding="utf-8")
            tally.attempt(label + " as a file", (str(path),), Recipe.from_yaml, path)
    _assert_all_clean(tally, "recipe mutations")
    # The corpus really exercises both outcomes.
    assert tally.valid > 5 and tally.clean > DICT_MUTATIONS // 2


def test_mutated_yaml_text_ends_in_a_recipe_or_a_clear_error():
    rng = random.Random(SEED + 1)
    texts = [yaml.safe_dump(base, sort_keys=False) for base in _bases()]
    tally = _Tally()
    for i in range(TEXT_MUTATIONS):
        text = _mutate_text(rng.choice(texts), rng)
        source = f"fuzz-chars-{i}"
        tally.attempt(f"chars-{i}", (source,), Recipe.from_string, text, source=source)
    for name, text in _hostile_texts(yaml.safe_dump(_full(), sort_keys=False)):
        tally.attempt(
            name, (f"hostile-{name}",), Recipe.from_string, text, source=f"hostile-{name}"
        )
    _assert_all_clean(tally, "YAML text")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("billion_laughs", _billion_laughs(), "aliases"),
        (
            "python_tag",
            "base_model: !!python/object/apply:os.system ['echo pwned']\n",
            "not valid YAML",
        ),
        ("deep_nesting", "[" * 5000 + "]" * 5000, "nested deeper than"),
        ("huge_int", "seed: " + "9" * 5000 + "\n", "cannot be read"),
        ("over_limit", "a: " + "x" * (MAX_RECIPE_BYTES + 10), "longer than"),
    ],
)
def test_hostile_yaml_gets_its_own_message(name, text, message):
    with pytest.raises(RecipeError, match=message):
        Recipe.from_string(text, source=name)


def test_bad_bytes_and_odd_paths(tmp_path):
    rng = random.Random(SEED + 2)
    valid = yaml.safe_dump(_full(), sort_keys=False).encode()
    files: list[tuple[str, bytes]] = [
        ("latin1", "base_model: café\n".encode("latin-1")),
        ("utf16_bom", "\ufeff".encode("utf-16-le") + valid.decode().encode("utf-16-le")),
        ("bad_byte_middle", valid[:50] + b"\xff\xfe\xc0" + valid[50:]),
        ("truncated_utf8", valid + "é".encode()[:1]),
        ("nul_bytes", b"\x00" * 64),
        ("empty", b""),
        ("exactly_limit", b"#" * MAX_RECIPE_BYTES),
        ("over_limit", b"a: 1\n" + b"#" * MAX_RECIPE_BYTES),
        ("big_valid_prefix", valid + b"# " + b"x" * (MAX_RECIPE_BYTES - len(valid) - 10) + b"\n"),
    ]
    files += [
        (f"random_{i}", rng.randbytes(rng.choice((1, 16, 256, 4096))))
        for i in range(RANDOM_BYTE_FILES)
    ]
    tally = _Tally()
    for name, data in files:
        path = tmp_path / f"{name}.yaml"
        path.write_bytes(data)
        tally.attempt(name, (str(path),), Recipe.from_yaml, path)
        assert path.read_bytes() == data, "reading a recipe must never change the file"
    for name, path in [
        ("missing", tmp_path / "nope.yaml"),
        ("directory", tmp_path),
        ("nul_in_path", Path(str(tmp_path / "a\x00b.yaml"))),
        ("very_long_name", tmp_path / ("n" * 5000 + ".yaml")),
    ]:
        tally.attempt(name, (str(path)[:100],), Recipe.from_yaml, path)
    _assert_all_clean(tally, "bytes and paths")


def test_fuzzed_overrides_end_in_a_recipe_or_a_clear_error():
    rng = random.Random(SEED + 3)
    base = _full()
    keys = [
        "seed", "task", "training.learning_rate", "stages.0.epochs", "stages.9.epochs",
        "stages.x.epochs", "stages.0.modifiers.0.sparsity", "stages.0.modifiers.0.type", "data",
        "data.max_seq_length.deeper", "", ".", "..", "a..b", "stages.-1.name",
        "push_to_hub.repo_id", "new.key.path", "stages.0.name.x",
    ]  # fmt: skip
    values = [
        "3e-5",
        "-1",
        "[1, 2",
        "{a: 1}",
        "!!python/name:os.system",
        "",
        "null",
        "9" * 5000,
        "&a 1",
        ".nan",
        "ü",
        "[",
    ]
    tally = _Tally()
    for _ in range(OVERRIDE_CASES):
        item = rng.choice(
            [f"{rng.choice(keys)}={rng.choice(values)}", rng.choice(keys), "=" + rng.choice(values)]
        )
        tally.attempt(
            f"--set {item[:60]!r}",
            ("--set", "ov"),
            Recipe.from_dict,
            base,
            source="ov",
            overrides=[item],
        )
    _assert_all_clean(tally, "--set overrides")


def test_wrong_training_argument_types_are_caught_before_any_model_loads():
    data = _minimal()
    data["training"] = {"learning_rate": "fast"}
    with pytest.raises(
        RecipeError, match=r"training\.learning_rate: expected a number, got 'fast'"
    ):
        Recipe.from_dict(data, source="lr.yaml")
    data["training"] = {"per_device_train_batch_size": [32]}
    with pytest.raises(RecipeError, match="per_device_train_batch_size: expected an integer"):
        Recipe.from_dict(data, source="bs.yaml")
    # Enum-typed fields are left to TrainingArguments (a string is what users write).
    data["training"] = {"lr_scheduler_type": "cosine", "learning_rate": 1}
    assert Recipe.from_dict(data, source="ok.yaml").training["learning_rate"] == 1


def test_error_messages_stay_short_for_huge_values():
    data = _minimal()
    data["seed"] = "s" * 100_000
    with pytest.raises(RecipeError) as info:
        Recipe.from_dict(data, source="long.yaml")
    assert len(str(info.value)) < 300 and "long.yaml" in str(info.value)
    data["seed"] = 10**5000  # repr() of this int raises ValueError
    with pytest.raises(RecipeError, match="int.yaml: seed: .* too large"):
        Recipe.from_dict(data, source="int.yaml")
    data["seed"] = [object()]  # not YAML: would validate, then fail to save as recipe.yaml
    with pytest.raises(RecipeError, match=r"obj.yaml: seed\[0\]: a recipe holds YAML values"):
        Recipe.from_dict(data, source="obj.yaml")
