"""Classifier two-sample test: AUC ~0.5 on two halves of one set, ~1 on a planted shortcut, per-class rows that are
not estimable when a side is too small, and grouped folds that a per-group cue cannot exploit.

Tolerance of the null tests: 0.5 +- 0.20. Over seeds 0-29 of the simulated cohort below (40 patients x 4 images,
halves by patient) the AUC had mean 0.489 and SD 0.056 (30 of 30 clustered 95% CIs covered 0.5); over seeds 0-19
of the per-group-pattern data, mean 0.513 and SD 0.085 (19 of 20 covered 0.5). So 0.20 is 2.3-3.6 SD; the seed is
fixed, so the tests are deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from diffkd_study.metrics.two_sample import (
    TwoSampleResult,
    _splits,
    c2st_features,
    c2st_images,
    channel_range,
    image_feature_names,
    image_features,
    two_sample_table,
)

NULL_TOLERANCE = 0.20


def _cohort(rng: np.random.Generator, patients: int, per_patient: int, size: int = 32):
    """Textured gray images on 3 channels: each patient its own smoothness and brightness (patients differ,
    images of a patient resemble each other)."""
    images, groups = [], []
    for p in range(patients):
        sigma, brightness = rng.uniform(0.8, 2.5), rng.uniform(0.3, 0.6)
        for _ in range(per_patient):
            texture = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma)
            images.append(np.repeat((brightness + 0.15 * texture / texture.std())[None], 3, axis=0))
            groups.append(f"p{p}")
    return np.asarray(images, dtype=np.float32), np.asarray(groups)


def _halves(seed: int = 0):
    x, groups = _cohort(np.random.default_rng(seed), 40, 4)
    first = np.isin(groups, [f"p{p}" for p in range(20)])
    return x, groups, first


def _low_resolution(x: np.ndarray) -> np.ndarray:
    """Downsampled 2x (area) then upsampled 2x (nearest): the lost resolution of a low-resolution generator."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5)).repeat(2, axis=2).repeat(2, axis=3)


def _blurred(x: np.ndarray) -> np.ndarray:
    """A Gaussian blur (SD 1 pixel) of every channel: a generator that misses fine speckle."""
    return ndimage.gaussian_filter(x, sigma=(0, 0, 1, 1))


def test_two_halves_of_one_real_set_give_an_auc_near_one_half():
    x, groups, first = _halves()
    (result,) = c2st_images(x[first], x[~first], groups[first], groups[~first])
    assert (result.scope, result.n_a, result.n_b, result.groups_a, result.groups_b) == ("all", 80, 80, 20, 20)
    assert result.folds == 5 and len(result.c_chosen) == 5 and "Obuchowski" in result.ci_method
    assert abs(result.auc - 0.5) <= NULL_TOLERANCE and result.ci_low < 0.5 < result.ci_high
    assert result.verdict().startswith("met")


@pytest.mark.parametrize("shortcut", ["blur", "low resolution", "black border"])
def test_a_planted_shortcut_is_found(shortcut):
    x, groups, first = _halves()
    synthetic = {"blur": _blurred, "low resolution": _low_resolution, "black border": np.copy}[shortcut](x)
    if shortcut == "black border":
        synthetic[:, :, :3, :] = x.min()
    (result,) = c2st_images(x[first], synthetic[~first], groups[first], groups[~first])
    assert result.auc > 0.95 and result.ci_low > 0.70
    assert result.verdict().startswith("not met") and "CI lower bound" in result.verdict() and "above" in result.verdict()


def test_per_class_rows_and_a_class_too_small_is_not_estimable():
    x, groups, first = _halves()
    labels = np.where(np.char.startswith(groups, "p1"), "malignant", "benign")  # p1, p10-p19 in A
    real, synthetic = first, ~first
    synthetic_labels = labels[synthetic].copy()
    synthetic_labels[:3] = "malignant"  # B has only 3 malignant images (one patient), the rest benign
    synthetic_labels[3:] = "benign"
    results = c2st_images(x[real], x[synthetic], groups[real], groups[synthetic],
                          labels_a=labels[real], labels_b=synthetic_labels, c=0.1)
    by_scope = {r.scope: r for r in results}
    assert list(by_scope) == ["all", "class=benign", "class=malignant"]
    small = by_scope["class=malignant"]
    assert (small.n_a, small.n_b, small.groups_b) == (44, 3, 1)
    assert not small.estimable and np.isnan(small.auc) and np.isnan(small.ci_low) and small.folds == 0
    assert "B has 3 images / 1 groups" in small.reason and small.verdict().startswith("not estimable")
    assert by_scope["class=benign"].estimable and by_scope["class=benign"].n_b == 77
    table = two_sample_table(results)
    assert list(table["scope"]) == list(by_scope) and table.loc[2, "verdict"].startswith("not estimable")
    assert np.isnan(table.loc[2, "auc"]) and table.loc[0, "reason"] == ""


