"""Patient-clustered AUC inference (Obuchowski 1997), the cluster bootstrap, Holm and the detectable difference."""

from __future__ import annotations

import numpy as np
import pytest

from diffkd_study.metrics.clustered import (
    check_groups,
    cluster_bootstrap_indices,
    cluster_bootstrap_weights,
    holm_adjust,
    minimal_detectable_difference,
    obuchowski_covariance,
)
from diffkd_study.metrics.coverage import interval_coverage, simulate_clustered_scores
from diffkd_study.metrics.roc import (
    auc_bootstrap,
    auc_delong,
    delong_covariance,
    delong_test,
    newcombe_auc_interval,
)
from diffkd_study.metrics.roc_band import roc_confidence_band, roc_summary


def _data(seed: int = 0, n_patients: int = 60, per: int = 2, rho: float = 0.6):
    return simulate_clustered_scores(np.random.default_rng(seed), n_patients, per, rho)


def _obuchowski_by_hand(y, scores, groups):
    """Obuchowski (1997) written from the paper's definitions, with the psi kernel (no placements, loops)."""
    y = np.asarray(y, bool)
    clusters = sorted(set(groups))
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    n10, n01 = len(pos), len(neg)
    k = len(scores)

    def psi(a, b):
        return 1.0 if a > b else 0.5 if a == b else 0.0

    auc = [sum(psi(s[i], s[j]) for i in pos for j in neg) / (n10 * n01) for s in scores]
    v10 = np.zeros((k, len(clusters)))
    v01 = np.zeros((k, len(clusters)))
    m = np.zeros(len(clusters))
    n = np.zeros(len(clusters))
    for c_index, c in enumerate(clusters):
        members = [i for i in range(len(y)) if groups[i] == c]
        for r, s in enumerate(scores):
            v10[r, c_index] = sum(sum(psi(s[i], s[j]) for j in neg) / n01 for i in members if y[i])
            v01[r, c_index] = sum(sum(psi(s[i], s[j]) for i in pos) / n10 for j in members if not y[j])
        m[c_index] = sum(y[i] for i in members)
        n[c_index] = sum(not y[i] for i in members)
    i10, i01, big_i = (m > 0).sum(), (n > 0).sum(), len(clusters)
    cov = np.zeros((k, k))
    for r in range(k):
        for q in range(k):
            s10 = i10 / ((i10 - 1) * n10) * sum((v10[r, i] - m[i] * auc[r]) * (v10[q, i] - m[i] * auc[q])
                                                 for i in range(big_i))
            s01 = i01 / ((i01 - 1) * n01) * sum((v01[r, i] - n[i] * auc[r]) * (v01[q, i] - n[i] * auc[q])
                                                 for i in range(big_i))
            s11 = big_i / (big_i - 1) * sum((v10[r, i] - m[i] * auc[r]) * (v01[q, i] - n[i] * auc[q])
                                            for i in range(big_i))
            s11t = big_i / (big_i - 1) * sum((v10[q, i] - m[i] * auc[q]) * (v01[r, i] - n[i] * auc[r])
                                             for i in range(big_i))
            cov[r, q] = s10 / n10 + s01 / n01 + (s11 + s11t) / (n10 * n01)
    return np.array(auc), cov


def test_obuchowski_equals_the_papers_formula_written_by_hand():
    y, a, b, patient = _data(n_patients=25, per=3)
    b = np.round(b, 1)  # ties
    comp = delong_covariance(y, a, b, groups=patient)
    auc, cov = _obuchowski_by_hand(y, [a, b], list(patient))
    np.testing.assert_allclose(comp.auc, auc, atol=1e-12)
    np.testing.assert_allclose(comp.covariance, cov, atol=1e-12)
    assert comp.n_clusters == 25


def test_singleton_groups_equal_delong_to_1e12():
    y, a, b, _ = _data(seed=3, n_patients=150, per=1)
    ids = [f"patient-{i}" for i in range(y.size)]
    single, clustered = auc_delong(y, a), auc_delong(y, a, groups=ids)
    assert abs(single.variance - clustered.variance) < 1e-12
    assert abs(single.ci_low - clustered.ci_low) < 1e-12 and abs(single.ci_high - clustered.ci_high) < 1e-12
    assert clustered.n_clusters == 150 and single.n_clusters is None
    paired, paired_clustered = delong_test(y, a, b), delong_test(y, a, b, groups=ids)
    assert abs(paired.se - paired_clustered.se) < 1e-12
    assert abs(paired.p_value - paired_clustered.p_value) < 1e-12
    assert paired_clustered.method == "Obuchowski clustered paired"


def test_duplicated_images_do_not_shrink_the_clustered_interval():
    """Every image twice: per image the SE shrinks by about 1/sqrt(2); per patient it is that of the original."""
    y, a, _, _ = _data(seed=5, n_patients=120, per=1)
    yy, aa, g = np.repeat(y, 2), np.repeat(a, 2), np.repeat(np.arange(y.size), 2)
    original = auc_delong(y, a).se
    assert auc_delong(yy, aa).se == pytest.approx(original / np.sqrt(2), rel=0.02)
    assert auc_delong(yy, aa, groups=g).se == pytest.approx(original, rel=1e-9)
    boot = auc_bootstrap(yy, aa, n_resamples=3000, seed=1, groups=g)
    assert boot.se == pytest.approx(original, rel=0.1)
    assert "patient-cluster bootstrap" in boot.method and boot.n_clusters == y.size


