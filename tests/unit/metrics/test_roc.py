"""ROC, AUC, DeLong and bootstrap: hand-computed examples, pROC's published aSAH values, coverage.

Reference tables vendored in tests/data/reference/ (sources and licences in its README.md); a missing
table fails the tests, never skips them. Expected values are embedded here:
* aSAH (Turck et al. 2010), pROC's own tests: AUCs, DeLong variances/covariances, paired tests.
* Hanley & McNeil (1982) CT ratings: AUC 2642/2958 = 0.8931711; DeLong SE 0.0307244 (computed by
  the reference set's authors, not printed in the paper).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from diffkd_study.metrics.roc import (
    ROCAUCMetric,
    _bootstrap_auc_distribution,
    auc_bootstrap,
    auc_delong,
    delong_covariance,
    delong_test,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
    wald_auc_interval,
)
from diffkd_study.metrics.roc_band import roc_confidence_band, roc_summary
from diffkd_study.metrics.tables import aggregate_seeds, metrics_by_group

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "data" / "reference"
ASAH_CSV = REFERENCE_DIR / "asah.csv"
HANLEY_MCNEIL_CSV = REFERENCE_DIR / "hanley_mcneil_ct.csv"

# pROC's published values for aSAH (positive class: outcome == "Poor").
ASAH_AUC = {"s100b": 0.7313685636856369, "ndka": 0.611957994579946, "wfns": 0.823678861788618}
ASAH_VAR = {"s100b": 0.00266868245717244, "ndka": 0.0031908105493913, "wfns": 0.00146991470882363}
ASAH_COV = {
    ("wfns", "ndka"): -0.000532967856762438,
    ("ndka", "s100b"): -0.000756164938056579,
    ("s100b", "wfns"): 0.00119615567376754,
}
ASAH_CI_NDKA = (0.501244999271703, 0.611957994579946, 0.722670989888189)
ASAH_PAIRED = {
    ("wfns", "s100b"): (2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
    ("wfns", "ndka"): (2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
    ("ndka", "s100b"): (-1.39077002573558, 0.164295175223054, -0.2876917446341914, 0.0488706064228094),
}
REL = 1e-8

# Hanley & McNeil CT example: counts of ratings 1..5.
HM_NORMAL = [33, 6, 6, 11, 2]
HM_ABNORMAL = [3, 2, 2, 11, 33]


@pytest.fixture(scope="module")
def asah() -> pd.DataFrame:
    data = pd.read_csv(ASAH_CSV)
    data["y"] = (data["outcome"] == "Poor").astype(int)
    return data


def _hanley_mcneil() -> tuple[np.ndarray, np.ndarray]:
    ratings = np.arange(1, 6)
    scores = np.concatenate([np.repeat(ratings, HM_ABNORMAL), np.repeat(ratings, HM_NORMAL)])
    truth = np.concatenate([np.ones(sum(HM_ABNORMAL), int), np.zeros(sum(HM_NORMAL), int)])
    return truth, scores


def test_vendored_reference_tables_hold_the_published_data():
    """The vendored tables are present and are the published data (counts of Hanley & McNeil's Table I)."""
    table = pd.read_csv(HANLEY_MCNEIL_CSV)
    counts = table.groupby("truth")["rating"].value_counts().unstack(fill_value=0).reindex(columns=range(1, 6))
    assert counts.loc[0].tolist() == HM_NORMAL and counts.loc[1].tolist() == HM_ABNORMAL
    data = pd.read_csv(ASAH_CSV)
    assert len(data) == 113 and data["outcome"].value_counts().to_dict() == {"Good": 72, "Poor": 41}


# Tiny example with a tie across classes:
# positives 0.9, 0.6, 0.4; negatives 0.6, 0.3, 0.2, 0.1.
# Pairs won: 0.9 -> 4, 0.6 -> 3 + 1/2 (tie), 0.4 -> 3; AUC = 10.5 / 12 = 0.875.
# Placements V10 = (1, 0.875, 0.75) (var 1/64), V01 = (0.5, 1, 1, 1) (var 1/16);
# DeLong variance = (1/64)/3 + (1/16)/4 = 1/48.
TINY_Y = np.array([1, 1, 1, 0, 0, 0, 0])
TINY_S = np.array([0.9, 0.6, 0.4, 0.6, 0.3, 0.2, 0.1])


def test_auc_ties_count_half():
    assert roc_auc(TINY_Y, TINY_S) == pytest.approx(0.875, abs=1e-15)


def test_roc_curve_points():
    curve = roc_curve(TINY_Y, TINY_S)
    np.testing.assert_allclose(curve.fpr, [0, 0, 0.25, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(curve.tpr, [0, 1 / 3, 2 / 3, 1, 1, 1, 1])
    np.testing.assert_allclose(curve.thresholds, [np.inf, 0.9, 0.6, 0.4, 0.3, 0.2, 0.1])
    assert np.trapezoid(curve.tpr, curve.fpr) == pytest.approx(0.875)


def test_tpr_at_fpr_vertical_and_diagonal_segments():
    curve = roc_curve(TINY_Y, TINY_S)
    # At FPR 0 the curve is vertical up to 1/3; at 0.125 halfway along the tie diagonal
    # (0, 1/3)-(0.25, 2/3); at 0.25 vertical up to 1.
    np.testing.assert_allclose(tpr_at_fpr(curve.fpr, curve.tpr, [0, 0.125, 0.25, 0.6]), [1 / 3, 0.5, 1, 1])


def test_delong_variance_by_hand():
    comp = delong_covariance(TINY_Y, TINY_S)
    np.testing.assert_allclose(comp.positive_placements[0], [1, 0.875, 0.75])
    np.testing.assert_allclose(comp.negative_placements[0], [0.5, 1, 1, 1])
    assert comp.covariance[0, 0] == pytest.approx(1 / 48, rel=1e-12)


def test_auc_never_flipped():
    assert roc_auc(TINY_Y, -TINY_S) == pytest.approx(0.125)


def test_delong_logit_and_plain_intervals():
    res_plain = auc_delong(TINY_Y, TINY_S, scale="plain")
    se = np.sqrt(1 / 48)
    assert res_plain.ci_low == pytest.approx(0.875 - 1.959963984540054 * se)
    assert res_plain.ci_high == 1.0  # 0.875 + 0.283 clipped to 1
    res_logit = auc_delong(TINY_Y, TINY_S)
    assert "logit" in res_logit.method
    centre, half = np.log(0.875 / 0.125), 1.959963984540054 * se / (0.875 * 0.125)
    assert res_logit.ci_low == pytest.approx(1 / (1 + np.exp(-(centre - half))))
    assert res_logit.ci_high == pytest.approx(1 / (1 + np.exp(-(centre + half))))
    assert 0 < res_logit.ci_low < res_logit.auc < res_logit.ci_high < 1


def test_perfect_separation_is_not_a_zero_width_interval():
    """DeLong's variance is 0 at AUC 1: the Wald interval is [1, 1]; auc_delong gives Newcombe's instead."""
    res = auc_delong([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert (res.auc, res.ci_high, res.variance) == (1.0, 1.0, 0.0)
    assert res.ci_low < 0.8 and res.method.startswith("Newcombe")
    assert wald_auc_interval(1.0, 0.0, scale="plain") == (1.0, 1.0)


def test_hanley_mcneil_ct_example():
    y, s = _hanley_mcneil()
    assert roc_auc(y, s) == pytest.approx(2642 / 2958, rel=1e-15)
    assert roc_auc(y, s) == pytest.approx(0.8931711, abs=5e-8)
    res = auc_delong(y, s)
    assert (res.n_pos, res.n_neg) == (51, 58)
    assert res.se == pytest.approx(0.0307244, abs=5e-8)


@pytest.mark.parametrize(
    "y, s, message",
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], "0/1"),
        ([0, 1], [0.1, np.nan], "finite"),
        ([0, 1, 1], [0.1, 0.2], "same length"),
        ([1, 1, 1], [0.1, 0.2, 0.3], "negative"),
    ],
)
def test_bad_input_is_named(y, s, message):
    with pytest.raises(ValueError, match=message):
        auc_delong(y, s)


def test_asah_aucs_variances_covariances_match_proc(asah):
    comp = delong_covariance(asah["y"], asah["s100b"], asah["ndka"], asah["wfns"])
    names = ["s100b", "ndka", "wfns"]
    for i, name in enumerate(names):
        assert comp.auc[i] == pytest.approx(ASAH_AUC[name], rel=REL)
        assert comp.covariance[i, i] == pytest.approx(ASAH_VAR[name], rel=REL)
    for (a, b), expected in ASAH_COV.items():
        assert comp.covariance[names.index(a), names.index(b)] == pytest.approx(expected, rel=REL)
    assert (comp.n_pos, comp.n_neg) == (41, 72)


def test_asah_plain_delong_ci_matches_proc(asah):
    res = auc_delong(asah["y"], asah["ndka"], scale="plain")
    assert (res.ci_low, res.auc, res.ci_high) == pytest.approx(ASAH_CI_NDKA, rel=REL)
    s100b = auc_delong(asah["y"], asah["s100b"], scale="plain")
    assert f"{s100b.ci_low:.4f}-{s100b.ci_high:.4f}" == "0.6301-0.8326"  # pROC's printed interval


@pytest.mark.parametrize("pair", list(ASAH_PAIRED))
def test_asah_paired_delong_tests_match_proc(asah, pair):
    z, p, low, high = ASAH_PAIRED[pair]
    res = delong_test(asah["y"], asah[pair[0]], asah[pair[1]])
    assert res.z == pytest.approx(z, rel=REL)
    assert res.p_value == pytest.approx(p, rel=REL)
    assert (res.ci_low, res.ci_high) == pytest.approx((low, high), rel=REL)
    assert res.difference == pytest.approx(ASAH_AUC[pair[0]] - ASAH_AUC[pair[1]], rel=REL)


def test_noninferiority_p_value(asah):
    z, _, low, high = ASAH_PAIRED[("wfns", "s100b")]
    diff = ASAH_AUC["wfns"] - ASAH_AUC["s100b"]
    se = diff / z
    res = delong_test(asah["y"], asah["wfns"], asah["s100b"], margin=0.05)
    assert res.z_noninferiority == pytest.approx((diff + 0.05) / se, rel=1e-8)
    assert res.p_noninferiority == pytest.approx(stats.norm.sf((diff + 0.05) / se), rel=1e-8)
    # Margin 0: the one-sided p is half the two-sided p when A is ahead.
    zero = delong_test(asah["y"], asah["wfns"], asah["s100b"], margin=0.0)
    assert zero.p_noninferiority == pytest.approx(zero.p_value / 2, rel=1e-12)


def test_noninferiority_margin_shifts_the_statistic():
    other = np.array([0.5, 0.8, 0.3, 0.2, 0.4, 0.1, 0.6])
    res = delong_test(TINY_Y, TINY_S, other, margin=0.1)
    assert res.z_noninferiority == pytest.approx((res.difference + 0.1) / res.se, rel=1e-12)
    assert res.p_noninferiority == pytest.approx(stats.norm.sf(res.z_noninferiority), rel=1e-12)
    assert res.p_value == pytest.approx(2 * stats.norm.sf(abs(res.difference / res.se)), rel=1e-12)
    with pytest.raises(ValueError, match="margin must be >= 0"):
        delong_test(TINY_Y, TINY_S, other, margin=-0.1)


def test_paired_test_of_identical_scores():
    res = delong_test(TINY_Y, TINY_S, 2 * TINY_S + 1)  # same ranking
    assert (res.difference, res.z, res.p_value) == (0.0, 0.0, 1.0)


class _QueuedWeights:
    """Stands in for a Generator: hands out the given resampling multiplicities in order."""

    def __init__(self, *weights: list[list[int]]) -> None:
        self._queue = [np.asarray(w) for w in weights]

    def multinomial(self, n, pvals, size):
        w = self._queue.pop(0)
        assert w.shape == (size, n) and np.all(w.sum(axis=1) == n)
        return w


def test_bootstrap_auc_equals_auc_of_the_expanded_resample():
    y = TINY_Y == 1
    w_pos = [[3, 0, 0], [0, 1, 2]]
    w_neg = [[1, 1, 1, 1], [4, 0, 0, 0]]
    boot = _bootstrap_auc_distribution(y, TINY_S, 2, _QueuedWeights(w_pos, w_neg))
    pos, neg = TINY_S[y], TINY_S[~y]
    for b in range(2):
        rs = np.concatenate([np.repeat(pos, w_pos[b]), np.repeat(neg, w_neg[b])])
        ry = np.concatenate([np.ones(3, int), np.zeros(4, int)])
        assert boot[b] == pytest.approx(roc_auc(ry, rs), abs=1e-15)
    # By hand: resample 1 = three copies of 0.9 vs all negatives -> 1; resample 2 = {0.6, 0.4, 0.4}
    # vs four copies of the negative 0.6 -> (0.5 + 0 + 0) / 3.
    np.testing.assert_allclose(boot, [1.0, 0.5 / 3])


def test_bootstrap_is_seeded_and_stratified():
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(30, int), np.zeros(50, int)]
    s = rng.normal(y * 1.0, 1)
    a = auc_bootstrap(y, s, n_resamples=300, seed=11)
    b = auc_bootstrap(y, s, n_resamples=300, seed=11)
    c = auc_bootstrap(y, s, n_resamples=300, seed=12)
    assert a == b and a.ci_low != c.ci_low
    assert a.ci_low < a.auc < a.ci_high and (a.n_pos, a.n_neg) == (30, 50)
    assert "B=300" in a.method and "seed=11" in a.method


def test_roc_band_single_resample_is_that_resample_curve():
    y = TINY_Y == 1
    w_pos, w_neg = [[0, 1, 2]], [[2, 0, 1, 1]]
    grid = np.linspace(0, 1, 9)
    band = roc_confidence_band(y, TINY_S, grid, n_resamples=1, seed=_QueuedWeights(w_pos, w_neg))
    rs = np.concatenate([np.repeat(TINY_S[y], w_pos[0]), np.repeat(TINY_S[~y], w_neg[0])])
    ry = np.concatenate([np.ones(3, int), np.zeros(4, int)])
    curve = roc_curve(ry, rs)
    expected = tpr_at_fpr(curve.fpr, curve.tpr, grid)
    np.testing.assert_allclose(band.tpr_low, expected)
    np.testing.assert_allclose(band.tpr_high, expected)
    observed = roc_curve(y, TINY_S)
    np.testing.assert_allclose(band.tpr, tpr_at_fpr(observed.fpr, observed.tpr, grid))


def test_roc_band_contains_curve_and_is_exact_under_separation():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(40, int), np.zeros(60, int)]
    s = rng.normal(1.2 * y, 1)
    band = roc_confidence_band(y, s, n_resamples=400, seed=1)
    assert band.to_frame().shape == (101, 4)
    assert np.all(band.tpr_low <= band.tpr + 1e-12) and np.all(band.tpr <= band.tpr_high + 1e-12)
    assert np.all(np.diff(band.tpr_low) >= -1e-12)
    separated = roc_confidence_band([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], n_resamples=50)
    np.testing.assert_array_equal(separated.tpr_low, np.ones(101))


