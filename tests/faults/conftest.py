"""Fixtures of the fault suite: a tiny phantom cohort made once, and the CLI run as a user runs it.

Every case replays one fault of issue 20 end to end through ``diffkd-study`` and checks the outcome a
user should see: exit code, ONE line of error naming the file/row/rule (no traceback), nothing the
user made deleted, nothing half-written left.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from diffkd_study.cli import main

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """A 12-image phantom cohort (4 per center, 32 px), generated once for the suite; copy before editing."""
    out = tmp_path_factory.mktemp("cohort") / "phantom"
    assert main(["phantom", "--out", str(out), "--n-per-center", "4", "--size", "32"]) == 0
    return out


@pytest.fixture
def cohort_copy(cohort, tmp_path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(cohort, target)
    return target


@pytest.fixture
def cli(capsys) -> Callable[..., tuple[int, str]]:
    """Run the CLI; return (exit code, what it printed: stderr, then stdout). Fails the test on a traceback."""
    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err + captured.out, captured.err
        return code, captured.err + captured.out

    return run


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.fixture
def study(tmp_path, monkeypatch, cli) -> Callable[..., tuple[int, str]]:
    """Write a study config (``raw`` overrides a tiny phantom study) and run it through the CLI."""
    monkeypatch.setenv("DIFFKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(PROJECT)

    def run(raw: dict, *extra: str, text: str | None = None) -> tuple[int, str]:
        config = tmp_path / f"{raw.get('name', 'faults') if isinstance(raw, dict) else 'faults'}.yaml"
        config.write_text(text if text is not None else yaml.safe_dump(raw), encoding="utf-8")
        return cli("run", config, "--reports-dir", tmp_path / "reports", "--runs-dir", tmp_path / "runs", *extra)

    return run


TINY_STUDY = {
    "name": "faults", "seed": 0, "stages": ["data_audit", "baselines", "evaluation"],
    "data": {"phantom": {"n_per_center": 16, "image_size": 32}, "external": {"center": ["center_C"]},
             "split": {"val_frac": 0.25, "test_frac": 0.25}, "audit_examples_per_group": 1},
    "evaluation": {"bootstrap": 100, "band_resamples": 100, "efficiency_runs": 2},
}


def umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
