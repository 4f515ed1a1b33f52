"""Evaluation figures: ROC curves with bands and readers, AUC forest plot, calibration, decision curves,
confusion matrix, training-loss curves and the reader study, in one house style.

Every ``plot_*`` function returns a matplotlib ``Figure`` and never calls ``plt.show``. The house
style (``STYLE``) uses the Okabe-Ito colour-blind-safe palette (``PALETTE``); each series also gets
its own line style and marker, so the figures stay readable in grey-scale print. Series take
colours in the order they are given: pass the models in the same order to every function and a
model keeps its colour across figures. Reader groups take a marker each (sorted by group name) in
both the ROC and the reader-study figure.

Figures are created through pyplot, as in ``diffkd_study.data.audit``, so a notebook cell that
draws one shows it once through the inline backend; close them (``plt.close(fig)``) inside loops.
``save_figure`` writes PNG (120 dpi) and SVG. ``CAPTIONS`` holds one plain-language caption template
per figure for the clinician report; ``caption(kind, **fields)`` fills one.

Every interval drawn comes from ``diffkd_study.metrics``: DeLong AUC intervals (``roc.auc_delong``),
pointwise bootstrap ROC bands (``roc.roc_confidence_band``), Wilson intervals for proportions,
ORH intervals for reader means.
"""

from __future__ import annotations

import functools
import math
import os
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from numpy.typing import ArrayLike

from diffkd_study.metrics.calibration import (
    BinStrategy,
    brier_score,
    calibration_intercept_slope,
    check_probabilities,
    reliability_diagram,
)
from diffkd_study.metrics.dca import TREAT_ALL, TREAT_NONE
from diffkd_study.reader_study import ModelVsReaders, ORHResult
from diffkd_study.metrics.roc import AUCResult, auc_delong, roc_confidence_band, roc_curve, z_quantile
from diffkd_study.io import atomic_path
from diffkd_study.nbutil import format_p

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision
# deficiencies. Yellow (#F0E442) is left out: it vanishes on a white background.
PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
)
LINESTYLES: tuple[Any, ...] = ("-", "--", "-.", (0, (1, 1.2)), (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)))
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X")
REFERENCE_COLOR = "0.45"  # chance diagonal, ideal calibration, treat all
READER_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P")
READER_FACES: tuple[str, ...] = ("0.15", "white", "0.65", "white", "0.15", "0.65")
ALL_READERS = "all readers"

STYLE: dict[str, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8.5,
    "legend.title_fontsize": 9,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "0.9",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "axes.prop_cycle": cycler(color=PALETTE),
    "lines.linewidth": 1.8,
    "errorbar.capsize": 0,
    "figure.dpi": 100,
}

PNG_DPI = 120

