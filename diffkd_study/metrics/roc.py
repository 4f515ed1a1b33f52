"""ROC curves, the empirical AUC and its uncertainty: DeLong, stratified bootstrap, paired tests, bands.

``roc_summary`` gathers what a ROC figure draws for one model (curve, DeLong AUC, pointwise band), so
that ``diffkd_study.viz.plot_roc`` computes nothing.

Conventions, used by every function of ``diffkd_study.metrics``:

* ``y_true`` holds 1 for a positive (diseased) case and 0 for a negative one (bool is accepted).
* A higher score means "more likely positive"; a case is called positive when ``score >= threshold``.
* The AUC is the Mann-Whitney probability P(score of a positive > score of a negative), ties
  counting 1/2. It is never flipped: a model worse than chance reports an AUC below 0.5 (pROC's
  ``direction="auto"`` would flip it silently).

Variances use the DeLong, DeLong & Clarke-Pearson (1988) estimator computed with the fast midrank
algorithm of Sun & Xu (2014, IEEE Signal Process Lett 21:1389): O(n log n) per score, and one
covariance matrix for any number of scores on the same cases. It equals pROC's ``var(..., method =
"delong")`` (sample covariances with n - 1 denominators).

References: Hanley & McNeil (1982) Radiology 143:29; DeLong et al. (1988) Biometrics 44:837;
Sun & Xu (2014); Robin et al. (2011) pROC, BMC Bioinformatics 12:77; Fawcett (2006) Pattern Recogn
Lett 27:861 (vertical averaging of ROC curves, used for the pointwise band).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats
from scipy.special import expit, logit

Scale = Literal["logit", "plain"]

# Bootstrap chunks hold at most this many float64 cells (about 64 MB), whatever the sample size.
_BOOTSTRAP_CHUNK_CELLS = 8_000_000


def check_labels(y_true: ArrayLike, name: str = "y_true") -> np.ndarray:
    """Validate a 1-D vector of 0/1 (or bool) labels and return it as bool."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {y.shape}")
    if y.dtype == bool:
        return y
    try:
        as_float = y.astype(float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must hold 0/1 (or bool) values; got non-numeric values") from err
    bad = ~np.isin(as_float, (0.0, 1.0))
    if bad.any():
        raise ValueError(
            f"{name} must hold 0/1 values; position {int(np.argmax(bad))} holds {y[np.argmax(bad)]!r}"
        )
    return as_float == 1.0


def check_labels_scores(y_true: ArrayLike, y_score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate one label vector and one score vector; return (bool labels, float scores).

    Raises ``ValueError`` naming the rule broken: 1-D, same length, labels 0/1, finite scores.
    """
    y = check_labels(y_true)
    s = np.asarray(y_score, dtype=float)
    if s.ndim != 1:
        raise ValueError(f"y_score must be 1-D; got shape {s.shape}")
    if y.shape != s.shape:
        raise ValueError(f"y_true and y_score must have the same length; got {y.size} and {s.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"y_score must be finite; position {int(np.argmax(~np.isfinite(s)))} is not")
    return y, s


def require_classes(y: np.ndarray, minimum: int = 1) -> tuple[int, int]:
    """(n_pos, n_neg), raising when either class has fewer than ``minimum`` cases."""
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos < minimum or n_neg < minimum:
        raise ValueError(
            f"need at least {minimum} positive and {minimum} negative case(s); got {n_pos} positive, {n_neg} negative"
        )
    return n_pos, n_neg


def z_quantile(level: float) -> float:
    """Two-sided standard-normal quantile for a confidence level, e.g. 1.96 for 0.95."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1); got {level}")
    return float(stats.norm.ppf(0.5 + level / 2))


# ----------------------------------------------------------------------------------------------
# Curve and point estimate
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ROCCurve:
    """Empirical ROC curve: one point per distinct score, from (0, 0) at threshold +inf to (1, 1).

    ``thresholds[k]`` gives the point (``fpr[k]``, ``tpr[k]``) with the rule ``score >= threshold``.
    Tied scores of both classes make a diagonal segment, which is what the 1/2 tie rule integrates.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    n_pos: int
    n_neg: int

    def to_frame(self) -> pd.DataFrame:
        """The curve as a table: threshold, fpr, tpr."""
        return pd.DataFrame({"threshold": self.thresholds, "fpr": self.fpr, "tpr": self.tpr})


def roc_curve(y_true: ArrayLike, y_score: ArrayLike) -> ROCCurve:
    """The empirical ROC curve (see ``ROCCurve``)."""
    y, s = check_labels_scores(y_true, y_score)
    n_pos, n_neg = require_classes(y)
    thresholds = np.unique(s)[::-1]
    # Counts of scores >= each threshold, via sorted arrays (no per-threshold loop).
    pos_sorted = np.sort(s[y])
    neg_sorted = np.sort(s[~y])
    tp = n_pos - np.searchsorted(pos_sorted, thresholds, side="left")
    fp = n_neg - np.searchsorted(neg_sorted, thresholds, side="left")
    return ROCCurve(
        fpr=np.concatenate([[0.0], fp / n_neg]),
        tpr=np.concatenate([[0.0], tp / n_pos]),
        thresholds=np.concatenate([[np.inf], thresholds]),
        n_pos=n_pos,
        n_neg=n_neg,
    )


def roc_auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Empirical AUC (Mann-Whitney, ties count 1/2)."""
    y, s = check_labels_scores(y_true, y_score)
    n_pos, n_neg = require_classes(y)
    ranks = stats.rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, fpr_grid: ArrayLike) -> np.ndarray:
    """Sensitivity of a ROC curve at given false-positive rates (Fawcett's vertical averaging).

    ``fpr``/``tpr`` are the curve's points in order (both non-decreasing). At an FPR where the
    curve is vertical the highest TPR is taken; between points the curve is interpolated linearly
    (the diagonal of tied scores).
    """
    grid = np.asarray(fpr_grid, dtype=float)
    last = np.searchsorted(fpr, grid, side="right") - 1  # last point with FPR <= grid value
    nxt = np.minimum(last + 1, len(fpr) - 1)
    x0, x1, y0, y1 = fpr[last], fpr[nxt], tpr[last], tpr[nxt]
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(x1 > x0, (y1 - y0) / (x1 - x0), 0.0)
    return np.where(x0 == grid, y0, y0 + slope * (grid - x0))


