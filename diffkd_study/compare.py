"""``diffkd-study report compare RUN_A RUN_B``: two runs' headline metrics side by side.

Reads each run's ``headline.json`` (written by the summary stage) and ``provenance.json``; prints a table
and writes ``compare_<A>_vs_<B>.html`` next to the two report folders. Rows: the AUC (with its 95% DeLong
interval and n) of each headline role (teacher, student) on each test set present in either run, the
efficiency ratios, the synthetic-image FID rows, and the provenance (commit, seed, wall time). The
difference column is B minus A where both runs have a number; intervals of the two runs are
independent estimates, so overlapping intervals do not test anything (for a paired test, evaluate
both models in one run).
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["compare_runs", "load_headline", "write_comparison"]


def _report_dir(run: str | os.PathLike[str], reports_dir: str | os.PathLike[str]) -> Path:
    path = Path(run)
    if (path / "headline.json").is_file():
        return path
    candidate = Path(reports_dir) / str(run)
    if (candidate / "headline.json").is_file():
        return candidate
    raise FileNotFoundError(f"no headline.json for run {run!r} (looked in {path} and {candidate}): run the study "
                            "with the summary stage first")


def load_headline(report_dir: Path) -> dict[str, Any]:
    """A run's ``headline.json`` from ``report_dir``, with its ``provenance.json`` (empty when absent) under
    ``provenance``."""
    headline = json.loads((report_dir / "headline.json").read_text(encoding="utf-8"))
    prov_path = report_dir / "provenance.json"
    headline["provenance"] = json.loads(prov_path.read_text(encoding="utf-8")) if prov_path.is_file() else {}
    return headline


def _rows(headline: dict[str, Any]) -> dict[str, tuple[float | None, str]]:
    """measure -> (number for the difference, text shown)."""
    out: dict[str, tuple[float | None, str]] = {}
    roles = {model: role for role, model in headline.get("models", {}).items()}
    for row in headline.get("auc", []):
        role = roles.get(row["model"], row["model"])
        if row.get("auc") is None:  # not estimable or not applicable on this test set: no number to compare
            out[f"AUC {role}: {row['test_set']}"] = (None, f"not estimable (n={row.get('n')}; {row['model']})")
            continue
        text = f"{row['auc']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}] (n={row['n']}, {row['n_pos']} pos; {row['model']})"
        out[f"AUC {role}: {row['test_set']}"] = (float(row["auc"]), text)
    for name, value in headline.get("efficiency_ratios", {}).items():
        out[f"student/teacher {name}"] = (float(value), f"{value:.4f}")
    for row in headline.get("synthetic_quality", []):
        label = " ".join(str(v) for k, v in row.items() if isinstance(v, str))[:80]
        for key, value in row.items():
            if isinstance(value, (int, float)) and key.lower().startswith(("fid", "kid")):
                out[f"synthetic {key} ({label})"] = (float(value), f"{value:.4g}")
    prov = headline.get("provenance", {})
    git = prov.get("git", {})
    out["commit"] = (None, f"{(git.get('sha') or '?')[:12]}{' (dirty)' if git.get('dirty') else ''}")
    out["seed"] = (None, str(prov.get("seed", "?")))
    wall = prov.get("wall_s")
    out["wall time (s)"] = (float(wall) if isinstance(wall, (int, float)) else None, str(wall))
    return out


def compare_runs(run_a: str, run_b: str, reports_dir: str | os.PathLike[str] = "reports") -> pd.DataFrame:
    """One row per measure: the two runs' values and B - A."""
    a, b = (_rows(load_headline(_report_dir(r, reports_dir))) for r in (run_a, run_b))
    rows = []
    for measure in list(dict.fromkeys([*a, *b])):
        va, vb = a.get(measure, (None, "-")), b.get(measure, (None, "-"))
        diff = vb[0] - va[0] if va[0] is not None and vb[0] is not None else None
        rows.append({"measure": measure, run_a: va[1], run_b: vb[1],
                     "B - A": "" if diff is None else f"{diff:+.4f}"})
    return pd.DataFrame(rows)


def write_comparison(table: pd.DataFrame, run_a: str, run_b: str, out: str | os.PathLike[str]) -> Path:
    """Write the :func:`compare_runs` table of runs ``run_a`` and ``run_b`` as an offline HTML page at
    ``out``; return its path."""
    from diffkd_study.index_page import NO_FAVICON, PAGE_CSS
    from diffkd_study.io import write_text

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in table.itertuples(index=False))
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>{NO_FAVICON}<title>{html.escape(run_a)} vs "
            f"{html.escape(run_b)}</title><style>{PAGE_CSS}</style></head><body>"
            f"<h1>Run comparison: {html.escape(run_a)} vs {html.escape(run_b)}</h1>"
            "<p class='caption'>Headline metrics of two runs. The intervals are each run's own DeLong 95% "
            "intervals; the runs are independent, so this is a side-by-side, not a statistical test.</p>"
            f"<table><tr>{head}</tr>{body}</table></body></html>")
    path = Path(out)
    write_text(path, page)
    return path