# Placeholders: {test_set} (e.g. "the external test set of centre B"), {n} (cases), {n_pos} (cases
# with the condition), {condition} (e.g. "malignancy"), {model}. ``caption`` fills them.
CAPTIONS: dict[str, str] = {
    "roc": (
        "Receiver operating characteristic (ROC) curves of the compared models on {test_set} ({n} cases, "
        "{n_pos} with {condition}). Each curve traces, over every possible cut-off of a model's score, the "
        "proportion of cases with {condition} that the model flags (sensitivity, vertical axis) against the "
        "proportion of cases without {condition} that it flags wrongly (1 - specificity, horizontal axis); "
        "curves closer to the top-left corner are better, and the dashed diagonal is what guessing would "
        "achieve. The shaded areas show, at each false-positive rate, the range of sensitivities compatible "
        "with the data (95% pointwise bootstrap bands). The legend gives each model's area under the curve "
        "(AUC; 1.0 means perfect separation, 0.5 chance) with its 95% confidence interval (DeLong method) and "
        "the number of cases. Where markers are shown, each is one reader's sensitivity and 1 - specificity "
        "at their own recall decisions, with 95% confidence bars; readers labelled 'simulated' come from a "
        "computer model of reader behaviour, not from real radiologists."
    ),
    "auc_forest": (
        "Area under the ROC curve (AUC) of each model on each test set: the internal test set (new patients "
        "from the training centres) and each external centre (patients from a centre never seen in "
        "training). A point is the AUC (1.0 means perfect separation of cases with and without {condition}, "
        "0.5 chance) and its horizontal bar the 95% confidence interval (DeLong method); the columns on the "
        "right repeat the numbers with the number of cases and, in brackets, of cases with {condition}. Wide "
        "bars come from few cases. A drop from the internal to an external test set means that performance "
        "does not fully carry over to other centres, scanners or patient populations."
    ),
    "calibration": (
        "Calibration of the predicted probabilities of {condition} on {test_set} ({n} cases, {n_pos} with "
        "{condition}). Cases are grouped by their predicted probability; each point is a group's average "
        "prediction against the proportion of its cases that had {condition}, with a 95% confidence bar, and "
        "the line is a smoothed version of the same relation. On the dotted diagonal a predicted risk of, "
        "say, 20% means {condition} in about 20 of 100 such patients; below the diagonal the model "
        "overestimates the risk, above it underestimates. The legend gives the calibration intercept (0 is "
        "ideal; negative means the predicted risks are too high on average), the calibration slope (1 is "
        "ideal; below 1 means the predictions are too extreme) and the Brier score (the mean squared error "
        "of the predicted probabilities; lower is better). The histogram below shows how the predictions "
        "are spread."
    ),
    "decision_curves": (
        "Decision curves on {test_set} ({n} cases, {n_pos} with {condition}). The horizontal axis is the "
        "threshold probability: the risk of {condition} above which one would act (for example biopsy); it "
        "states how many unnecessary interventions one accepts per case found (at 20%, one case found is "
        "worth four unnecessary interventions). The vertical axis is the net benefit: the cases with "
        "{condition} correctly acted on per patient, minus the unnecessary interventions weighted by that "
        "exchange rate. A model is useful over the range of thresholds where its curve lies above both "
        "'treat all' (act on every patient) and 'treat none' (act on no patient, net benefit 0)."
    ),
    "confusion": (
        "Confusion matrix of {model} on {test_set} ({n} cases) at the decision threshold fixed beforehand "
        "on validation data. Rows are the true diagnosis and columns the model's call; each cell gives the "
        "number of cases and, below it, their percentage of the row. The diagonal cells are correct calls, "
        "so their percentages are the proportion of each true class recognised correctly (with two classes, "
        "the sensitivity for {condition} and the specificity); the other cells are errors: missed cases "
        "(false negatives) and false alarms (false positives)."
    ),
    "loss_curves": (
        "Training curves of {model}. Each panel shows one term of the training objective (for example the "
        "classification loss, the distillation losses and their weighted total) against training progress, "
        "on the training data and on the validation data. Falling curves show that the model is learning; a "
        "validation curve that rises while the training curve keeps falling suggests overfitting. Where "
        "several training runs with different random seeds are shown, the line is their mean and the shaded "
        "area one standard deviation either side. These curves document how the model was trained; they do "
        "not measure diagnostic performance."
    ),
    "reader_study": (
        "Diagnostic accuracy of individual readers and of the model on the same {n} cases ({n_pos} with "
        "{condition}). Each marker is one reader's area under the ROC curve (AUC, from their confidence "
        "ratings; 1.0 means perfect separation, 0.5 chance), grouped by experience, with a 95% confidence "
        "bar; the black bar next to each group marks the group's mean AUC, with its 95% confidence interval "
        "where available (Obuchowski-Rockette-Hillis method, which allows for the variability of both "
        "readers and cases). Each horizontal line with its shaded band is a model's AUC with its 95% "
        "confidence interval. Readers labelled 'simulated' come from a computer model of reader behaviour, "
        "not from real radiologists."
    ),
}


