from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diffkd_study.methods.diffkd.diffusion.quality import (
    EXTRACTORS,
    ImageSet,
    compare_to_floor,
    fidelity_table,
    group_fidelity,
    memorization_table,
    seeded_subset,
    stratified_subset,
)
from diffkd_study.metrics.fidelity import fidelity_from_features, memorization_audit
from tests.unit.metrics.test_fidelity import smooth_images


def image_set(name: str, n: int, shift: float, seed: int, **columns) -> ImageSet:
    """An image set whose features are given (no network runs): Gaussian clouds shifted by ``shift``."""
    r = np.random.default_rng(seed)
    features = {extractor: r.normal(shift, 1.0, (n, 6)) for extractor in EXTRACTORS.values()}
    frame = pd.DataFrame({"image_id": [f"{name}{i}" for i in range(n)], **columns})
    return ImageSet(name, np.zeros((n, 8, 8), np.uint8), frame, features=features)


def test_seeded_and_stratified_subsets():
    a = seeded_subset(10, 4, 0, "x")
    assert len(set(a)) == 4 and list(a) == sorted(a) and np.array_equal(a, seeded_subset(10, 4, 0, "x"))
    assert not np.array_equal(a, seeded_subset(10, 4, 0, "y"))
    with pytest.raises(ValueError, match="cannot draw 11 of 10"):
        seeded_subset(10, 11, 0)
    labels = ["a"] * 5 + ["b"] * 2
    rows = stratified_subset(labels, 6, seed=1)  # round robin a, b, a, b, then only a is left: a, a
    assert [labels[i] for i in rows].count("a") == 4 and [labels[i] for i in rows].count("b") == 2
    assert len(stratified_subset(labels, 20, seed=1)) == 7


def test_fidelity_table_has_a_row_per_set_and_extractor_with_sizes():
    reference = image_set("ref", 12, 0.0, 0)
    candidates = {"near": image_set("near", 10, 0.0, 1), "far": image_set("far", 10, 3.0, 2)}
    table = fidelity_table(candidates, reference, kid_subsets=10)
    assert len(table) == 4 and set(table["extractor"]) == set(EXTRACTORS)
    assert (table["n_generated"] == 10).all() and (table["n_real"] == 12).all()
    inception = table[table["extractor"] == "TF-Inception (pool3)"].set_index("set")
    expected = fidelity_from_features(candidates["far"].features["tf-inception-fidhelper"],
                                      reference.features["tf-inception-fidhelper"], kid_subsets=10)
    assert inception.loc["far", "fid"] == pytest.approx(expected["fid"])
    assert inception.loc["far", "kid_ci_low"] == pytest.approx(expected["kid_ci_low"])
    assert (table["kid_subset_size"] == 5).all()  # at most half of each set: min(10 // 2, 12 // 2)
    assert inception.loc["far", "fid"] > inception.loc["near", "fid"]


def test_compare_to_floor_subtracts_the_floor():
    table = pd.DataFrame([
        {"set": "synthetic", "extractor": "e", "n_generated": 5, "n_real": 7, "fid": 30.0, "kid_mean": 0.05,
         "kid_ci_low": 0.03, "kid_ci_high": 0.08, "kid_std": 0.01},
        {"set": "real training (floor)", "extractor": "e", "n_generated": 5, "n_real": 7, "fid": 12.5,
         "kid_mean": 0.01, "kid_ci_low": -0.01, "kid_ci_high": 0.02, "kid_std": 0.002}])
    row = compare_to_floor(table).iloc[0]
    assert (row["n"], row["n_reference"], row["FID"], row["FID floor"], row["FID - floor"]) == (5, 7, 30.0, 12.5, 17.5)
    assert (row["KID"], row["KID CI low"], row["KID CI high"], row["KID floor"]) == (0.05, 0.03, 0.08, 0.01)
    assert (row["KID floor CI low"], row["KID floor CI high"]) == (-0.01, 0.02) and "KID SD" not in row


def test_group_fidelity_uses_equal_sizes_and_lists_small_groups():
    synthetic = image_set("syn", 14, 0.5, 0, label=["benign"] * 9 + ["malignant"] * 5)
    training = image_set("train", 20, 0.0, 1, label=["benign"] * 12 + ["malignant"] * 8)
    reference = image_set("ref", 16, 0.0, 2, label=["benign"] * 10 + ["malignant"] * 6)
    table, skipped = group_fidelity(synthetic, training, reference, by="label", min_group_size=6, kid_subsets=5)
    assert set(table["label"]) == {"benign"}
    assert (table["n_generated"] == 9).all() and (table["n_real"] == 10).all()  # min(9 synthetic, 12 training)
    assert skipped == ["malignant (synthetic 5, training 8, reference 6)"]


def test_memorization_table_names_the_nearest_training_image():
    r = np.random.default_rng(0)
    training_images = smooth_images(6, 16, seed=3)
    synthetic_images = np.concatenate([r.integers(0, 256, (2, 16, 16), dtype=np.uint8), training_images[4:5]])
    training = ImageSet("train", training_images, pd.DataFrame({"image_id": [f"t{i}" for i in range(6)]}))
    synthetic = ImageSet("syn", synthetic_images, pd.DataFrame({"image_id": ["s0", "s1", "s2"],
                                                                "source_image_id": ["t0", "t1", "t4"]}))
    audit = memorization_audit(synthetic_images, training_images, extractor=None, pixel_size=16)
    table = memorization_table(audit, synthetic, training)
    assert table["flagged"].tolist() == [False, False, True]
    assert table.loc[2, "nearest_pixel_image_id"] == "t4" and table.loc[2, "pixel_distance"] == pytest.approx(0, abs=1e-9)
    assert table["nearest_pixel_is_source"].tolist()[2] and table["pixel_threshold"].nunique() == 1
    assert "feature_distance" not in table.columns  # pixel space only
