"""Calibration intercept/slope, Brier, ECE and reliability data on hand-checked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq, minimize
from scipy.special import expit, logit

from diffkd_study.metrics.calibration import (
    brier_score,
    calibration_intercept_slope,
    expected_calibration_error,
    logistic_mle,
    reliability_diagram,
)

Z95 = 1.959963984540054

# Two groups of four: predicted 0.2 with 1 event, predicted 0.8 with 3 events. The logistic fit on
# logit(p) = -+ln 4 passes exactly through the observed logits -+ln 3: slope ln 3 / ln 4, intercept 0.
# Information matrix diag(1.5, 1.5 ln(4)^2) (weights 4 * 0.25 * 0.75 per group), so
# se(slope) = 1 / (sqrt(1.5) ln 4).
GROUPED_P = np.array([0.2] * 4 + [0.8] * 4)
GROUPED_Y = np.array([1, 0, 0, 0, 1, 1, 1, 0])


def _newton_logistic(x: np.ndarray, y: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Plain Newton-Raphson maximum likelihood for logit P(y) = offset + x @ beta (independent check)."""
    beta = np.zeros(x.shape[1])
    for _ in range(50):
        mu = expit(offset + x @ beta)
        step = np.linalg.solve(x.T @ (x * (mu * (1 - mu))[:, None]), x.T @ (y - mu))
        beta += step
        if np.max(np.abs(step)) < 1e-13:
            break
    return beta


def test_grouped_example_by_hand():
    res = calibration_intercept_slope(GROUPED_Y, GROUPED_P)
    assert res.slope == pytest.approx(math.log(3) / math.log(4), rel=1e-9)
    se = 1 / (math.sqrt(1.5) * math.log(4))
    assert res.slope_ci == pytest.approx((res.slope - Z95 * se, res.slope + Z95 * se), rel=1e-6)
    assert res.intercept == pytest.approx(0.0, abs=1e-9)  # 4 expected events = 4 observed, by symmetry
    assert (res.n, res.n_events, res.n_clipped, res.note) == (8, 4, 0, "")


def test_calibration_in_the_large_by_hand():
    # Everyone predicted 0.5, 3 of 4 events: intercept = logit(3/4) = ln 3, se = 1 / sqrt(4 * 0.75 * 0.25).
    res = calibration_intercept_slope([1, 1, 1, 0], [0.5] * 4)
    assert res.intercept == pytest.approx(math.log(3), rel=1e-9)
    se = 1 / math.sqrt(0.75)
    assert res.intercept_ci == pytest.approx((math.log(3) - Z95 * se, math.log(3) + Z95 * se), rel=1e-6)
    assert math.isnan(res.slope) and "not estimable" in res.note


def test_matches_independent_newton_raphson():
    rng = np.random.default_rng(5)
    p = rng.uniform(0.02, 0.98, 300)
    y = (rng.uniform(size=300) < expit(0.4 + 0.7 * logit(p))).astype(int)
    res = calibration_intercept_slope(y, p)
    lp = logit(p)
    (a,) = _newton_logistic(np.ones((300, 1)), y, lp)
    _, b = _newton_logistic(np.column_stack([np.ones(300), lp]), y, np.zeros(300))
    assert res.intercept == pytest.approx(a, abs=1e-7)
    assert res.slope == pytest.approx(b, abs=1e-7)


def test_well_and_badly_calibrated_simulations():
    rng = np.random.default_rng(11)
    p_true = expit(rng.normal(-0.5, 1.2, 5000))
    y = (rng.uniform(size=5000) < p_true).astype(int)
    good = calibration_intercept_slope(y, p_true)
    assert good.slope_ci[0] < 1 < good.slope_ci[1]
    assert good.intercept_ci[0] < 0 < good.intercept_ci[1]
    overconfident = calibration_intercept_slope(y, expit(2 * logit(p_true)))
    assert overconfident.slope == pytest.approx(0.5, abs=0.05)
    curve = reliability_diagram(y, p_true).smooth
    middle = curve[(curve["predicted"] > 0.1) & (curve["predicted"] < 0.9)]
    assert np.max(np.abs(middle["observed"] - middle["predicted"])) < 0.05


