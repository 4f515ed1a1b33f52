"""The package's shape: no import cycle, small modules, layers that import only downward.

The import graph counts every ``import`` of a ``diffkd_study`` module, at module level or inside a function
(a function-level import is still a dependency, only a deferred one). ARCHITECTURE.md draws the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "diffkd_study"
MAX_LINES = 700


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The module that ``name`` (a module or a name inside one) refers to."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: {diffkd_study modules it imports}}`` for every module under ``root``."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                # ``from pkg import mod`` imports the submodule when there is one, else a name of pkg
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
        graph[name] = {t for t in (_resolve(t, modules) for t in targets if t.startswith("diffkd_study")) if t}
        graph[name].discard(name)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_package_has_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_planted_cycle(tmp_path: Path):
    package = tmp_path / "diffkd_study"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from diffkd_study.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from diffkd_study.a import x\n")
    (package / "c.py").write_text("from . import a\n")
    graph = import_graph(package)
    assert graph["diffkd_study.c"] == {"diffkd_study.a"}
    assert find_cycles(graph) == [["diffkd_study.a", "diffkd_study.sub.b"]]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_library_module_is_over_700_lines(path: Path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)} has {lines} lines (limit {MAX_LINES}): split it"


# Layers: a module of the left-hand package may not import any of the right-hand ones.
FORBIDDEN = {
    "diffkd_study.data": ("diffkd_study.config", "diffkd_study.metrics", "diffkd_study.viz", "diffkd_study.methods",
                          "diffkd_study.reader_study", "diffkd_study.report", "diffkd_study.training"),
    "diffkd_study.metrics": ("diffkd_study.viz", "diffkd_study.methods", "diffkd_study.config", "diffkd_study.report"),
    "diffkd_study.distill": ("diffkd_study.methods", "diffkd_study.config", "diffkd_study.report"),
    "diffkd_study.training": ("diffkd_study.methods", "diffkd_study.config", "diffkd_study.report"),
    "diffkd_study.models": ("diffkd_study.methods", "diffkd_study.config", "diffkd_study.report"),
    "diffkd_study.viz": ("diffkd_study.methods", "diffkd_study.config", "diffkd_study.report", "diffkd_study.training"),
    "diffkd_study.reader_study": ("diffkd_study.methods", "diffkd_study.config", "diffkd_study.report",
                                  "diffkd_study.viz", "diffkd_study.training"),
    "diffkd_study.predictions": ("diffkd_study.methods", "diffkd_study.config", "diffkd_study.report",
                                 "diffkd_study.viz", "diffkd_study.training"),
}
LEAVES = ("diffkd_study.registry", "diffkd_study.sections", "diffkd_study.profiles", "diffkd_study.stage_output",
          "diffkd_study.devices", "diffkd_study.layout", "diffkd_study.training.presets", "diffkd_study.methods.diffkd.diffusion.names")


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_only_downward(layer: str):
    graph = import_graph()
    wrong = sorted(f"{module} imports {target}" for module, targets in graph.items()
                   if module == layer or module.startswith(layer + ".")
                   for target in targets for banned in FORBIDDEN[layer]
                   if target == banned or target.startswith(banned + "."))
    assert not wrong, "; ".join(wrong)


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaf_modules_import_nothing_of_the_package(leaf: str):
    graph = import_graph()
    assert graph[leaf] <= {"diffkd_study"}, f"{leaf} imports {sorted(graph[leaf])}"


def test_every_package_folder_is_a_regular_package():
    """A folder of modules without ``__init__.py`` is a namespace package: it imports, but it has no docstring
    and a packaging tool that looks for regular packages leaves it out."""
    folders = {path.parent for path in PACKAGE.rglob("*.py")} | {
        folder for path in PACKAGE.rglob("*.py") for folder in path.parents if PACKAGE in folder.parents}
    missing = sorted(str(f.relative_to(PACKAGE.parent)) for f in folders if not (f / "__init__.py").is_file())
    assert not missing, f"folders without __init__.py: {missing}"
