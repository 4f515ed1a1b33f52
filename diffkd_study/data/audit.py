"""Data-audit tables and figures: what the data-audit notebook shows, as library functions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from diffkd_study.data.cache import open_image, to_8bit
from diffkd_study.data.schema import Manifest, row_boxes

GROUP_COLUMNS: tuple[str, str] = ("dataset", "center")


def cohort_table(manifest: Manifest) -> pd.DataFrame:
    """Per dataset and center: images, patients, counts per label and the positive-class share."""
    df = manifest.df
    labels = list(manifest.schema.label_set)
    grouped = df.groupby(list(GROUP_COLUMNS), sort=True)
    table = grouped.agg(images=("image_id", "size"), patients=("patient_id", "nunique"))
    counts = pd.crosstab([df["dataset"], df["center"]], df["label"]).reindex(columns=labels, fill_value=0)
    table = table.join(counts)
    positive = manifest.schema.positive_class
    if positive is not None:
        table[f"% {positive}"] = (100 * table[positive] / table["images"]).round(1)
    total = pd.DataFrame(
        [[len(df), df["patient_id"].nunique(), *[int((df["label"] == lab).sum()) for lab in labels]]
         + ([round(100 * (df["label"] == positive).mean(), 1)] if positive is not None else [])],
        columns=table.columns,
        index=pd.MultiIndex.from_tuples([("all", "all")], names=list(GROUP_COLUMNS)),
    )
    return pd.concat([table, total])


def image_size_table(manifest: Manifest, sizes: dict[str, tuple[int, int]] | dict[str, list[int]]) -> pd.DataFrame:
    """Width and height distribution (min / median / max) per dataset and center."""
    df = manifest.df[["image_id", *GROUP_COLUMNS]].copy()
    wh = df["image_id"].map(lambda i: tuple(sizes.get(str(i), (np.nan, np.nan))))
    df["width"] = [w for w, _ in wh]
    df["height"] = [h for _, h in wh]
    return df.groupby(list(GROUP_COLUMNS)).agg(
        width_min=("width", "min"), width_median=("width", "median"), width_max=("width", "max"),
        height_min=("height", "min"), height_median=("height", "median"), height_max=("height", "max"),
    )


def condition_tables(manifest: Manifest) -> dict[str, pd.DataFrame]:
    """One table per condition: categorical -> counts per level x label (with 'missing');
    numeric -> n, missing, median and IQR per label."""
    df = manifest.df
    out: dict[str, pd.DataFrame] = {}
    labels = list(manifest.schema.label_set)
    for name, spec in manifest.schema.conditions.items():
        if name not in df.columns:
            continue
        if spec.type == "categorical":
            values = df[name].astype("object").where(df[name].notna(), "missing")
            levels = [*(spec.levels or ()), "missing"]
            table = pd.crosstab(values, df["label"]).reindex(index=levels, columns=labels, fill_value=0)
            out[name] = table[table.sum(axis=1) > 0]
        else:
            numeric = pd.to_numeric(df[name], errors="coerce")
            rows = []
            for label in labels:
                v = numeric[df["label"] == label]
                rows.append({
                    "label": label, "n": int(v.notna().sum()), "missing": int(v.isna().sum()),
                    "median": v.median(), "q1": v.quantile(0.25), "q3": v.quantile(0.75),
                })
            out[name] = pd.DataFrame(rows).set_index("label").round(2)
    return out


def validation_summary(validation: dict[str, Any]) -> pd.DataFrame:
    """Counts of problems per severity and rule from a ``validation.json`` record."""
    problems = pd.DataFrame(validation.get("problems", []), columns=["severity", "rule", "message"])
    if problems.empty:
        return pd.DataFrame({"severity": [], "rule": [], "count": []})
    return problems.groupby(["severity", "rule"]).size().rename("count").reset_index()


def load_validation(path: str | Path) -> dict[str, Any]:
    """The ``validation.json`` record written by data preparation, as a dict."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def plot_label_balance(manifest: Manifest) -> Figure:
    """Horizontal stacked bars: the number of images of each label per center."""
    df = manifest.df
    counts = pd.crosstab(df["center"], df["label"]).reindex(columns=list(manifest.schema.label_set), fill_value=0)
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(counts)))
    counts.plot.barh(stacked=True, ax=ax, colormap="tab10", width=0.75)
    ax.set_xlabel("number of images")
    ax.set_ylabel("center")
    ax.set_title("Label balance per center")
    ax.legend(title="label", loc="lower right", frameon=False)
    fig.tight_layout()
    return fig


