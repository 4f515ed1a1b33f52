"""Reader-study figure: per-reader AUCs by reader group, group means with their intervals, and the
model AUCs as reference lines (``plot_reader_study``).

Reader groups take the same marker as in the ROC figure (``style._reader_group_styles``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from diffkd_study.metrics.roc import AUCResult
from diffkd_study.reader_study import ModelVsReaders, ORHResult
from diffkd_study.viz.captions import _difference_text, _p_text, _reader_label, auc_label
from diffkd_study.viz.style import (
    _error_arms,
    _figure_function,
    _reader_group_styles,
    _require_columns,
    series_styles,
)

ALL_READERS = "all readers"


def _is_simulated(frame: pd.DataFrame, flag: bool | None) -> bool:
    if flag is not None:
        return flag
    return "simulated" in frame.columns and bool(
        pd.to_numeric(frame["simulated"], errors="coerce").fillna(0).any()
    )


def _reader_auc_frame(
    readers: ORHResult | pd.DataFrame, reader_groups: Mapping[str, str] | None, level: float
) -> tuple[pd.DataFrame, str]:
    """Tidy per-reader AUCs: treatment, reader_id, reader_group, auc, ci_low, ci_high; and a CI note."""
    if isinstance(readers, ORHResult):
        frame = readers.reader_auc_table(level)
        note = f"{level:.0%} Wald CI ({readers.covariance} variance)"
    elif isinstance(readers, pd.DataFrame):
        _require_columns(readers, ["reader_id", "auc"], "the reader AUC table")
        frame = pd.DataFrame(
            {
                "treatment": readers["treatment"].astype(str)
                if "treatment" in readers.columns
                else "reading",
                "reader_id": readers["reader_id"].astype(str),
                "auc": readers["auc"].astype(float),
            }
        )
        for low, high in (("auc_ci_low", "auc_ci_high"), ("ci_low", "ci_high")):
            if {low, high} <= set(readers.columns):
                frame["ci_low"], frame["ci_high"] = readers[low].astype(float), readers[high].astype(float)
                break
        else:
            frame["ci_low"] = frame["ci_high"] = np.nan
        note = "" if frame["ci_low"].isna().all() else f"{level:.0%} CI"
        if reader_groups is None and "reader_group" in readers.columns:
            reader_groups = dict(zip(frame["reader_id"], readers["reader_group"].astype(str), strict=True))
    else:
        raise TypeError(f"readers must be an ORHResult or a DataFrame; got {type(readers).__name__}")
    if reader_groups is None:
        frame["reader_group"] = "readers"
    else:
        groups = {str(k): str(v) for k, v in reader_groups.items()}
        unknown = sorted(set(frame["reader_id"]) - groups.keys())
        if unknown:
            raise ValueError(f"reader_groups gives no group for reader(s) {unknown[:5]}")
        frame["reader_group"] = frame["reader_id"].map(groups)
    if frame.duplicated(["treatment", "reader_id"]).any():
        raise ValueError("a reader appears more than once in one reading condition")
    return frame, note


def _summary_intervals(
    readers: ORHResult | pd.DataFrame, group_summary: pd.DataFrame | None, groups: Sequence[str]
) -> dict[tuple[str, str], tuple[float, float]]:
    """(treatment, group) -> CI of the group's mean AUC, from ``group_summary`` or the ORH result."""
    out: dict[tuple[str, str], tuple[float, float]] = {}
    if isinstance(readers, ORHResult):
        for row in readers.single_treatment.itertuples():
            out[(str(row.treatment), ALL_READERS)] = (row.ci_low, row.ci_high)
            if len(groups) == 1:
                out[(str(row.treatment), groups[0])] = (row.ci_low, row.ci_high)
    if group_summary is not None:
        _require_columns(group_summary, ["reader_group", "auc_ci_low", "auc_ci_high"], "group_summary")
        for _, row in group_summary.iterrows():
            group = ALL_READERS if row["reader_group"] == "all" else str(row["reader_group"])
            trt = str(row["treatment"]) if "treatment" in group_summary.columns else "reading"
            if pd.notna(row["auc_ci_low"]):
                out[(trt, group)] = (float(row["auc_ci_low"]), float(row["auc_ci_high"]))
    return out


