"""The cross-validation study's reading: each rule's verdict from small hand-made tables."""

import pandas as pd
import pytest

from diffkd_study.methods.diffkd.cv_reading import CAN, CANNOT, COLUMNS, study_reading, uses_synthetic

EMPTY = pd.DataFrame()
EXTERNAL = "external: centre-b"


def fidelity(ratio: float, folds: int = 2) -> pd.DataFrame:
    rows = []
    for fold in range(1, folds + 1):
        rows += [{"fold": fold, "extractor": "TF-Inception (pool3)", "FID": 40.0 * ratio, "FID floor": 40.0},
                 {"fold": fold, "extractor": "EfficientNet-Lite0 (domain)", "FID": 90.0, "FID floor": 10.0}]
    return pd.DataFrame(rows)


def two_sample(auc: float) -> pd.DataFrame:
    return pd.DataFrame([{"fold": 1, "scope": "all", "auc": auc}, {"fold": 1, "scope": "class=benign", "auc": 0.99},
                         {"fold": 2, "scope": "all", "auc": auc - 0.01}])


def comparison(a: str, b: str, d: float, low: float, high: float, p_holm: float) -> dict:
    return {"comparison": f"{a} vs {b}", "model_a": a, "model_b": b, "fold_differences": f"{d:+.3f} {d:+.3f}",
            "difference": d, "ci_low": low, "ci_high": high, "p_holm": p_holm}


def reading(**tables) -> pd.DataFrame:
    given = {"stratified": EMPTY, "goals": EMPTY, "synthetic_fidelity": EMPTY, "synthetic_two_sample": EMPTY,
             "geometry": EMPTY, "reader_mode": EMPTY, "seeds": EMPTY, "external_sets": [EXTERNAL]}
    return study_reading(**{**given, **tables})


def row(table: pd.DataFrame, starts: str) -> pd.Series:
    hits = table[table["question"].str.startswith(starts)]
    assert len(hits) == 1, list(table["question"])
    return hits.iloc[0]


@pytest.mark.parametrize("ratio, auc, verdict, failed", [
    (1.5, 0.60, CAN, None),
    (2.8, 0.60, CANNOT, "the FID goal"),
    (1.5, 0.95, CANNOT, "the two-sample goal"),
])
def test_realism_needs_both_goals_in_every_fold(ratio, auc, verdict, failed):
    out = row(reading(synthetic_fidelity=fidelity(ratio), synthetic_two_sample=two_sample(auc)), "Are the synthetic")
    assert out["verdict"] == verdict
    assert f"FID {ratio:.1f}x the real-vs-real floor" in out["measured"]  # TF-Inception rows only; one value
    assert f"{auc - 0.01:.3f}-{auc:.3f}" in out["measured"]  # the 'all' scope of every fold, not the per-class one
    if failed:
        assert failed in out["reading"]


def test_no_synthetic_audit_means_no_realism_row_and_a_caveat_on_synthetic_comparisons():
    pair = comparison("student_diffkd", "student_kd_real", 0.03, 0.01, 0.05, 0.01)
    out = reading(stratified=pd.DataFrame([pair]))
    assert not out["question"].str.startswith("Are the synthetic").any()
    assert "not audited" in row(out, "Does the full DiffKD")["reading"]


def test_a_planned_comparison_is_concluded_only_below_the_holm_threshold():
    table = pd.DataFrame([comparison("teacher_real+syn", "teacher_real", 0.011, -0.021, 0.044, 0.50),
                          comparison("student_kd_real", "student_alone", -0.05, -0.08, -0.02, 0.003),
                          comparison("student_diffkd", "student_kd_real", 0.030, 0.010, 0.049, 0.01)])
    out = reading(stratified=table, synthetic_fidelity=fidelity(2.8), synthetic_two_sample=two_sample(0.99))
    null = row(out, "Does the teacher network trained on real + synthetic")
    assert null["verdict"] == CANNOT and "up to 0.044 AUC" in null["reading"]
    worse = row(out, "Does the student distilled from the real-image teacher")
    assert worse["verdict"] == CAN and "worse by 0.050" in worse["reading"]
    assert "synthetic" not in worse["reading"]  # no synthetic model in that pair
    diffkd = row(out, "Does the full DiffKD")
    assert diffkd["verdict"] == CAN and "better by 0.030" in diffkd["reading"]
    assert "cannot be credited to realistic synthetic images" in diffkd["reading"]
    assert "Holm p 0.01" in diffkd["measured"] and "+0.030 (+0.010 to +0.049)" in diffkd["measured"]


def test_a_comparison_that_could_not_be_estimated_says_so():
    pair = {**comparison("teacher_real+syn", "teacher_real", float("nan"), float("nan"), float("nan"), float("nan")),
            "note": "not estimable: fold 1: one class"}
    out = row(reading(stratified=pd.DataFrame([pair])), "Does the teacher")
    assert out["verdict"] == CANNOT and out["measured"] == "not estimable: fold 1: one class"


