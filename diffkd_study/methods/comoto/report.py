"""Tables and figures of the CoMoTo stage: mean sensitivity per method and regime, FROC curves, examples.

Per-fold numbers (``results``: one row per fold, regime and method, from
:func:`diffkd_study.methods.comoto.cv.run_cross_validation`) are summarised as mean +- SD across folds with
the number of folds and the test images and boxes they hold in total. FROC curves and example
detections use the *pooled* out-of-fold detections: every DBT slice is a test slice in exactly one
fold, so pooling the folds gives one curve over all slices per method and regime (the fold models
differ, so pooled and fold-mean values differ slightly; the table reports the fold mean).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from diffkd_study.methods.comoto.cv import regime_name
from diffkd_study.methods.comoto.data import DetectionData
from diffkd_study.methods.comoto.stage import METHODS
from diffkd_study.metrics.froc import FROCResult, fold_summary
from diffkd_study.viz import STYLE, series_styles

__all__ = [
    "fold_table",
    "operating_threshold",
    "plot_example_detections",
    "plot_froc_curves",
    "summary_table",
    "timing_table",
]


def summary_table(results: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Long table: method, regime, metric, mean, sd, n_folds, n_test_images, n_test_boxes (summed over folds)."""
    frames = []
    sizes = results.groupby(["method", "regime"], sort=False)[["n_images", "n_boxes"]].sum().reset_index()
    for metric in metrics:
        part = fold_summary(results, metric, ["method", "regime"])
        part.insert(2, "metric", metric)
        frames.append(part.merge(sizes, on=["method", "regime"]).rename(
            columns={"n_images": "n_test_images", "n_boxes": "n_test_boxes"}))
    return pd.concat(frames, ignore_index=True)


def fold_table(summary: pd.DataFrame, metric: str, methods: Sequence[str], regimes: Sequence[float]) -> pd.DataFrame:
    """Methods x regimes, each cell ``mean ± SD (n = folds)`` of ``metric``; rows in ``methods`` order."""
    part = summary[summary["metric"] == metric]
    cells = {}
    for regime in regimes:
        column = {}
        for method in methods:
            row = part[(part["method"] == method) & (part["regime"] == regime)]
            if row.empty:
                column[METHODS[method].title] = ""
                continue
            r = row.iloc[0]
            sd = "" if math.isnan(r["sd"]) else f" ± {r['sd']:.3f}"
            column[METHODS[method].title] = f"{r['mean']:.3f}{sd} (n={int(r['n_folds'])})"
        cells[f"{regime_name(regime)} of DBT training patients"] = column
    table = pd.DataFrame(cells)
    table.index.name = "method"
    return table


def operating_threshold(result: FROCResult, fps_per_image: float) -> float:
    """The lowest score threshold whose FP rate is at most ``fps_per_image`` (``inf``: none)."""
    curve = result.curve
    allowed = curve[curve["fps_per_image"] <= fps_per_image]
    return float(allowed["threshold"].min())


def plot_froc_curves(
    pooled: Mapping[tuple[float, str], FROCResult],
    methods: Sequence[str],
    regimes: Sequence[float],
    fps_marks: Sequence[float] = (1.0, 2.0, 3.0, 4.0),
) -> Figure:
    """One panel per regime: the pooled out-of-fold FROC curve of every method."""
    styles = series_styles([METHODS[m].title for m in methods])
    x_max = max(fps_marks) + 0.5
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(regimes), figsize=(4.2 * len(regimes), 4.0), sharey=True,
                                 squeeze=False, layout="constrained")
        for ax, regime in zip(axes[0], regimes, strict=True):
            for method in methods:
                result = pooled[(regime, method)]
                curve = result.curve
                style = styles[METHODS[method].title]
                ax.step(curve["fps_per_image"], curve["sensitivity"], where="post", color=style.color,
                        linestyle=style.linestyle, linewidth=1.6,
                        label=f"{METHODS[method].title} (mean sens. {result.mean_sensitivity:.2f})")
            for mark in fps_marks:
                ax.axvline(mark, color="0.8", linewidth=0.8, zorder=0)
            ax.set_xlim(0, x_max)
            ax.set_ylim(0, 1.02)
            first = pooled[(regime, methods[0])]
            ax.set_title(f"{regime_name(regime)} of training patients\n{first.n_images} slices, {first.n_boxes} lesions")
            ax.set_xlabel("false positives per slice")
            ax.legend(loc="best", fontsize=7)  # the emptiest corner: low curves leave the top free
        axes[0, 0].set_ylabel("sensitivity (lesions found)")
        fig.suptitle("FROC on held-out DBT slices (out-of-fold detections of all folds pooled)")
    return fig


