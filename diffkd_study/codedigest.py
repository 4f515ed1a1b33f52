"""Which package code a stage or a fit runs, and a digest of it, so that cached results follow the code.

The closure is static: every ``import diffkd_study...`` / ``from diffkd_study... import ...`` statement
in a module (at any depth, function-level imports included) names a module of the package, and the
closure follows them transitively. A stage's code is its notebook's imports' closure; a fit's code is
the closure of the modules that define its task, its loss terms and its networks, plus the trainer.
Light on purpose (no torch): the runner plans stages with it before any notebook starts.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "diffkd_study"
PACKAGE_DIR = Path(__file__).resolve().parent

__all__ = ["PACKAGE", "code_digest", "module_closure", "module_file", "module_hashes", "notebook_modules",
           "source_imports"]


def module_file(module: str) -> Path | None:
    """The source file of a package module (``diffkd_study.metrics.roc``), or None if it is not one."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    parts = module.split(".")[1:]
    base = PACKAGE_DIR.joinpath(*parts) if parts else PACKAGE_DIR
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def source_imports(source: str, module: str = "", path: Path | None = None) -> set[str]:
    """The package modules that ``source`` imports (absolute and relative imports, any depth).

    ``from diffkd_study.metrics import roc`` names ``diffkd_study.metrics.roc`` when that is a module,
    else ``diffkd_study.metrics``; every parent package is included too (Python runs its ``__init__``).
    """
    tree = ast.parse(source)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if not module or path is None:
                    continue
                anchor = _package_of(module, path).split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    modules: set[str] = set()
    for name in found:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            candidate = ".".join(parts[:i])
            if module_file(candidate) is not None:
                modules.add(candidate)
    return modules


@cache
def _file_imports(path: str, mtime_ns: int, module: str) -> frozenset[str]:
    del mtime_ns  # part of the cache key only: an edited file is parsed again
    return frozenset(source_imports(Path(path).read_text(encoding="utf-8"), module, Path(path)))


def module_closure(modules: Iterable[str]) -> list[str]:
    """``modules`` and every package module they import, transitively; sorted."""
    todo = [m for m in modules if module_file(m) is not None]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = module_file(module)
        assert path is not None
        todo.extend(_file_imports(str(path), path.stat().st_mtime_ns, module) - seen)
    return sorted(seen)


def notebook_modules(notebook: str | Path) -> list[str]:
    """The package modules a notebook (``.ipynb`` code cells, or a jupytext ``.py``) runs, transitively."""
    notebook = Path(notebook)
    if notebook.suffix == ".ipynb":
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                   for c in cells if c.get("cell_type") == "code"]
    else:
        sources = [notebook.read_text(encoding="utf-8")]
    direct: set[str] = set()
    for source in sources:
        # IPython magics (%matplotlib, !pip) are not Python: comment them out before parsing
        lines = ["# " + line if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
        direct |= source_imports("\n".join(lines))
    return module_closure(direct)


def module_hashes(modules: Iterable[str]) -> dict[str, str]:
    """sha256 of the source of ``modules`` and of everything they import from the package, by module name."""
    return {m: hashlib.sha256(module_file(m).read_bytes()).hexdigest()  # type: ignore[union-attr]
            for m in module_closure(modules)}


def code_digest(modules: Iterable[str]) -> str:
    """sha256 over the names and sources of ``modules`` and everything they import from the package."""
    digest = hashlib.sha256()
    for module, sha in module_hashes(modules).items():
        digest.update(module.encode() + b"\0")
        digest.update(bytes.fromhex(sha))
    return digest.hexdigest()