# ----------------------------------------------------------------------------------------------
# Fast DeLong
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeLongComponents:
    """AUCs of k scores on the same cases and their DeLong covariance matrix (k x k).

    ``positive_placements[i, a]`` = P(negative score < score of positive a) + 1/2 P(tie) for score i
    (DeLong's V10); ``negative_placements[i, b]`` = P(positive score > score of negative b) + 1/2
    P(tie) (V01). ``covariance = cov(V10)/n_pos + cov(V01)/n_neg``.
    """

    auc: np.ndarray
    covariance: np.ndarray
    positive_placements: np.ndarray
    negative_placements: np.ndarray
    n_pos: int
    n_neg: int


def delong_placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sun & Xu midrank placements for a (k, n_cases) score matrix and bool labels -> (V10, V01)."""
    pos, neg = scores[:, y], scores[:, ~y]
    n_pos, n_neg = pos.shape[1], neg.shape[1]
    rank_pos = stats.rankdata(pos, axis=1)
    rank_neg = stats.rankdata(neg, axis=1)
    rank_all = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (rank_all[:, :n_pos] - rank_pos) / n_neg
    v01 = 1.0 - (rank_all[:, n_pos:] - rank_neg) / n_pos
    return v10, v01


def delong_covariance(y_true: ArrayLike, *y_scores: ArrayLike) -> DeLongComponents:
    """AUCs and their DeLong covariance for one or more scores of the same cases."""
    if not y_scores:
        raise ValueError("give at least one score vector")
    checked = [check_labels_scores(y_true, s) for s in y_scores]
    y = checked[0][0]
    n_pos, n_neg = require_classes(y, minimum=2)
    scores = np.vstack([s for _, s in checked])
    v10, v01 = delong_placements(y, scores)
    cov = np.atleast_2d(np.cov(v10)) / n_pos + np.atleast_2d(np.cov(v01)) / n_neg
    return DeLongComponents(v10.mean(axis=1), cov, v10, v01, n_pos, n_neg)


# ----------------------------------------------------------------------------------------------
# AUC with a confidence interval
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AUCResult:
    """An AUC with its confidence interval, variance and sample size."""

    auc: float
    ci_low: float
    ci_high: float
    variance: float
    n_pos: int
    n_neg: int
    method: str
    level: float = 0.95

    @property
    def se(self) -> float:
        """Standard error of the AUC: the square root of ``variance``."""
        return math.sqrt(self.variance)

    @property
    def n(self) -> int:
        """The number of cases: positives + negatives."""
        return self.n_pos + self.n_neg

    def __str__(self) -> str:
        return (
            f"AUC {self.auc:.3f} ({self.level:.0%} CI {self.ci_low:.3f}-{self.ci_high:.3f}; "
            f"n={self.n}, {self.n_pos} positive; {self.method})"
        )


def wald_auc_interval(
    auc: float, variance: float, level: float = 0.95, scale: Scale = "logit"
) -> tuple[float, float]:
    """Normal-approximation interval for an AUC on the logit or the plain scale (plain clipped to [0, 1]).

    On the logit scale the standard error is carried by the delta method,
    se(logit AUC) = se / (AUC (1 - AUC)); the interval stays inside (0, 1) and is asymmetric near
    the bounds, where the plain interval undercovers. At AUC = 0 or 1 (perfect separation, where
    the DeLong variance is 0) both scales give the degenerate interval [AUC, AUC].
    """
    z = z_quantile(level)
    se = math.sqrt(max(variance, 0.0))
    if scale == "plain":
        return max(0.0, auc - z * se), min(1.0, auc + z * se)
    if scale != "logit":
        raise ValueError(f"scale must be 'logit' or 'plain'; got {scale!r}")
    if auc <= 0.0 or auc >= 1.0:
        return auc, auc
    half = z * se / (auc * (1 - auc))
    centre = float(logit(auc))
    return float(expit(centre - half)), float(expit(centre + half))


def auc_delong(
    y_true: ArrayLike, y_score: ArrayLike, level: float = 0.95, scale: Scale = "logit"
) -> AUCResult:
    """Empirical AUC with the DeLong variance and a Wald interval.

    The default ``scale="logit"`` (delta method on logit(AUC)) keeps the interval inside (0, 1) and
    covers better than the plain interval when the AUC is high, which is the usual situation in
    diagnostic imaging; ``scale="plain"`` (AUC +- z se, clipped to [0, 1]) reproduces pROC's
    ``ci.auc(method = "delong")``.
    """
    comp = delong_covariance(y_true, y_score)
    auc, var = float(comp.auc[0]), float(comp.covariance[0, 0])
    low, high = wald_auc_interval(auc, var, level, scale)
    return AUCResult(auc, low, high, var, comp.n_pos, comp.n_neg, f"DeLong ({scale} scale)", level)


def _generator(seed: int | np.random.Generator) -> np.random.Generator:
    return np.random.default_rng(seed) if isinstance(seed, int | np.integer) else seed


def _seed_text(seed: int | np.random.Generator) -> str:
    return f"seed={seed}" if isinstance(seed, int | np.integer) else "a given generator"


def _resample_weights(gen: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Bootstrap multiplicities: row b says how often each of the n cases appears in resample b."""
    return gen.multinomial(n, np.full(n, 1.0 / n), size=size)