def plot_example_detections(
    data: DetectionData,
    detections: Mapping[str, pd.DataFrame],
    thresholds: Mapping[str, float],
    image_ids: Sequence[str],
    titles: Mapping[str, str] | None = None,
    image_root: str | None = None,
) -> Figure:
    """Rows = slices, columns = methods: GT boxes (green) and the detections at each method's threshold.

    Detections are drawn on the letterboxed network input (the pixels the detector saw); a hit is a
    solid orange box, a false positive a dashed one. ``detections`` must carry the ``hit`` column of
    :func:`diffkd_study.metrics.froc.match_detections`.
    """
    methods = list(detections)
    index = {str(i): k for k, i in enumerate(data.image_ids)}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(image_ids), len(methods), figsize=(2.6 * len(methods), 2.8 * len(image_ids)),
                                 squeeze=False, layout="constrained")
        for row, image_id in enumerate(image_ids):
            k = index[str(image_id)]
            box = data.letterboxes[k]
            for col, method in enumerate(methods):
                ax = axes[row, col]
                ax.imshow(data.image(k), cmap="gray", vmin=0, vmax=255)
                for x1, y1, x2, y2 in box.to_network(data.boxes[k]):
                    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="#009E73", linewidth=1.6))
                part = detections[method]
                part = part[(part["image_id"] == str(image_id)) & (part["score"] >= thresholds[method])]
                for det in part.itertuples():
                    (x1, y1, x2, y2), = box.to_network(np.array([[det.x1, det.y1, det.x2, det.y2]]))
                    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="#D55E00",
                                           linewidth=1.2, linestyle="-" if det.hit else "--"))
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title((titles or {}).get(method, method), fontsize=8)
                if col == 0:
                    ax.set_ylabel(str(image_id)[:18], fontsize=7)
        fig.suptitle("Green: annotated lesion; orange: detections at 2 false positives per slice "
                     "(solid = hit, dashed = false positive)", fontsize=8)
    return fig


def timing_table(teachers: Mapping[str, tuple[float, int]], results: pd.DataFrame) -> pd.DataFrame:
    """Training wall time per part: each teacher (``kind -> (seconds, steps)``), then the students of each
    regime and method summed over folds; seconds, minutes and optimiser steps."""
    rows = [{"part": f"teacher ({kind})", "runs": 1, "seconds": seconds, "steps": steps}
            for kind, (seconds, steps) in teachers.items()]
    grouped = results.groupby(["regime", "method"], sort=False).agg(runs=("fold", "count"), seconds=("train_seconds", "sum"),
                                                                    steps=("steps", "sum"))
    for (regime, method), r in grouped.iterrows():
        rows.append({"part": f"students {regime_name(regime)} {method}", "runs": int(r["runs"]),
                     "seconds": float(r["seconds"]), "steps": int(r["steps"])})
    table = pd.DataFrame(rows)
    total = {"part": "total (training)", "runs": int(table["runs"].sum()), "seconds": float(table["seconds"].sum()),
             "steps": int(table["steps"].sum())}
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    table["minutes"] = table["seconds"] / 60
    return table
