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

Both logistic fits are maximum likelihood by Newton-Raphson started from 0 with step halving whenever
a step does not increase the log-likelihood (the safeguard of Marschner 2011, R Journal 3(2):12,
"glm2: fitting generalized linear models with convergence problems"), with Wald intervals from the
observed information. Plain IRLS started from the data (statsmodels' GLM) can run away on small
samples with clipped logits of +-18 (an intercept of -9e14 reported as "converged"); every fit here is
checked (finite, score near 0, log-likelihood not below the start's) and is reported as not estimable
(NaN and a ``note``) when a check fails or the maximum is at infinity (separation). Probabilities of
exactly 0 or 1 are clipped to [eps, 1 - eps] before the logit (the number clipped is reported).

The expected calibration error (ECE) depends on the binning and is biased upwards in small samples;
it is offered only as a secondary, commonly quoted number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.special import expit, logit
from statsmodels.nonparametric.smoothers_lowess import lowess

from diffkd_study.metrics.clustered import check_groups
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


@dataclass(frozen=True)
class LogisticFit:
    """A logistic maximum-likelihood fit: coefficients, their covariance, log-likelihood, and a failure note.

    ``note`` is empty when the fit passed its checks (finite, score near 0, log-likelihood not below
    the starting value's); otherwise it says which check failed and ``params``/``cov`` are NaN.
    """

    params: np.ndarray
    cov: np.ndarray
    loglik: float
    n_iter: int
    note: str = ""


def _loglik(x: np.ndarray, y: np.ndarray, offset: np.ndarray, beta: np.ndarray) -> float:
    eta = offset + x @ beta
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)))


def logistic_mle(x: ArrayLike, y: ArrayLike, offset: ArrayLike | None = None, max_iter: int = 100,
                 tol: float = 1e-10, groups: ArrayLike | None = None) -> LogisticFit:
    """Maximum-likelihood logistic regression logit P(y=1) = offset + x beta, by safeguarded Newton-Raphson.

    Starts at beta = 0 and halves a Newton step (up to 60 times) until the log-likelihood does not
    decrease (Marschner 2011, R Journal 3(2):12), so each iterate is at least as good as the last; the
    log-likelihood is concave, hence this converges to the maximum whenever it is finite. Stops when
    the largest Newton step is below ``tol`` (relative to 1 + |beta|). The result is checked: finite
    coefficients, score x'(y - mu) near 0 (each component below 1e-6 times 1 + sum |x|), log-likelihood
    not below the start's; a failed check gives NaN coefficients and a ``note``. ``cov`` is the inverse
    observed (= expected, canonical link) information (x' W x)^-1 at the maximum; with ``groups`` (patient
    ids) in which some patient has several rows it is the cluster-robust sandwich (Liang & Zeger 1986)
    G/(G-1) B (sum_g u_g u_g') B, B the inverse information and u_g patient g's summed score x_i (y_i - mu_i).
    """
    x = np.asarray(x, dtype=float)
    yf = np.asarray(y, dtype=float)
    off = np.zeros(yf.size) if offset is None else np.asarray(offset, dtype=float)
    k = x.shape[1]
    beta = np.zeros(k)
    start_ll = current = _loglik(x, yf, off, beta)
    n_iter, converged = 0, False
    while n_iter < max_iter and not converged:
        n_iter += 1
        mu = expit(off + x @ beta)
        info = x.T @ (x * (mu * (1 - mu))[:, None])
        try:
            step = np.linalg.solve(info, x.T @ (yf - mu))
        except np.linalg.LinAlgError:
            break
        for _ in range(60):
            trial = _loglik(x, yf, off, beta + step)
            if np.isfinite(trial) and trial >= current - 1e-12 * (1 + abs(current)):
                break
            step = step / 2
        beta, current = beta + step, trial
        converged = bool(np.max(np.abs(step) / (1 + np.abs(beta))) < tol)
    nan = LogisticFit(np.full(k, math.nan), np.full((k, k), math.nan), math.nan, n_iter)
    if not converged or not np.all(np.isfinite(beta)):
        return LogisticFit(nan.params, nan.cov, nan.loglik, n_iter,
                           f"Newton-Raphson did not converge in {n_iter} iterations")
    mu = expit(off + x @ beta)
    score = x.T @ (yf - mu)
    if np.any(np.abs(score) > 1e-6 * (1 + np.abs(x).sum(axis=0))) or current < start_ll - 1e-9 * (1 + abs(start_ll)):
        return LogisticFit(nan.params, nan.cov, nan.loglik, n_iter,
                           "the fit failed its check (score not 0 or log-likelihood below the start's)")
    try:
        cov = np.linalg.inv(x.T @ (x * (mu * (1 - mu))[:, None]))
    except np.linalg.LinAlgError:
        cov = np.full((k, k), math.nan)
    codes = None if groups is None else check_groups(groups, yf.size)
    if codes is not None and np.bincount(codes).max() > 1:
        n_groups = int(codes.max()) + 1
        scores = np.vstack([np.bincount(codes, weights=x[:, j] * (yf - mu), minlength=n_groups) for j in range(k)])
        cov = n_groups / (n_groups - 1) * cov @ (scores @ scores.T) @ cov
    return LogisticFit(beta, cov, current, n_iter)