def _bootstrap_auc_distribution(
    y: np.ndarray, s: np.ndarray, n_resamples: int, gen: np.random.Generator
) -> np.ndarray:
    """AUCs of stratified bootstrap resamples (positives and negatives resampled separately).

    A resample is a pair of multiplicity vectors (w over positives, v over negatives, in input
    order); its AUC is sum_a w_a (v-weight of negatives below a + 1/2 v-weight of tied negatives)
    / (n_pos n_neg), evaluated for a chunk of resamples at once with cumulative sums of v over the
    sorted negatives.
    """
    pos, neg = s[y], s[~y]
    n_pos, n_neg = pos.size, neg.size
    order = np.argsort(neg, kind="stable")
    neg_sorted = neg[order]
    below = np.searchsorted(neg_sorted, pos, side="left")
    up_to = np.searchsorted(neg_sorted, pos, side="right")
    out = np.empty(n_resamples)
    chunk = max(1, _BOOTSTRAP_CHUNK_CELLS // (n_pos + n_neg + 1))
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        w_pos = _resample_weights(gen, n_pos, b)
        w_neg = _resample_weights(gen, n_neg, b)
        cum = np.zeros((b, n_neg + 1))
        np.cumsum(w_neg[:, order], axis=1, out=cum[:, 1:])
        credit = 0.5 * (cum[:, below] + cum[:, up_to])
        out[start : start + b] = np.einsum("ij,ij->i", w_pos, credit) / (n_pos * n_neg)
    return out


def auc_bootstrap(
    y_true: ArrayLike,
    y_score: ArrayLike,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int | np.random.Generator = 0,
) -> AUCResult:
    """Empirical AUC with a stratified bootstrap percentile interval (a sensitivity analysis).

    Positives and negatives are resampled separately with replacement (so every resample has the
    observed class sizes), ``n_resamples`` times from ``numpy.random.default_rng(seed)`` (or from
    ``seed`` itself when it is a Generator); the
    interval is the (1-level)/2 and (1+level)/2 percentiles, ``variance`` the bootstrap variance.
    """
    y, s = check_labels_scores(y_true, y_score)
    n_pos, n_neg = require_classes(y)
    if n_resamples < 2:
        raise ValueError(f"n_resamples must be >= 2; got {n_resamples}")
    z_quantile(level)
    boot = _bootstrap_auc_distribution(y, s, n_resamples, _generator(seed))
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    method = f"stratified bootstrap percentile (B={n_resamples}, {_seed_text(seed)})"
    return AUCResult(
        roc_auc(y, s), float(low), float(high), float(boot.var(ddof=1)), n_pos, n_neg, method, level
    )


# ----------------------------------------------------------------------------------------------
# Paired comparison of two scores on the same cases
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedAUCTest:
    """DeLong test of AUC_A - AUC_B for two scores on the same cases.

    ``p_value`` is two-sided for H0: AUC_A = AUC_B. When a non-inferiority ``margin`` was given,
    ``p_noninferiority`` is the one-sided p for H0: AUC_A - AUC_B <= -margin (A is worse than B by
    at least the margin); A is non-inferior at level alpha when it is below alpha, equivalently
    when ``ci_low`` of the (1 - 2 alpha) interval exceeds -margin.
    """

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float
    correlation: float
    n_pos: int
    n_neg: int
    level: float = 0.95
    margin: float | None = None
    z_noninferiority: float | None = None
    p_noninferiority: float | None = None
    method: str = "DeLong paired"

    def __str__(self) -> str:
        text = (
            f"AUC {self.auc_a:.3f} vs {self.auc_b:.3f}: difference {self.difference:+.3f} "
            f"({self.level:.0%} CI {self.ci_low:+.3f} to {self.ci_high:+.3f}), Z={self.z:.2f}, p={self.p_value:.4g}"
        )
        if self.margin is not None:
            text += f"; non-inferiority (margin {self.margin}) p={self.p_noninferiority:.4g}"
        return text + f" (n={self.n_pos + self.n_neg}, {self.n_pos} positive)"


def _z_and_p(estimate: float, se: float) -> tuple[float, float]:
    if se > 0:
        z = estimate / se
        return z, float(2 * stats.norm.sf(abs(z)))
    # Identical rankings (or perfect separation by both): the difference is known without error.
    if estimate == 0:
        return 0.0, 1.0
    return math.copysign(math.inf, estimate), 0.0


def delong_test(
    y_true: ArrayLike,
    score_a: ArrayLike,
    score_b: ArrayLike,
    level: float = 0.95,
    margin: float | None = None,
) -> PairedAUCTest:
    """DeLong's paired test of two AUCs on the same cases (pROC ``roc.test(method = "delong", paired = TRUE)``).

    Z = (AUC_A - AUC_B) / sqrt(var_A + var_B - 2 cov_AB); p two-sided; the CI of the difference is
    the Wald interval. ``margin`` (>= 0, on the AUC scale) adds the one-sided non-inferiority test
    Z_NI = (AUC_A - AUC_B + margin) / se.
    """
    comp = delong_covariance(y_true, score_a, score_b)
    cov = comp.covariance
    diff = float(comp.auc[0] - comp.auc[1])
    se = math.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0))
    z, p = _z_and_p(diff, se)
    zq = z_quantile(level)
    denom = math.sqrt(cov[0, 0] * cov[1, 1])
    corr = float(cov[0, 1] / denom) if denom > 0 else math.nan
    z_ni = p_ni = None
    if margin is not None:
        if margin < 0:
            raise ValueError(f"the non-inferiority margin must be >= 0; got {margin}")
        shifted = diff + margin
        z_ni = shifted / se if se > 0 else math.copysign(math.inf, shifted) if shifted else 0.0
        p_ni = float(stats.norm.sf(z_ni))
    return PairedAUCTest(
        auc_a=float(comp.auc[0]),
        auc_b=float(comp.auc[1]),
        difference=diff,
        se=se,
        z=z,
        p_value=p,
        ci_low=diff - zq * se,
        ci_high=diff + zq * se,
        correlation=corr,
        n_pos=comp.n_pos,
        n_neg=comp.n_neg,
        level=level,
        margin=margin,
        z_noninferiority=z_ni,
        p_noninferiority=p_ni,
    )