def geometry_rows(test_set: str, intervals: list[tuple[float, float]]) -> list[dict]:
    return [{"test_set": test_set, "model": f"student_{i}", "auc": 0.6, "auc_box_geometry": 0.85,
             "difference": (low + high) / 2, "ci_low": low, "ci_high": high} for i, (low, high) in enumerate(intervals)]


def test_box_geometry_verdict_per_test_set():
    table = pd.DataFrame(geometry_rows("internal", [(-0.3, -0.2), (-0.2, -0.1)])
                         + geometry_rows(EXTERNAL, [(-0.3, -0.2), (-0.1, 0.05), (0.01, 0.1)])
                         + [{"test_set": "internal", "model": "clinical", "auc": 0.9, "auc_box_geometry": 0.85,
                             "difference": 0.05, "ci_low": 0.01, "ci_high": 0.09}])  # not a network: not counted
    out = reading(geometry=table)
    internal = row(out, "Do the image networks beat the lesion box's shape alone (internal)")
    assert internal["verdict"] == CAN and internal["reading"].startswith("No: every image network is below")
    assert "2 networks" in internal["measured"]
    external = row(out, f"Do the image networks beat the lesion box's shape alone ({EXTERNAL})")
    assert external["verdict"] == CANNOT and "1 above, 1 below, 1 not distinguishable" in external["reading"]


@pytest.mark.parametrize("d, low, high, verdict, words", [
    (0.00, -0.03, 0.04, CAN, "Yes: within 0.05"),
    (0.02, -0.05, 0.09, CANNOT, "on the point estimate, but the interval reaches +0.090"),
    (0.12, 0.07, 0.17, CAN, "No: it loses more than 0.05"),
    (0.07, -0.01, 0.15, CANNOT, "the point estimate is beyond it"),
])
def test_the_teacher_without_the_outline_is_read_on_the_external_set(d, low, high, verdict, words):
    goal = {"goal": "without the expert outline (jittered) within 0.05 AUC of the outline crop", "margin": 0.05,
            "model_a": "teacher_real", "model_b": "teacher_real-jittered", "difference": d, "ci_low": low,
            "ci_high": high}
    goals = pd.DataFrame([{**goal, "test_set": EXTERNAL},
                          {**goal, "test_set": "internal (fold-stratified)", "difference": 0.5, "ci_low": 0.4,
                           "ci_high": 0.6},
                          {**goal, "model_a": "student_alone", "model_b": "student_alone-jittered",
                           "test_set": EXTERNAL}])
    out = reading(goals=goals)
    hit = row(out, "Does the teacher keep its AUC")
    assert EXTERNAL in hit["question"] and "a rough box around the lesion" in hit["question"]
    assert hit["verdict"] == verdict and words in hit["reading"]


def test_outline_free_against_birads():
    table = pd.DataFrame([{"test_set": "internal", "model_a": "teacher_real-whole", "difference": -0.2,
                           "ci_low": -0.25, "ci_high": -0.15},
                          {"test_set": EXTERNAL, "model_a": "teacher_real-whole", "difference": -0.2,
                           "ci_low": -0.25, "ci_high": -0.15},
                          {"test_set": EXTERNAL, "model_a": "teacher_real-jittered", "difference": -0.02,
                           "ci_low": -0.08, "ci_high": 0.04}])
    out = reading(reader_mode=table)
    assert row(out, "Without the expert outline, do the networks match the radiologists' BI-RADS (internal)")[
        "verdict"] == CAN
    assert row(out, f"Without the expert outline, do the networks match the radiologists' BI-RADS ({EXTERNAL})")[
        "verdict"] == CANNOT


def test_seeds_and_centres_limit_the_reading():
    one = reading(seeds=pd.DataFrame([{"model": "teacher_real", "n_seeds": 1, "seed_auc_sd": None}]))
    assert row(one, "How much does the training seed")["verdict"] == CANNOT
    assert row(one, "Does the result hold at other centres")["verdict"] == CANNOT
    three = reading(seeds=pd.DataFrame([{"model": "teacher_real", "n_seeds": 3, "seed_auc_sd": 0.021}]),
                    external_sets=[EXTERNAL, "external: centre-c"])
    assert row(three, "How much does the training seed")["verdict"] == CAN
    assert "0.021" in row(three, "How much does the training seed")["measured"]
    assert row(three, "Does the result hold at other centres")["verdict"] == CAN
    assert row(reading(external_sets=[]), "Does the result hold")["reading"].startswith("Anything beyond")


def test_an_empty_study_has_only_the_centre_row_and_the_columns():
    out = reading()
    assert list(out.columns) == COLUMNS and len(out) == 1


def test_which_models_use_synthetic_images():
    assert [uses_synthetic(m) for m in ("teacher_real+syn", "student_diffkd", "student_diffkd+syn", "teacher_real",
                                        "student_kd_real", "student_alone")] == [True, True, True, False, False, False]