def test_clustered_variance_needs_two_patients_per_class():
    y = np.array([1, 1, 0, 0, 0])
    with pytest.raises(ValueError, match="not estimable"):
        auc_delong(y, [0.9, 0.8, 0.1, 0.2, 0.3], groups=["a", "a", "b", "c", "d"])


def test_groups_must_name_every_image():
    with pytest.raises(ValueError, match="has no patient id"):
        check_groups(["a", None, "b"], 3)
    with pytest.raises(ValueError, match="3 labels for 4 images"):
        check_groups(["a", "b", "c"], 4)


def test_perfect_separation_gives_a_non_degenerate_interval():
    """Old behaviour: AUC 1 with DeLong variance 0 gave the interval [1, 1]."""
    res = auc_delong([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert res.auc == 1.0 and res.ci_high == 1.0 and 0.3 < res.ci_low < 0.95
    assert "Newcombe" in res.method
    low, high = newcombe_auc_interval(0.0, 10, 10)
    assert low == 0.0 and 0.05 < high < 0.5
    # away from the bounds Newcombe's interval brackets the estimate
    low, high = newcombe_auc_interval(0.8, 40, 60)
    assert low < 0.8 < high


def test_cluster_bootstrap_indices_keep_patients_whole():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    for rows in cluster_bootstrap_indices(groups, 50, seed=0):
        drawn = groups[rows]
        for g in "abc":
            assert (drawn == g).sum() % (groups == g).sum() == 0
    strata = np.array(["x", "x", "y", "y", "y", "y"])
    for rows in cluster_bootstrap_indices(groups, 20, seed=1, strata=strata):
        assert (strata[rows] == "x").sum() == 2  # one x-cluster drawn once: whole cluster a
    with pytest.raises(ValueError, match="mixes strata"):
        next(cluster_bootstrap_indices(groups, 1, strata=["x", "y", "y", "y", "y", "y"]))


def test_cluster_bootstrap_weights_resample_whole_lesions():
    groups = np.array(["b", "a", "a", "c", "b", "b"])
    weights = cluster_bootstrap_weights(groups, 6, 50, np.random.default_rng(3))
    assert weights.shape == (50, 6)
    # images of one lesion share their weight; each resample draws 3 lesions
    assert (weights[:, 1] == weights[:, 2]).all() and (weights[:, 0] == weights[:, 4]).all()
    assert (weights[:, [1, 0, 3]].sum(axis=1) == 3).all()
    assert np.array_equal(weights, cluster_bootstrap_weights(groups, 6, 50, np.random.default_rng(3)))


def test_holm_matches_the_step_down_definition():
    p = [0.01, 0.04, 0.03, np.nan, 0.005]
    adjusted = holm_adjust(p)
    np.testing.assert_allclose(adjusted[[4, 0, 2, 1]], [0.02, 0.03, 0.06, 0.06])
    assert np.isnan(adjusted[3])
    with pytest.raises(ValueError):
        holm_adjust([1.2])


def test_minimal_detectable_difference():
    assert minimal_detectable_difference(0.01) == pytest.approx(0.0280, abs=1e-4)
    assert np.isnan(minimal_detectable_difference(float("nan")))
    y, a, b, patient = _data()
    test = delong_test(y, a, b, groups=patient)
    assert test.minimal_detectable_difference == pytest.approx(2.8016 * test.se, rel=1e-4)


def test_obuchowski_function_direct():
    y, a, _, patient = _data(seed=9)
    comp = delong_covariance(y, a)
    cov, n_clusters = obuchowski_covariance(y, comp.positive_placements, comp.negative_placements, comp.auc, patient)
    assert n_clusters == 60 and cov.shape == (1, 1) and cov[0, 0] > 0


@pytest.mark.slow
@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_clustered_intervals_hold_their_level(rho):
    """Acceptance of issue 23: 2 images per patient, within-patient correlation 0.5 and 0.8: the clustered
    single and paired 95% intervals cover 93-97%, the per-image ones less."""
    res = interval_coverage(n_patients=100, images_per_patient=2, rho=rho, n_replicates=1000, seed=11)
    assert 0.93 <= res.single_clustered <= 0.97
    assert 0.93 <= res.paired_clustered <= 0.97
    assert res.single_per_image < 0.925 and res.paired_per_image < 0.925


def test_clustered_roc_band_resamples_whole_patients():
    """Every image twice: the per-image band narrows by about 1/sqrt(2); the patient-clustered one does not."""
    y, a, _, _ = _data(seed=7, n_patients=120, per=1)
    yy, aa, g = np.repeat(y, 2), np.repeat(a, 2), np.repeat(np.arange(y.size), 2)
    original = roc_confidence_band(y, a, n_resamples=400, seed=2)
    per_image = roc_confidence_band(yy, aa, n_resamples=400, seed=2)
    clustered = roc_confidence_band(yy, aa, n_resamples=400, seed=2, groups=g)
    width = {name: float(np.mean(b.tpr_high - b.tpr_low)) for name, b in
             (("original", original), ("per_image", per_image), ("clustered", clustered))}
    assert width["per_image"] < 0.8 * width["original"]
    assert width["clustered"] == pytest.approx(width["original"], rel=0.15)
    summary = roc_summary(yy, aa, n_resamples=100, groups=g)
    assert summary.auc.n_clusters == y.size and summary.band is not None
