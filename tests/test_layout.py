"""The package's shape: no import cycles, the layering rules between parts, small files, and
every technique folder of the same shape."""

from __future__ import annotations

import ast
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "hf_compress"
TECHNIQUES = sorted(p for p in (PACKAGE / "methods").iterdir() if (p / "__init__.py").is_file())

# part -> parts it must never import (DESIGN.md section 5)
FORBIDDEN = {
    "methods": ("cli", "api", "training", "hub", "evaluation"),
    "data": ("methods", "training", "checkpoint", "evaluation", "hub"),
    "checkpoint": ("evaluation", "methods", "training", "hub"),
    "recipe": ("methods", "training", "checkpoint", "evaluation", "hub", "data"),
    "architectures": ("methods", "training", "checkpoint", "evaluation", "hub"),
    "hub": ("training", "methods"),
    "evaluation.measure": ("training",),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(module: str, level: int, name: str | None) -> str:
    base = module.split(".")
    if MODULES[module].name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + (name.split(".") if name else []))


def _imports(module: str) -> set[str]:
    """Every package module `module` imports, at the top or inside functions (not the ones only
    imported for type checking)."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if "TYPE_CHECKING" in ast.unparse(node.test):
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name for a in node.names if a.name in MODULES)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            target = _resolve(module, node.level, node.module) if node.level else node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:
                    found.add(sub)
                elif target in MODULES:
                    found.add(target)

    Visitor().visit(ast.parse(MODULES[module].read_text(encoding="utf-8")))
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan), each a set of modules importing each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in GRAPH[node]:
                groups.append(sorted(group))

    for node in GRAPH:
        if node not in index:
            visit(node)
    return groups


def test_the_import_graph_sees_lazy_imports():
    # a function-level import counts: the checks below would otherwise miss lazy cycles
    assert "hf_compress.training.runner" in GRAPH["hf_compress.cli"]


def test_no_module_imports_back_into_a_module_that_imports_it():
    assert _cycles() == []


def test_parts_respect_the_layering():
    broken = defaultdict(list)
    for module, imported in GRAPH.items():
        for part, banned in FORBIDDEN.items():
            if module == f"hf_compress.{part}" or module.startswith(f"hf_compress.{part}."):
                for target in imported:
                    if any(
                        target == f"hf_compress.{b}" or target.startswith(f"hf_compress.{b}.")
                        for b in banned
                    ):
                        broken[module].append(target)
    assert dict(broken) == {}


def test_files_stay_small():
    long = {
        str(p.relative_to(REPO)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 800
    }
    assert long == {}


@pytest.mark.parametrize("folder", TECHNIQUES, ids=lambda p: p.name)
def test_every_technique_folder_has_the_same_shape(folder):
    files = {p.name for p in folder.glob("*.py")}
    assert {"__init__.py", "config.py", "modifier.py"} <= files
    config = ast.parse((folder / "config.py").read_text())
    imported = {n.module or "" for n in ast.walk(config) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(config) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m == "torch" or m.startswith("torch.") for m in imported), (
        "config.py stays torch-free"
    )
    if (folder / "rebuild.py").is_file():
        assert "@register_rebuild(" in (folder / "rebuild.py").read_text()
    if (folder / "layers.py").is_file():
        # every storage layer (a module class with saved tensors) gives its float equivalent
        tree = ast.parse((folder / "layers.py").read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and any(
                "Module" in ast.unparse(b) or "Linear" in ast.unparse(b) for b in node.bases
            ):
                methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
                containers = {
                    "SharedLayerList",
                    "EmptyAttention",
                    "LowRankLinear",
                    "FactorizedEmbedding",
                }
                if node.name not in containers:
                    assert "to_float" in methods, (
                        f"{folder.name}/layers.py: {node.name} has no to_float()"
                    )


def test_the_repository_speaks_of_the_project_only():
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    pattern = re.compile(
        r"\b(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|thirteenth"
        r"|fourteenth|fifteenth|\d+(st|nd|rd|th)) session\b|\bthis"
        r" session\b|\bissue \d+|\(issue \d",
        re.IGNORECASE,
    )
    hits = []
    for name in files:
        path = REPO / name
        if path.suffix in {".png", ".safetensors"} or not path.is_file():
            continue
        for number, line in enumerate(
            path.read_text(encoding="utf-8", errors="ignore").splitlines(), 1
        ):
            if pattern.search(line):
                hits.append(f"{name}:{number}: {line.strip()[:80]}")
    assert hits == []


@pytest.mark.parametrize("family", __import__("hf_compress").checkpoint.FAMILIES)
def test_every_checkpoint_family_is_laid_out_as_a_known_architecture_map(family):
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from hf_compress.architectures import get_adapter

    config = CONFIG_MAPPING[family](
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
    )
    own_layouts = {"distilbert": "distilbert", "gpt2": "gpt2"}
    llama_like = {"llama", "mistral", "qwen2", "qwen3"}
    expected = "llama" if family in llama_like else own_layouts.get(family, "bert")
    assert get_adapter(config).layout == expected
