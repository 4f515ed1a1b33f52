"""Result tables: the AUC per group with patients as the unit (``groups_col``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diffkd_study.metrics.roc import auc_delong
from diffkd_study.metrics.tables import metrics_by_group, too_few_for_auc

Y = np.array([1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 1, 0])
S = np.array([0.9, 0.2, 0.7, 0.4, 0.1, 0.6, 0.5, 0.3, 0.8, 0.35, 0.45, 0.55])


def _frame(patients) -> pd.DataFrame:
    return pd.DataFrame({"g": "a", "y_true": Y, "y_score": S, "patient_id": patients})


def test_one_image_per_patient_gives_the_per_image_numbers():
    singletons = metrics_by_group(_frame([f"p{k}" for k in range(Y.size)]), "g", groups_col="patient_id")
    per_image = metrics_by_group(_frame(None), "g")
    assert singletons.loc[0, "n_patients"] == Y.size and "n_patients" not in per_image.columns
    for col in ("n", "n_pos", "n_neg", "auc", "ci_low", "ci_high", "se"):
        assert singletons.loc[0, col] == pytest.approx(per_image.loc[0, col], rel=1e-12), col
    assert list(singletons.columns[:3]) == ["g", "n", "n_patients"]


def test_two_images_per_patient_widen_the_interval():
    # each patient's two images are the same lesion scored twice: 24 images but only 12 independent cases
    doubled = pd.DataFrame({"g": "a", "y_true": np.r_[Y, Y], "y_score": np.r_[S, S + 0.001],
                            "patient_id": [f"p{k}" for k in range(Y.size)] * 2})
    clustered = metrics_by_group(doubled, "g", groups_col="patient_id").iloc[0]
    naive = metrics_by_group(doubled, "g").iloc[0]
    assert clustered["n"] == 24 and clustered["n_patients"] == 12
    assert clustered["auc"] == naive["auc"]
    assert clustered["ci_high"] - clustered["ci_low"] > naive["ci_high"] - naive["ci_low"]
    expected = auc_delong(doubled["y_true"], doubled["y_score"], groups=doubled["patient_id"])
    assert clustered["se"] == pytest.approx(expected.se) and clustered["method"] == expected.method


def test_fewer_than_two_patients_of_a_class_is_not_estimable():
    # two positive images, both of one patient: enough images, too few patients
    frame = _frame(["p0", "p1", "p0", *[f"q{k}" for k in range(9)]]).assign(y_true=[1, 0, 1] + [0] * 9)
    row = metrics_by_group(frame, "g", groups_col="patient_id").iloc[0]
    assert np.isnan(row["auc"]) and row["note"] == "fewer than 2 patients of a class"
    assert metrics_by_group(frame, "g").loc[0, "auc"] == pytest.approx(0.95)  # per image it would be estimated
    assert too_few_for_auc(np.array([True, False, True, False]), None) == ""
    assert too_few_for_auc(np.array([True, False, False]), None) == "fewer than 2 cases of a class"
    with pytest.raises(ValueError, match="lacks the column"):
        metrics_by_group(frame, "g", groups_col="lesion_id")