# ----------------------------------------------------------------------------------------------
# Pointwise confidence band for plots
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ROCBand:
    """Pointwise bootstrap interval of the sensitivity at each FPR of ``fpr`` (for plots only).

    Pointwise: each vertical interval covers the true sensitivity at that FPR with probability
    ``level``; the band as a whole does not (it is not a simultaneous band).
    """

    fpr: np.ndarray
    tpr: np.ndarray
    tpr_low: np.ndarray
    tpr_high: np.ndarray
    level: float
    n_resamples: int
    seed: int | None  # None when a Generator was passed
    n_pos: int
    n_neg: int

    def to_frame(self) -> pd.DataFrame:
        """The band as a table: fpr, tpr and its lower and upper limits."""
        return pd.DataFrame(
            {"fpr": self.fpr, "tpr": self.tpr, "tpr_low": self.tpr_low, "tpr_high": self.tpr_high}
        )


def roc_confidence_band(
    y_true: ArrayLike,
    y_score: ArrayLike,
    fpr_grid: ArrayLike | None = None,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int | np.random.Generator = 0,
) -> ROCBand:
    """Pointwise ROC band: stratified bootstrap of the sensitivity at a grid of FPR values.

    The grid defaults to 0, 0.01, ..., 1. Each resample's curve is read at the grid with
    ``tpr_at_fpr`` (vertical averaging); the band is the percentile interval at each grid value.
    """
    y, s = check_labels_scores(y_true, y_score)
    n_pos, n_neg = require_classes(y)
    z_quantile(level)
    grid = np.linspace(0.0, 1.0, 101) if fpr_grid is None else np.asarray(fpr_grid, dtype=float)
    if grid.ndim != 1 or np.any((grid < 0) | (grid > 1)):
        raise ValueError("fpr_grid must be a 1-D array of values in [0, 1]")
    curve = roc_curve(y, s)
    observed = tpr_at_fpr(curve.fpr, curve.tpr, grid)

    # Each resample's curve has its points at the observed distinct scores (descending); the counts
    # of positives/negatives at or above each score come from cumulative resampling multiplicities.
    thresholds = curve.thresholds[1:]
    pos, neg = s[y], s[~y]
    pos_order, neg_order = np.argsort(-pos, kind="stable"), np.argsort(-neg, kind="stable")
    k_pos = np.searchsorted(-pos[pos_order], -thresholds, side="right")
    k_neg = np.searchsorted(-neg[neg_order], -thresholds, side="right")
    gen = _generator(seed)
    boot = np.empty((n_resamples, grid.size))
    chunk = max(1, _BOOTSTRAP_CHUNK_CELLS // (n_pos + n_neg + 1))
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        cum_pos = np.zeros((b, n_pos + 1))
        cum_neg = np.zeros((b, n_neg + 1))
        np.cumsum(_resample_weights(gen, n_pos, b)[:, pos_order], axis=1, out=cum_pos[:, 1:])
        np.cumsum(_resample_weights(gen, n_neg, b)[:, neg_order], axis=1, out=cum_neg[:, 1:])
        tpr = np.hstack([np.zeros((b, 1)), cum_pos[:, k_pos] / n_pos])
        fpr = np.hstack([np.zeros((b, 1)), cum_neg[:, k_neg] / n_neg])
        for i in range(b):
            boot[start + i] = tpr_at_fpr(fpr[i], tpr[i], grid)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)
    seed_value = int(seed) if isinstance(seed, int | np.integer) else None
    return ROCBand(grid, observed, low, high, level, n_resamples, seed_value, n_pos, n_neg)


