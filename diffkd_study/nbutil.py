"""Small helpers that keep notebook cells short: parameter checks, provenance banner, metrics output, and
the one way tables, intervals, p-values and limitations are shown in a report."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from diffkd_study.io import write_json

if TYPE_CHECKING:
    from IPython.display import Markdown
    from pandas.io.formats.style import Styler

DASH = "\u2013"  # an empty cell: not estimable, or not applicable
TOO_FEW_CASES = "too few cases"
NOT_ESTIMABLE = "not estimable"
MIN_CASES = 10  # a group with fewer cases gets no interval in a table (it would read as certainty)
SIMULATED_DATA = ("The data are simulated (built-in phantom cohort): results show that the pipeline works, "
                  "not how a model performs on patients.")


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
        f"**Provenance.** config `{Path(str(prov.get('config_path'))).name}`, seed {prov.get('seed')}, "
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
    """Write a stage's metrics JSON (``metrics_path``) atomically; the runner reads it back."""
    write_json(path, metrics)


#: Human names of the code names that table columns carry in metrics JSON files (the index shows those
#: tables to clinicians); a name not listed is shown with its underscores as spaces.
COLUMN_NAMES: dict[str, str] = {
    "test_set": "Test set", "model": "Model", "model_a": "Model A", "model_b": "Model B", "n": "Images",
    "n_pos": "Malignant images", "n_neg": "Benign images", "n_cases": "Cases", "n_readers": "Readers",
    "auc": "AUC", "auc_95ci": "AUC (95% CI)", "ci_low": "95% CI low", "ci_high": "95% CI high",
    "difference": "Difference", "p_value": "p", "df": "Degrees of freedom", "model_auc": "Model AUC",
    "mean_reader_auc": "Readers' mean AUC", "val_auc": "Validation AUC", "n_features": "Inputs",
    "n_train": "Training images", "n_real": "Real images", "n_generated": "Generated images",
    "n_reference": "Reference images", "n_agree": "Agreeing", "n_levels": "Levels", "fid": "FID",
    "kid_mean": "KID", "kid_std": "KID SD over subsets", "student_to_teacher": "Student / teacher",
    "teacher_to_student": "Teacher / student", "std": "SD",
    # the cross-validation tables (notebook 55)
    "n_images": "Images", "n_patients": "Patients", "folds_estimable": "Folds with both classes",
    "fold_auc_mean": "Mean of the folds' AUCs", "fold_auc_sd": "SD of the folds' AUCs", "fold_aucs": "AUC in each fold",
    "fold_differences": "Difference in each fold", "comparison": "Comparison", "auc_a": "AUC of A", "auc_b": "AUC of B",
    "p_holm": "p (Holm)", "mdd": "Smallest detectable difference", "se": "SE", "significant": "Significant",
    "description": "What it is", "fold": "Fold", "note": "Note",
}
#: Columns that hold p-values: shown with :func:`format_p` (never 0.000).
P_VALUE_COLUMNS: frozenset[str] = frozenset({"p_value", "p"})


def human_column(name: str) -> str:
    """The heading a clinician reads for a table column's code name."""
    return COLUMN_NAMES.get(name, name.replace("_", " "))


def format_p(p: float | None, digits: int = 3) -> str:
    """A p-value as reports show it: ``0.042``; ``< 0.001`` below the last digit shown (never ``0.000``);
    a dash when there is none. ``digits=6`` for the reviewer's full precision."""
    if p is None or not isinstance(p, int | float) or math.isnan(p):
        return DASH
    floor = 10.0**-digits
    return f"< {floor:.{digits}f}" if p < floor else f"{p:.{digits}f}"


def format_interval(low: float | None, high: float | None, digits: int = 3) -> str:
    """``0.345-0.989``; ``-0.092 to 0.404`` when a bound is negative (a hyphen would read as a minus);
    ``not estimable`` for a zero-width interval (no spread is not certainty); a dash when missing."""
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return DASH
    if low == high:
        return NOT_ESTIMABLE
    if low < 0 or high < 0:
        return f"{low:.{digits}f} to {high:.{digits}f}"
    return f"{low:.{digits}f}-{high:.{digits}f}"


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, list | tuple | set):
        return ", ".join(_cell(v, digits) for v in value) or DASH
    if value is None or (pd.api.types.is_scalar(value) and not isinstance(value, str) and pd.isna(value)):
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (hasattr(value, "dtype") and pd.api.types.is_integer_dtype(value.dtype)):
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            return DASH
        # a large whole number (parameters, images) is a count: no decimals, thousands separated
        return f"{value:,.0f}" if abs(value) >= 1000 and value.is_integer() else f"{value:.{digits}f}"
    return str(value)


def _is_count(name: str, values: pd.Series) -> bool:
    """``n``, ``n_<what>`` or ``<what>_n`` holding whole numbers: a count."""
    counted = name == "n" or name.startswith("n_") or name.endswith("_n")
    if not counted or not pd.api.types.is_float_dtype(values):
        return False
    present = values.dropna()
    return bool((present == present.round()).all())


