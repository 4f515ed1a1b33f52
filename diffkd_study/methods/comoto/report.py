"""Tables and figures of the CoMoTo stage: mean sensitivity per method and regime, FROC curves, examples.

Per-fold numbers (``results``: one row per fold, regime and method, from
:func:`diffkd_study.methods.comoto.cv.run_cross_validation`) are summarised as mean +- SD across folds with
the number of folds and the test images and boxes they hold in total. FROC curves and example
detections use the *pooled* out-of-fold detections: every DBT slice is a test slice in exactly one
fold, so pooling the folds gives one curve over all slices per method and regime (the fold models
differ, so pooled and fold-mean values differ slightly; the table reports the fold mean).

Differences between methods (:func:`fold_paired_test`, :func:`paired_comparisons`)
    Every method of a fold trains on the same patients and is tested on the same held-out patients, so the
    folds pair the methods: with ``d_k`` the difference of fold ``k`` (K folds), the paired t-test (Student
    1908; ``scipy.stats.ttest_rel``) gives ``t = mean(d) / (sd(d) / sqrt(K))`` on ``K - 1`` df, two-sided p,
    and the 95% CI ``mean(d) +- t_{0.975, K-1} sd(d) / sqrt(K)``. Beside it, the exact sign-flip
    permutation test (Fisher 1935; Good 2005, *Permutation, Parametric and Bootstrap Tests of Hypotheses*,
    §3.3) over all ``2^K`` sign assignments: p = the share of assignments whose ``|mean|`` is at least the
    observed one. It needs no normality but cannot go below ``2 / 2^K`` (0.0625 with 5 folds, so it can
    never reach 0.05 there). Fold-paired tests treat the K fold differences as independent; they are not
    quite (the training sets overlap), so the t-test's error rate is somewhat optimistic (Dietterich 1998,
    Neural Comput 10:1895; Nadeau & Bengio 2003, Mach Learn 52:239).

    :func:`comparison_plan` names the comparisons: every use of the mammography teacher against DBT-only
    training, and CoMoTo against each other use of the teacher. The planned primary comparison is the
    paper's headline claim (CoMoTo against mammography pre-training in the low-data regime, the smallest
    regime run), tested alone at alpha 0.05 on its unadjusted p. The secondary comparisons are
    Holm-adjusted (Holm 1979) within each family and regime: the comparisons against one reference in one
    regime. The words follow the test (:func:`comparison_sentence`): a difference is called significant only
    when its deciding p (the unadjusted p of the primary comparison, the Holm p of the others) is below
    0.05, and the result is "not estimable" when the fold differences have no spread or fewer than 2 folds
    exist.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from numpy.typing import ArrayLike
from scipy import stats

from diffkd_study.methods.comoto.cv import regime_name
from diffkd_study.methods.comoto.data import DetectionData
from diffkd_study.methods.comoto.stage import METHODS
from diffkd_study.metrics.clustered import holm_adjust
from diffkd_study.metrics.froc import FROCResult, fold_summary
from diffkd_study.nbutil import format_p
from diffkd_study.viz import STYLE, series_styles

__all__ = [
    "ComparisonPlan",
    "FoldPairedTest",
    "comparison_plan",
    "comparison_sentence",
    "comparison_table",
    "fold_paired_test",
    "fold_table",
    "operating_threshold",
    "paired_comparisons",
    "plot_example_detections",
    "plot_froc_curves",
    "summary_table",
    "timing_table",
]

ALPHA = 0.05
"""The two-sided level at which a difference is called significant."""
MAX_SIGN_FLIP_FOLDS = 16
"""The exact sign-flip test enumerates 2^K assignments; beyond this many folds it is not computed (NaN)."""


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


# -- paired differences over the folds ------------------------------------------------------------------------
@dataclass(frozen=True)
class FoldPairedTest:
    """The fold-paired comparison of two methods (see the module notes): the per-fold differences, their mean
    and SD, the paired t-test (t, df, two-sided p) with the t-based CI of the mean difference at ``level``, the
    folds where the first method was higher / lower, and the exact sign-flip p. Fields that cannot be
    estimated (fewer than 2 folds; no spread of the differences for t, p and CI) are NaN.
    """

    differences: tuple[float, ...]
    n_folds: int
    mean: float
    sd: float
    t: float
    df: int
    p: float
    ci_low: float
    ci_high: float
    n_higher: int
    n_lower: int
    sign_flip_p: float
    level: float = 0.95

    @property
    def estimable(self) -> bool:
        """Whether the t-test could be computed (at least 2 folds and differences with some spread)."""
        return bool(np.isfinite(self.p))


def _sign_flip_p(d: np.ndarray) -> float:
    """Exact two-sided sign-flip p: the share of the 2^K sign assignments with |mean| >= the observed |mean|."""
    k = d.size
    if k == 0 or k > MAX_SIGN_FLIP_FOLDS:
        return math.nan
    signs = 1 - 2 * ((np.arange(2**k)[:, None] >> np.arange(k)) & 1)
    means = np.abs(signs @ d) / k
    observed = abs(d.mean())
    tolerance = 1e-12 * max(1.0, float(np.abs(d).max()))  # the observed assignment counts despite round-off
    return float(np.mean(means >= observed - tolerance))


def fold_paired_test(differences: ArrayLike, level: float = 0.95) -> FoldPairedTest:
    """The fold-paired t-test and exact sign-flip test of per-fold differences (module notes; Student 1908,
    Fisher 1935). NaN differences (a fold missing one of the methods) are left out."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    d = np.asarray(differences, dtype=float).ravel()
    d = d[np.isfinite(d)]
    k = int(d.size)
    mean = float(d.mean()) if k else math.nan
    sd = float(d.std(ddof=1)) if k > 1 else math.nan
    t = p = low = high = math.nan
    if k > 1 and sd > 1e-12 * max(1.0, float(np.abs(d).max())):
        se = sd / math.sqrt(k)
        t = mean / se
        p = float(2 * stats.t.sf(abs(t), k - 1))
        half = float(stats.t.ppf(0.5 + level / 2, k - 1)) * se
        low, high = mean - half, mean + half
    return FoldPairedTest(tuple(float(v) for v in d), k, mean, sd, t, max(k - 1, 0), p, low, high, int((d > 0).sum()),
                          int((d < 0).sum()), _sign_flip_p(d) if k else math.nan, level)


