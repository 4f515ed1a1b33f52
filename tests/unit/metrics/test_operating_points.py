"""Wilson intervals, validation-chosen thresholds and McNemar's test on hand-checked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.proportion import proportion_confint

from diffkd_study.metrics.operating_points import (
    candidate_thresholds,
    choose_threshold,
    compare_calls,
    confusion_metrics,
    mcnemar_test,
    operating_point,
    wilson_ci,
)

# Validation set: positives 0.9, 0.7, 0.4; negatives 0.6, 0.3, 0.2, 0.1. Candidate thresholds are
# the midpoints inf, 0.8, 0.65, 0.5, 0.35, 0.25, 0.15, -inf with (sensitivity, specificity)
# (0, 1), (1/3, 1), (2/3, 1), (2/3, 3/4), (1, 3/4), (1, 1/2), (1, 1/4), (1, 0).
Y_VAL = np.array([1, 1, 1, 0, 0, 0, 0])
S_VAL = np.array([0.9, 0.7, 0.4, 0.6, 0.3, 0.2, 0.1])


@pytest.mark.parametrize(
    "k, n, low, high",
    [
        (8, 10, 0.4902, 0.9433),  # Newcombe (1998) Stat Med 17:857, table I
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (15, 148, 0.0624, 0.1605),
    ],
)
def test_wilson_hand_values(k, n, low, high):
    p = wilson_ci(k, n)
    assert (p.numerator, p.denominator, p.estimate) == (k, n, k / n)
    assert p.ci_low == pytest.approx(low, abs=5e-5)
    assert p.ci_high == pytest.approx(high, abs=5e-5)


@pytest.mark.parametrize("k, n, level", [(1, 3, 0.95), (37, 52, 0.9), (199, 200, 0.99)])
def test_wilson_matches_statsmodels(k, n, level):
    p = wilson_ci(k, n, level)
    expected = proportion_confint(k, n, alpha=1 - level, method="wilson")
    assert (p.ci_low, p.ci_high) == pytest.approx(expected, abs=1e-12)


def test_wilson_empty_and_invalid():
    empty = wilson_ci(0, 0)
    assert math.isnan(empty.estimate) and math.isnan(empty.ci_low) and empty.denominator == 0
    with pytest.raises(ValueError, match="numerator <= denominator"):
        wilson_ci(5, 3)


def test_candidate_thresholds_are_midpoints():
    np.testing.assert_allclose(candidate_thresholds([0.2, 0.4, 0.4, 0.8]), [np.inf, 0.6, 0.3, -np.inf])


@pytest.mark.parametrize(
    "rule, target, value, sens, spec",
    [
        ("youden", None, 0.35, 1.0, 0.75),
        ("sensitivity", 0.6, 0.65, 2 / 3, 1.0),
        ("sensitivity", 1.0, 0.35, 1.0, 0.75),
        ("specificity", 0.9, 0.65, 2 / 3, 1.0),
        ("specificity", 0.7, 0.35, 1.0, 0.75),
    ],
)
def test_threshold_rules(rule, target, value, sens, spec):
    thr = choose_threshold(Y_VAL, S_VAL, rule=rule, target=target)
    assert thr.value == pytest.approx(value)
    assert thr.validation_sensitivity == pytest.approx(sens)
    assert thr.validation_specificity == pytest.approx(spec)
    assert (thr.n_pos, thr.n_neg) == (3, 4)


def test_threshold_rule_errors():
    with pytest.raises(ValueError, match="needs a target"):
        choose_threshold(Y_VAL, S_VAL, rule="sensitivity")
    with pytest.raises(ValueError, match="rule must be"):
        choose_threshold(Y_VAL, S_VAL, rule="f1")


def test_validation_threshold_applied_to_test():
    thr = choose_threshold(Y_VAL, S_VAL)  # 0.35
    # Test scores: 0.35 sits exactly on the threshold and is called positive (score >= threshold).
    op = operating_point([1, 1, 0, 0, 0], [0.5, 0.3, 0.4, 0.2, 0.35], thr.value)
    assert (op.tp, op.fn, op.fp, op.tn) == (1, 1, 2, 1)
    assert (op.sensitivity.numerator, op.sensitivity.denominator) == (1, 2)
    assert (op.specificity.numerator, op.specificity.denominator) == (1, 3)
    assert (op.ppv.numerator, op.ppv.denominator) == (1, 3)
    assert (op.npv.numerator, op.npv.denominator) == (1, 2)
    assert (op.accuracy.numerator, op.accuracy.denominator) == (2, 5)
    assert op.sensitivity == wilson_ci(1, 2)
    frame = op.to_frame()
    assert list(frame["metric"]) == ["sensitivity", "specificity", "ppv", "npv", "accuracy"]


def test_ppv_undefined_when_nothing_called_positive():
    op = confusion_metrics([1, 0, 0], [0, 0, 0])
    assert math.isnan(op.ppv.estimate) and op.ppv.denominator == 0
    assert op.npv.estimate == pytest.approx(2 / 3)


def _pairs(b: int, c: int, concordant: int = 5) -> tuple[np.ndarray, np.ndarray]:
    a = np.r_[np.ones(b), np.zeros(c), np.ones(concordant), np.zeros(concordant)]
    other = np.r_[np.zeros(b), np.ones(c), np.ones(concordant), np.zeros(concordant)]
    return a.astype(int), other.astype(int)


def test_mcnemar_exact_by_hand():
    res = mcnemar_test(*_pairs(1, 6))
    # Two-sided exact: 2 P(X <= 1), X ~ Bin(7, 1/2) = 2 (1 + 7) / 128.
    assert (res.b, res.c, res.n_discordant) == (1, 6, 7)
    assert res.p_value == pytest.approx(0.125, abs=1e-15)
    assert "exact" in res.method
    assert res.p_value == pytest.approx(sm_mcnemar([[5, 1], [6, 5]], exact=True).pvalue, abs=1e-12)


def test_mcnemar_chi_square_with_continuity_correction():
    res = mcnemar_test(*_pairs(20, 9))
    assert res.statistic == pytest.approx(100 / 29)  # (|20 - 9| - 1)^2 / 29
    assert res.p_value == pytest.approx(stats.chi2.sf(100 / 29, 1), rel=1e-12)
    independent = sm_mcnemar([[5, 20], [9, 5]], exact=False, correction=True)
    assert res.p_value == pytest.approx(independent.pvalue, rel=1e-12)
    assert "continuity" in res.method


def test_mcnemar_switches_at_25_discordant_pairs():
    assert "exact" in mcnemar_test(*_pairs(12, 12)).method
    assert "chi-square" in mcnemar_test(*_pairs(12, 13)).method
    assert mcnemar_test(*_pairs(0, 0)).p_value == 1.0


def test_compare_calls_tests_sensitivity_on_positives_and_specificity_on_negatives():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    a = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    b = np.array([1, 0, 0, 0, 0, 0, 0, 1])
    cmp = compare_calls(y, a, b)
    assert (cmp.sensitivity_test.b, cmp.sensitivity_test.c) == (2, 0)  # positives called only by A
    assert (cmp.specificity_test.b, cmp.specificity_test.c) == (
        1,
        1,
    )  # negatives cleared only by A / only by B
    assert cmp.a.sensitivity.estimate == 0.75 and cmp.b.specificity.estimate == 0.75


def test_calls_must_be_binary():
    with pytest.raises(ValueError, match="0/1"):
        confusion_metrics([1, 0], [1, 2])
