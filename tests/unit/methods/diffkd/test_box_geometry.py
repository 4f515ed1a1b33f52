"""Box-geometry baseline: exact features at native resolution, planted fits, the reference beside every model."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffkd_study.data.cache import Preprocessing, lesion_window, load_mask
from diffkd_study.data.schema import Manifest, ManifestSchema
from diffkd_study.methods.diffkd.baselines import (
    MissingMaskError,
    best_by_validation,
    fit_baseline,
    run_baselines,
)
from diffkd_study.methods.diffkd.box_geometry import (
    BESIDE_COLUMNS,
    box_features,
    box_geometry_reference,
    box_geometry_table,
    window_outside_fraction,
    with_box_geometry,
)
from diffkd_study.methods.diffkd.comparisons import paired_scores, paired_test_row
from diffkd_study.metrics.roc import roc_auc


def test_aspect_ratio_is_measured_at_native_resolution_not_on_the_stretched_cache(tmp_path):
    mask = np.zeros((100, 300), np.uint8)  # a wide image: stretching it to a square shrinks widths 3x
    mask[30:70, 100:120] = 255  # box 40 rows x 20 columns: twice as tall as wide
    Image.fromarray(mask).save(tmp_path / "m.png")
    Image.fromarray(np.zeros((100, 300), np.uint8)).save(tmp_path / "i.png")
    df = pd.DataFrame({"image_id": ["a"], "patient_id": ["p"], "dataset": "toy", "center": "A",
                       "image_path": ["i.png"], "mask_path": ["m.png"], "label": ["benign"]})
    table = box_geometry_table(Manifest(df, ManifestSchema("toy", ("benign", "malignant"))), tmp_path)
    f = table.loc["a"]
    assert f["log_height_width"] == pytest.approx(math.log(2))
    assert f["log_area_fraction"] == pytest.approx(math.log(40 * 20 / (100 * 300)))
    assert f["long_side_fraction"] == pytest.approx(40 / 100)
    # what the resized (stretched) cache would have said: a lesion 6 times taller than wide
    stretched = box_features(load_mask(tmp_path / "m.png", Preprocessing.make(60)))
    assert stretched["log_height_width"] == pytest.approx(math.log(24 / 4))


def test_outside_fraction_of_a_lesion_in_the_corner_is_exact():
    mask = np.zeros((20, 30), bool)
    mask[0:4, 0:4] = True  # 4 x 4 box in the top-left corner
    # margin 0.25: sides 4 * 1.5 = 6 centred on (2, 2) -> window (-1, -1, 5, 5): 25 of its 36 pixels inside
    assert lesion_window(mask, 0.25) == (-1, -1, 5, 5)
    assert box_features(mask, 0.25)["window_outside_fraction"] == pytest.approx(11 / 36)
    # margin 0.5: sides 8 -> window (-2, -2, 6, 6): 36 of 64 inside
    assert box_features(mask, 0.5)["window_outside_fraction"] == pytest.approx(28 / 64)
    centred = np.zeros((20, 30), bool)
    centred[8:12, 13:17] = True
    assert box_features(centred)["window_outside_fraction"] == 0.0
    assert window_outside_fraction((25, 15, 35, 25), 20, 30) == pytest.approx(1 - 25 / 100)
    assert all(math.isnan(v) for v in box_features(np.zeros((5, 5))).values())


def _cohort(tmp_path, n: int, planted: bool, seed: int = 0) -> Manifest:
    """n images of n patients (half train, a quarter val and test); masks drawn in 40 x 60 images: with
    ``planted`` the malignant boxes are taller than wide and the benign ones wider than tall, else the box's
    shape and size are drawn independently of the label."""
    rng = np.random.default_rng(seed)
    label = np.where(np.arange(n) % 2, "malignant", "benign")
    split = np.array(["train"] * (n // 2) + ["val"] * (n // 4) + ["test"] * (n - n // 2 - n // 4))
    (tmp_path / "img").mkdir()
    (tmp_path / "mask").mkdir()
    for k in range(n):
        long, short = rng.integers(10, 20), rng.integers(4, 9)
        tall = label[k] == "malignant" if planted else rng.random() < 0.5
        h, w = (long, short) if tall else (short, long)
        top, left = rng.integers(0, 40 - h), rng.integers(0, 60 - w)
        mask = np.zeros((40, 60), np.uint8)
        mask[top:top + h, left:left + w] = 255
        Image.fromarray(mask).save(tmp_path / "mask" / f"{k}.png")
        Image.fromarray(rng.integers(0, 255, (40, 60)).astype(np.uint8)).save(tmp_path / "img" / f"{k}.png")
    df = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "patient_id": [f"p{k}" for k in range(n)],
                       "dataset": "toy", "center": "A", "image_path": [f"img/{k}.png" for k in range(n)],
                       "mask_path": [f"mask/{k}.png" for k in range(n)], "label": label, "split": split})
    return Manifest(df, ManifestSchema("toy", ("benign", "malignant"), positive_class="malignant"))


def _test_auc(fit) -> float:
    test = fit.predictions[fit.predictions["split"] == "test"]
    return roc_auc(test["y_true"].to_numpy(), test["y_score"].to_numpy())


def test_box_geometry_alone_predicts_a_planted_label(tmp_path):
    fit = fit_baseline("box_geometry", _cohort(tmp_path, 80, planted=True), root=tmp_path, seed=0)
    assert fit.val_auc == pytest.approx(1.0) and _test_auc(fit) == pytest.approx(1.0)
    assert fit.coefficients["log_height_width"] > 0  # taller than wide -> malignant
    assert fit.inputs == ("image_path", "mask_path") and not fit.not_applicable


def test_box_geometry_is_near_chance_when_the_geometry_carries_no_label(tmp_path):
    fit = fit_baseline("box_geometry", _cohort(tmp_path, 400, planted=False), root=tmp_path, seed=0)
    assert abs(_test_auc(fit) - 0.5) < 0.15 and abs(fit.val_auc - 0.5) < 0.15


def test_box_geometry_is_not_applicable_where_a_mask_is_missing(tmp_path):
    m = _cohort(tmp_path, 80, planted=True)
    test = m.df["split"] == "test"
    external = m.df[test].assign(split="external", center="D", image_id=lambda d: "D" + d["image_id"],
                                 patient_id=lambda d: "D" + d["patient_id"])
    external.loc[external.index[0], "mask_path"] = np.nan
    m = Manifest(pd.concat([m.df, external], ignore_index=True), m.schema)
    fit = fit_baseline("box_geometry", m, root=tmp_path, seed=0)
    assert fit.not_applicable == {"external: D": "1 of 20 images of this test set have no lesion mask (the box "
                                                 "geometry needs one for every image)"}
    assert set(fit.predictions["center"]) == {"A"}
    # a training image without a mask: the baseline is skipped with the reason, the others still run
    m.df.loc[0, "mask_path"] = np.nan
    with pytest.raises(MissingMaskError, match=r"1 of 60 training or validation image\(s\) have no lesion mask, e\.g\. "
                                               r"\['i0'\]; the box-geometry baseline needs one"):
        fit_baseline("box_geometry", m, root=tmp_path)
    fits, skipped = run_baselines(m, tmp_path / "out", models=["box_geometry"], root=tmp_path)
    assert not fits and "box-geometry baseline needs one" in skipped["box_geometry"]


def test_box_geometry_is_never_the_best_baseline(tmp_path):
    m = _cohort(tmp_path, 80, planted=True)
    fits = {"box_geometry": fit_baseline("box_geometry", m, root=tmp_path),
            "image_features": fit_baseline("image_features", m, root=tmp_path, image_size=16,
                                           cache_dir=tmp_path / "cache")}
    assert fits["box_geometry"].val_auc >= fits["image_features"].val_auc
    assert best_by_validation(fits) == "image_features"
    assert best_by_validation({"box_geometry": fits["box_geometry"]}) == "box_geometry"  # nothing else fitted


def _tests(seed: int = 0) -> pd.DataFrame:
    """Evaluation rows of a network and the box geometry on two test sets (patients with two images each); the
    box geometry scores no image of the external set."""
    rng = np.random.default_rng(seed)
    frames = []
    for test_set, n in (("internal test", 60), ("external: D", 40)):
        y = rng.random(n) < 0.4
        patients = [f"{test_set}-p{k // 2}" for k in range(n)]
        ids = [f"{test_set}-i{k}" for k in range(n)]
        for model, signal in (("net", 1.5), ("box_geometry", 0.5)):
            if model == "box_geometry" and test_set != "internal test":
                continue
            frames.append(pd.DataFrame({"model": model, "test_set": test_set, "image_id": ids, "patient_id": patients,
                                        "y_true": y.astype(int), "y_score": signal * y + rng.normal(0, 1, n)}))
    return pd.concat(frames, ignore_index=True)


def test_reference_is_the_clustered_paired_delong_difference_model_minus_box():
    tests = _tests()
    table = box_geometry_reference(tests)
    assert list(table["model"]) == ["net", "net"] and list(table["test_set"]) == ["internal test", "external: D"]
    internal = table.iloc[0]
    expected = paired_test_row(paired_scores(tests, "internal test", "net", "box_geometry"))
    for key in ("n", "n_patients", "difference", "ci_low", "ci_high", "se", "p_value"):
        assert internal[key] == pytest.approx(expected[key])
    assert internal["auc"] == pytest.approx(expected["auc_a"])
    assert internal["auc_box_geometry"] == pytest.approx(expected["auc_b"])
    assert internal["difference"] == pytest.approx(internal["auc"] - internal["auc_box_geometry"])
    assert internal["n_patients"] == 30  # clustered: two images per patient
    assert table.iloc[1]["note"] == "box_geometry has no predictions on this test set"
    assert pd.isna(table.iloc[1]["difference"])
    assert box_geometry_reference(tests[tests["model"] != "box_geometry"]).empty  # not run: no rows


def test_with_box_geometry_adds_the_reference_beside_each_auc_row():
    tests = _tests()
    auc = pd.DataFrame({"model": ["net", "box_geometry", "net"], "test_set": ["internal test", "internal test",
                                                                            "external: D"], "auc": [0.8, 0.6, 0.7]})
    out = with_box_geometry(auc, box_geometry_reference(tests))
    assert list(out.columns) == ["model", "test_set", "auc", *BESIDE_COLUMNS] and len(out) == 3
    row = out.iloc[0]
    assert row["vs_box_geometry"] == (f"{row['box_geometry_difference']:+.3f} ({row['box_geometry_ci_low']:+.3f} to "
                                      f"{row['box_geometry_ci_high']:+.3f})")
    assert out.iloc[1]["vs_box_geometry"] == "" and pd.isna(out.iloc[1]["box_geometry_auc"])  # the baseline itself
    assert out.iloc[2]["vs_box_geometry"] == ""  # no box geometry on that set