@dataclass(frozen=True)
class ComparisonPlan:
    """Which fold-paired comparisons are made: ``families`` maps a family name to its ``(method, baseline)``
    pairs (difference = method - baseline; Holm within a family and regime), ``primary`` is the planned
    primary ``(method, baseline, regime)`` (tested alone on its unadjusted p), or ``None``."""

    families: dict[str, list[tuple[str, str]]]
    primary: tuple[str, str, float] | None


def comparison_plan(methods: Sequence[str], regimes: Sequence[float]) -> ComparisonPlan:
    """The comparisons of the stage for the methods run (module notes): each use of the teacher - DBT only,
    and CoMoTo - each other use of the teacher; primary: CoMoTo - pre-training in the smallest regime (the
    paper's low-data claim) when both were run."""
    families: dict[str, list[tuple[str, str]]] = {}
    if "dbt_only" in methods:
        families["teacher vs DBT only"] = [(m, "dbt_only") for m in methods if m != "dbt_only"]
    if "comoto" in methods:
        families["CoMoTo vs other teacher uses"] = [("comoto", m) for m in methods if m not in ("comoto", "dbt_only")]
    families = {name: pairs for name, pairs in families.items() if pairs}
    primary = ("comoto", "pretraining", min(regimes)) if {"comoto", "pretraining"} <= set(methods) and regimes else None
    return ComparisonPlan(families, primary)