def calibration_intercept_slope(
    y_true: ArrayLike, y_prob: ArrayLike, level: float = 0.95, eps: float = 1e-8, groups: ArrayLike | None = None
) -> CalibrationResult:
    """Calibration intercept (offset logistic model) and slope (logistic regression on logit p).

    Both are maximum-likelihood fits by :func:`logistic_mle` (safeguarded Newton from 0; Van Calster et
    al. 2019 for the measures, Marschner 2011 for the safeguard). The intercept always exists when both
    classes are present (its score sum(y - expit(a + logit p)) falls from n_events to -n_non-events). When
    the logits separate the classes (quasi-)completely the slope is infinite, and when all predictions
    are equal it is not estimable: then slope and its interval are NaN and ``note`` says why. A fit
    that fails its checks is reported the same way (NaN, with the reason in ``note``), never as a number.
    ``groups`` (one patient id per image) makes the Wald intervals cluster-robust where a patient has
    several images (:func:`logistic_mle`); with one image per patient they are unchanged.
    """
    y, p = check_probabilities(y_true, y_prob)
    n_pos, _ = require_classes(y)
    z = z_quantile(level)
    clipped = np.clip(p, eps, 1 - eps)
    n_clipped = int(np.sum(clipped != p))
    lp = logit(clipped)
    ones = np.ones((y.size, 1))

    notes = []
    offset_fit = logistic_mle(ones, y, offset=lp, groups=groups)
    a, a_se = float(offset_fit.params[0]), math.sqrt(offset_fit.cov[0, 0])
    if offset_fit.note:
        notes.append(f"calibration intercept not estimable: {offset_fit.note}")

    slope_note = ""
    if np.ptp(lp) == 0:
        slope_note = "all predictions are equal: the calibration slope is not estimable"
    elif lp[y].min() >= lp[~y].max() or lp[y].max() <= lp[~y].min():
        slope_note = "the predictions separate the classes (quasi-)completely: the calibration slope is infinite"
    b = b_low = b_high = math.nan
    if not slope_note:
        slope_fit = logistic_mle(np.column_stack([ones, lp]), y, groups=groups)
        if slope_fit.note:
            slope_note = f"calibration slope not estimable: {slope_fit.note}"
        else:
            b, b_se = float(slope_fit.params[1]), math.sqrt(slope_fit.cov[1, 1])
            b_low, b_high = b - z * b_se, b + z * b_se
    if slope_note:
        notes.append(slope_note)
    return CalibrationResult(
        intercept=a,
        intercept_ci=(a - z * a_se, a + z * a_se),
        slope=b,
        slope_ci=(b_low, b_high),
        n=int(y.size),
        n_events=n_pos,
        level=level,
        n_clipped=n_clipped,
        note="; ".join(notes),
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