def fill_caption(captions: Mapping[str, str], kind: str, **fields: Any) -> str:
    """``captions[kind]`` with its placeholders filled; every placeholder must be given, and no other."""
    if kind not in captions:
        raise ValueError(f"no caption {kind!r}; captions exist for {sorted(captions)}")
    template = captions[kind]
    needed = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    missing, unknown = sorted(needed - fields.keys()), sorted(fields.keys() - needed)
    if missing or unknown:
        raise ValueError(
            f"caption {kind!r} takes the fields {sorted(needed)}; missing {missing}, not used {unknown}"
        )
    return template.format(**fields)


def caption(kind: str, **fields: Any) -> str:
    """``CAPTIONS[kind]`` with its placeholders filled; every placeholder must be given, and no other."""
    return fill_caption(CAPTIONS, kind, **fields)


F = TypeVar("F", bound=Callable[..., Figure])


def _figure_function(kind: str) -> Callable[[F], F]:
    """Draw inside the house style and append the clinician caption template to the docstring."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Figure:
            with plt.rc_context(STYLE):
                return func(*args, **kwargs)

        wrapper.__doc__ = (
            f"{(func.__doc__ or '').rstrip()}\n\n"
            f"    Caption template for clinicians (``CAPTIONS[{kind!r}]``, filled by ``caption({kind!r}, ...)``):\n\n"
            f"    {CAPTIONS[kind]}\n"
        )
        return wrapper  # type: ignore[return-value]

    return decorate


@dataclass(frozen=True)
class SeriesStyle:
    color: str
    linestyle: Any
    marker: str


def series_styles(names: Sequence[str]) -> dict[str, SeriesStyle]:
    """Colour, line style and marker per series, by position (the k-th series always looks the same)."""
    return {
        name: SeriesStyle(
            PALETTE[k % len(PALETTE)],
            LINESTYLES[(k + k // len(PALETTE)) % len(LINESTYLES)],
            MARKERS[k % len(MARKERS)],
        )
        for k, name in enumerate(names)
    }


def _reader_group_styles(groups: Sequence[str]) -> dict[str, tuple[str, str]]:
    """(marker, face colour) per reader group, by sorted group name, shared by the ROC and reader plots."""
    return {
        g: (READER_MARKERS[k % len(READER_MARKERS)], READER_FACES[k % len(READER_FACES)])
        for k, g in enumerate(sorted(groups))
    }


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig = plt.figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks the column(s) {missing}; it has {list(df.columns)}")


def _ci_text(low: float, high: float, level: float, digits: int = 3) -> str:
    return f"{level:.0%} CI {low:.{digits}f}\u2013{high:.{digits}f}"


def _p_text(p: float) -> str:
    """``= 0.042`` or ``< 0.001``: a p-value after the letter p, never ``0.000``."""
    shown = format_p(p)
    return shown if shown.startswith("<") else f"= {shown}"


def _difference_text(estimate: float, low: float, high: float, level: float) -> str:
    return f"{estimate:+.3f} ({level:.0%} CI {low:+.3f} to {high:+.3f})"


def auc_label(name: str, result: AUCResult, ci: bool = True, *, constant: bool = False) -> str:
    """Legend text "name: AUC 0.873 (95% CI 0.821-0.912); n=200 (80 positive)".

    ``constant``: every score is the same, so the AUC is 0.5 by construction and its interval has no
    width; the legend says so instead of showing a zero-width interval.
    """
    interval = f" ({_ci_text(result.ci_low, result.ci_high, result.level)})" if ci else ""
    if constant:
        interval = " (every score equal: no discrimination)"
    return f"{name}: AUC {result.auc:.3f}{interval}; n={result.n} ({result.n_pos} positive)"


NOT_APPLICABLE = "not applicable"


def draw_not_applicable(ax: Axes, title: str | None = None, reason: str = "") -> Axes:
    """Mark a panel of a grid (e.g. one model on one test set) as not applicable: no data, a short reason."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, NOT_APPLICABLE + (f"\n({reason})" if reason else ""), ha="center", va="center",
            color="0.35", wrap=True, transform=ax.transAxes)
    if title:
        ax.set_title(title)
    return ax


# ----------------------------------------------------------------------------------------------
# ROC
# ----------------------------------------------------------------------------------------------


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


