"""ROC curves, the empirical AUC and its uncertainty: DeLong, stratified bootstrap, paired tests, bands.

What a ROC figure draws for one model (curve, AUC, pointwise band) is gathered by
:mod:`diffkd_study.metrics.roc_band`; patient-clustered variances come from :mod:`diffkd_study.metrics.clustered`.

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
from scipy import optimize, stats
from scipy.special import expit, logit

from diffkd_study.metrics.clustered import (
    check_groups,
    cluster_bootstrap_weights,
    minimal_detectable_difference,
    obuchowski_covariance,
)

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
    n_clusters: int | None = None


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


def delong_covariance(y_true: ArrayLike, *y_scores: ArrayLike, groups: ArrayLike | None = None) -> DeLongComponents:
    """AUCs and their DeLong covariance for one or more scores of the same cases.

    ``groups`` (one patient id per case) gives Obuchowski's (1997) clustered covariance instead
    (:func:`~diffkd_study.metrics.clustered.obuchowski_covariance`), with ``n_clusters`` set; with every
    group a single case it equals the DeLong covariance.
    """
    if not y_scores:
        raise ValueError("give at least one score vector")
    checked = [check_labels_scores(y_true, s) for s in y_scores]
    y = checked[0][0]
    n_pos, n_neg = require_classes(y, minimum=2)
    scores = np.vstack([s for _, s in checked])
    v10, v01 = delong_placements(y, scores)
    auc = v10.mean(axis=1)
    if groups is None:
        cov = np.atleast_2d(np.cov(v10)) / n_pos + np.atleast_2d(np.cov(v01)) / n_neg
        return DeLongComponents(auc, cov, v10, v01, n_pos, n_neg)
    cov, n_clusters = obuchowski_covariance(y, v10, v01, auc, groups)
    return DeLongComponents(auc, cov, v10, v01, n_pos, n_neg, n_clusters)


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
    n_clusters: int | None = None  # patients, when the variance is clustered

    @property
    def se(self) -> float:
        """Standard error of the AUC: the square root of ``variance``."""
        return math.sqrt(self.variance)

    @property
    def n(self) -> int:
        """The number of cases: positives + negatives."""
        return self.n_pos + self.n_neg

    def __str__(self) -> str:
        patients = f", {self.n_clusters} patients" if self.n_clusters is not None else ""
        return (
            f"AUC {self.auc:.3f} ({self.level:.0%} CI {self.ci_low:.3f}-{self.ci_high:.3f}; "
            f"n={self.n} images{patients}, {self.n_pos} positive; {self.method})"
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


def newcombe_auc_interval(auc: float, n_pos: int, n_neg: int, level: float = 0.95) -> tuple[float, float]:
    """Newcombe's (2006, Stat Med 25:559, method 5) score-type interval for an AUC: the values A with
    (AUC - A)^2 = z^2 V(A), V(A) = A(1-A) / (m n) [1 + (N* - 1)(1-A)/(2-A) + (N* - 1) A/(1+A)],
    N* = (m + n) / 2 (Hanley & McNeil's variance with the Q terms of the exponential model).

    Unlike a Wald interval it is not degenerate at AUC 0 or 1 (perfect separation), where DeLong's
    variance is 0: there it is the range of true AUCs that are compatible with a perfect sample.
    """
    z2 = z_quantile(level) ** 2
    half_n = (n_pos + n_neg) / 2.0

    def excess(a: float) -> float:
        var = a * (1 - a) / (n_pos * n_neg) * (1 + (half_n - 1) * (1 - a) / (2 - a) + (half_n - 1) * a / (1 + a))
        return (auc - a) ** 2 - z2 * var

    inner = min(max(auc, 1e-12), 1 - 1e-12)  # excess < 0 there: the roots lie on either side
    low = 0.0 if excess(0.0) <= 0 else optimize.brentq(excess, 0.0, inner)
    high = 1.0 if excess(1.0) <= 0 else optimize.brentq(excess, inner, 1.0)
    return float(low), float(high)


def auc_delong(
    y_true: ArrayLike, y_score: ArrayLike, level: float = 0.95, scale: Scale = "logit",
    groups: ArrayLike | None = None,
) -> AUCResult:
    """Empirical AUC with the DeLong variance and a Wald interval.

    The default ``scale="logit"`` (delta method on logit(AUC)) keeps the interval inside (0, 1) and
    covers better than the plain interval when the AUC is high, which is the usual situation in
    diagnostic imaging; ``scale="plain"`` (AUC +- z se, clipped to [0, 1]) reproduces pROC's
    ``ci.auc(method = "delong")``. ``groups`` (one patient id per image) makes the variance
    Obuchowski's (1997) clustered one, for patients who contribute several images; it equals DeLong's
    when every patient has one image. At AUC 0 or 1 (variance 0) the interval is Newcombe's score
    interval (:func:`newcombe_auc_interval`) instead of a zero-width one, and ``method`` says so.
    """
    comp = delong_covariance(y_true, y_score, groups=groups)
    auc, var = float(comp.auc[0]), float(comp.covariance[0, 0])
    method = f"{'Obuchowski clustered' if groups is not None else 'DeLong'} ({scale} scale)"
    if auc in (0.0, 1.0):
        low, high = newcombe_auc_interval(auc, comp.n_pos, comp.n_neg, level)
        method = "Newcombe score interval (perfect separation: DeLong variance 0)"
    else:
        low, high = wald_auc_interval(auc, var, level, scale)
    return AUCResult(auc, low, high, var, comp.n_pos, comp.n_neg, method, level, comp.n_clusters)


def _generator(seed: int | np.random.Generator) -> np.random.Generator:
    return np.random.default_rng(seed) if isinstance(seed, int | np.integer) else seed


def _seed_text(seed: int | np.random.Generator) -> str:
    return f"seed={seed}" if isinstance(seed, int | np.integer) else "a given generator"


def _resample_weights(gen: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Bootstrap multiplicities: row b says how often each of the n cases appears in resample b."""
    return gen.multinomial(n, np.full(n, 1.0 / n), size=size)


def _bootstrap_auc_distribution(
    y: np.ndarray, s: np.ndarray, n_resamples: int, gen: np.random.Generator, groups: ArrayLike | None = None
) -> np.ndarray:
    """AUCs of stratified bootstrap resamples (positives and negatives resampled separately), or, with
    ``groups``, of cluster-bootstrap resamples (whole patients drawn with replacement; a resample that
    happens to lack a class has AUC NaN).

    A resample is a pair of multiplicity vectors (w over positives, v over negatives, in input
    order); its AUC is sum_a w_a (v-weight of negatives below a + 1/2 v-weight of tied negatives)
    / (sum w sum v), evaluated for a chunk of resamples at once with cumulative sums of v over the
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
        if groups is None:
            w_pos = _resample_weights(gen, n_pos, b)
            w_neg = _resample_weights(gen, n_neg, b)
        else:
            weights = cluster_bootstrap_weights(groups, y.size, b, gen)
            w_pos, w_neg = weights[:, y], weights[:, ~y]
        cum = np.zeros((b, n_neg + 1))
        np.cumsum(w_neg[:, order], axis=1, out=cum[:, 1:])
        credit = 0.5 * (cum[:, below] + cum[:, up_to])
        with np.errstate(invalid="ignore", divide="ignore"):
            total = w_pos.sum(axis=1) * w_neg.sum(axis=1)
            out[start : start + b] = np.where(total > 0, np.einsum("ij,ij->i", w_pos, credit) / total, np.nan)
    return out


def auc_bootstrap(
    y_true: ArrayLike,
    y_score: ArrayLike,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int | np.random.Generator = 0,
    groups: ArrayLike | None = None,
) -> AUCResult:
    """Empirical AUC with a stratified bootstrap percentile interval (a sensitivity analysis).

    Positives and negatives are resampled separately with replacement (so every resample has the
    observed class sizes), ``n_resamples`` times from ``numpy.random.default_rng(seed)`` (or from
    ``seed`` itself when it is a Generator); the
    interval is the (1-level)/2 and (1+level)/2 percentiles, ``variance`` the bootstrap variance.
    With ``groups`` (one patient id per image) whole patients are resampled instead (the cluster
    bootstrap; a resample that lacks a class is dropped and the method says how many were).
    """
    y, s = check_labels_scores(y_true, y_score)
    n_pos, n_neg = require_classes(y)
    if n_resamples < 2:
        raise ValueError(f"n_resamples must be >= 2; got {n_resamples}")
    z_quantile(level)
    codes = None if groups is None else check_groups(groups, y.size)
    boot = _bootstrap_auc_distribution(y, s, n_resamples, _generator(seed), codes)
    dropped = int(np.isnan(boot).sum())
    boot = boot[~np.isnan(boot)]
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    if codes is None:
        method = f"stratified bootstrap percentile (B={n_resamples}, {_seed_text(seed)})"
    else:
        method = (f"patient-cluster bootstrap percentile (B={n_resamples}, {_seed_text(seed)}"
                  + (f"; {dropped} resamples without both classes dropped" if dropped else "") + ")")
    n_clusters = None if codes is None else int(codes.max()) + 1
    return AUCResult(
        roc_auc(y, s), float(low), float(high), float(boot.var(ddof=1)), n_pos, n_neg, method, level, n_clusters
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
    n_clusters: int | None = None  # patients, when the covariance is clustered

    @property
    def minimal_detectable_difference(self) -> float:
        """The smallest true AUC difference this design detects with 80% power at two-sided alpha 0.05:
        2.80 x the (clustered) SE of the difference (:func:`~diffkd_study.metrics.clustered.minimal_detectable_difference`)."""
        return minimal_detectable_difference(self.se)

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
    groups: ArrayLike | None = None,
) -> PairedAUCTest:
    """DeLong's paired test of two AUCs on the same cases (pROC ``roc.test(method = "delong", paired = TRUE)``).

    Z = (AUC_A - AUC_B) / sqrt(var_A + var_B - 2 cov_AB); p two-sided; the CI of the difference is
    the Wald interval. ``margin`` (>= 0, on the AUC scale) adds the one-sided non-inferiority test
    Z_NI = (AUC_A - AUC_B + margin) / se. ``groups`` (one patient id per image) uses Obuchowski's (1997)
    clustered covariance of the two AUCs (equal to DeLong's when every patient has one image).
    """
    comp = delong_covariance(y_true, score_a, score_b, groups=groups)
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
        method="DeLong paired" if groups is None else "Obuchowski clustered paired",
        n_clusters=comp.n_clusters,
    )


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