# ----------------------------------------------------------------------------------------------
# Everything a ROC figure shows, for one model
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RocSummary:
    """One model's ROC results as a figure shows them: the curve, the DeLong AUC and the pointwise band.

    ``curve`` is the empirical ROC curve (``fpr``/``tpr``), ``auc`` the DeLong AUC with its interval,
    ``band`` the pointwise bootstrap band (``None`` when not computed) and ``constant_score`` says that
    every score is the same (the AUC is 0.5 by construction and its interval has no width).
    """

    curve: ROCCurve
    auc: AUCResult
    band: ROCBand | None
    constant_score: bool

    @property
    def fpr(self) -> np.ndarray:
        """False-positive rates of the curve."""
        return self.curve.fpr

    @property
    def tpr(self) -> np.ndarray:
        """True-positive rates of the curve."""
        return self.curve.tpr


def roc_summary(
    y_true: ArrayLike,
    y_score: ArrayLike,
    level: float = 0.95,
    band: bool = True,
    n_resamples: int = 2000,
    seed: int | np.random.Generator = 0,
) -> RocSummary:
    """The ROC curve, the DeLong AUC (logit-scale interval) and, with ``band``, the pointwise bootstrap band.

    Computes ``roc_curve``, ``auc_delong(level=level)`` and ``roc_confidence_band(n_resamples=n_resamples,
    level=level, seed=seed)`` on the same cases, so a figure draws the numbers it is given. An integer
    ``seed`` gives each call its own ``numpy.random.default_rng(seed)``: every model's band uses the same
    seed, whatever the order the models are summarised in.
    """
    curve = roc_curve(y_true, y_score)
    result = auc_delong(y_true, y_score, level=level)
    interval = (
        roc_confidence_band(y_true, y_score, n_resamples=n_resamples, level=level, seed=seed) if band else None
    )
    constant = bool(np.ptp(np.asarray(y_score, dtype=float)) == 0)
    return RocSummary(curve, result, interval, constant)


# ----------------------------------------------------------------------------------------------
# Accumulating metric (MONAI style)
# ----------------------------------------------------------------------------------------------


class ROCAUCMetric:
    """Accumulate labels and scores batch by batch; ``aggregate()`` gives the DeLong ``AUCResult``."""

    def __init__(self, level: float = 0.95, scale: Scale = "logit") -> None:
        self.level = level
        self.scale = scale
        self.reset()

    def reset(self) -> None:
        """Forget every batch added."""
        self._labels: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []

    def update(self, y_true: ArrayLike, y_score: ArrayLike) -> None:
        """Add a batch of binary labels and scores (checked by :func:`check_labels_scores`: ``ValueError``)."""
        y, s = check_labels_scores(np.ravel(y_true), np.ravel(y_score))
        self._labels.append(y)
        self._scores.append(s)

    def aggregate(self) -> AUCResult:
        """The DeLong :class:`AUCResult` of every batch added; ``ValueError`` when none was."""
        if not self._labels:
            raise ValueError("no data: call update() first")
        return auc_delong(np.concatenate(self._labels), np.concatenate(self._scores), self.level, self.scale)
