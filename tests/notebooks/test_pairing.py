"""Each notebook is paired with a jupytext percent script; both must hold the same cells."""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_notebooks_exist():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.stem)
def test_pair_in_sync(ipynb: Path):
    script = ipynb.with_suffix(".py")
    assert script.is_file(), f"{script} missing: run `jupytext --set-formats ipynb,py:percent {ipynb}`"
    a, b = jupytext.read(ipynb), jupytext.read(script)
    cells_a = [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in a.cells]
    cells_b = [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in b.cells]
    assert cells_a == cells_b, f"{ipynb.name} and {script.name} differ: run `jupytext --sync {script}`"
    parameters = [c for c in a.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1, "exactly one cell tagged 'parameters'"
    assert not any(o for c in a.cells if c.cell_type == "code" for o in c.get("outputs", [])), \
        f"{ipynb.name} is committed with outputs"
