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
    clustered_proportion_ci,
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


def test_mcnemar_is_exact_at_every_number_of_discordant_pairs():
    # Issue 23: with 25 discordant pairs the old code switched to the continuity-corrected chi-square,
    # (|7 - 18| - 1)^2 / 25 = 4 -> p = 0.0455, against the exact 2 P(X <= 7), X ~ Bin(25, 1/2) = 0.0433.
    res = mcnemar_test(*_pairs(7, 18))
    assert res.p_value == pytest.approx(2 * stats.binom.cdf(7, 25, 0.5), rel=1e-12)
    assert res.p_value == pytest.approx(0.043285, abs=5e-7)
    assert res.p_value == pytest.approx(sm_mcnemar([[5, 7], [18, 5]], exact=True).pvalue, rel=1e-12)
    big = mcnemar_test(*_pairs(20, 90))
    assert big.p_value == pytest.approx(sm_mcnemar([[5, 20], [90, 5]], exact=True).pvalue, rel=1e-12)
    assert "exact" in res.method and "exact" in big.method
    assert mcnemar_test(*_pairs(12, 12)).p_value == 1.0
    assert mcnemar_test(*_pairs(0, 0)).p_value == 1.0


def test_mcnemar_mid_p_by_hand():
    # b = 1, c = 6: mid-p = 2 (P(X < 1) + P(X = 1) / 2) = 2 (1 + 3.5) / 128 = 9 / 128 (Fagerland et al. 2013).
    res = mcnemar_test(*_pairs(1, 6), mid_p=True)
    assert res.p_value == pytest.approx(9 / 128, abs=1e-15) and "mid-p" in res.method
    assert mcnemar_test(*_pairs(12, 12), mid_p=True).p_value == pytest.approx(1.0, abs=1e-12)
    assert mcnemar_test(*_pairs(0, 0), mid_p=True).p_value == 1.0


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


@pytest.mark.parametrize("k, n, level", [(8, 10, 0.95), (0, 10, 0.95), (10, 10, 0.9), (37, 52, 0.99), (1, 3, 0.95)])
def test_clustered_interval_of_singletons_is_wilson(k, n, level):
    x = np.r_[np.ones(k), np.zeros(n - k)].astype(bool)
    wilson = wilson_ci(k, n, level)
    for groups in (None, [f"patient-{i}" for i in range(n)]):
        res = clustered_proportion_ci(x, groups, level)
        assert (res.estimate, res.numerator, res.denominator, res.n_clusters) == (k / n, k, n, n)
        assert res.design_effect == pytest.approx(1.0, abs=1e-12)
        assert (res.ci_low, res.ci_high) == pytest.approx((wilson.ci_low, wilson.ci_high), abs=1e-12)


def test_duplicated_images_give_the_original_interval_with_design_effect_two():
    rng = np.random.default_rng(3)
    x = rng.uniform(size=40) < 0.7
    wilson = wilson_ci(int(x.sum()), 40)
    twice = clustered_proportion_ci(np.repeat(x, 2), np.repeat(np.arange(40), 2))
    assert twice.design_effect == pytest.approx(2.0, rel=1e-12) and twice.n_clusters == 40
    assert twice.denominator == 80
    assert (twice.ci_low, twice.ci_high) == pytest.approx((wilson.ci_low, wilson.ci_high), abs=1e-12)
    per_image = wilson_ci(int(2 * x.sum()), 80)
    assert per_image.ci_high - per_image.ci_low < twice.ci_high - twice.ci_low


def test_clustered_design_effect_by_hand():
    # Patients A (2/2), B (0/2), C (1/1), D (1/1): p = 4/6; residuals x_i - p m_i = 2/3, -4/3, 1/3, 1/3, sum of
    # squares 22/9; deff = (22/9) / (6 (2/3)(1/3)) = 11/6; the interval is Wilson's at n = 6 / (11/6).
    res = clustered_proportion_ci([1, 1, 0, 0, 1, 1], ["A", "A", "B", "B", "C", "D"])
    assert res.design_effect == pytest.approx(11 / 6, rel=1e-12) and res.n_clusters == 4
    z, n_eff, p = 1.959963984540054, 36 / 11, 2 / 3
    centre = (p + z * z / (2 * n_eff)) / (1 + z * z / n_eff)
    half = z * math.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff**2)) / (1 + z * z / n_eff)
    assert (res.ci_low, res.ci_high) == pytest.approx((centre - half, centre + half), abs=1e-12)


def test_clustered_interval_at_zero_uses_the_patients_as_sample_size():
    res = clustered_proportion_ci(np.zeros(6, dtype=bool), [1, 1, 2, 2, 3, 3])
    assert res.design_effect == 2.0 and res.ci_low == 0.0
    assert res.ci_high == pytest.approx(wilson_ci(0, 3).ci_high, abs=1e-12)
    empty = clustered_proportion_ci(np.zeros(0, dtype=bool), [])
    assert math.isnan(empty.estimate) and empty.denominator == 0


def test_clustered_interval_covers_in_simulation():
    # 60 patients x 3 images, outcomes correlated within patient (beta-binomial, ICC 0.6, p = 0.8, deff 2.2):
    # the clustered interval keeps ~95% coverage where the per-image Wilson interval falls to ~80%.
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(60), 3)
    covered = np.zeros(2)
    for _ in range(300):
        x = (rng.uniform(size=(60, 3)) < rng.beta(0.8 * 2 / 3, 0.2 * 2 / 3, size=60)[:, None]).ravel()
        for j, res in enumerate((clustered_proportion_ci(x, groups), wilson_ci(int(x.sum()), x.size))):
            covered[j] += res.ci_low <= 0.8 <= res.ci_high
    assert 0.91 <= covered[0] / 300 <= 0.98
    assert covered[1] / 300 < 0.88


def test_operating_point_with_patient_groups_uses_clustered_intervals():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.2, 0.1, 0.7, 0.3, 0.2, 0.1, 0.4, 0.35])
    groups = ["p1", "p1", "p2", "p2", "p3", "p3", "p4", "p4", "p5", "p5"]
    plain = operating_point(y, s, 0.5)
    clustered = operating_point(y, s, 0.5, groups=groups)
    assert (clustered.tp, clustered.fp, clustered.tn, clustered.fn) == (plain.tp, plain.fp, plain.tn, plain.fn)
    assert clustered.sensitivity == clustered_proportion_ci([True, True, False, False], groups[:4])
    assert clustered.sensitivity.design_effect == pytest.approx(2.0) and clustered.sensitivity.n_clusters == 2
    assert clustered.specificity.n_clusters == 3 and clustered.ppv.denominator == plain.ppv.denominator
    singletons = operating_point(y, s, 0.5, groups=list(range(10)))
    for name in ("sensitivity", "specificity", "ppv", "npv", "accuracy"):
        a, b = getattr(singletons, name), getattr(plain, name)
        assert (a.ci_low, a.ci_high) == pytest.approx((b.ci_low, b.ci_high), abs=1e-12)
