"""Every module of the package, and every top-level public function and class in it, has a docstring.

Public means a name without a leading underscore. The check reads the source with ``ast`` (nothing is imported),
so a module that needs an optional dependency is checked as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "diffkd_study"
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def undocumented(source: str) -> list[str]:
    """``<module>`` and ``line name`` of each top-level public definition of ``source`` without a docstring."""
    tree = ast.parse(source)
    missing = [] if ast.get_docstring(tree) else ["<module>"]
    missing += [f"{node.lineno} {node.name}" for node in tree.body
                if isinstance(node, DEFINITIONS) and not node.name.startswith("_") and not ast.get_docstring(node)]
    return missing


def test_undocumented_finds_what_lacks_a_docstring():
    source = '''
def documented():
    """Does something."""


def bare():
    return 1


class Bare:
    def method(self):
        pass


def _private():
    pass
'''
    assert undocumented(source) == ["<module>", "6 bare", "10 Bare"]
    assert undocumented('"""A module."""\n\nclass A:\n    """A class."""\n') == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_and_public_definitions_have_docstrings(path: Path):
    missing = undocumented(path.read_text(encoding="utf-8"))
    where = path.relative_to(PACKAGE.parent)
    assert not missing, f"{where}: no docstring for " + ", ".join(
        "the module" if item == "<module>" else f"line {item}" for item in missing)