@_figure_function("reader_study")
def plot_reader_study(
    readers: ORHResult | pd.DataFrame,
    *,
    model_auc: Mapping[str, AUCResult] | None = None,
    reader_groups: Mapping[str, str] | None = None,
    group_summary: pd.DataFrame | None = None,
    comparison: ModelVsReaders | Mapping[str, ModelVsReaders] | None = None,
    simulated: bool | None = None,
    level: float = 0.95,
    title: str | None = "Readers and model",
) -> Figure:
    """Per-reader AUCs by reader group, group means with intervals, and the model AUCs as reference lines.

    ``readers``: an ``ORHResult`` (per-reader Wald intervals from its case-sampling variances; the
    mean over all readers gets the ORH interval of ``single_treatment``) or a tidy table with
    ``reader_id, auc`` and optional ``reader_group``, ``treatment``, ``auc_ci_low``/``auc_ci_high``
    (or ``ci_low``/``ci_high``) and ``simulated`` (``reader_study.reader_operating_points`` gives
    such a table, without intervals). One panel per reading condition.

    ``reader_groups`` maps reader_id to group (``ReaderStudy.reader_groups``; needed for an
    ORHResult, which does not know the groups). ``group_summary`` (``reader_group_summary``) adds
    the ORH interval of each group's mean and an "all readers" column. ``model_auc`` maps a model
    name to its ``AUCResult`` on the reader-study cases; ``comparison`` (``model_vs_readers``, or a
    mapping label -> result, e.g. one per reading condition) adds the model-minus-readers
    difference to the legend. ``simulated`` labels the readers as simulated
    (None: from the table's ``simulated`` column).
    """
    frame, reader_ci_note = _reader_auc_frame(readers, reader_groups, level)
    is_simulated = (
        simulated
        if simulated is not None
        else isinstance(readers, pd.DataFrame) and _is_simulated(readers, None)
    )
    groups = sorted(frame["reader_group"].unique())
    treatments = list(pd.unique(frame["treatment"]))
    intervals = _summary_intervals(readers, group_summary, groups)
    show_all = len(groups) > 1 and any(key[1] == ALL_READERS for key in intervals)
    categories = [*groups, ALL_READERS] if show_all else groups
    group_styles = _reader_group_styles(groups)
    width = 2.2 + 1.5 * len(categories)
    fig, axes = plt.subplots(
        1,
        len(treatments),
        sharey=True,
        squeeze=False,
        layout="constrained",
        figsize=(width * len(treatments), 6.2),
    )
    model_handles: dict[str, Any] = {}
    group_handles: dict[str, Any] = {}
    summary_handles: dict[bool, Any] = {}  # keyed by whether the bar carries an interval
    model_styles = series_styles(list(model_auc or {}))
    lowest = float(np.nanmin(frame[["auc", "ci_low"]].to_numpy(dtype=float)))
    for ax, trt in zip(axes[0], treatments, strict=True):
        in_trt = frame[frame["treatment"] == trt]
        for name, result in (model_auc or {}).items():
            style = model_styles[name]
            ax.axhspan(result.ci_low, result.ci_high, color=style.color, alpha=0.12, linewidth=0)
            model_handles[name] = ax.axhline(
                result.auc,
                color=style.color,
                linestyle=style.linestyle,
                linewidth=1.8,
                label=auc_label(name, result),
            )
            lowest = min(lowest, result.ci_low)
        for gi, category in enumerate(categories):
            part = in_trt[in_trt["reader_group"] == category].sort_values("reader_id")
            if not part.empty:
                marker, face = group_styles[category]
                xs = gi - 0.12 + np.linspace(-0.2, 0.2, len(part)) if len(part) > 1 else np.array([gi - 0.12])
                container = ax.errorbar(
                    xs,
                    part["auc"],
                    yerr=_error_arms(part["auc"], part["ci_low"], part["ci_high"]),
                    fmt=marker,
                    markersize=7,
                    markerfacecolor=face,
                    markeredgecolor="black",
                    markeredgewidth=1.0,
                    ecolor="0.45",
                    elinewidth=0.9,
                    zorder=4,
                    label=_reader_label(category, len(part), is_simulated),
                )
                group_handles.setdefault(category, container)
                mean = float(part["auc"].mean())
            else:
                mean = float(in_trt["auc"].mean())  # the "all readers" column
            interval = intervals.get((str(trt), category))
            yerr = None if interval is None else [[mean - interval[0]], [interval[1] - mean]]
            summary = ax.errorbar(
                [gi + 0.28 if not part.empty else gi],
                [mean],
                yerr=yerr,
                fmt="_",
                color="black",
                markersize=18,
                markeredgewidth=3,
                elinewidth=2.0,
                capsize=5,
                zorder=5,
            )
            summary_handles.setdefault(interval is not None, summary)
        counts = in_trt.groupby("reader_group").size()
        ax.set_xticks(
            range(len(categories)),
            [f"{c}\n({len(in_trt) if c == ALL_READERS else counts.get(c, 0)} readers)" for c in categories],
        )
        ax.set_xlim(-0.7, len(categories) - 0.3)
        ax.grid(axis="x", visible=False)
        if len(treatments) > 1 or trt != "reading":
            ax.set_title(f"reading condition: {trt}")
    axes[0, 0].set_ylabel("AUC (area under the ROC curve)")
    axes[0, 0].set_ylim(max(0.0, math.floor((lowest - 0.03) * 20) / 20), 1.0)
    legend = [*model_handles.values(), *group_handles.values()]
    labels = [h.get_label() for h in legend]
    if reader_ci_note:
        legend.append(Line2D([], [], linestyle="none"))
        labels.append(f"reader bars: {reader_ci_note}")
    if True in summary_handles:
        legend.append(summary_handles[True])
        labels.append(f"group mean AUC ({level:.0%} CI where shown: ORH, random readers and cases)")
    else:
        legend.append(summary_handles[False])
        labels.append("group mean AUC")
    comparisons = {"": comparison} if isinstance(comparison, ModelVsReaders) else dict(comparison or {})
    for name, result in comparisons.items():
        legend.append(Line2D([], [], linestyle="none"))
        labels.append(
            f"{name + ': ' if name else ''}model \u2212 mean reader AUC "
            f"{_difference_text(result.difference, result.ci_low, result.ci_high, result.level)}, "
            f"p {_p_text(result.p_value)} (1T-RRRC, {len(result.readers)} readers, {result.n_pos + result.n_neg} cases)"
        )
    fig.legend(legend, labels, loc="outside lower center", ncols=1)
    if title:
        fig.suptitle(title)
    return fig