def paired_comparisons(results: pd.DataFrame, metric: str, plan: ComparisonPlan,
                       regimes: Sequence[float], level: float = 0.95) -> pd.DataFrame:
    """One row per (family, regime, method, baseline) of ``plan``: the :class:`FoldPairedTest` of ``metric``
    (per-fold differences method - baseline over the folds where both ran), the Holm-adjusted p within the
    family and regime (the primary comparison is left out of its family and keeps its own p), whether the
    row is the primary one, its deciding p and the verdict (``significant``, ``not significant``, ``not
    estimable``)."""
    wide = results.pivot_table(index=["regime", "fold"], columns="method", values=metric)
    rows = []
    for family, pairs in plan.families.items():
        for regime in regimes:
            part = wide.loc[regime] if regime in wide.index.get_level_values(0) else wide.iloc[:0]
            block = []
            for method, baseline in pairs:
                if method not in part.columns or baseline not in part.columns:
                    continue
                test = fold_paired_test(part[method] - part[baseline], level)
                record = asdict(test)
                record["differences"] = list(test.differences)
                block.append({"family": family, "regime": regime, "regime_name": regime_name(regime),
                              "method": method, "baseline": baseline,
                              "comparison": f"{METHODS[method].title} - {METHODS[baseline].title}", "metric": metric,
                              **record, "primary": plan.primary == (method, baseline, regime)})
            secondary = [r for r in block if not r["primary"]]
            for r, adjusted in zip(secondary, holm_adjust([r["p"] for r in secondary]), strict=True):
                r["p_holm"] = float(adjusted)
            for r in block:
                if r["primary"]:
                    r["p_holm"] = r["p"]
                r["p_deciding"] = r["p_holm"]
                r["verdict"] = ("not estimable" if not np.isfinite(r["p"]) else
                                "significant" if r["p_deciding"] < ALPHA else "not significant")
            rows.extend(block)
    return pd.DataFrame(rows)


def comparison_sentence(row: Mapping, digits: int = 3) -> str:
    """The words for one row of :func:`paired_comparisons`, e.g. "CoMoTo (LsKD + ImPA) - DBT only, 10% of the
    training patients: higher in 4 of 5 folds, mean +0.123 (95% CI -0.051 to +0.297; paired t = 1.96 on 4 df,
    p = 0.12; exact sign-flip p = 0.19): not significant." The verdict follows the deciding p."""
    k = int(row["n_folds"])
    head = f"{row['comparison']}, {row['regime_name']} of the training patients"
    if k < 2:
        return f"{head}: {k} fold(s) with both methods, not estimable."
    level = f"{float(row['level']) * 100:g}%"
    folds = f"higher in {int(row['n_higher'])} of {k} folds"
    if int(row["n_lower"]) + int(row["n_higher"]) < k:
        folds += f" (equal in {k - int(row['n_higher']) - int(row['n_lower'])})"
    sign_flip = "" if not np.isfinite(row["sign_flip_p"]) else f"; exact sign-flip {_p_text(row['sign_flip_p'])}"
    if not np.isfinite(row["p"]):
        return (f"{head}: {folds}, mean {row['mean']:+.{digits}f}; the fold differences have no spread, so the "
                f"t-test is not estimable{sign_flip}.")
    holm = "" if row["primary"] else f", Holm-adjusted {_p_text(row['p_holm'])}"
    verdict = {"significant": "significant", "not significant": "not significant"}[row["verdict"]]
    if row["verdict"] == "not significant" and row["p"] < ALPHA:
        verdict = "not significant after the Holm adjustment"
    role = " (planned primary comparison)" if row["primary"] else ""
    return (f"{head}{role}: {folds}, mean {row['mean']:+.{digits}f} ({level} CI {row['ci_low']:+.{digits}f} to "
            f"{row['ci_high']:+.{digits}f}; paired t = {row['t']:.2f} on {int(row['df'])} df, {_p_text(row['p'])}"
            f"{holm}{sign_flip}): {verdict}.")


def _p_text(p: float) -> str:
    text = format_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def comparison_table(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The report's table of :func:`paired_comparisons`: family, training data, comparison, role (primary or
    secondary), per-fold differences, mean difference, ``ci_low``/``ci_high``, t, df, the three p-values and
    the verdict (for :func:`diffkd_study.nbutil.show_table` with ``intervals`` joining the CI)."""
    if comparisons.empty:
        return pd.DataFrame()
    return pd.DataFrame({
        "Family": comparisons["family"], "Training data": comparisons["regime_name"],
        "Comparison": comparisons["comparison"],
        "Role": comparisons["primary"].map({True: "primary", False: "secondary"}),
        "Per-fold differences": [", ".join(f"{v:+.3f}" for v in d) for d in comparisons["differences"]],
        "Mean difference": comparisons["mean"], "ci_low": comparisons["ci_low"], "ci_high": comparisons["ci_high"],
        "t": comparisons["t"], "df": comparisons["df"], "p (t-test)": comparisons["p"],
        "p (Holm)": comparisons["p_holm"], "p (sign-flip)": comparisons["sign_flip_p"],
        "Verdict": comparisons["verdict"]})
