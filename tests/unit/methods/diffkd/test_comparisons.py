"""Paired comparisons: patient-clustered tests, Holm's adjustment, the detectable difference, the planned
comparisons and the tests seed by seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diffkd_study.methods.diffkd import comparisons as cmp
from diffkd_study.methods.diffkd import evaluate as ev
from diffkd_study.metrics.clustered import holm_adjust, minimal_detectable_difference
from diffkd_study.metrics.roc import delong_test

RNG = np.random.default_rng(23)
N = 40
Y = np.r_[np.ones(16, int), np.zeros(N - 16, int)]
MODELS = {  # name -> signal strength; each seed adds its own noise
    "teacher_real": 1.0, "teacher_real+syn": 1.4, "student_alone": 0.6, "student_kd_real": 0.9, "student_diffkd": 1.1,
}
SEEDS = {"teacher_real": (0,), "teacher_real+syn": (0,), "student_alone": (0, 1), "student_kd_real": (0, 1, 2),
         "student_diffkd": (0, 1)}
LATENT = RNG.normal(size=(2, N))  # what the models share about each image, per split


def _predictions() -> pd.DataFrame:
    frames = []
    for model, strength in MODELS.items():
        for seed in SEEDS[model]:
            for k, (split, center, prefix) in enumerate((("val", "A", "v"), ("test", "A", "t"))):
                noise = RNG.normal(size=N)
                score = 1 / (1 + np.exp(-(strength * Y * 1.5 + LATENT[k] + 0.7 * noise - 0.5)))
                frames.append(pd.DataFrame({
                    "image_id": [f"{prefix}{i}" for i in range(N)], "patient_id": [f"{prefix}p{i}" for i in range(N)],
                    "dataset": "toy", "center": center, "split": split, "y_true": Y, "y_score": score,
                    "model": model, "seed": seed}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def predictions():
    return _predictions()


@pytest.fixture(scope="module")
def tests(predictions):
    return ev.evaluation_rows(predictions)


def _pair(tests: pd.DataFrame, a: str, b: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    left = tests[tests["model"] == a].set_index("image_id")
    right = tests[tests["model"] == b].set_index("image_id").loc[left.index]
    return left["y_true"].to_numpy(), left["y_score"].to_numpy(), right["y_score"].to_numpy()


def test_one_image_per_patient_gives_todays_delong_test(tests):
    table = cmp.paired_delong_tests(tests, reference="student_diffkd")
    row = table[table["model_b"] == "student_kd_real"].iloc[0]
    y, a, b = _pair(tests, "student_diffkd", "student_kd_real")
    today = delong_test(y, a, b)  # per image, as before patients were the unit
    assert (row["n"], row["n_patients"], row["n_pos"]) == (N, N, 16)
    for col, value in (("difference", today.difference), ("ci_low", today.ci_low), ("ci_high", today.ci_high),
                       ("p_value", today.p_value), ("se", today.se)):
        assert row[col] == pytest.approx(value, rel=1e-12), col
    assert row["mdd"] == pytest.approx(minimal_detectable_difference(today.se)) == pytest.approx(2.8016 * today.se,
                                                                                               rel=1e-4)
    assert "clustered by patient" in row["method"]


def test_two_images_per_patient_widen_the_paired_interval(tests):
    part = tests[tests["model"].isin(["student_diffkd", "student_kd_real"])]
    copy = part.assign(image_id=part["image_id"] + "b", y_score=part["y_score"] * 0.999)
    doubled = pd.concat([part, copy], ignore_index=True)
    clustered = cmp.paired_delong_tests(doubled).iloc[0]
    y, a, b = _pair(doubled, "student_diffkd", "student_kd_real")
    naive = delong_test(y, a, b)
    assert (clustered["n"], clustered["n_patients"]) == (2 * N, N)
    assert clustered["ci_high"] - clustered["ci_low"] > naive.ci_high - naive.ci_low
    assert clustered["p_value"] > naive.p_value and clustered["mdd"] > minimal_detectable_difference(naive.se)


def test_holm_is_over_the_comparisons_of_the_table_per_test_set(tests):
    table = cmp.paired_delong_tests(tests)
    assert len(table) == 10 and list(table.columns[table.columns.get_loc("p_value"):][:2]) == ["p_value", "p_holm"]
    np.testing.assert_allclose(table["p_holm"], holm_adjust(table["p_value"]))
    assert (table["p_holm"] >= table["p_value"]).all()
    ablation = cmp.paired_delong_tests(tests, reference="student_diffkd")
    assert len(ablation) == 4 and ablation["model_a"].eq("student_diffkd").all()
    np.testing.assert_allclose(ablation["p_holm"], holm_adjust(ablation["p_value"]))


def test_the_planned_comparisons_come_first_with_holm_over_the_three(tests):
    assert [(c.model_a, c.model_b) for c in cmp.PLANNED_COMPARISONS] == [
        ("teacher_real+syn", "teacher_real"), ("student_kd_real", "student_alone"),
        ("student_diffkd", "student_kd_real")]
    planned = cmp.planned_comparisons(tests)
    assert planned["comparison"].str[:5].tolist() == ["(i) D", "(ii) ", "(iii)"]
    assert list(planned.columns[:3]) == ["comparison", "contrast", "test_set"]
    assert planned["test_set"].eq("internal test").all()
    assert planned.loc[0, "contrast"] == "Teacher trained on real + synthetic images vs teacher trained on real images"
    np.testing.assert_allclose(planned["p_holm"], holm_adjust(planned["p_value"]))
    everything = cmp.paired_delong_tests(tests).set_index(["model_a", "model_b"])
    for row in planned.itertuples():  # the same tests as in the all-pairs table, only the family differs
        key = (row.model_a, row.model_b) if (row.model_a, row.model_b) in everything.index else (row.model_b,
                                                                                                 row.model_a)
        assert row.p_value == pytest.approx(everything.loc[key, "p_value"])
    assert planned["mdd"].gt(0).all()
    without = cmp.planned_comparisons(tests[tests["model"] != "teacher_real"])
    assert without.loc[0, "note"] == "teacher_real: not in this run" and np.isnan(without.loc[0, "p_value"])
    np.testing.assert_allclose(without["p_holm"][1:], holm_adjust(without["p_value"][1:]))  # a family of two


def test_per_seed_tests_have_one_row_per_seed_both_models_have(predictions, tests):
    pairs = cmp.tested_pairs(cmp.planned_comparisons(tests), cmp.paired_delong_tests(tests, reference="student_diffkd"))
    assert pairs[:3] == [(c.model_a, c.model_b) for c in cmp.PLANNED_COMPARISONS]
    assert len(pairs) == 6  # the planned (iii) is also a partial combination: counted once
    table = cmp.per_seed_tests(predictions, [("student_kd_real", "student_alone"), ("teacher_real+syn", "teacher_real")])
    assert table[["model_a", "seed"]].values.tolist() == [["student_kd_real", 0], ["student_kd_real", 1],
                                                         ["teacher_real+syn", 0]]  # seed 2 of kd_real has no partner
    one = predictions[predictions["seed"] == 1]
    y, a, b = _pair(ev.evaluation_rows(one), "student_kd_real", "student_alone")
    assert table.loc[1, "p_value"] == pytest.approx(delong_test(y, a, b).p_value)
    # the single-seed teachers' only seed is the seed-averaged analysis itself
    assert table.loc[2, "difference"] == pytest.approx(
        cmp.planned_comparisons(tests).loc[0, "difference"])


def test_student_goals_follow_their_written_rules(tests):
    scratch = tests[tests["model"] == "student_alone"].assign(
        model="student_alone-scratch", y_score=lambda d: 0.5 * d["y_score"] + 0.25)  # same ranking, other scale
    table = cmp.student_goals(pd.concat([tests, scratch], ignore_index=True))
    pairs = set(zip(table["model_a"], table["model_b"], strict=True))
    assert pairs == {("teacher_real", "student_kd_real"), ("teacher_real+syn", "student_diffkd"),
                     ("student_kd_real", "student_alone"), ("student_diffkd", "student_alone"),
                     ("student_alone", "student_alone-scratch")}
    for row in table.itertuples():
        y, a, b = _pair(tests if "scratch" not in row.model_b else pd.concat([tests, scratch]), row.model_a, row.model_b)
        t = delong_test(y, a, b)
        assert row.difference == pytest.approx(t.difference) and row.ci_high == pytest.approx(t.ci_high)
        if row.model_a.startswith("teacher"):
            assert row.met == (row.difference <= 0.03) and row.with_confidence == (row.ci_high <= 0.03)
        elif row.model_b == "student_alone":
            assert row.met == (row.difference >= 0.02) and row.with_confidence == (row.ci_low >= 0.02)
        else:  # identical rankings: difference 0 meets "at least 0"
            assert row.difference == pytest.approx(0.0) and row.met
    assert cmp.student_goals(tests[tests["model"].str.startswith("teacher")]).empty