def plot_image_sizes(manifest: Manifest, sizes: dict[str, Any]) -> Figure:
    """Scatter of the original image sizes (width, height) per center; ``sizes`` maps image_id -> (w, h)."""
    df = manifest.df
    fig, ax = plt.subplots(figsize=(6, 4))
    for center, part in df.groupby("center"):
        wh = np.array([sizes[i] for i in part["image_id"].astype(str) if i in sizes], dtype=float)
        if len(wh):
            ax.scatter(wh[:, 0], wh[:, 1], s=10, alpha=0.6, label=str(center))
    ax.set_xlabel("width (pixels)")
    ax.set_ylabel("height (pixels)")
    ax.set_title("Image sizes per center")
    ax.legend(fontsize=7, frameon=False, markerscale=2)
    fig.tight_layout()
    return fig


def _load_gray(path: Path) -> np.ndarray:
    # through the cache's decoder: a 16-bit image is scaled by its bit depth, not clipped to white
    with open_image(path) as img:
        return np.asarray(to_8bit(img).convert("L"))


def plot_examples(manifest: Manifest, root: str | Path, per_group: int = 4, seed: int = 0,
                  group_col: str = "center") -> Figure:
    """Example images per group and label, with the lesion mask outline (green) and boxes (yellow)."""
    root = Path(root)
    df = manifest.df
    rng = np.random.default_rng(seed)
    groups = sorted(df[group_col].astype(str).unique())
    labels = list(manifest.schema.label_set)
    columns = per_group * max(1, len([lab for lab in labels if (df["label"] == lab).any()]))
    fig, axes = plt.subplots(len(groups), columns, figsize=(1.6 * columns, 1.8 * len(groups)), squeeze=False)
    for r, group in enumerate(groups):
        col = 0
        for label in labels:
            rows = df.index[(df[group_col].astype(str) == group) & (df["label"] == label)]
            if not (df["label"] == label).any():
                continue
            chosen = rng.choice(rows, size=min(per_group, len(rows)), replace=False) if len(rows) else []
            for k in range(per_group):
                ax = axes[r, col]
                col += 1
                ax.set_xticks([])
                ax.set_yticks([])
                if k >= len(chosen):
                    ax.axis("off")
                    continue
                row = df.loc[chosen[k]]
                ax.imshow(_load_gray(root / row["image_path"]), cmap="gray", vmin=0, vmax=255)
                mask_path = row.get("mask_path")
                if isinstance(mask_path, str) and (root / mask_path).is_file():
                    mask = _load_gray(root / mask_path) > 0
                    if mask.any():
                        ax.contour(mask, levels=[0.5], colors="lime", linewidths=0.8)
                for x, y, w, h in row_boxes(row.to_dict()):
                    ax.add_patch(plt.Rectangle((x, y), w, h, fill=False, edgecolor="yellow", linewidth=0.8))
                ax.set_title(label, fontsize=7)
                if k == 0 and col == 1:
                    ax.set_ylabel(group, fontsize=8)
        for c in range(col, columns):
            axes[r, c].axis("off")
    fig.suptitle(f"Example images per {group_col} (mask outline green, boxes yellow)", fontsize=9)
    fig.tight_layout()
    return fig
