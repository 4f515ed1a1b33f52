"""The oracle AUC of the simulated cohort (the AUC of each case's true risk) and the test-set sizes of the headline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from diffkd_study.data.schema import Manifest, ManifestSchema
from diffkd_study.methods.diffkd import evaluate as ev
from diffkd_study.metrics.roc import auc_delong

SCHEMA = ManifestSchema("toy", ("benign", "malignant"), positive_class="malignant")


def _tests(n: int, seed: int = 0) -> tuple[pd.DataFrame, Manifest]:
    """Two models scoring the same n internal-test and n external images; two images per patient."""
    gen = np.random.default_rng(seed)
    risk = gen.uniform(0.02, 0.98, size=2 * n).round(5)
    y = (gen.random(2 * n) < risk).astype(int)
    ids = [f"im{k}" for k in range(2 * n)]
    sets = ["internal test"] * n + ["external: C"] * n
    rows = pd.concat([pd.DataFrame({"image_id": ids, "patient_id": [f"pt{k // 2}" for k in range(2 * n)],
                                    "y_true": y, "y_score": gen.random(2 * n), "model": model, "test_set": sets})
                      for model in ("teacher", "student")], ignore_index=True)
    manifest = Manifest(pd.DataFrame({"image_id": ids[::-1], "true_risk": risk[::-1]}), SCHEMA)  # order must not matter
    return rows, manifest


def test_oracle_auc_is_the_auc_of_the_true_risk_with_its_delong_interval():
    tests, manifest = _tests(60)
    table = ev.oracle_auc_table(tests, manifest)
    assert list(table["test_set"]) == ["internal test", "external: C"]
    assert set(table["model"]) == {ev.ORACLE}
    risk = manifest.df.set_index("image_id")["true_risk"]
    for row in table.itertuples():
        cases = tests[(tests["test_set"] == row.test_set) & (tests["model"] == "student")]
        y, r = cases["y_true"].to_numpy(), risk.loc[cases["image_id"]].to_numpy()
        assert row.n == 60 and row.n_pos == y.sum()  # each image once, though two models scored it
        assert row.auc == pytest.approx(roc_auc_score(y, r), abs=1e-12)
        delong = auc_delong(y, r, groups=cases["patient_id"])  # two images per patient: clustered by patient
        assert (row.ci_low, row.ci_high) == pytest.approx((delong.ci_low, delong.ci_high), abs=1e-12)
        assert row.n_patients == 30 and row.ci_high - row.ci_low != pytest.approx(
            auc_delong(y, r).ci_high - auc_delong(y, r).ci_low)
        assert row.ci_low < row.auc < row.ci_high


def test_oracle_auc_hand_computed_with_a_tie_and_a_set_too_small():
    tests = pd.DataFrame({"image_id": ["a", "b", "c", "d", "e", "f"], "patient_id": list("abcdef"),
                          "y_true": [1, 0, 1, 0, 1, 0], "y_score": 0.5, "model": "m",
                          "test_set": ["internal test"] * 5 + ["external: C"]})
    manifest = Manifest(pd.DataFrame({"image_id": list("abcdef"), "true_risk": [0.9, 0.2, 0.4, 0.6, 0.6, 0.1]}), SCHEMA)
    table = ev.oracle_auc_table(tests, manifest).set_index("test_set")
    # positives 0.9, 0.4, 0.6 against negatives 0.2, 0.6: 2 + 1 + 1.5 (a tie counts half) = 4.5 of 6 pairs
    assert table.loc["internal test", "auc"] == pytest.approx(0.75)
    assert np.isnan(table.loc["external: C", "auc"])
    assert table.loc["external: C", "note"] == "fewer than 2 cases of a class"


def test_oracle_auc_needs_the_true_risk_of_every_case():
    tests, manifest = _tests(10)
    with pytest.raises(ValueError, match="no 'true_risk' column; only the simulated"):
        ev.oracle_auc_table(tests, Manifest(manifest.df.drop(columns="true_risk"), SCHEMA))
    with pytest.raises(ValueError, match="no true_risk for image\\(s\\) im19"):
        ev.oracle_auc_table(tests, Manifest(manifest.df[manifest.df["image_id"] != "im19"], SCHEMA))


def test_test_set_sizes_count_images_and_patients_once():
    tests, _ = _tests(10)
    sizes = ev.test_set_sizes(tests)
    assert sizes.to_dict("records") == [
        {"test_set": "internal test", "n_images": 10, "n_patients": 5,
         "n_pos": int(tests.loc[(tests["model"] == "student") & (tests["test_set"] == "internal test"), "y_true"].sum())},
        {"test_set": "external: C", "n_images": 10, "n_patients": 5,
         "n_pos": int(tests.loc[(tests["model"] == "student") & (tests["test_set"] == "external: C"), "y_true"].sum())},
    ]