def _group_patterns(rng: np.random.Generator, n_groups: int = 40, per_group: int = 4):
    """Each group's images share a unique smooth random pattern; odd groups form set B. A and B differ only by
    which groups they hold, so a classifier can separate them only by recognising groups it was trained on."""
    images, groups, in_b = [], [], []
    for g in range(n_groups):
        pattern = ndimage.zoom(rng.normal(size=(8, 8)), 4, order=1)
        for _ in range(per_group):
            image = 0.5 + 0.2 * pattern + 0.05 * rng.normal(size=(32, 32))
            images.append(np.repeat(image[None], 3, axis=0))
            groups.append(f"g{g}")
            in_b.append(g % 2 == 1)
    return np.asarray(images), np.asarray(groups), np.asarray(in_b)


def test_grouped_folds_cannot_exploit_a_per_group_cue_that_a_leaky_split_would():
    x, groups, in_b = _group_patterns(np.random.default_rng(0))
    (grouped,) = c2st_images(x[~in_b], x[in_b], groups[~in_b], groups[in_b])
    assert abs(grouped.auc - 0.5) <= NULL_TOLERANCE and grouped.ci_low < 0.5 < grouped.ci_high
    image_ids = np.arange(len(groups)).astype(str)  # every image its own group: the leaky image-level split
    (leaky,) = c2st_images(x[~in_b], x[in_b], image_ids[~in_b], image_ids[in_b])
    assert leaky.auc > 0.9


def test_no_group_is_in_both_a_training_and_a_test_fold():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 30, size=200)
    y = rng.random(200) < 0.3
    splits = _splits(y, codes, 5, seed=0)
    assert splits is not None and len(splits) == 5
    for train, test in splits:
        assert not set(codes[train]) & set(codes[test])
        assert set(y[train]) == {False, True}
    assert sorted(np.concatenate([test for _, test in splits])) == list(range(200))


def test_precomputed_features_unequal_sizes_and_a_fixed_c():
    rng = np.random.default_rng(4)
    groups_a, groups_b = np.repeat(np.arange(60), 3).astype(str), np.repeat(np.arange(60, 80), 3).astype(str)
    a, b = rng.normal(size=(180, 8)), rng.normal(size=(60, 8))  # 3:1 sizes, same distribution
    (null,) = c2st_features(a, b, groups_a, groups_b, c=0.5)
    assert null.c_chosen == (0.5,) * 5 and abs(null.auc - 0.5) <= NULL_TOLERANCE and null.ci_low < 0.5 < null.ci_high
    (shifted,) = c2st_features(a, b + np.r_[1.5, np.zeros(7)], groups_a, groups_b, c=0.5)
    assert shifted.auc > 0.8 and shifted.ci_low > 0.5


def test_image_features_capture_borders_blur_and_accept_torch_tensors():
    x, _, _ = _halves()
    x = x[:8]
    bordered = x.copy()
    bordered[:, :, :4, :] = x.min()  # padding at the darkest value of the sets ("exactly black")
    value_range = channel_range(x, bordered)
    names = image_feature_names(3)
    plain, border = (image_features(v, value_range) for v in (x, bordered))
    assert plain.shape == (8, len(names)) and np.isfinite(plain).all()
    black = names.index("black_fraction")
    assert (border[:, black] >= 4 / 32).all() and (border[:, black] < 4 / 32 + 0.01).all()
    assert (plain[:, black] < 0.01).all()  # at most the darkest pixel itself
    noise = np.random.default_rng(5).normal(0.5, 0.1, size=(8, 3, 32, 32))  # white: power at every frequency
    sharp, soft = (image_features(v, channel_range(noise)) for v in (noise, _blurred(noise)))
    top = names.index("spectrum_15")
    assert (soft[:, top] < sharp[:, top] - 2).all()  # a 1-pixel blur takes > 99% of the highest band's power
    assert np.allclose(image_features(torch.from_numpy(x), value_range), plain)
    assert np.allclose(image_features(x, value_range, chunk=3), plain)


def test_bad_inputs_are_refused():
    a, b = np.zeros((20, 4)), np.zeros((20, 4))
    ids = np.arange(20).astype(str)
    with pytest.raises(ValueError, match="same columns"):
        c2st_features(a, np.zeros((20, 3)), ids, ids)
    with pytest.raises(ValueError, match="one per row"):
        c2st_features(a, b, ids[:5], ids)
    with pytest.raises(ValueError, match="both sets or for neither"):
        c2st_features(a, b, ids, ids, labels_a=np.zeros(20))
    with pytest.raises(ValueError, match="N x C x H x W"):
        image_features(np.zeros((4, 32, 32)))


def test_verdict_says_whether_the_interval_clears_the_goal():
    base = dict(scope="all", n_a=50, n_b=50, groups_a=10, groups_b=10, folds=5)
    assert "upper bound 0.650 below" in TwoSampleResult(**base, auc=0.55, ci_low=0.45, ci_high=0.65).verdict()
    assert "upper bound 0.780 not below" in TwoSampleResult(**base, auc=0.66, ci_low=0.55, ci_high=0.78).verdict()
    assert TwoSampleResult(**base, auc=0.66, ci_low=0.55, ci_high=0.78).verdict(0.6).startswith("not met")
