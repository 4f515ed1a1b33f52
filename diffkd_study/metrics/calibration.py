"""Calibration of predicted probabilities: reliability diagram, logistic recalibration, Brier score, ECE.

Primary measures (Van Calster et al. 2019, BMC Med 17:230; Steyerberg 2019, Clinical Prediction
Models, ch. 15):

* calibration intercept ("calibration-in-the-large"): a in logit P(y=1) = a + logit(p), i.e. a
  logistic regression with logit(p) as an offset; 0 when the mean risk is right, > 0 when the
  model under-predicts;
* calibration slope: b in logit P(y=1) = a' + b logit(p); 1 when ideal, < 1 when predictions are
  too extreme (the usual sign of overfitting);
* Brier score mean (p - y)^2 and the scaled Brier 1 - Brier / (prev (1 - prev)), where the
  denominator is the Brier score of always predicting the prevalence.

Both logistic fits use statsmodels' binomial GLM with Wald intervals. Probabilities of exactly 0 or
1 are clipped to [eps, 1 - eps] before the logit (the number clipped is reported).

The expected calibration error (ECE) depends on the binning and is biased upwards in small samples;
it is offered only as a secondary, commonly quoted number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import statsmodels.api as sm
from numpy.typing import ArrayLike
from scipy.special import logit
from statsmodels.nonparametric.smoothers_lowess import lowess

from diffkd_study.metrics.operating_points import wilson_ci
from diffkd_study.metrics.roc import check_labels, require_classes, z_quantile

BinStrategy = Literal["quantile", "uniform"]


def check_probabilities(y_true: ArrayLike, y_prob: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate 0/1 labels and probabilities in [0, 1] of the same length; return (bool, float)."""
    y = check_labels(y_true)
    p = np.asarray(y_prob, dtype=float)
    if p.shape != y.shape:
        raise ValueError(f"y_true and y_prob must have the same 1-D shape; got {y.shape} and {p.shape}")
    bad = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        raise ValueError(
            f"y_prob must be probabilities in [0, 1]; position {int(np.argmax(bad))} holds {p[np.argmax(bad)]!r}"
        )
    return y, p


def bin_edges(y_prob: np.ndarray, n_bins: int, strategy: BinStrategy) -> np.ndarray:
    """Bin edges: ``n_bins`` equal-width bins on [0, 1], or quantile bins of equal size.

    Quantile edges that coincide (many tied probabilities) are merged, so fewer bins may result; when
    every probability is the same (a constant-score model) there is one bin ``[p, p]`` holding all cases.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1; got {n_bins}")
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if strategy == "quantile":
        edges = np.unique(np.quantile(y_prob, np.linspace(0.0, 1.0, n_bins + 1)))
        return np.repeat(edges, 2) if edges.size == 1 else edges
    raise ValueError(f"strategy must be 'quantile' or 'uniform'; got {strategy!r}")


def _assign_bins(y_prob: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # Bins are [e_k, e_k+1), the last one closed, so the maximum falls in the last bin.
    return np.searchsorted(edges[1:-1], y_prob, side="right")


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Data for a reliability diagram.

    ``bins``: one row per non-empty bin with its edges, n, events, mean predicted probability and
    observed event rate with a Wilson interval. ``smooth``: the LOWESS curve of y on p (sorted by
    p; ``None`` when not requested, or when every prediction is the same and there is no curve to fit).
    """

    bins: pd.DataFrame
    smooth: pd.DataFrame | None
    strategy: str
    n_bins: int
    n: int
    frac: float


def reliability_diagram(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    n_bins: int = 10,
    strategy: BinStrategy = "quantile",
    smooth: bool = True,
    frac: float = 2 / 3,
    level: float = 0.95,
) -> ReliabilityDiagram:
    """Binned observed vs predicted risk, plus a LOWESS-smoothed calibration curve.

    The LOWESS fit (statsmodels, span ``frac``) uses no robustness iterations (``it=0``), as in
    rms::val.prob: with 0/1 outcomes the robustness weights would down-weight the events. The
    smoothed values are clipped to [0, 1] because a local-linear fit of 0/1 data can overshoot.
    """
    y, p = check_probabilities(y_true, y_prob)
    if y.size == 0:
        raise ValueError("no cases")
    edges = bin_edges(p, n_bins, strategy)
    idx = _assign_bins(p, edges)
    columns = ["bin", "lower", "upper", "n", "n_events", "mean_predicted", "observed", "ci_low", "ci_high"]
    rows = []
    for k in range(len(edges) - 1):
        member = idx == k
        n_k = int(member.sum())
        if n_k == 0:
            continue
        events = int(y[member].sum())
        rate = wilson_ci(events, n_k, level)
        rows.append(
            {
                "bin": k,
                "lower": edges[k],
                "upper": edges[k + 1],
                "n": n_k,
                "n_events": events,
                "mean_predicted": float(p[member].mean()),
                "observed": rate.estimate,
                "ci_low": rate.ci_low,
                "ci_high": rate.ci_high,
            }
        )
    curve = None
    if smooth and np.ptp(p) > 0:
        fitted = lowess(y.astype(float), p, frac=frac, it=0, return_sorted=True)
        curve = pd.DataFrame({"predicted": fitted[:, 0], "observed": np.clip(fitted[:, 1], 0.0, 1.0)})
    return ReliabilityDiagram(pd.DataFrame(rows, columns=columns), curve, strategy, len(edges) - 1, int(y.size), frac)


