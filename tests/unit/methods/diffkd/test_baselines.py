"""Baselines: exact image features on drawn shapes, condition encoding, train-only fitting, val-only selection."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from diffkd_study.data.schema import ConditionSpec, Manifest, ManifestSchema
from diffkd_study.methods.diffkd.baselines import (
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
    with pytest.raises(MissingMaskError, match=r"1 of 90 training or validation image\(s\) have no lesion mask, "
                                               r"e.g. \['i3'\]"):
        image_feature_table(m, tmp_path, image_size=32)


def _with_external_centers(m: Manifest) -> Manifest:
    """Center C records every condition, E records age only, D (a dataset that released none) nothing."""
    test = m.df[m.df["split"] == "test"]
    parts = [m.df]
    for center in ("C", "D", "E"):
        rows = test.assign(center=center, split="external", image_id=center + test["image_id"],
                           patient_id=center + test["patient_id"])
        if center == "D":
            rows[[c for c in rows.columns if c.startswith("cond_")]] = np.nan
        if center == "E":
            rows["cond_birads"] = np.nan
        parts.append(rows)
    return Manifest(pd.concat(parts, ignore_index=True), m.schema)


def test_clinical_baseline_is_not_applicable_where_no_condition_is_recorded():
    m = _with_external_centers(_manifest())
    fit = fit_baseline("clinical", m, seed=1)
    assert set(fit.not_applicable) == {"external: D"}
    assert fit.not_applicable["external: D"] == ("no condition it uses (cond_birads, cond_age) is recorded for any of "
                                                 "the 30 images of this test set")
    assert set(fit.predictions["center"]) == {"A", "B", "C", "E"}  # no row for D, rather than one constant guess
    assert fit.summary()["not_applicable"] == fit.not_applicable
    assert "external: E: cond_birads never recorded (encoded as missing for all 30 images)" in fit.notes
    # the internal test set records everything: no note about it
    assert not [n for n in fit.notes if n.startswith("internal test")]
    # E: BI-RADS is encoded as missing, age still separates the images: not one constant score
    assert fit.predictions.loc[fit.predictions["center"] == "E", "y_score"].nunique() > 1


def test_clinical_notes_the_images_that_record_no_condition():
    m = _with_external_centers(_manifest())
    bare = m.df.index[m.df["center"] == "C"][:3]
    m.df.loc[bare, ["cond_birads", "cond_age", "cond_scanner"]] = np.nan
    fit = fit_baseline("clinical", m, seed=1)
    assert ("external: C: 3 of 30 images record none of its conditions (scored as a case with every condition "
            "missing)") in fit.notes
    assert (fit.predictions["center"] == "C").sum() == 30


def _write_images(m: Manifest, root, masked) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    mask = np.zeros((16, 16), np.uint8)
    mask[5:11, 4:12] = 255
    m.df["image_path"] = [f"img/{i}.png" for i in m.df["image_id"]]
    m.df["mask_path"] = [f"mask/{i}.png" if keep else np.nan for i, keep in zip(m.df["image_id"], masked, strict=True)]
    (root / "img").mkdir()
    (root / "mask").mkdir()
    for image_id, label in zip(m.df["image_id"], m.df["label"], strict=True):
        pixels = rng.integers(60, 200, (16, 16)).astype(np.uint8)
        pixels[mask > 0] = 40 if label == "malignant" else 120
        Image.fromarray(pixels).save(root / "img" / f"{image_id}.png")
        Image.fromarray(mask).save(root / "mask" / f"{image_id}.png")


def test_image_features_are_not_applicable_on_a_test_set_without_masks(tmp_path):
    m = _with_external_centers(_manifest())
    _write_images(m, tmp_path, masked=(m.df["center"] != "D") & (m.df["image_id"] != "Ei100"))
    fit = fit_baseline("image_features", m, root=tmp_path, image_size=16, cache_dir=tmp_path / "cache", seed=0)
    assert fit.not_applicable == {
        "external: D": "30 of 30 images of this test set have no lesion mask (the image features need one for every image)",
        "external: E": "1 of 30 images of this test set have no lesion mask (the image features need one for every image)",
    }
    assert set(fit.predictions["center"]) == {"A", "B", "C"}


def test_read_not_applicable_from_the_stage_summary(tmp_path):
    from diffkd_study.io import write_json
    from diffkd_study.methods.diffkd.baselines import SUMMARY_FILE, read_not_applicable

    assert read_not_applicable(tmp_path) == {}
    write_json(tmp_path / SUMMARY_FILE, {"best_model": "clinical", "not_applicable": {"clinical": {"external: D": "why"}}})
    assert read_not_applicable(tmp_path) == {"clinical": {"external: D": "why"}}
    write_json(tmp_path / SUMMARY_FILE, {"best_model": "clinical"})  # written before the record existed
    assert read_not_applicable(tmp_path) == {}
