"""Study-level evaluation tables: models without predictions on a test set, constant-score models, patients as the
unit, seed-averaged scores, the biopsy-verified subset and the wording of the BI-RADS reading."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diffkd_study.data.schema import Manifest, ManifestSchema
from diffkd_study.methods.diffkd import comparisons as cmp
from diffkd_study.methods.diffkd import evaluate as ev
from diffkd_study.metrics.operating_points import choose_threshold, operating_point
from diffkd_study.metrics.roc import auc_bootstrap
from diffkd_study.metrics.tables import CONSTANT_SCORE_NOTE, metrics_by_group

Y = np.array([1, 0, 1, 0, 0, 1, 0, 0, 1, 0])
SCORES = np.array([0.9, 0.2, 0.7, 0.4, 0.1, 0.6, 0.5, 0.3, 0.8, 0.35])
CONSTANT = "constant"
REASON = "no condition it uses (cond_birads) is recorded for any of the 10 images of this test set"


def _rows(model: str, split: str, center: str, scores: np.ndarray, prefix: str) -> pd.DataFrame:
    return pd.DataFrame({
        "image_id": [f"{prefix}{k}" for k in range(len(Y))], "patient_id": [f"{prefix}p{k}" for k in range(len(Y))],
        "dataset": "toy", "center": center, "split": split, "y_true": Y, "y_score": scores, "model": model, "seed": 0,
    })


@pytest.fixture(scope="module")
def predictions():
    """'scored' on every set; 'clinical' not on external center D; 'constant' 0.28 everywhere it scores."""
    frames = []
    for split, center, prefix in (("val", "A", "v"), ("test", "A", "t"), ("external", "C", "c"), ("external", "D", "d")):
        frames.append(_rows("scored", split, center, SCORES, prefix))
        if center != "D":
            frames.append(_rows("clinical", split, center, SCORES[::-1], prefix))
        frames.append(_rows(CONSTANT, split, center, np.full(len(Y), 0.28), prefix))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def tests_and_gaps(predictions):
    tests = ev.evaluation_rows(predictions, ["scored", "clinical", CONSTANT])
    test_sets = ["internal test", "external: C", "external: D"]
    gaps = ev.not_applicable_pairs(tests, ["scored", "clinical", CONSTANT], test_sets,
                                   {"clinical": {"external: D": REASON}})
    return tests, gaps


def test_manifest_test_sets_in_report_order():
    df = pd.DataFrame({"split": ["train", "val", "external", "test", "external"], "center": ["A", "A", "D", "A", "C"]})
    manifest = Manifest(df, ManifestSchema("toy", ("benign", "malignant"), positive_class="malignant"))
    assert ev.manifest_test_sets(manifest) == ["internal test", "external: C", "external: D"]
    with pytest.raises(ValueError, match="no split column"):
        ev.manifest_test_sets(Manifest(df.drop(columns="split"), manifest.schema))


def test_not_applicable_pairs_with_and_without_a_recorded_reason(tests_and_gaps):
    tests, gaps = tests_and_gaps
    assert gaps.to_dict("records") == [{"model": "clinical", "test_set": "external: D", "reason": REASON}]
    unexplained = ev.not_applicable_pairs(tests, ["clinical"], ["external: D"])
    assert unexplained["reason"].tolist() == [ev.NO_PREDICTIONS]
    assert ev.not_applicable_note(gaps, "external: D") == f"Not shown (not applicable on this test set): clinical ({REASON})."
    assert ev.not_applicable_note(gaps, "internal test") == "" and ev.not_applicable_note(None, "external: D") == ""


def test_auc_table_shows_a_model_without_predictions_as_not_applicable(tests_and_gaps):
    tests, gaps = tests_and_gaps
    table = ev.auc_table(tests, bootstrap=100, not_applicable=gaps)
    assert list(zip(table["test_set"], table["model"], strict=True)) == [
        (t, m) for t in ("internal test", "external: C", "external: D") for m in ("scored", "clinical", CONSTANT)]
    row = table[(table["model"] == "clinical") & (table["test_set"] == "external: D")].iloc[0]
    assert (row["n"], row["n_pos"], row["n_neg"]) == (0, 0, 0) and np.isnan(row["auc"])
    assert row["note"] == f"not applicable: {REASON}"
    assert ev.format_auc(row) == "not applicable"
    assert table.loc[table["model"] == "scored", "note"].eq("").all()
    assert ev.auc_table(tests, bootstrap=100).shape[0] == 8  # without the pairs: only what was scored


def test_tables_of_a_constant_score_model(tests_and_gaps):
    tests, gaps = tests_and_gaps
    auc = ev.auc_table(tests, bootstrap=100, not_applicable=gaps)
    constant = auc[auc["model"] == CONSTANT]
    # AUC 0.5 by construction and no sampling variability (every resample is constant too).
    assert constant["auc"].eq(0.5).all() and constant["ci_low"].eq(0.5).all() and constant["ci_high"].eq(0.5).all()
    assert constant[["bootstrap_ci_low", "bootstrap_ci_high"]].eq(0.5).all().all()
    assert constant["note"].eq(CONSTANT_SCORE_NOTE).all()
    assert ev.format_auc(constant.iloc[0]) == "0.500 (0.500-0.500)"
    calibration = ev.calibration_table(tests, not_applicable=gaps)
    rows = calibration[calibration["model"] == CONSTANT]
    assert rows["slope"].isna().all() and rows["note"].str.contains("all predictions are equal").all()
    assert rows["intercept"].to_numpy() == pytest.approx(np.log(0.4 / 0.6) - np.log(0.28 / 0.72), abs=1e-8)
    assert rows["brier"].to_numpy() == pytest.approx(np.mean((0.28 - Y) ** 2))
    paired = cmp.paired_delong_tests(tests)
    versus = paired[(paired["model_b"] == CONSTANT) & (paired["model_a"] == "scored")]
    assert (versus["auc_b"] == 0.5).all() and versus["p_value"].between(0, 1).all()


def test_calibration_and_operating_tables_list_the_not_applicable_pair(predictions, tests_and_gaps):
    tests, gaps = tests_and_gaps
    calibration = ev.calibration_table(tests, not_applicable=gaps)
    row = calibration[(calibration["model"] == "clinical") & (calibration["test_set"] == "external: D")]
    assert row["n"].tolist() == [0] and row["note"].tolist() == [f"not applicable: {REASON}"]
    thresholds = ev.validation_thresholds(predictions, ["scored", "clinical", CONSTANT])
    operating = ev.operating_point_table(tests, thresholds, not_applicable=gaps)
    row = operating[(operating["model"] == "clinical") & (operating["test_set"] == "external: D")]
    assert row["n"].tolist() == [0] and row["note"].tolist() == [f"not applicable: {REASON}"]
    assert len(operating) == 8 * 3 + 1  # three rules for each scored pair, one row for the gap


def test_operating_points_of_a_constant_score_model(predictions, tests_and_gaps):
    # Constant validation scores: Youden has no cut-off that beats chance, so the highest (+inf) is
    # chosen and every case is called negative; the sensitivity rule needs -inf (every case positive).
    tests, _ = tests_and_gaps
    val = predictions[(predictions["model"] == CONSTANT) & (predictions["split"] == "val")]
    assert choose_threshold(val["y_true"], val["y_score"], "youden").value == np.inf
    thresholds = ev.validation_thresholds(predictions, [CONSTANT])
    table = ev.operating_point_table(tests[tests["model"] == CONSTANT], thresholds)
    youden = table[table["rule"] == "Youden (validation)"]
    assert youden["sensitivity"].eq(0.0).all() and youden["specificity"].eq(1.0).all()
    assert youden["sensitivity_n"].eq("0/4").all() and youden["ppv_ci"].eq("n/a").all()
    sensitive = table[table["rule"].str.startswith("sensitivity")]
    assert sensitive["sensitivity"].eq(1.0).all() and sensitive["specificity"].eq(0.0).all()


def test_scores_by_model_aligns_the_models_on_their_common_images(tests_and_gaps):
    tests, _ = tests_and_gaps
    y, probs = ev.scores_by_model(tests, "external: D")
    assert list(probs) == ["scored", CONSTANT]  # clinical has no predictions there
    order = np.argsort([f"d{k}" for k in range(len(Y))])  # the pivot sorts image ids
    np.testing.assert_array_equal(y, Y[order])
    np.testing.assert_allclose(probs["scored"], SCORES[order])
    partial = tests[~((tests["model"] == "scored") & (tests["image_id"] == "d3"))]
    y, probs = ev.scores_by_model(partial, "external: D")
    assert len(y) == len(Y) - 1 and all(len(p) == len(y) for p in probs.values())
    with pytest.raises(ValueError, match="no model has predictions on 'external: X'"):
        ev.scores_by_model(tests, "external: X")


def test_metrics_by_group_notes_a_constant_score():
    frame = pd.DataFrame({"g": ["a"] * 10 + ["b"] * 10, "y_true": np.r_[Y, Y],
                          "y_score": np.r_[np.full(10, 0.3), SCORES]})
    table = metrics_by_group(frame, "g")
    assert table["note"].tolist() == [CONSTANT_SCORE_NOTE, ""]
    assert table.loc[0, ["auc", "ci_low", "ci_high", "se"]].tolist() == [0.5, 0.5, 0.5, 0.0]


def test_display_table_rounds_and_shows_empty_cells_as_a_dash(tests_and_gaps):
    tests, gaps = tests_and_gaps
    shown = ev.display_table(ev.auc_table(tests, bootstrap=100, not_applicable=gaps))
    row = shown[(shown["model"] == "clinical") & (shown["test_set"] == "external: D")].iloc[0]
    assert row[["auc", "ci_low", "ci_high", "se"]].tolist() == ["\u2013"] * 4 and row["n"] == 0
    scored = shown[shown["model"] == "scored"].iloc[0]
    assert scored["auc"] == round(scored["auc"], 3) and scored["note"] == ""


# ---------------------------------------------------------------------------------------------
# Patients as the unit, seed averaging, the verified subset, the BI-RADS reading
# ---------------------------------------------------------------------------------------------


def _doubled(tests: pd.DataFrame) -> pd.DataFrame:
    """Every image of ``tests`` twice, the copy a second image of the same patient (score nudged)."""
    copy = tests.assign(image_id=tests["image_id"] + "b", y_score=(tests["y_score"] + 0.001).clip(upper=1))
    return pd.concat([tests, copy], ignore_index=True)


def test_one_image_per_patient_gives_todays_auc_table(tests_and_gaps):
    tests, _ = tests_and_gaps
    table = ev.auc_table(tests, bootstrap=200)
    scored = table[table["model"] == "scored"]
    assert (scored["n"] == scored["n_patients"]).all() and scored["n_seeds"].eq(1).all()
    np.testing.assert_allclose(scored["ci_low"], scored["ci_low_per_image"], rtol=1e-12)
    np.testing.assert_allclose(scored["ci_high"], scored["ci_high_per_image"], rtol=1e-12)
    part = tests[(tests["model"] == "scored") & (tests["test_set"] == "internal test")]
    today = auc_bootstrap(part["y_true"], part["y_score"], n_resamples=200, seed=0)  # the stratified bootstrap
    assert (scored.iloc[0]["bootstrap_ci_low"], scored.iloc[0]["bootstrap_ci_high"]) == (today.ci_low, today.ci_high)


def test_two_images_per_patient_widen_the_auc_and_operating_point_intervals(predictions, tests_and_gaps):
    tests, _ = tests_and_gaps
    scored = tests[(tests["model"] == "scored") & (tests["test_set"] == "internal test")]
    scored = scored.assign(y_score=[0.9, 0.2, 0.3, 0.4, 0.1, 0.6, 0.5, 0.7, 0.8, 0.35])  # not separable
    table = ev.auc_table(_doubled(scored), bootstrap=200).iloc[0]
    assert (table["n"], table["n_patients"]) == (20, 10)
    assert table["ci_high"] - table["ci_low"] > table["ci_high_per_image"] - table["ci_low_per_image"]
    thresholds = ev.validation_thresholds(predictions, ["scored"])
    single = ev.operating_point_table(scored, thresholds)
    double = ev.operating_point_table(_doubled(scored), thresholds)
    assert double["n_patients"].eq(10).all() and double["n"].eq(20).all() and single["n_patients"].eq(10).all()
    youden = thresholds["scored"]["Youden (validation)"].value
    op = operating_point(_doubled(scored)["y_true"], _doubled(scored)["y_score"], youden,
                         groups=_doubled(scored)["patient_id"])
    assert double.loc[0, "sensitivity_ci"] == f"{op.sensitivity.ci_low:.2f}-{op.sensitivity.ci_high:.2f}"
    assert op.sensitivity.design_effect > 1


def test_seed_averaged_scores_are_the_mean_over_seeds(predictions):
    one = predictions[predictions["model"] == "scored"]
    two = pd.concat([one, one.assign(seed=1, y_score=one["y_score"] / 2)], ignore_index=True)
    averaged = ev.seed_averaged(two)
    assert len(averaged) == len(one) and averaged["n_seeds"].eq(2).all() and "seed" not in averaged.columns
    np.testing.assert_allclose(averaged["y_score"], one["y_score"].to_numpy() * 0.75)
    assert ev.seed_counts(pd.concat([two, predictions[predictions["model"] == "clinical"]])) == {"scored": 2,
                                                                                                  "clinical": 1}
    rows = ev.evaluation_rows(two)
    assert set(rows["split"]) == {"test", "external"} and rows["n_seeds"].eq(2).all()
    np.testing.assert_allclose(ev.evaluation_rows(two[two["seed"] == 1])["y_score"],
                               one.loc[one["split"] != "val", "y_score"].to_numpy() / 2)
    assert ev.auc_table(rows, bootstrap=100)["n_seeds"].eq(2).all()


def _manifest(tests: pd.DataFrame, **columns) -> Manifest:
    df = tests.drop_duplicates("image_id")[["image_id", "patient_id", "center", "split"]].assign(**columns)
    return Manifest(df.reset_index(drop=True), ManifestSchema("toy", ("benign", "malignant"),
                                                              positive_class="malignant"))


def test_the_verified_subset_exists_only_where_the_manifest_records_verification(tests_and_gaps):
    tests, _ = tests_and_gaps
    subset, sentence = ev.verified_subset(tests, _manifest(tests))
    assert subset is None and "no verification" in sentence
    cases = tests.drop_duplicates("image_id")
    # external C: positives biopsied, negatives followed up except one; external D and internal: not recorded
    how = np.where(cases["image_id"].str.startswith("c"),
                   np.where(cases["y_true"] == 1, "biopsy", "follow-up"), None)
    how[list(cases["image_id"]).index("c1")] = "Biopsy"
    subset, sentence = ev.verified_subset(tests, _manifest(tests, cond_verification=how))
    assert set(subset["test_set"]) == {"external: C"}
    assert set(subset["image_id"]) == {"c0", "c2", "c5", "c8", "c1"}
    assert "alone: external: C, 5 of 10 images, 4 of 4 positive." in sentence and "Begg & Greenes 1983" in sentence
    table = ev.auc_table(subset, bootstrap=100)
    assert table["n"].eq(5).all() and table["n_patients"].eq(5).all()
    none, why = ev.verified_subset(tests, _manifest(tests, cond_verification=None))
    assert none is None and "No external test set records" in why


def test_the_clinical_baseline_with_birads_is_named_the_radiologists_reading(tests_and_gaps):
    tests, _ = tests_and_gaps
    with_birads = ev.model_descriptions(["clinical", "scored"], ["cond_birads"])
    assert with_birads == {"clinical": "radiologists' BI-RADS (reading the same images)", "scored": "scored"}
    assert ev.reading_footnote(["scored", "clinical"], with_birads).startswith(
        "clinical = radiologists' BI-RADS (reading the same images)")
    assert "not an independent clinical covariate" in ev.BIRADS_FOOTNOTE
    assert ev.reading_footnote(["scored"], with_birads) == ""
    without = ev.model_descriptions(["clinical"], ["cond_age"])
    assert without["clinical"] == ev.MODEL_DESCRIPTIONS["clinical"] and ev.reading_footnote(["clinical"], without) == ""
    among = ev.model_descriptions(["clinical"], ["cond_age", "cond_birads"])["clinical"]
    assert "(age) and BI-RADS, the radiologists' reading" in among and ev.reading_footnote(["clinical"], {
        "clinical": among}) == ""


def test_the_other_crops_and_the_scratch_ablation_are_described_in_words():
    words = ev.model_descriptions(["teacher_real-whole", "student_kd_real-jittered", "student_alone-scratch",
                                   "mystery-whole"])
    assert words["teacher_real-whole"] == ev.MODEL_DESCRIPTIONS["teacher_real"] + ev.CROP_AND_START_WORDS["-whole"]
    assert words["student_kd_real-jittered"].endswith("on a rough box around the lesion instead of the expert outline")
    assert words["student_alone-scratch"].endswith("from random weights (ablation)")
    assert words["mystery-whole"] == "mystery-whole"  # unknown base: its own name
