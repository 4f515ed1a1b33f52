"""Small helpers that keep notebook cells short: parameter checks, provenance banner, metrics output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from diffkd_study.io import write_json


class NotebookParameterError(ValueError):
    """A notebook parameter is missing or wrong; raised by the first cell after the parameters."""


def require_paths(**paths: str) -> dict[str, Path]:
    """Check that every named path exists; one clear error listing all that do not."""
    missing = [f"{name}={value!r}" for name, value in paths.items() if not value or not Path(value).exists()]
    if missing:
        raise NotebookParameterError("these parameters do not point to an existing file or folder: " + ", ".join(missing))
    return {name: Path(value) for name, value in paths.items()}


def provenance_markdown(path: str | Path) -> str:
    """A short provenance banner for the top of a report (the full record stays in provenance.json)."""
    p = Path(path)
    if not p.is_file():
        return "_Provenance: not recorded (notebook run outside `diffkd-study run`)._"
    prov = json.loads(p.read_text(encoding="utf-8"))
    git = prov.get("git", {})
    hw = prov.get("hardware", {})
    dirty = " (with uncommitted changes)" if git.get("dirty") else ""
    return (
        f"**Provenance.** config `{prov.get('config_path')}`, seed {prov.get('seed')}, "
        f"commit `{(git.get('sha') or 'unknown')[:12]}`{dirty}, started {prov.get('started')}, "
        f"{hw.get('cpu_count')} CPUs, GPU: {', '.join(hw.get('gpus') or []) or 'none'}, "
        f"torch {prov.get('packages', {}).get('torch')}."
    )


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """A DataFrame as JSON-friendly records for metrics files and the index page.

    A named index (every level named) becomes columns; an unnamed one is a row position (a
    RangeIndex or what is left of one after filtering) and is dropped rather than written as a
    spurious ``index`` key.
    """
    unnamed = all(name is None for name in df.index.names)
    flat = df.reset_index(drop=unnamed)
    flat.columns = [" ".join(map(str, c)).strip() if isinstance(c, tuple) else str(c) for c in flat.columns]
    return json.loads(flat.to_json(orient="records"))


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    write_json(path, metrics)