@dataclass(frozen=True)
class CalibrationResult:
    """Calibration intercept (calibration-in-the-large) and slope, each with a Wald interval."""

    intercept: float
    intercept_ci: tuple[float, float]
    slope: float
    slope_ci: tuple[float, float]
    n: int
    n_events: int
    level: float
    n_clipped: int
    note: str = ""

    def __str__(self) -> str:
        return (
            f"calibration intercept {self.intercept:.3f} ({self.level:.0%} CI {self.intercept_ci[0]:.3f} to "
            f"{self.intercept_ci[1]:.3f}), slope {self.slope:.3f} ({self.slope_ci[0]:.3f} to {self.slope_ci[1]:.3f}); "
            f"n={self.n}, {self.n_events} events"
        )


def calibration_intercept_slope(
    y_true: ArrayLike, y_prob: ArrayLike, level: float = 0.95, eps: float = 1e-8
) -> CalibrationResult:
    """Calibration intercept (offset logistic model) and slope (logistic regression on logit p).

    When the logits separate the classes (quasi-)completely the slope is infinite, and when all
    predictions are equal it is not estimable: then slope and its interval are NaN and ``note``
    says why (the intercept is still estimated).
    """
    y, p = check_probabilities(y_true, y_prob)
    n_pos, _ = require_classes(y)
    z = z_quantile(level)
    clipped = np.clip(p, eps, 1 - eps)
    n_clipped = int(np.sum(clipped != p))
    lp = logit(clipped)
    yf = y.astype(float)

    # IRLS to a tight tolerance: statsmodels' default (1e-8 on the deviance) leaves ~1e-6 in the SEs.
    offset_fit = sm.GLM(yf, np.ones((y.size, 1)), family=sm.families.Binomial(), offset=lp).fit(
        tol=1e-12, maxiter=100
    )
    a, a_se = float(offset_fit.params[0]), float(offset_fit.bse[0])

    note = ""
    if np.ptp(lp) == 0:
        note = "all predictions are equal: the calibration slope is not estimable"
    elif lp[y].min() >= lp[~y].max() or lp[y].max() <= lp[~y].min():
        note = "the predictions separate the classes (quasi-)completely: the calibration slope is infinite"
    if note:
        b = b_low = b_high = math.nan
    else:
        slope_fit = sm.GLM(yf, sm.add_constant(lp, has_constant="add"), family=sm.families.Binomial()).fit(
            tol=1e-12, maxiter=100
        )
        b, b_se = float(slope_fit.params[1]), float(slope_fit.bse[1])
        b_low, b_high = b - z * b_se, b + z * b_se
    return CalibrationResult(
        intercept=a,
        intercept_ci=(a - z * a_se, a + z * a_se),
        slope=b,
        slope_ci=(b_low, b_high),
        n=int(y.size),
        n_events=n_pos,
        level=level,
        n_clipped=n_clipped,
        note=note,
    )


@dataclass(frozen=True)
class BrierResult:
    """Brier score, the reference Brier of predicting the prevalence for everyone, and the scaled Brier."""

    brier: float
    scaled_brier: float
    reference_brier: float
    prevalence: float
    n: int


def brier_score(y_true: ArrayLike, y_prob: ArrayLike) -> BrierResult:
    """Brier score mean (p - y)^2 and scaled Brier 1 - Brier / (prev (1 - prev)) (1 = perfect, 0 = no skill)."""
    y, p = check_probabilities(y_true, y_prob)
    require_classes(y)
    brier = float(np.mean((p - y) ** 2))
    prev = float(y.mean())
    reference = prev * (1 - prev)
    return BrierResult(brier, 1 - brier / reference, reference, prev, int(y.size))


@dataclass(frozen=True)
class CalibrationSummary:
    """One model's calibration results as a figure shows them, on one set of cases.

    ``reliability`` is the binned and LOWESS reliability diagram, ``calibration`` the intercept and
    slope with their Wald intervals, ``brier`` the Brier score; ``y_prob`` holds the validated
    predictions (for the histogram of predictions), ``n`` and ``n_pos`` the cases and positive cases.
    """

    reliability: ReliabilityDiagram
    calibration: CalibrationResult
    brier: BrierResult
    y_prob: np.ndarray
    n: int
    n_pos: int


def calibration_summary(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    n_bins: int = 10,
    strategy: BinStrategy = "quantile",
    level: float = 0.95,
    frac: float = 2 / 3,
) -> CalibrationSummary:
    """Reliability diagram, calibration intercept and slope, and Brier score of one model's predictions.

    Computes ``reliability_diagram(n_bins=n_bins, strategy=strategy, smooth=True, frac=frac,
    level=level)``, ``calibration_intercept_slope(level=level)`` and ``brier_score`` on the same
    validated labels and probabilities, so a calibration figure draws the numbers it is given.
    """
    y, p = check_probabilities(y_true, y_prob)
    reliability = reliability_diagram(y, p, n_bins=n_bins, strategy=strategy, smooth=True, frac=frac, level=level)
    calibration = calibration_intercept_slope(y, p, level=level)
    return CalibrationSummary(reliability, calibration, brier_score(y, p), p, int(y.size), int(y.sum()))


def expected_calibration_error(
    y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = 10, strategy: BinStrategy = "uniform"
) -> float:
    """ECE = sum_k (n_k / n) |mean predicted_k - observed rate_k| over bins (secondary measure only)."""
    y, p = check_probabilities(y_true, y_prob)
    if y.size == 0:
        raise ValueError("no cases")
    idx = _assign_bins(p, bin_edges(p, n_bins, strategy))
    n_k = np.bincount(idx)
    nonempty = n_k > 0
    mean_p = np.bincount(idx, weights=p)[nonempty] / n_k[nonempty]
    rate = np.bincount(idx, weights=y.astype(float))[nonempty] / n_k[nonempty]
    return float(np.sum(n_k[nonempty] / y.size * np.abs(mean_p - rate)))
