"""Run a study config through the command line the way a user does, from the project root, with the
preprocessing cache in the test's folder (the notebooks' kernels inherit ``DIFFKD_CACHE_DIR``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from diffkd_study.cli import main

PROJECT = Path(__file__).resolve().parents[1]


def run_study(raw: Mapping[str, Any], folder: Path, *extra: str) -> tuple[int, Path, Path]:
    """Write ``raw`` as ``folder/<name>.yaml``, run it; return (exit code, report folder, run folder)."""
    name = raw["name"]
    config = folder / f"{name}.yaml"
    config.write_text(yaml.safe_dump(dict(raw)))
    cwd, cache = os.getcwd(), os.environ.get("DIFFKD_CACHE_DIR")
    os.environ["DIFFKD_CACHE_DIR"] = str(folder / "cache")
    os.chdir(PROJECT)  # the runner finds notebooks/ relative to the project root
    try:
        code = main(["run", str(config), "--reports-dir", str(folder / "reports"), "--runs-dir", str(folder / "runs"),
                     *extra])
    finally:
        os.chdir(cwd)
        if cache is None:
            os.environ.pop("DIFFKD_CACHE_DIR")
        else:
            os.environ["DIFFKD_CACHE_DIR"] = cache
    return code, folder / "reports" / name, folder / "runs" / name