def _direct_intercept(y: np.ndarray, p: np.ndarray, eps: float = 1e-8) -> float:
    """The offset-logistic intercept as the root of its monotone score sum(y - expit(a + logit p))."""
    lp = logit(np.clip(p, eps, 1 - eps))
    return brentq(lambda a: np.sum(y - expit(a + lp)), -100, 100, xtol=1e-14)


def _direct_slope(y: np.ndarray, p: np.ndarray, eps: float = 1e-8) -> float:
    lp = logit(np.clip(p, eps, 1 - eps))
    x = np.column_stack([np.ones_like(lp), lp])
    fit = minimize(lambda b: np.sum(np.logaddexp(0, x @ b) - y * (x @ b)), np.zeros(2),
                   jac=lambda b: x.T @ (expit(x @ b) - y), method="BFGS", options={"gtol": 1e-11})
    return float(fit.x[1])


def test_intercept_with_a_clipped_zero_does_not_run_away():
    # Issue 23: statsmodels' IRLS started from the data ran away to -2.7e15 ("converged") on these
    # ten cases, where a positive is predicted exactly 0 (logit clipped to -18.4); the maximum is -0.839.
    y = np.array([0, 0, 1, 0, 0, 0, 0, 0, 1, 0])
    p = np.array([0.0, 0.7, 0.0, 0.1, 0.0, 0.6, 0.8, 0.1, 0.3, 0.4])
    res = calibration_intercept_slope(y, p)
    assert res.intercept == pytest.approx(_direct_intercept(y, p), abs=1e-9)
    assert res.intercept == pytest.approx(-0.839, abs=1e-3)
    assert all(math.isfinite(v) for v in res.intercept_ci) and res.note == ""
    assert res.slope == pytest.approx(_direct_slope(y, p), abs=1e-6)


def test_small_samples_with_clipped_probabilities_match_a_direct_solve():
    # The random design of the issue-23 audit repro: n = 10, p ~ Beta(0.5, 0.5) rounded to 2 decimals (so
    # some are exactly 0 or 1), y ~ Bernoulli(p). The old fit was wrong (|intercept| up to 2.7e15) on 15 of
    # 1,000 such datasets; 3 of them are among these 200.
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = np.round(rng.beta(0.5, 0.5, size=10), 2)
        y = (rng.uniform(size=10) < p).astype(int)
        if y.min() == y.max():
            continue
        res = calibration_intercept_slope(y, p)
        assert res.intercept == pytest.approx(_direct_intercept(y, p), abs=1e-8)
        if res.note:
            assert math.isnan(res.slope) and "separate" in res.note
        else:
            assert res.slope == pytest.approx(_direct_slope(y, p), abs=1e-5)


def test_logistic_mle_reports_an_infinite_maximum_as_not_estimable():
    fit = logistic_mle(np.column_stack([np.ones(4), [1.0, 2.0, 3.0, 4.0]]), [0, 0, 1, 1])
    assert np.isnan(fit.params).all() and "did not converge" in fit.note


def test_logistic_mle_matches_hand_computed_intercept_and_information():
    # Intercept only, 3 of 4 events: beta = logit(3/4) = ln 3; information 4 * 0.75 * 0.25.
    fit = logistic_mle(np.ones((4, 1)), [1, 1, 1, 0])
    assert fit.params[0] == pytest.approx(math.log(3), abs=1e-12)
    assert fit.cov[0, 0] == pytest.approx(1 / 0.75, rel=1e-10) and fit.note == ""


def test_perfect_separation_gives_nan_slope_with_reason():
    res = calibration_intercept_slope([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.9])
    assert math.isnan(res.slope) and "separate" in res.note
    assert math.isfinite(res.intercept)


def test_probabilities_of_zero_and_one_are_clipped_and_counted():
    res = calibration_intercept_slope([0, 1, 0, 1, 1], [0.0, 1.0, 0.4, 0.3, 0.7])
    assert res.n_clipped == 2


def test_brier_and_scaled_brier_by_hand():
    res = brier_score(GROUPED_Y, GROUPED_P)
    # Squared errors: 0.64 + 3 * 0.04 + 3 * 0.04 + 0.64 = 1.52 over 8 cases.
    assert res.brier == pytest.approx(0.19)
    assert res.reference_brier == pytest.approx(0.25) and res.prevalence == 0.5
    assert res.scaled_brier == pytest.approx(1 - 0.19 / 0.25)


