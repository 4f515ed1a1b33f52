"""Baselines: exact image features on drawn shapes, condition encoding, train-only fitting, val-only selection."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from diffkd_study.data.schema import ConditionSpec, Manifest, ManifestSchema
from diffkd_study.eval.baselines import (
    ConditionEncoder,
    MissingMaskError,
    best_by_validation,
    birads_ordinal,
    fit_baseline,
    image_feature_table,
    lesion_features,
    run_baselines,
)


@pytest.mark.parametrize("value, expected", [("3", 3.0), ("4a", 4.25), ("4B", 4.5), ("4c", 4.75), (5, 5.0), ("5.0", 5.0)])
def test_birads_ordinal(value, expected):
    assert birads_ordinal(value) == expected


def test_birads_ordinal_missing_and_bad():
    assert math.isnan(birads_ordinal(None)) and math.isnan(birads_ordinal(float("nan")))
    with pytest.raises(ValueError, match="BI-RADS value 'x'"):
        birads_ordinal("x")


def test_lesion_features_of_a_drawn_rectangle():
    image = np.full((40, 40), 0.8)
    mask = np.zeros((40, 40), bool)
    mask[10:20, 15:25] = True  # 10 x 10 square
    image[mask] = 0.2
    image[20:30, 15:25] = 0.5  # darker band below the lesion: shadowing
    f = lesion_features(image, mask)
    assert f["lesion_mean"] == pytest.approx(0.2) and f["lesion_sd"] == pytest.approx(0.0)
    assert f["area_fraction"] == pytest.approx(100 / 1600)
    assert f["height_width_ratio"] == 1.0
    assert f["compactness"] == pytest.approx(36**2 / 100)  # 36 boundary pixels of a 10 x 10 square
    assert f["posterior_difference"] == pytest.approx(0.5 - 0.8)
    assert f["texture_energy"] == 0.0
    # ring of width 2 px: the two rows below are the 0.5 band, everything else 0.8
    assert 0.5 < f["ring_contrast"] + 0.2 < 0.8


def test_lesion_features_empty_mask_is_nan():
    assert all(math.isnan(v) for v in lesion_features(np.zeros((8, 8)), np.zeros((8, 8))).values())


def _manifest(n: int = 120, seed: int = 0) -> Manifest:
    rng = np.random.default_rng(seed)
    birads = rng.choice(["2", "3", "4", "5"], n)
    risk = 1 / (1 + np.exp(-(birads.astype(float) - 3.5) * 2))
    label = np.where(rng.random(n) < risk, "malignant", "benign")
    split = np.array(["train"] * (n // 2) + ["val"] * (n // 4) + ["test"] * (n - n // 2 - n // 4))
    df = pd.DataFrame({
        "image_id": [f"i{k}" for k in range(n)], "patient_id": [f"p{k}" for k in range(n)], "dataset": "toy",
        "center": np.where(np.arange(n) % 2, "A", "B"), "image_path": [f"{k}.png" for k in range(n)],
        "label": label, "split": split, "cond_birads": birads,
        "cond_age": np.where(rng.random(n) < 0.2, np.nan, rng.normal(55, 10, n).round()),
        "cond_scanner": np.where(np.arange(n) % 2, "S1", "S2"),
    })
    cat = lambda levels: ConditionSpec("categorical", levels=levels)  # noqa: E731
    schema = ManifestSchema("toy", ("benign", "malignant"), positive_class="malignant", conditions={
        "cond_birads": cat(("2", "3", "4", "5")), "cond_age": ConditionSpec("numeric"),
        "cond_scanner": cat(("S1", "S2"))})
    return Manifest(df, schema)


def test_condition_encoder_leaves_out_center_proxies_and_encodes_missing():
    m = _manifest()
    train = m.df[m.df["split"] == "train"]
    enc = ConditionEncoder.fit(m, train)
    assert "cond_scanner" in enc.left_out and "cond_birads" in enc.ordinal and "cond_age" in enc.numeric
    x = enc.transform(pd.DataFrame({"cond_birads": ["4a", None], "cond_age": [np.nan, 60.0]}))
    assert x.shape == (2, 4)
    assert x[0, 1] == 0.0 and x[1, 1] == 1.0  # BI-RADS missing indicator
    assert x[0, 3] == 1.0 and x[0, 2] == 0.0  # age missing: indicator set, value at the mean
    named = ConditionEncoder.fit(m, train, ["cond_scanner"])  # named explicitly: kept
    assert named.categorical == {"cond_scanner": ["S1", "S2"]}
    assert named.transform(pd.DataFrame({"cond_scanner": ["S3"]})).tolist() == [[0.0, 0.0, 0.0]]  # unseen level


def test_clinical_baseline_scores_only_evaluation_rows_and_is_deterministic(tmp_path):
    m = _manifest()
    fit = fit_baseline("clinical", m, seed=1)
    assert set(fit.predictions["split"]) == {"val", "test"}
    assert len(fit.predictions) == len(m.df) - fit.n_train
    assert fit.val_auc > 0.75 and fit.val_auc == max(fit.val_auc_by_c.values())
    again = fit_baseline("clinical", m, seed=1)
    pd.testing.assert_frame_equal(fit.predictions, again.predictions)
    # test labels never influence the fit: flipping them leaves the scores unchanged
    flipped = _manifest()
    test = flipped.df["split"] == "test"
    flipped.df.loc[test, "label"] = flipped.df.loc[test, "label"].map({"benign": "malignant", "malignant": "benign"})
    assert np.allclose(fit_baseline("clinical", flipped, seed=1).predictions["y_score"], fit.predictions["y_score"])


def test_run_baselines_skips_image_features_without_masks_with_reason(tmp_path):
    m = _manifest()
    fits, skipped = run_baselines(m, tmp_path, root=tmp_path)
    assert list(fits) == ["clinical"] and "no mask_path column" in skipped["image_features"]
    assert (tmp_path / "clinical.csv").is_file() and not (tmp_path / "image_features.csv").exists()
    assert best_by_validation(fits) == "clinical"


def test_image_features_need_a_mask_for_every_image(tmp_path):
    m = _manifest()
    m.df["mask_path"] = [f"m{k}.png" for k in range(len(m.df))]
    m.df.loc[3, "mask_path"] = np.nan
    with pytest.raises(MissingMaskError, match=r"1 of 120 image\(s\) have no lesion mask, e.g. \['i3'\]"):
        image_feature_table(m, tmp_path, image_size=32)