def test_roc_summary_of_the_tiny_example_by_hand():
    summary = roc_summary(TINY_Y, TINY_S, band=False)
    np.testing.assert_allclose(summary.fpr, [0, 0, 0.25, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(summary.tpr, [0, 1 / 3, 2 / 3, 1, 1, 1, 1])
    assert summary.auc.auc == pytest.approx(0.875) and summary.auc.variance == pytest.approx(1 / 48)
    assert "logit" in summary.auc.method
    assert summary.band is None and not summary.constant_score


def test_roc_summary_band_is_the_seeded_band_of_each_model():
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(30, int), np.zeros(45, int)]
    strong, weak = rng.normal(1.2 * y, 1), rng.normal(0.4 * y, 1)
    summary = roc_summary(y, strong, level=0.9, n_resamples=300, seed=4)
    assert summary.auc == auc_delong(y, strong, level=0.9)
    band = roc_confidence_band(y, strong, n_resamples=300, level=0.9, seed=4)
    np.testing.assert_array_equal(summary.band.tpr_low, band.tpr_low)
    np.testing.assert_array_equal(summary.band.tpr_high, band.tpr_high)
    assert (summary.band.level, summary.band.n_resamples, summary.band.seed) == (0.9, 300, 4)
    # An integer seed starts a fresh generator per model: summarising another model first changes nothing.
    roc_summary(y, weak, n_resamples=300, seed=4)
    again = roc_summary(y, strong, level=0.9, n_resamples=300, seed=4)
    np.testing.assert_array_equal(again.band.tpr_low, band.tpr_low)


def test_roc_summary_of_a_constant_score():
    summary = roc_summary(TINY_Y, np.full(TINY_Y.size, 0.3), n_resamples=20)
    assert summary.constant_score
    np.testing.assert_allclose(summary.fpr, [0, 1])
    np.testing.assert_allclose(summary.tpr, [0, 1])
    assert summary.auc.auc == 0.5


def test_accumulating_metric_matches_function():
    metric = ROCAUCMetric()
    metric.update(TINY_Y[:3], TINY_S[:3])
    metric.update(TINY_Y[3:], TINY_S[3:])
    assert metric.aggregate() == auc_delong(TINY_Y, TINY_S)
    metric.reset()
    with pytest.raises(ValueError, match="no data"):
        metric.aggregate()


# ---------------------------------------------------------------------------------------------
# Subgroup and seed tables
# ---------------------------------------------------------------------------------------------


def test_metrics_by_group_table():
    preds = pd.DataFrame(
        {
            "center": ["A"] * 7 + ["B"] * 3,
            "y_true": ["m", "m", "m", "b", "b", "b", "b", "m", "b", "b"],
            "y_score": [*TINY_S, 0.5, 0.4, 0.3],
        }
    )
    table = metrics_by_group(preds, "center", positive_label="m")
    a = table.set_index("center").loc["A"]
    assert (a["n"], a["n_pos"], a["n_neg"]) == (7, 3, 4)
    assert a["auc"] == pytest.approx(0.875) and a["se"] == pytest.approx(np.sqrt(1 / 48))
    b = table.set_index("center").loc["B"]
    assert np.isnan(b["auc"]) and "fewer than 2" in b["note"]
    with pytest.raises(ValueError, match="lacks the column"):
        metrics_by_group(preds, "site")


def test_aggregate_seeds_mean_sd_next_to_per_seed_ci():
    per_seed = pd.DataFrame(
        {
            "center": ["A", "A", "A", "B"],
            "seed": [0, 1, 2, 0],
            "auc": [0.80, 0.84, 0.82, 0.7],
            "ci_low": [0.70, 0.75, 0.72, 0.6],
            "ci_high": [0.88, 0.91, 0.90, 0.8],
        }
    )
    out = aggregate_seeds(per_seed, by="center").set_index("center")
    assert out.loc["A", "mean"] == pytest.approx(0.82)
    assert out.loc["A", "sd"] == pytest.approx(0.02)  # deviations -0.02, 0.02, 0 -> sqrt(0.0008 / 2)
    assert out.loc["A", "summary"] == "0.820 +- 0.020 (3 seeds)"
    assert out.loc["A", "per_seed"].startswith("seed 0: 0.800 [0.700, 0.880]; seed 1: 0.840")
    assert out.loc["B", "n_seeds"] == 1 and np.isnan(out.loc["B", "sd"])
    with pytest.raises(ValueError, match="more than once"):
        aggregate_seeds(pd.concat([per_seed, per_seed]), by="center")


# ---------------------------------------------------------------------------------------------
# Coverage on simulated binormal data with known AUC
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_delong_and_bootstrap_intervals_cover_the_true_auc():
    true_auc, n_pos, n_neg, reps = 0.75, 80, 120, 1000
    shift = np.sqrt(2) * stats.norm.ppf(true_auc)  # binormal, equal variances: AUC = Phi(shift / sqrt 2)
    rng = np.random.default_rng(2024)
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    hits = {"logit": 0, "plain": 0, "bootstrap": 0}
    for _ in range(reps):
        s = np.r_[rng.normal(shift, 1, n_pos), rng.normal(0, 1, n_neg)]
        for scale in ("logit", "plain"):
            res = auc_delong(y, s, scale=scale)
            hits[scale] += res.ci_low <= true_auc <= res.ci_high
        boot = auc_bootstrap(y, s, n_resamples=500, seed=rng)
        hits["bootstrap"] += boot.ci_low <= true_auc <= boot.ci_high
    coverage = {k: v / reps for k, v in hits.items()}
    assert all(0.93 <= c <= 0.97 for c in coverage.values()), coverage
