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

McNemar's test compares two classifiers' calls on the same cases from the discordant pairs only:
the exact two-sided binomial test when there are fewer than 25 discordant pairs, otherwise the
chi-square statistic with continuity correction (Edwards 1948), 1 degree of freedom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from diffkd_study.metrics.roc import check_labels, check_labels_scores, require_classes, z_quantile

ThresholdRule = Literal["youden", "sensitivity", "specificity"]

EXACT_MCNEMAR_BELOW = 25


@dataclass(frozen=True)
class Proportion:
    """A proportion numerator/denominator with its Wilson score interval."""

    estimate: float
    ci_low: float
    ci_high: float
    numerator: int
    denominator: int
    level: float = 0.95

    def __str__(self) -> str:
        return (
            f"{self.estimate:.3f} ({self.level:.0%} CI {self.ci_low:.3f}-{self.ci_high:.3f}; "
            f"{self.numerator}/{self.denominator})"
        )


def wilson_ci(numerator: int, denominator: int, level: float = 0.95) -> Proportion:
    """Wilson score interval: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)."""
    k, n = int(numerator), int(denominator)
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= numerator <= denominator; got {k}/{n}")
    if n == 0:
        return Proportion(math.nan, math.nan, math.nan, k, n, level)
    z = z_quantile(level)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At p = 0 or 1 the bound equals p exactly; the formula leaves a rounding residue.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Proportion(p, low, high, k, n, level)


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
    y_true: ArrayLike, calls: ArrayLike, level: float = 0.95, threshold: float = math.nan
) -> OperatingPoint:
    """Sensitivity, specificity, PPV, NPV and accuracy of binary calls, each with a Wilson interval."""
    y = check_labels(y_true)
    c = check_calls(calls)
    if c.shape != y.shape:
        raise ValueError(f"y_true and calls must have the same length; got {y.size} and {c.size}")
    tp, fp = int(np.sum(y & c)), int(np.sum(~y & c))
    fn, tn = int(np.sum(y & ~c)), int(np.sum(~y & ~c))
    return OperatingPoint(
        threshold=threshold,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        sensitivity=wilson_ci(tp, tp + fn, level),
        specificity=wilson_ci(tn, tn + fp, level),
        ppv=wilson_ci(tp, tp + fp, level),
        npv=wilson_ci(tn, tn + fn, level),
        accuracy=wilson_ci(tp + tn, tp + tn + fp + fn, level),
    )


def operating_point(
    y_true: ArrayLike, y_score: ArrayLike, threshold: float, level: float = 0.95
) -> OperatingPoint:
    """Apply a (validation-chosen) threshold to scores: calls are ``score >= threshold``."""
    _, s = check_labels_scores(y_true, y_score)
    return confusion_metrics(y_true, s >= threshold, level, threshold=float(threshold))


# ----------------------------------------------------------------------------------------------
# McNemar
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class McNemarResult:
    """McNemar test from the discordant pairs of two paired binary outcomes.

    ``b``: A = 1 and B = 0; ``c``: A = 0 and B = 1. ``statistic`` is the continuity-corrected
    chi-square ((|b - c| - 1)^2 / (b + c)) when the chi-square version was used, and ``b`` for the
    exact binomial version (reference distribution Binomial(b + c, 1/2)).
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


def mcnemar_test(outcome_a: ArrayLike, outcome_b: ArrayLike) -> McNemarResult:
    """Two-sided McNemar test of P(A = 1) = P(B = 1) for paired binary outcomes on the same cases.

    Exact binomial (p = min(1, 2 P(X <= min(b, c))), X ~ Bin(b + c, 1/2)) when b + c < 25, else
    chi-square with continuity correction on 1 df.
    """
    a, bb = check_calls(outcome_a, "outcome_a"), check_calls(outcome_b, "outcome_b")
    if a.shape != bb.shape:
        raise ValueError(f"the two outcome vectors must have the same length; got {a.size} and {bb.size}")
    b, c = int(np.sum(a & ~bb)), int(np.sum(~a & bb))
    n_disc = b + c
    if n_disc < EXACT_MCNEMAR_BELOW:
        p = 1.0 if n_disc == 0 else min(1.0, 2 * float(stats.binom.cdf(min(b, c), n_disc, 0.5)))
        return McNemarResult(
            b, c, a.size, float(b), p, f"exact binomial ({n_disc} discordant < {EXACT_MCNEMAR_BELOW})"
        )
    chi2 = (abs(b - c) - 1) ** 2 / n_disc
    return McNemarResult(
        b,
        c,
        a.size,
        chi2,
        float(stats.chi2.sf(chi2, 1)),
        f"chi-square with continuity correction ({n_disc} discordant >= {EXACT_MCNEMAR_BELOW})",
    )


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
