"""Figures of the SSD-KD study (house style of :mod:`diffkd_study.viz`) and their plain-language captions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from diffkd_study.viz import MARKERS, PALETTE, STYLE

__all__ = ["CAPTIONS", "plot_comparison", "ss_head_frame"]

METRIC_LABELS: dict[str, str] = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
                                 "macro_auc": "macro AUC (one-vs-rest)"}

CAPTIONS: dict[str, str] = {
    "comparison": (
        "How often each network's diagnosis was right on the {n} held-out test images ({n_lesions} lesions), "
        "which no network saw during training. Accuracy is the share of images diagnosed correctly; balanced "
        "accuracy is the average, over the seven diagnoses, of the share of each diagnosis recognised, so rare "
        "but important diagnoses such as melanoma count as much as common naevi; the macro AUC measures how well "
        "the network's scores separate each diagnosis from the others (1.0 perfect, 0.5 chance). Each marker is "
        "one training run (seed) with its 95% confidence interval; the vertical bar is the mean over runs."
    ),
    "confusion": (
        "Diagnoses of {model} on the {n} test images. Rows are the true diagnosis, columns the network's "
        "diagnosis (the most probable class); each cell gives the number of images and their percentage of the "
        "row, so the diagonal shows the share of each true diagnosis recognised correctly (its sensitivity) and "
        "the other cells show which diagnoses are confused with which."
    ),
    "loss_curves": (
        "Training curves of {model}: each panel is one part of the training objective (already multiplied by its "
        "weight) or a validation measure, against the number of passes over the training images. Falling "
        "training losses show that the network learns; the validation balanced accuracy chose the epoch that was "
        "kept. Lines are the mean over training runs and the shaded areas one standard deviation."
    ),
    "ss_head": (
        "Training of the teacher's self-supervision head (the first step of SSD-KD): the head learns to tell, "
        "for each rotated copy of an image, which unrotated image of the batch it came from. Lower loss and "
        "higher accuracy mean the teacher's rotated views are recognised; the best validation epoch was kept."
    ),
}


def plot_comparison(summary: pd.DataFrame, order: Sequence[str], titles: Mapping[str, str], *,
                    metrics: Sequence[str] = ("accuracy", "balanced_accuracy", "macro_auc"),
                    title: str | None = "Test split: teacher and students") -> Figure:
    """One panel per metric: every seed's estimate with its interval, and the mean over seeds, per model.

    ``summary`` holds one row per (model, seed) with ``metric``, ``metric_low`` and ``metric_high`` columns.
    """
    missing = [c for m in metrics for c in (m, f"{m}_low", f"{m}_high") if c not in summary.columns]
    if missing or "model" not in summary.columns:
        raise ValueError(f"summary lacks column(s) {missing or ['model']}")
    models = [m for m in order if m in set(summary["model"])]
    if not models:
        raise ValueError("no model of `order` is in the summary")
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics) + 1.2, 0.5 * len(models) + 1.6),
                                 sharey=True, squeeze=False, layout="constrained")
        seeds = sorted(summary["seed"].unique())
        for ax, metric in zip(axes[0], metrics, strict=True):
            for y, model in enumerate(models):
                part = summary[summary["model"] == model].sort_values("seed")
                offsets = np.linspace(-0.18, 0.18, len(part)) if len(part) > 1 else np.zeros(1)
                for offset, row in zip(offsets, part.to_dict("records"), strict=True):
                    k = seeds.index(row["seed"])
                    ax.errorbar(row[metric], y + offset, xerr=[[row[metric] - row[f"{metric}_low"]],
                                                               [row[f"{metric}_high"] - row[metric]]],
                                fmt=MARKERS[k % len(MARKERS)], color=PALETTE[k % len(PALETTE)], capsize=2,
                                markersize=4, linewidth=1)
                ax.plot([part[metric].mean()] * 2, [y - 0.32, y + 0.32], color="black", linewidth=2)
            ax.set_xlabel(METRIC_LABELS.get(metric, metric))
            ax.grid(axis="x", alpha=0.3)
        axes[0][0].set_yticks(range(len(models)), [titles.get(m, m) for m in models])
        axes[0][0].invert_yaxis()
        handles = [Line2D([], [], color=PALETTE[k % len(PALETTE)], marker=MARKERS[k % len(MARKERS)], linestyle="",
                          label=f"seed {s} (95% CI)") for k, s in enumerate(seeds)]
        handles.append(Line2D([], [], color="black", linewidth=2, label="mean over seeds"))
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
        if title:
            fig.suptitle(title)
    return fig


def ss_head_frame(ss_heads: Sequence[Mapping]) -> pd.DataFrame:
    """Tidy SS-head history (``seed, epoch, term, value, split``) for :func:`diffkd_study.viz.plot_loss_curves`."""
    rows = []
    for record in ss_heads:
        for h in record["history"]:
            for key, term, split in (("train_ss_loss", "SS loss", "train"), ("val_ss_loss", "SS loss", "validation"),
                                     ("train_ss_accuracy", "SS accuracy", "train"),
                                     ("val_ss_accuracy", "SS accuracy", "validation")):
                rows.append({"seed": record["teacher_seed"], "epoch": h["epoch"], "term": term, "value": h[key],
                             "split": split})
    return pd.DataFrame(rows)
