"""ROC figures: the ROC curves of the compared models with their bands, DeLong AUCs and reader operating
points (``plot_roc``), and the forest plot of AUCs by test set (``plot_auc_forest``).

Both draw precomputed results: ``plot_roc`` takes one ``metrics.roc.RocSummary`` per model
(``roc_summary``: the curve, the DeLong AUC, the pointwise bootstrap band), ``plot_auc_forest`` a table
of AUCs with their intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from diffkd_study.metrics.roc_band import RocSummary
from diffkd_study.viz.captions import _reader_label, auc_label
from diffkd_study.viz.reader import _is_simulated
from diffkd_study.viz.style import (
    NOT_APPLICABLE,
    REFERENCE_COLOR,
    _error_arms,
    _figure_function,
    _new_axes,
    _reader_group_styles,
    _require_columns,
    series_styles,
)


def _reader_points_frame(reader_points: pd.DataFrame) -> pd.DataFrame:
    """x = FPR, y = sensitivity, with interval columns (NaN when absent), one treatment only."""
    df = reader_points
    if "sensitivity" not in df.columns or not ({"fpr", "specificity"} & set(df.columns)):
        raise ValueError(
            "reader_points needs the columns sensitivity and fpr (or specificity), as returned by "
            f"reader_study.reader_operating_points; it has {list(df.columns)}"
        )
    if "treatment" in df.columns and df["treatment"].nunique() > 1:
        raise ValueError(
            f"reader_points holds several reading conditions {sorted(df['treatment'].unique())}; "
            "pass the rows of one, e.g. ops[ops['treatment'] == 'unaided']"
        )
    out = pd.DataFrame(index=df.index)
    out["group"] = df["reader_group"].astype(str) if "reader_group" in df.columns else "readers"
    out["y"] = df["sensitivity"].astype(float)
    out["y_low"] = df.get("sensitivity_ci_low", np.nan)
    out["y_high"] = df.get("sensitivity_ci_high", np.nan)
    if "fpr" in df.columns:
        out["x"] = df["fpr"].astype(float)
        out["x_low"] = df.get("fpr_ci_low", np.nan)
        out["x_high"] = df.get("fpr_ci_high", np.nan)
    else:
        out["x"] = 1.0 - df["specificity"].astype(float)
        out["x_low"] = 1.0 - df.get("specificity_ci_high", np.nan)
        out["x_high"] = 1.0 - df.get("specificity_ci_low", np.nan)
    return out


@_figure_function("roc")
def plot_roc(
    summaries: Mapping[str, RocSummary],
    reader_points: pd.DataFrame | None = None,
    ci: bool = True,
    *,
    simulated_readers: bool | None = None,
    title: str | None = "ROC curves",
    ax: Axes | None = None,
) -> Figure:
    """ROC curves of the compared models, with bands, DeLong AUCs in the legend and reader operating points.

    ``summaries`` maps a model name to its ``RocSummary`` (``metrics.roc_band.roc_summary(y_true,
    y_score, ...)``; models may be evaluated on different cases; each legend entry states its own
    n). A summary with a ``band`` is shaded with its pointwise stratified-bootstrap band; every band
    must have the same level and number of resamples (the legend states them once). ``ci`` puts the
    DeLong interval (logit scale) in the legend and Wilson error bars on the reader points.

    ``reader_points``: one row per reader, as returned by ``reader_study.reader_operating_points``
    (columns ``sensitivity`` and ``fpr`` or ``specificity``, optional ``*_ci_low``/``*_ci_high``,
    ``reader_group``), of one reading condition. One marker per reader group; the legend says
    "simulated readers" when ``simulated_readers`` is true or, when it is None, when the frame has
    a truthy ``simulated`` column (``reader_operating_points`` does not carry that column over from
    the read table, so pass ``simulated_readers=True`` for simulated reads).
    """
    if not summaries:
        raise ValueError("give at least one model as {name: RocSummary} (see metrics.roc.roc_summary)")
    band_settings = {(s.band.level, s.band.n_resamples) for s in summaries.values() if s.band is not None}
    if len(band_settings) > 1:
        raise ValueError(
            f"the ROC bands differ in (level, resamples) {sorted(band_settings)}; compute every summary alike"
        )
    fig, ax = _new_axes(ax, (6.4, 8.0))
    styles = series_styles(list(summaries))
    model_handles = []
    for name, summary in summaries.items():
        style = styles[name]
        band = summary.band
        if band is not None:
            ax.fill_between(band.fpr, band.tpr_low, band.tpr_high, color=style.color, alpha=0.15, linewidth=0)
        (line,) = ax.plot(
            summary.fpr,
            summary.tpr,
            color=style.color,
            linestyle=style.linestyle,
            linewidth=2.0,
            label=auc_label(name, summary.auc, ci, constant=summary.constant_score),
        )
        model_handles.append(line)
    extra_handles: list[Any] = []
    if band_settings:
        ((level, n_resamples),) = band_settings
        extra_handles.append(
            Patch(
                color="0.6",
                alpha=0.35,
                linewidth=0,
                label=f"shaded: {level:.0%} pointwise bootstrap band (B={n_resamples})",
            )
        )
    if reader_points is not None:
        points = _reader_points_frame(reader_points)
        simulated = _is_simulated(reader_points, simulated_readers)
        for group, (marker, face) in _reader_group_styles(points["group"].unique()).items():
            part = points[points["group"] == group]
            container = ax.errorbar(
                part["x"],
                part["y"],
                xerr=_error_arms(part["x"], part["x_low"], part["x_high"]) if ci else None,
                yerr=_error_arms(part["y"], part["y_low"], part["y_high"]) if ci else None,
                fmt=marker,
                markersize=7,
                markerfacecolor=face,
                markeredgecolor="black",
                markeredgewidth=1.0,
                ecolor="0.4",
                elinewidth=0.8,
                zorder=4,
                label=_reader_label(group, len(part), simulated),
            )
            extra_handles.append(container)
    (chance,) = ax.plot(
        [0, 1], [0, 1], linestyle=(0, (4, 3)), color=REFERENCE_COLOR, linewidth=1.0, label="chance (AUC 0.5)"
    )
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal", adjustable="box")
    ticks = np.linspace(0, 1, 6)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel("1 \u2212 specificity (false-positive rate, proportion)")
    ax.set_ylabel("sensitivity (true-positive rate, proportion)")
    if title:
        ax.set_title(title)
    ax.legend(
        handles=[*model_handles, *extra_handles, chance],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12),
        ncols=1,
    )
    return fig


@_figure_function("auc_forest")
def plot_auc_forest(
    table: pd.DataFrame,
    *,
    model_col: str = "model",
    test_set_col: str = "test_set",
    level: float = 0.95,
    title: str | None = "AUC by test set",
) -> Figure:
    """Forest plot of AUCs with their intervals: one block per test set, one row per model.

    ``table`` has one row per (model, test set) with ``auc, ci_low, ci_high, n, n_pos`` (e.g.
    ``tables.metrics_by_group(preds, ["model", "test_set"])``; name other columns with
    ``model_col``/``test_set_col``). Test sets run top to bottom and models within a block in
    their order of first appearance (so put the internal test set first). A row whose AUC is NaN
    (too few cases of a class) is listed as "not estimable" with its n; a row with n = 0 (the model has
    no predictions on that test set, e.g. a baseline whose inputs it lacks) as "not applicable".
    ``level`` only labels the interval column: the intervals are the table's.
    """
    _require_columns(table, [model_col, test_set_col, "auc", "ci_low", "ci_high", "n", "n_pos"], "table")
    if table.empty:
        raise ValueError("table has no rows")
    duplicated = table.duplicated([model_col, test_set_col])
    if duplicated.any():
        row = table[duplicated].iloc[0]
        raise ValueError(
            f"model {row[model_col]!r} appears more than once for test set {row[test_set_col]!r}; "
            "give one row per model and test set (e.g. aggregate seeds first)"
        )
    models = list(pd.unique(table[model_col]))
    test_sets = list(pd.unique(table[test_set_col]))
    styles = series_styles([str(m) for m in models])
    block = len(models) + 1
    n_rows = len(test_sets) * block - 1
    fig = plt.figure(figsize=(9.0, 1.6 + 0.3 * n_rows), layout="constrained")
    ax, text_ax = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 2]})

    def row_y(test_index: int, model_index: int) -> int:
        return test_index * block + model_index

    for i in range(len(test_sets)):
        if i % 2 == 0:
            ax.axhspan(
                row_y(i, 0) - 0.5, row_y(i, len(models) - 1) + 0.5, color="0.95", zorder=0, linewidth=0
            )
    for j, model in enumerate(models):
        part = table[table[model_col] == model]
        ys = np.array([row_y(test_sets.index(t), j) for t in part[test_set_col]])
        finite = part["auc"].notna().to_numpy()
        style = styles[str(model)]
        sub = part[finite]
        ax.errorbar(
            sub["auc"],
            ys[finite],
            xerr=_error_arms(sub["auc"], sub["ci_low"], sub["ci_high"]),
            fmt=style.marker,
            color=style.color,
            markersize=6,
            elinewidth=1.6,
            capsize=3,
            label=str(model),
        )
        for (_, r), y in zip(part.iterrows(), ys, strict=True):
            counts = f"{int(r['n'])} ({int(r['n_pos'])})" if r["n"] > 0 else "\u2013"
            if pd.notna(r["auc"]):
                estimate = f"{r['auc']:.3f} ({r['ci_low']:.3f}\u2013{r['ci_high']:.3f})"
            else:
                estimate = "not estimable" if r["n"] > 0 else NOT_APPLICABLE
            text_ax.text(0.0, y, estimate, va="center", ha="left", color=style.color)
            text_ax.text(0.72, y, counts, va="center", ha="left", color=style.color)
    text_ax.text(0.0, -1.0, f"AUC ({level:.0%} CI)", va="center", ha="left", fontweight="bold")
    text_ax.text(0.72, -1.0, "n (positive)", va="center", ha="left", fontweight="bold")
    text_ax.set_xlim(0, 1)
    text_ax.axis("off")

    ax.set_yticks([row_y(i, 0) + (len(models) - 1) / 2 for i in range(len(test_sets))])
    ax.set_yticklabels([str(t) for t in test_sets])
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="y", visible=False)
    ax.set_ylim(n_rows - 0.5, -1.6)
    finite_values = table[["auc", "ci_low", "ci_high"]].to_numpy(dtype=float)
    low = np.nanmin(finite_values) if np.isfinite(finite_values).any() else 0.5
    left = max(0.0, math.floor((low - 0.02) * 20) / 20)
    ax.set_xlim(left, 1.0)
    if left < 0.5:
        ax.axvline(0.5, color=REFERENCE_COLOR, linestyle=(0, (4, 3)), linewidth=1.0)
    ax.set_xlabel("AUC (area under the ROC curve)")
    if title:
        fig.suptitle(title)
    fig.legend(loc="outside lower center", ncols=min(len(models), 4), title="model")
    return fig
