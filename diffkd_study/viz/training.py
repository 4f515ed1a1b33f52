"""Training-curve figure (``plot_loss_curves``): one panel per loss term, a line per split, the mean and
spread over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from diffkd_study.viz.style import _figure_function, _require_columns, series_styles

_SPLIT_ORDER = ("train", "training", "val", "valid", "validation", "test")


def _ordered_terms(terms: Sequence[str]) -> list[str]:
    return sorted(terms, key=lambda t: (t != "total", list(terms).index(t)))


@_figure_function("loss_curves")
def plot_loss_curves(
    history: pd.DataFrame,
    *,
    x: str | None = None,
    log_scale: bool = False,
    title: str | None = "Training curves",
) -> Figure:
    """One panel per loss term (``total`` first), a line per split (train, validation, ...).

    ``history`` is tidy: one row per logged value with ``term, value, split`` and the progress
    column ``x`` (default ``step`` when present, else ``epoch``). With a ``seed`` column holding
    several seeds, each line is the mean over seeds at each x and the shaded area +- 1 SD;
    otherwise values logged more than once at the same x are averaged. ``log_scale`` puts the
    values on a log axis (for terms spanning decades).
    """
    if x is None:
        x = "step" if "step" in history.columns else "epoch"
    _require_columns(history, [x, "term", "value", "split"], "history")
    data = history.dropna(subset=[x, "value"])
    if data.empty:
        raise ValueError("history has no finite values to plot")
    terms = _ordered_terms(list(pd.unique(data["term"])))
    splits = sorted(
        pd.unique(data["split"]),
        key=lambda s: (
            _SPLIT_ORDER.index(s) if s in _SPLIT_ORDER else len(_SPLIT_ORDER),
            list(pd.unique(data["split"])).index(s),
        ),
    )
    split_styles = series_styles([str(s) for s in splits])
    n_seeds = int(data["seed"].nunique()) if "seed" in data.columns else 1
    ncols = min(3, len(terms))
    nrows = math.ceil(len(terms) / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(3.8 * ncols, 2.9 * nrows + 0.8),
        sharex=True,
        squeeze=False,
        layout="constrained",
    )
    flat = axes.ravel()
    for ax, term in zip(flat, terms, strict=False):
        for split in splits:
            part = data[(data["term"] == term) & (data["split"] == split)]
            if part.empty:
                continue
            stats = part.groupby(x)["value"].agg(["mean", "std"]).sort_index()
            style = split_styles[str(split)]
            ax.plot(stats.index, stats["mean"], color=style.color, linestyle=style.linestyle, linewidth=1.6)
            if n_seeds > 1:
                ax.fill_between(
                    stats.index,
                    stats["mean"] - stats["std"],
                    stats["mean"] + stats["std"],
                    color=style.color,
                    alpha=0.18,
                    linewidth=0,
                )
        ax.set_title(str(term))
        if log_scale:
            ax.set_yscale("log")
    for ax in flat[len(terms) :]:
        fig.delaxes(ax)
    progress = {"step": "training step (optimizer updates)", "epoch": "epoch (passes over the training set)"}
    for col in range(ncols):
        last = max(i for i in range(len(terms)) if i % ncols == col)
        flat[last].set_xlabel(progress.get(x, x))
        flat[last].xaxis.set_tick_params(labelbottom=True)
    for row in range(nrows):
        flat[row * ncols].set_ylabel("loss value" + (" (log scale)" if log_scale else ""))
    handles = [
        Line2D(
            [], [], color=split_styles[str(s)].color, linestyle=split_styles[str(s)].linestyle, label=str(s)
        )
        for s in splits
    ]
    legend_title = f"mean \u00b1 1 SD over {n_seeds} seeds" if n_seeds > 1 else None
    fig.legend(handles=handles, loc="outside lower center", ncols=len(splits), title=legend_title)
    if title:
        fig.suptitle(title)
    return fig
