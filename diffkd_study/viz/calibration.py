"""Calibration and decision-curve figures: the reliability diagram with a histogram of predictions
(``plot_calibration``) and net benefit against threshold probability (``plot_decision_curves``).

Both draw precomputed results: ``plot_calibration`` takes one ``metrics.calibration.CalibrationSummary``
per model (``calibration_summary``), ``plot_decision_curves`` the table of ``metrics.dca.decision_curves``.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from diffkd_study.metrics.calibration import CalibrationSummary
from diffkd_study.metrics.dca import TREAT_ALL, TREAT_NONE
from diffkd_study.viz.captions import _calibration_label
from diffkd_study.viz.style import (
    REFERENCE_COLOR,
    _error_arms,
    _figure_function,
    _new_axes,
    _require_columns,
    series_styles,
)


@_figure_function("calibration")
def plot_calibration(
    summaries: Mapping[str, CalibrationSummary],
    *,
    title: str | None = "Calibration",
) -> Figure:
    """Reliability diagram of one or more models on the same cases, with a histogram of predictions below.

    ``summaries`` maps a model name to its ``CalibrationSummary`` (``metrics.calibration.
    calibration_summary(y_true, y_prob, ...)``, every model on the same cases with the same binning
    strategy and level). Per model: binned observed proportion against mean prediction with Wilson
    intervals and the LOWESS curve (the summary's reliability diagram), and in the legend the
    calibration intercept and slope with their Wald intervals and the Brier score. The title states
    n and the number of positive cases.
    """
    if not summaries:
        raise ValueError("give at least one model as {name: CalibrationSummary} (see metrics.calibration)")
    cases = {(s.n, s.n_pos) for s in summaries.values()}
    settings = {(s.reliability.strategy, s.calibration.level) for s in summaries.values()}
    if len(cases) > 1 or len(settings) > 1:
        raise ValueError(
            f"the calibration summaries differ in (n, n_pos) {sorted(cases)} or (strategy, level) "
            f"{sorted(settings)}; give the models of one test set, summarised alike"
        )
    ((n, n_pos),), ((strategy, level),) = cases, settings
    fig = plt.figure(figsize=(6.4, 8.6), layout="constrained")
    ax, hist_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    (ideal,) = ax.plot(
        [0, 1],
        [0, 1],
        linestyle=(0, (1, 1.5)),
        color=REFERENCE_COLOR,
        linewidth=1.2,
        label="ideal calibration",
    )
    styles = series_styles(list(summaries))
    handles = []
    hist_bins = np.linspace(0.0, 1.0, 21)
    for name, summary in summaries.items():
        style = styles[name]
        rel = summary.reliability
        bins = rel.bins
        ax.errorbar(
            bins["mean_predicted"],
            bins["observed"],
            yerr=_error_arms(bins["observed"], bins["ci_low"], bins["ci_high"]),
            fmt=style.marker,
            color=style.color,
            markersize=5,
            elinewidth=1.0,
            capsize=2,
            alpha=0.9,
        )
        if rel.smooth is not None:
            ax.plot(
                rel.smooth["predicted"],
                rel.smooth["observed"],
                color=style.color,
                linestyle=style.linestyle,
                linewidth=1.8,
            )
        handles.append(
            Line2D(
                [],
                [],
                color=style.color,
                linestyle=style.linestyle,
                marker=style.marker,
                markersize=5,
                label=_calibration_label(name, summary),
            )
        )
        hist_ax.hist(
            summary.y_prob,
            bins=hist_bins,
            histtype="step",
            color=style.color,
            linestyle=style.linestyle,
            linewidth=1.5,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("observed proportion positive")
    ax.set_title(f"{title} (n={n}, {n_pos} positive)" if title else f"n={n}, {n_pos} positive")
    hist_ax.set_xlabel("predicted probability")
    hist_ax.set_ylabel("cases (count)")
    fig.legend(
        handles=[*handles, ideal],
        loc="outside lower center",
        ncols=1,
        title=f"points: {strategy} bins with {level:.0%} Wilson CI; lines: LOWESS\n"
        f"calibration intercept and slope with {level:.0%} CI",
    )
    return fig


@_figure_function("decision_curves")
def plot_decision_curves(
    dca_df: pd.DataFrame,
    *,
    threshold_range: tuple[float, float] | None = None,
    title: str | None = "Decision curves",
    ax: Axes | None = None,
) -> Figure:
    """Net benefit against threshold probability (in %) for each model, with treat all and treat none.

    ``dca_df`` is ``dca.decision_curves(...)``: one row per (model, threshold) with ``model,
    threshold, net_benefit`` and, for the legend title, ``n`` and ``prevalence``. Treat all and
    treat none are drawn from its reference rows; when treat all is absent it is computed from
    ``prevalence``. ``threshold_range`` (probabilities) limits the x axis. The y axis is cut a
    little below 0, where treat all plunges at high thresholds.
    """
    _require_columns(dca_df, ["model", "threshold", "net_benefit"], "dca_df")
    if dca_df.duplicated(["model", "threshold"]).any():
        raise ValueError(
            "dca_df has more than one row for a model and threshold; give the curves of one test set"
        )
    df = dca_df
    if threshold_range is not None:
        lo, hi = threshold_range
        df = df[(df["threshold"] >= lo) & (df["threshold"] <= hi)]
    thresholds = np.sort(df["threshold"].unique())
    if thresholds.size == 0:
        raise ValueError("no thresholds to plot (check threshold_range)")
    models = [m for m in pd.unique(df["model"]) if m not in (TREAT_ALL, TREAT_NONE)]
    if not models:
        raise ValueError("dca_df holds no model besides the reference strategies")
    treat_all = df[df["model"] == TREAT_ALL].sort_values("threshold")
    if treat_all.empty:
        if "prevalence" not in df.columns:
            raise ValueError(f"dca_df has no {TREAT_ALL!r} rows and no prevalence column to compute them")
        prev = float(df["prevalence"].iloc[0])
        treat_all = pd.DataFrame(
            {"threshold": thresholds, "net_benefit": prev - (1 - prev) * thresholds / (1 - thresholds)}
        )
    fig, ax = _new_axes(ax, (7.0, 5.4))
    styles = series_styles([str(m) for m in models])
    for model in models:
        part = df[df["model"] == model].sort_values("threshold")
        style = styles[str(model)]
        ax.plot(
            100 * part["threshold"],
            part["net_benefit"],
            color=style.color,
            linestyle=style.linestyle,
            linewidth=2.0,
            label=str(model),
        )
    ax.plot(
        100 * treat_all["threshold"],
        treat_all["net_benefit"],
        color=REFERENCE_COLOR,
        linewidth=1.3,
        label=TREAT_ALL,
    )
    ax.plot(
        100 * thresholds,
        np.zeros_like(thresholds),
        color="black",
        linewidth=1.0,
        linestyle=(0, (4, 3)),
        label=TREAT_NONE,
    )
    shown = np.concatenate(
        [
            df.loc[df["model"].isin(models), "net_benefit"].to_numpy(dtype=float),
            treat_all["net_benefit"].to_numpy(dtype=float),
        ]
    )
    top = max(float(np.nanmax(shown)), 0.01) * 1.1
    ax.set_ylim(-0.1 * top, top)
    ax.set_xlim(100 * thresholds[0], 100 * thresholds[-1])
    ax.set_xlabel("threshold probability (%)")
    ax.set_ylabel("net benefit (net true positives per patient)")
    legend_title = None
    if {"n", "prevalence"} <= set(df.columns):
        legend_title = f"n={int(df['n'].iloc[0])}, prevalence {float(df['prevalence'].iloc[0]):.1%}"
    ax.legend(loc="upper right", title=legend_title)
    if title:
        ax.set_title(title)
    return fig