def _is_simulated(frame: pd.DataFrame, flag: bool | None) -> bool:
    if flag is not None:
        return flag
    return "simulated" in frame.columns and bool(
        pd.to_numeric(frame["simulated"], errors="coerce").fillna(0).any()
    )


def _reader_label(group: str, n_readers: int, simulated: bool) -> str:
    who = "simulated readers" if simulated else "readers"
    return f"{who}: {group} (n={n_readers})"


def _error_arms(value: pd.Series, low: pd.Series, high: pd.Series) -> np.ndarray | None:
    """Asymmetric error-bar lengths, or None when the interval columns are absent or empty."""
    if low.isna().all() or high.isna().all():
        return None
    return np.vstack([(value - low).clip(lower=0), (high - value).clip(lower=0)]).astype(float)


@_figure_function("roc")
def plot_roc(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]],
    bands: bool = True,
    reader_points: pd.DataFrame | None = None,
    ci: bool = True,
    *,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    simulated_readers: bool | None = None,
    title: str | None = "ROC curves",
    ax: Axes | None = None,
) -> Figure:
    """ROC curves of the compared models, with bands, DeLong AUCs in the legend and reader operating points.

    ``curves`` maps a model name to ``(y_true, y_score)`` (models may be evaluated on different
    cases; each legend entry states its own n). ``bands`` shades the pointwise stratified-bootstrap
    band of each curve (``roc.roc_confidence_band``, ``n_resamples`` resamples from ``seed``).
    ``ci`` puts the DeLong interval (logit scale, ``roc.auc_delong``) in the legend and Wilson error
    bars on the reader points.

    ``reader_points``: one row per reader, as returned by ``reader_study.reader_operating_points``
    (columns ``sensitivity`` and ``fpr`` or ``specificity``, optional ``*_ci_low``/``*_ci_high``,
    ``reader_group``), of one reading condition. One marker per reader group; the legend says
    "simulated readers" when ``simulated_readers`` is true or, when it is None, when the frame has
    a truthy ``simulated`` column (``reader_operating_points`` does not carry that column over from
    the read table, so pass ``simulated_readers=True`` for simulated reads).
    """
    if not curves:
        raise ValueError("give at least one model as {name: (y_true, y_score)}")
    fig, ax = _new_axes(ax, (6.4, 8.0))
    styles = series_styles(list(curves))
    model_handles = []
    for name, (y_true, y_score) in curves.items():
        style = styles[name]
        curve = roc_curve(y_true, y_score)
        result = auc_delong(y_true, y_score, level=level)
        if bands:
            band = roc_confidence_band(y_true, y_score, n_resamples=n_resamples, level=level, seed=seed)
            ax.fill_between(band.fpr, band.tpr_low, band.tpr_high, color=style.color, alpha=0.15, linewidth=0)
        (line,) = ax.plot(
            curve.fpr,
            curve.tpr,
            color=style.color,
            linestyle=style.linestyle,
            linewidth=2.0,
            label=auc_label(name, result, ci, constant=bool(np.ptp(np.asarray(y_score, dtype=float)) == 0)),
        )
        model_handles.append(line)
    extra_handles: list[Any] = []
    if bands:
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


# ----------------------------------------------------------------------------------------------
# AUC forest plot
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Calibration
# ----------------------------------------------------------------------------------------------


def _calibration_label(name: str, y_true: ArrayLike, prob: ArrayLike, level: float) -> str:
    cal = calibration_intercept_slope(y_true, prob, level=level)
    brier = brier_score(y_true, prob)
    intercept = f"intercept {cal.intercept:+.2f} ({cal.intercept_ci[0]:+.2f} to {cal.intercept_ci[1]:+.2f})"
    p = np.asarray(prob, dtype=float)
    if np.ptp(p) == 0:
        slope = f"slope not estimable (every prediction is {p[0]:.2f})"
    elif math.isnan(cal.slope):
        slope = "slope not estimable"
    else:
        slope = f"slope {cal.slope:.2f} ({cal.slope_ci[0]:.2f} to {cal.slope_ci[1]:.2f})"
    return f"{name}\n{intercept}, {slope}, Brier {brier.brier:.3f}"