def test_ece_by_hand():
    # Uniform bins: 0.2 -> bin [0.2, 0.3) with observed 0.25; 0.8 -> bin [0.8, 0.9) with observed 0.75.
    assert expected_calibration_error(GROUPED_Y, GROUPED_P) == pytest.approx(0.05)
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0  # 1.0 falls in the last bin


def test_reliability_bins():
    p = np.linspace(0.05, 0.95, 10)
    y = np.array([0, 0, 0, 1, 0, 1, 1, 0, 1, 1])
    diagram = reliability_diagram(y, p, n_bins=5, strategy="quantile")
    bins = diagram.bins
    assert list(bins["n"]) == [2] * 5
    np.testing.assert_allclose(bins["mean_predicted"], [0.1, 0.3, 0.5, 0.7, 0.9])
    np.testing.assert_allclose(bins["observed"], [0, 0.5, 0.5, 0.5, 1])
    assert bins.loc[0, "ci_high"] == pytest.approx(Z95**2 / (2 + Z95**2))  # Wilson upper bound for 0/2
    smooth = diagram.smooth
    assert len(smooth) == 10 and smooth["observed"].between(0, 1).all()
    assert smooth["predicted"].is_monotonic_increasing
    uniform = reliability_diagram(y, p, n_bins=10, strategy="uniform", smooth=False)
    assert uniform.smooth is None and uniform.bins["n"].sum() == 10


def test_probabilities_validated():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        brier_score([0, 1], [0.2, 1.3])
    with pytest.raises(ValueError, match="strategy"):
        reliability_diagram([0, 1], [0.2, 0.3], strategy="kmeans")


def test_constant_predictions_form_one_bin_without_a_smooth_curve():
    # A model that predicts 0.28 for everyone (e.g. a baseline whose inputs are all missing).
    y = np.array([0, 1, 1, 0, 0])
    p = np.full(5, 0.28)
    diagram = reliability_diagram(y, p, n_bins=10, strategy="quantile")
    assert diagram.n_bins == 1 and diagram.smooth is None
    assert diagram.bins[["n", "n_events"]].values.tolist() == [[5, 2]]
    assert diagram.bins.loc[0, "mean_predicted"] == pytest.approx(0.28)
    assert diagram.bins.loc[0, "observed"] == pytest.approx(0.4)
    assert expected_calibration_error(y, p, strategy="quantile") == pytest.approx(0.12)
    assert expected_calibration_error(y, p) == pytest.approx(0.12)
    cal = calibration_intercept_slope(y, p)
    # With a constant offset the intercept is logit(observed rate) - logit(prediction).
    assert cal.intercept == pytest.approx(np.log(0.4 / 0.6) - np.log(0.28 / 0.72), abs=1e-8)
    assert np.isnan(cal.slope) and "all predictions are equal" in cal.note


def test_reliability_bins_of_tied_predictions_have_every_column():
    diagram = reliability_diagram([0, 1], [0.5, 0.5], smooth=True)
    assert list(diagram.bins.columns) == ["bin", "lower", "upper", "n", "n_events", "mean_predicted", "observed",
                                          "ci_low", "ci_high"]


def test_calibration_intervals_are_cluster_robust_by_patient():
    """Every image twice: the model-based (per image) interval narrows by about 1/sqrt(2); with the patients
    given, the cluster-robust one is about the original's, and singletons change nothing."""
    rng = np.random.default_rng(4)
    p = rng.uniform(0.05, 0.95, 300)
    y = rng.random(300) < p
    original = calibration_intercept_slope(y, p)
    same = calibration_intercept_slope(y, p, groups=np.arange(300))
    assert same.intercept_ci == original.intercept_ci and same.slope_ci == original.slope_ci
    yy, pp, g = np.repeat(y, 2), np.repeat(p, 2), np.repeat(np.arange(300), 2)
    per_image = calibration_intercept_slope(yy, pp)
    clustered = calibration_intercept_slope(yy, pp, groups=g)

    def width(ci):
        return ci[1] - ci[0]

    assert width(per_image.slope_ci) == pytest.approx(width(original.slope_ci) / np.sqrt(2), rel=0.02)
    assert width(clustered.slope_ci) == pytest.approx(width(original.slope_ci), rel=0.1)
    assert width(clustered.intercept_ci) == pytest.approx(width(original.intercept_ci), rel=0.1)
