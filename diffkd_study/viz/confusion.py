"""Confusion-matrix figure (``plot_confusion``): counts and percentages of each true and predicted class."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from diffkd_study.viz.style import _figure_function, _new_axes

Normalize = Literal["true", "pred", "all"] | None


@_figure_function("confusion")
def plot_confusion(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    labels: Sequence[Any] | Mapping[Any, str],
    normalize: Normalize = None,
    *,
    title: str | None = "Confusion matrix",
    ax: Axes | None = None,
) -> Figure:
    """Confusion matrix, each cell annotated with its count and a percentage.

    ``labels`` lists the class values in display order, or maps each value to its display name
    (e.g. ``{0: "benign", 1: "malignant"}``); a value of ``y_true``/``y_pred`` not among them is an
    error. Rows are the true class (tick labels carry each row's n), columns the predicted class.
    ``normalize`` picks what the colour and the percentage show: None (colour = count, percentage
    of the row), ``"true"`` (share of the row), ``"pred"`` (share of the column), ``"all"`` (share
    of all cases).
    """
    if normalize not in (None, "true", "pred", "all"):
        raise ValueError(f"normalize must be None, 'true', 'pred' or 'all'; got {normalize!r}")
    values = list(labels.keys()) if isinstance(labels, Mapping) else list(labels)
    names = [str(labels[v]) for v in values] if isinstance(labels, Mapping) else [str(v) for v in values]
    if len(set(values)) != len(values) or not values:
        raise ValueError(f"labels must be a non-empty list of distinct values; got {values}")
    truth, pred = np.asarray(y_true), np.asarray(y_pred)
    if truth.ndim != 1 or truth.shape != pred.shape:
        raise ValueError(
            f"y_true and y_pred must be 1-D of the same length; got {truth.shape} and {pred.shape}"
        )
    index = {v: k for k, v in enumerate(values)}
    for what, arr in (("y_true", truth), ("y_pred", pred)):
        unknown = sorted({str(v) for v in arr.tolist() if v not in index})
        if unknown:
            raise ValueError(f"{what} holds value(s) {unknown[:5]} not among labels {values}")
    k = len(values)
    counts = np.zeros((k, k), dtype=int)
    np.add.at(counts, ([index[v] for v in truth.tolist()], [index[v] for v in pred.tolist()]), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        row_share = counts / counts.sum(axis=1, keepdims=True)
        col_share = counts / counts.sum(axis=0, keepdims=True)
    all_share = counts / max(counts.sum(), 1)
    share = {"pred": col_share, "all": all_share}.get(normalize or "", row_share)
    share_name = {"pred": "of column", "all": "of all"}.get(normalize or "", "of row")
    colour_values = counts.astype(float) if normalize is None else share

    size = 1.6 + 1.1 * k
    fig, ax = _new_axes(ax, (size + 1.4, size))
    # Proportions keep the full 0-1 scale so that shades compare across figures; counts use their maximum.
    vmax = 1.0 if normalize is not None else max(float(counts.max()), 1.0)
    image = ax.imshow(colour_values, cmap="Blues", vmin=0, vmax=vmax)
    for i in range(k):
        for j in range(k):
            pct = "\u2013" if np.isnan(share[i, j]) else f"{100 * share[i, j]:.1f}%"
            dark = np.isfinite(colour_values[i, j]) and colour_values[i, j] > 0.55 * vmax
            ax.text(
                j,
                i,
                f"{counts[i, j]}\n({pct})",
                ha="center",
                va="center",
                color="white" if dark else "black",
                fontsize=10,
            )
    ax.set_xticks(range(k), names)
    ax.set_yticks(
        range(k), [f"{name}\n(n={int(n)})" for name, n in zip(names, counts.sum(axis=1), strict=True)]
    )
    ax.grid(False)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8)
    colorbar.set_label("cases (count)" if normalize is None else f"proportion {share_name}")
    ax.set_title(
        f"{title} (n={counts.sum()}; % {share_name})" if title else f"n={counts.sum()}; % {share_name}"
    )
    return fig
