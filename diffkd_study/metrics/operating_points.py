"""Operating points: thresholds chosen on validation data, applied to test data, with Wilson intervals.

Workflow (InnerEye's rule: the threshold never sees the test set)::

    thr = choose_threshold(y_val, s_val, rule="sensitivity", target=0.90)
    op = operating_point(y_test, s_test, thr.value)   # sensitivity, specificity, PPV, NPV, accuracy

Candidate thresholds are the midpoints between consecutive distinct validation scores (plus
+-inf), as in pROC, so a test score equal to a validation score is never on the boundary; a case is
called positive when ``score >= threshold``.

Every proportion is a ``Proportion`` carrying its numerator, denominator and Wilson score interval
(Wilson 1927, JASA 22:209; recommended over the Wald interval by Brown, Cai & DasGupta 2001,
Stat Sci 16:101). A proportion with denominator 0 (e.g. PPV when nothing is called positive) is
reported as NaN with a NaN interval.

When a patient contributes several images (``groups`` = patient ids), the images are not independent
and the per-image Wilson interval is too narrow. :func:`clustered_proportion_ci` then widens it by the
design effect of the clustered ratio estimator (Rao & Scott 1992, Biometrics 48:577; Obuchowski 1998,
Stat Med 17:1495, for clustered sensitivity and specificity): the Wilson interval with the effective
sample size n / deff.

McNemar's test compares two classifiers' calls on the same cases from the discordant pairs only: the
exact conditional binomial test at every number of discordant pairs (no switch to the chi-square
approximation, which is anti-conservative at moderate counts: b = 7, c = 18 gives 0.0455 against the
exact 0.0433), optionally with the mid-p correction (Fagerland, Lydersen & Laake 2013, BMC Med Res
Methodol 13:91).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from diffkd_study.metrics.clustered import check_groups
from diffkd_study.metrics.roc import check_labels, check_labels_scores, require_classes, z_quantile

ThresholdRule = Literal["youden", "sensitivity", "specificity"]


@dataclass(frozen=True)
class Proportion:
    """A proportion numerator/denominator with its Wilson score interval.

    ``n_clusters`` and ``design_effect`` are set by :func:`clustered_proportion_ci` (the number of
    patients behind the denominator and the Rao-Scott design effect that widened the interval); a plain
    per-image :func:`wilson_ci` leaves them at ``None`` and 1.
    """

    estimate: float
    ci_low: float
    ci_high: float
    numerator: int
    denominator: int
    level: float = 0.95
    n_clusters: int | None = None
    design_effect: float = 1.0

    def __str__(self) -> str:
        clusters = "" if self.n_clusters is None else f", {self.n_clusters} patients, deff {self.design_effect:.2f}"
        return (
            f"{self.estimate:.3f} ({self.level:.0%} CI {self.ci_low:.3f}-{self.ci_high:.3f}; "
            f"{self.numerator}/{self.denominator}{clusters})"
        )


def _wilson_bounds(p: float, n: float, z: float) -> tuple[float, float]:
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At p = 0 or 1 the bound equals p exactly; the formula leaves a rounding residue.
    low = 0.0 if p == 0 else max(0.0, centre - half)
    high = 1.0 if p == 1 else min(1.0, centre + half)
    return low, high


def wilson_ci(numerator: int, denominator: int, level: float = 0.95) -> Proportion:
    """Wilson score interval: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)."""
    k, n = int(numerator), int(denominator)
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= numerator <= denominator; got {k}/{n}")
    if n == 0:
        return Proportion(math.nan, math.nan, math.nan, k, n, level)
    p = k / n
    low, high = _wilson_bounds(p, n, z_quantile(level))
    return Proportion(p, low, high, k, n, level)


def clustered_proportion_ci(successes: ArrayLike, groups: ArrayLike | None, level: float = 0.95) -> Proportion:
    """Wilson interval of a proportion of clustered binary outcomes, widened by the Rao-Scott design effect.

    ``successes`` holds one 0/1 outcome per image (e.g. "called positive" for the positive images, so
    the proportion is the sensitivity), ``groups`` the patient id of each image (``None``: every image its
    own patient). With x_i successes among the m_i images of patient i, n = sum m_i and p = sum x_i / n,
    the ratio estimator's cluster (linearisation) variance is sum_i (x_i - p m_i)^2 / n^2 (Obuchowski 1998,
    Stat Med 17:1495, for clustered sensitivity and specificity), and the design effect is its ratio to
    the binomial variance p (1 - p) / n (Rao & Scott 1992, Biometrics 48:577). The interval is Wilson's
    at the effective sample size n / deff. The I / (I - 1) small-sample factor is not applied: both
    variances are then plug-in (divisor-n) estimators, so deff is exactly 1 when every patient has one
    image and the result equals :func:`wilson_ci`. deff is truncated below at 1 (the effective size
    never exceeds n; Korn & Graubard 1998, Surv Methodol 24:193), and at p = 0 or 1, where both
    variances are 0 and deff is not estimable, the effective size is the number of patients I
    (deff = n / I: a patient's images treated as one observation, the conservative bound).
    """
    x = check_labels(successes, "successes")
    codes = check_groups(groups, x.size)
    n, k = x.size, int(x.sum())
    if n == 0:
        return Proportion(math.nan, math.nan, math.nan, 0, 0, level, 0, math.nan)
    m = np.bincount(codes).astype(float)
    xs = np.bincount(codes, weights=x.astype(float))
    n_clusters = int(m.size)
    p = k / n
    if 0 < k < n:
        deff = max(1.0, float(np.sum((xs - p * m) ** 2)) / (n * p * (1 - p)))
    else:
        deff = n / n_clusters
    low, high = _wilson_bounds(p, n / deff, z_quantile(level))
    return Proportion(p, low, high, k, n, level, n_clusters, deff)


# ----------------------------------------------------------------------------------------------
# Thresholds from validation data
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """A decision threshold and how it was chosen (on validation data)."""

    value: float
    rule: str
    target: float | None
    validation_sensitivity: float
    validation_specificity: float
    n_pos: int
    n_neg: int


def candidate_thresholds(y_score: ArrayLike) -> np.ndarray:
    """+inf, the midpoints between consecutive distinct scores (descending), and -inf."""
    distinct = np.unique(np.asarray(y_score, dtype=float))[::-1]
    return np.concatenate([[np.inf], (distinct[:-1] + distinct[1:]) / 2, [-np.inf]])


def _validation_curve(
    y_val: ArrayLike, s_val: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    y, s = check_labels_scores(y_val, s_val)
    n_pos, n_neg = require_classes(y)
    thr = candidate_thresholds(s)  # descending: sensitivity rises, specificity falls along it
    sens = (n_pos - np.searchsorted(np.sort(s[y]), thr, side="left")) / n_pos
    spec = np.searchsorted(np.sort(s[~y]), thr, side="left") / n_neg
    return thr, sens, spec, n_pos, n_neg


def choose_threshold(
    y_val: ArrayLike, s_val: ArrayLike, rule: ThresholdRule = "youden", target: float | None = None
) -> Threshold:
    """Choose a threshold on validation labels/scores.

    * ``"youden"``: maximise sensitivity + specificity - 1; ties go to the highest threshold.
    * ``"sensitivity"``: the highest threshold with validation sensitivity >= ``target`` (so the
      best specificity among those meeting the target).
    * ``"specificity"``: the lowest threshold with validation specificity >= ``target`` (so the
      best sensitivity among those meeting the target).
    """
    thr, sens, spec, n_pos, n_neg = _validation_curve(y_val, s_val)
    if rule == "youden":
        if target is not None:
            raise ValueError("the Youden rule takes no target")
        k = int(np.argmax(sens + spec - 1))
    elif rule in ("sensitivity", "specificity"):
        if target is None or not 0 <= target <= 1:
            raise ValueError(f"rule {rule!r} needs a target in [0, 1]; got {target!r}")
        if rule == "sensitivity":
            k = int(np.argmax(sens >= target))  # sens rises along thr; the first hit is the highest threshold
        else:
            k = int(np.nonzero(spec >= target)[0][-1])  # spec falls; the last hit is the lowest threshold
    else:
        raise ValueError(f"rule must be 'youden', 'sensitivity' or 'specificity'; got {rule!r}")
    return Threshold(float(thr[k]), rule, target, float(sens[k]), float(spec[k]), n_pos, n_neg)


# ----------------------------------------------------------------------------------------------
# Metrics at a threshold
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatingPoint:
    """Confusion counts and the five proportions (each with a Wilson interval) at one threshold."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: Proportion
    specificity: Proportion
    ppv: Proportion
    npv: Proportion
    accuracy: Proportion

    @property
    def n(self) -> int:
        """The number of cases: TP + FP + TN + FN."""
        return self.tp + self.fp + self.tn + self.fn

    def to_frame(self) -> pd.DataFrame:
        """One row per metric (sensitivity, specificity, PPV, NPV, accuracy): estimate, CI, numerator, denominator."""
        rows = []
        for name in ("sensitivity", "specificity", "ppv", "npv", "accuracy"):
            p: Proportion = getattr(self, name)
            rows.append(
                {
                    "metric": name,
                    "estimate": p.estimate,
                    "ci_low": p.ci_low,
                    "ci_high": p.ci_high,
                    "numerator": p.numerator,
                    "denominator": p.denominator,
                }
            )
        return pd.DataFrame(rows)


def check_calls(calls: ArrayLike, name: str = "calls") -> np.ndarray:
    """Validate a vector of binary calls (0/1 or bool) and return it as bool."""
    return check_labels(calls, name)


def confusion_metrics(
    y_true: ArrayLike, calls: ArrayLike, level: float = 0.95, threshold: float = math.nan,
    groups: ArrayLike | None = None,
) -> OperatingPoint:
    """Sensitivity, specificity, PPV, NPV and accuracy of binary calls, each with a Wilson interval.

    With ``groups`` (the patient id of each image) every interval is the patient-clustered one of
    :func:`clustered_proportion_ci` (Rao & Scott 1992; Obuchowski 1998), computed over the images of
    its denominator (the positives for sensitivity, the called positives for PPV, ...); without, the
    per-image Wilson interval.
    """
    y = check_labels(y_true)
    c = check_calls(calls)
    if c.shape != y.shape:
        raise ValueError(f"y_true and calls must have the same length; got {y.size} and {c.size}")
    tp, fp = int(np.sum(y & c)), int(np.sum(~y & c))
    fn, tn = int(np.sum(y & ~c)), int(np.sum(~y & ~c))
    if groups is None:
        sens, spec = wilson_ci(tp, tp + fn, level), wilson_ci(tn, tn + fp, level)
        ppv, npv = wilson_ci(tp, tp + fp, level), wilson_ci(tn, tn + fn, level)
        accuracy = wilson_ci(tp + tn, tp + tn + fp + fn, level)
    else:
        g = np.asarray(groups, dtype=object)
        check_groups(g, y.size)
        sens, spec = clustered_proportion_ci(c[y], g[y], level), clustered_proportion_ci(~c[~y], g[~y], level)
        ppv, npv = clustered_proportion_ci(y[c], g[c], level), clustered_proportion_ci(~y[~c], g[~c], level)
        accuracy = clustered_proportion_ci(y == c, g, level)
    return OperatingPoint(threshold=threshold, tp=tp, fp=fp, tn=tn, fn=fn, sensitivity=sens, specificity=spec,
                          ppv=ppv, npv=npv, accuracy=accuracy)


def operating_point(
    y_true: ArrayLike, y_score: ArrayLike, threshold: float, level: float = 0.95, groups: ArrayLike | None = None
) -> OperatingPoint:
    """Apply a (validation-chosen) threshold to scores: calls are ``score >= threshold``.

    ``groups`` (patient ids, one per image) makes every interval patient-clustered (see
    :func:`confusion_metrics`).
    """
    _, s = check_labels_scores(y_true, y_score)
    return confusion_metrics(y_true, s >= threshold, level, threshold=float(threshold), groups=groups)


# ----------------------------------------------------------------------------------------------
# McNemar
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class McNemarResult:
    """McNemar test from the discordant pairs of two paired binary outcomes.

    ``b``: A = 1 and B = 0; ``c``: A = 0 and B = 1. ``statistic`` is ``b``, whose reference
    distribution given the b + c discordant pairs is Binomial(b + c, 1/2); ``method`` says whether the
    p-value is the exact or the mid-p one.
    """

    b: int
    c: int
    n: int
    statistic: float
    p_value: float
    method: str

    @property
    def n_discordant(self) -> int:
        """The number of discordant pairs, b + c."""
        return self.b + self.c


def mcnemar_test(outcome_a: ArrayLike, outcome_b: ArrayLike, mid_p: bool = False) -> McNemarResult:
    """Two-sided McNemar test of P(A = 1) = P(B = 1) for paired binary outcomes on the same cases.

    The exact conditional test at every number of discordant pairs: with k = min(b, c) and
    X ~ Bin(b + c, 1/2), p = min(1, 2 P(X <= k)) (McNemar 1947; the exact form as in Fagerland et al.
    2013, BMC Med Res Methodol 13:91). ``mid_p=True`` gives the mid-p value 2 (P(X < k) + P(X = k) / 2),
    which Fagerland et al. recommend: closer to nominal size, less conservative than the exact test.
    No discordant pair gives p = 1.
    """
    a, bb = check_calls(outcome_a, "outcome_a"), check_calls(outcome_b, "outcome_b")
    if a.shape != bb.shape:
        raise ValueError(f"the two outcome vectors must have the same length; got {a.size} and {bb.size}")
    b, c = int(np.sum(a & ~bb)), int(np.sum(~a & bb))
    n_disc, k = b + c, min(b, c)
    if n_disc == 0:
        p = 1.0
    elif mid_p:
        p = min(1.0, 2 * float(stats.binom.cdf(k, n_disc, 0.5)) - float(stats.binom.pmf(k, n_disc, 0.5)))
    else:
        p = min(1.0, 2 * float(stats.binom.cdf(k, n_disc, 0.5)))
    method = "mid-p binomial" if mid_p else "exact binomial"
    return McNemarResult(b, c, a.size, float(b), p, f"{method} ({n_disc} discordant pairs)")


@dataclass(frozen=True)
class PairedCallsComparison:
    """Two classifiers' calls on the same cases: sensitivity (positives) and specificity (negatives).

    McNemar on the positives compares sensitivities (outcome = called positive); on the negatives it
    compares specificities (outcome = called negative).
    """

    a: OperatingPoint
    b: OperatingPoint
    sensitivity_test: McNemarResult
    specificity_test: McNemarResult


def compare_calls(
    y_true: ArrayLike, calls_a: ArrayLike, calls_b: ArrayLike, level: float = 0.95
) -> PairedCallsComparison:
    """Operating points of two sets of calls on the same cases, with McNemar tests of sens and spec."""
    y = check_labels(y_true)
    ca, cb = check_calls(calls_a, "calls_a"), check_calls(calls_b, "calls_b")
    return PairedCallsComparison(
        a=confusion_metrics(y, ca, level),
        b=confusion_metrics(y, cb, level),
        sensitivity_test=mcnemar_test(ca[y], cb[y]),
        specificity_test=mcnemar_test(~ca[~y], ~cb[~y]),
    )