def table_frame(
    df: pd.DataFrame | None,
    columns: Mapping[str, str] | None = None,
    *,
    digits: int | Mapping[str, int] = 3,
    intervals: Mapping[str, tuple[str, str]] | None = None,
    p_values: Sequence[str] = (),
    n_column: str | None = None,
    min_n: int = MIN_CASES,
    human: bool = False,
) -> pd.DataFrame:
    """The cells a report shows for ``df``, as text, with human column names and no row index.

    A named index becomes columns. ``intervals`` {name: (low, high)} joins two columns into one
    (:func:`format_interval`), in the place of ``low``; where ``n_column`` is below ``min_n`` it reads
    "too few cases". ``p_values`` are formatted by :func:`format_p`. ``columns`` {code: human name}
    picks and orders the columns shown (those ``df`` lacks are left out; default: all, underscores as
    spaces, or with ``human`` the headings of :data:`COLUMN_NAMES`). Numbers are rounded to
    ``digits`` (one for all, or per code name), integers and counts (``n``, ``n_*``, ``*_n``) stay whole,
    large whole numbers get thousands separators, missing cells are a dash, and
    rows with no value at all (every numeric cell missing) are dropped.
    """
    if df is None or df.empty:
        return pd.DataFrame(columns=list((columns or {}).values()))
    table = df.reset_index() if any(name is not None for name in df.index.names) else df.reset_index(drop=True)
    table.columns = [str(c) for c in table.columns]
    numeric = table.select_dtypes("number")
    if numeric.shape[1]:
        table = table[numeric.notna().any(axis=1)].reset_index(drop=True)
    small = (pd.to_numeric(table[n_column], errors="coerce") < min_n).to_numpy() if n_column in table.columns \
        else [False] * len(table)
    shown = {}
    per_column = digits if isinstance(digits, Mapping) else {}
    default = 3 if isinstance(digits, Mapping) else digits
    joined = {low: (name, high) for name, (low, high) in (intervals or {}).items()}
    hidden = {high for _, high in joined.values()}
    for col in table.columns:
        if col in hidden:
            continue
        if col in joined:
            name, high = joined[col]
            places = per_column.get(name, default)
            shown[name] = [TOO_FEW_CASES if few else format_interval(lo, hi, places)
                           for lo, hi, few in zip(table[col], table[high], small, strict=True)]
        elif col in p_values:
            shown[col] = [format_p(v, per_column.get(col, 3)) for v in table[col]]
        elif _is_count(col, table[col]):  # a count made float by a missing value still reads as a whole number
            shown[col] = [_cell(int(v) if pd.notna(v) else v, 0) for v in table[col]]
        else:
            shown[col] = [_cell(v, per_column.get(col, default)) for v in table[col].astype(object)]
    out = pd.DataFrame(shown, dtype=object)
    if columns is not None:  # a column the table lacks (an optional statistic) is left out
        return out[[c for c in columns if c in out.columns]].rename(columns=dict(columns))
    return out.rename(columns=human_column if human else lambda c: c.replace("_", " "))


def show_table(
    df: pd.DataFrame | None,
    columns: Mapping[str, str] | None = None,
    *,
    empty: str = "Nothing to show in this run.",
    **options: Any,
) -> Styler | Markdown:
    """A report table (see :func:`table_frame` for ``columns`` and ``options``): no row index, nothing
    truncated, headers that wrap; ``empty``, a sentence saying why, instead of a table without rows."""
    from IPython.display import Markdown

    table = table_frame(df, columns, **options)
    if table.empty:
        return Markdown(empty)
    return (table.style.hide(axis="index")
            .set_table_styles([{"selector": "th", "props": "white-space: normal; text-align: left; "
                                                            "vertical-align: bottom; min-width: 4em"},
                               {"selector": "td", "props": "white-space: normal; text-align: left"}]))


def _limitation_key(text: str) -> str:
    return re.sub(r"[\s.]+$", "", re.sub(r"\s+", " ", text.strip())).casefold()


def dedupe_limitations(items: Iterable[str]) -> list[str]:
    """The limitations in their order, each once: two that differ only in spacing, case or a final full
    stop are the same; empty ones are dropped."""
    seen: dict[str, str] = {}
    for item in items:
        text = re.sub(r"\s+", " ", str(item)).strip()
        if text:
            seen.setdefault(_limitation_key(text), text)
    return list(seen.values())


def few_cases_limitation(test_set: str, n_pos: int, positive: str) -> str:
    """The limitation of a test set (``internal test`` or ``external: <center>``) with few positive cases, in
    one wording for every stage, so that the summary lists it once."""
    name = (f"the external test set of {test_set.removeprefix('external: ')}" if test_set.startswith("external: ")
            else f"the {test_set} set")
    return f"{name[:1].upper()}{name[1:]} has only {n_pos} {positive} cases: its confidence intervals are wide."