@_figure_function("calibration")
def plot_calibration(
    y_true: ArrayLike,
    probs: Mapping[str, ArrayLike],
    *,
    n_bins: int = 10,
    strategy: BinStrategy = "quantile",
    level: float = 0.95,
    frac: float = 2 / 3,
    title: str | None = "Calibration",
) -> Figure:
    """Reliability diagram of one or more models on the same cases, with a histogram of predictions below.

    Per model: binned observed proportion against mean prediction with Wilson intervals and the
    LOWESS curve (``calibration.reliability_diagram``; ``n_bins`` bins by ``strategy``, LOWESS
    span ``frac``), and in the legend the calibration intercept and slope with their Wald
    intervals (``calibration.calibration_intercept_slope``) and the Brier score. The title states n
    and the number of positive cases.
    """
    if not probs:
        raise ValueError("give at least one model as {name: predicted probabilities}")
    y = np.asarray(y_true)
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
    styles = series_styles(list(probs))
    handles = []
    hist_bins = np.linspace(0.0, 1.0, 21)
    n = n_pos = 0
    for name, prob in probs.items():
        yb, p = check_probabilities(y, prob)
        n, n_pos = int(yb.size), int(yb.sum())
        style = styles[name]
        rel = reliability_diagram(
            yb, p, n_bins=n_bins, strategy=strategy, smooth=True, frac=frac, level=level
        )
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
                label=_calibration_label(name, yb, p, level),
            )
        )
        hist_ax.hist(
            p, bins=hist_bins, histtype="step", color=style.color, linestyle=style.linestyle, linewidth=1.5
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


# ----------------------------------------------------------------------------------------------
# Decision curves
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Confusion matrix
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Loss curves
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Reader study
# ----------------------------------------------------------------------------------------------


def _reader_auc_frame(
    readers: ORHResult | pd.DataFrame, reader_groups: Mapping[str, str] | None, level: float
) -> tuple[pd.DataFrame, str]:
    """Tidy per-reader AUCs: treatment, reader_id, reader_group, auc, ci_low, ci_high; and a CI note."""
    if isinstance(readers, ORHResult):
        t, r = readers.auc.shape
        se = np.sqrt(np.clip(np.diag(readers.auc_covariance), 0, None)).reshape(t, r)
        z = z_quantile(level)
        frame = pd.DataFrame(
            {
                "treatment": np.repeat(readers.treatments, r),
                "reader_id": np.tile(readers.readers, t),
                "auc": readers.auc.ravel(),
                "ci_low": np.clip(readers.auc.ravel() - z * se.ravel(), 0, 1),
                "ci_high": np.clip(readers.auc.ravel() + z * se.ravel(), 0, 1),
            }
        )
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


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------


def save_figure(fig: Figure, figures_dir: str | os.PathLike[str], name: str) -> Path:
    """Save ``<figures_dir>/<name>.png`` (120 dpi) and ``.svg``; return the PNG path.

    Both files are written under temporary names and renamed when complete, so an interrupted save
    leaves no half-written figure. The SVG carries no date and its element IDs are salted with
    ``name`` rather than drawn at random, so a re-executed notebook writes the same SVG bytes.
    """
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"name must be a plain file name without folders; got {name!r}")
    if Path(name).suffix.lower() in (".png", ".svg"):
        raise ValueError(f"give the name without extension (both .png and .svg are written); got {name!r}")
    folder = Path(figures_dir)
    png, svg = folder / f"{name}.png", folder / f"{name}.svg"
    # Unique temporary names (two runs saving the same figure never share one), renamed when both are complete.
    with atomic_path(png) as tmp_png, atomic_path(svg) as tmp_svg, plt.rc_context({"svg.hashsalt": name}):
        fig.savefig(tmp_png, format="png", dpi=PNG_DPI, bbox_inches="tight")
        fig.savefig(tmp_svg, format="svg", bbox_inches="tight", metadata={"Date": None})
    return png
