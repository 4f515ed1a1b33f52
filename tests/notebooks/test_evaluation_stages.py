"""End-to-end: baselines, evaluation and reader-study notebooks on a tiny phantom cohort via `diffkd-study run`."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.studyrun import run_study

pytestmark = pytest.mark.notebook
STAGES = ["data_audit", "baselines", "evaluation", "reader_study"]


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("eval")
    raw = {
        "name": "evalsmoke", "seed": 2, "stages": STAGES,
        "data": {"phantom": {"n_per_center": 40, "image_size": 64}, "external": {"center": ["center_C"]},
                 "split": {"val_frac": 0.25, "test_frac": 0.25}, "audit_examples_per_group": 1},
        "evaluation": {"bootstrap": 200, "band_resamples": 100, "efficiency_runs": 3},
        "reader_study": {"simulate": {"n_junior": 2, "n_senior": 2}},
    }
    return run_study(raw, tmp_path)


def test_all_stages_run_and_write_html(study_run):
    code, report, _ = study_run
    prov = json.loads((report / "provenance.json").read_text())
    assert [s["status"] for s in prov["stages"]] == ["ok"] * 4, prov["stages"]
    assert code == 0
    for name in ("45_baselines", "50_evaluation", "60_reader_study"):
        for suffix in (".html", ".clinician.html", ".metrics.json", ".ipynb"):
            assert (report / f"{name}{suffix}").is_file(), name + suffix
    for figure in ("roc_internal_test", "roc_external_center_C", "auc_forest", "calibration_internal_test",
                   "decision_curves_external_center_C", "confusion_matrices", "reader_roc", "reader_study"):
        assert (report / "figures" / f"{figure}.png").is_file(), figure


def test_predictions_hold_no_training_rows(study_run):
    _, _, run = study_run
    study = pd.read_csv(run / "data" / "study.csv")
    train = set(study.loc[study["split"] == "train", "image_id"])
    for name in ("clinical", "image_features", "box_geometry"):
        pred = pd.read_csv(run / "predictions" / f"{name}.csv")
        assert set(pred["split"]) == {"val", "test", "external"} and not train & set(pred["image_id"])


def test_evaluation_metrics_have_aucs_with_cis_and_n(study_run):
    _, report, _ = study_run
    metrics = json.loads((report / "50_evaluation.metrics.json").read_text())
    rows = {(r["model"], r["test_set"]): r for r in metrics["auc"]}
    models = ("clinical", "image_features", "box_geometry")  # the baselines stage's default models
    assert set(rows) == {(m, t) for m in models for t in ("internal test", "external: center_C")}
    for row in rows.values():
        assert row["n"] == row["n_pos"] + row["n_neg"] and row["n_pos"] >= 2
        assert row["ci_low"] < row["auc"] < row["ci_high"]
        assert row["bootstrap_ci_low"] <= row["auc"] <= row["bootstrap_ci_high"]
    assert {r["test_set"] for r in metrics["paired_delong"]} == {"internal test", "external: center_C"}
    assert all(0 <= r["p_value"] <= 1 for r in metrics["paired_delong"])
    assert {r["metric"] for r in metrics["efficiency"]} >= {"params", "CPU latency median ms"}
    assert {r["subgroup"] for r in metrics["subgroups"]} >= {"center", "birads", "age_band"}
    index = (report / "index.html").read_text()
    assert "AUC per test set" in index and "figures/roc_internal_test.png" in index


def test_every_model_is_shown_beside_the_box_geometry(study_run):
    _, report, _ = study_run
    metrics = json.loads((report / "50_evaluation.metrics.json").read_text())
    reference = {(r["model"], r["test_set"]): r for r in metrics["box_geometry_reference"]}
    assert set(reference) == {(m, t) for m in ("clinical", "image_features") for t in ("internal test",
                                                                                       "external: center_C")}
    aucs = {(r["model"], r["test_set"]): r for r in metrics["auc"]}
    for key, row in reference.items():
        assert row["difference"] == pytest.approx(row["auc"] - row["auc_box_geometry"])
        assert row["ci_low"] < row["difference"] < row["ci_high"] and 0 <= row["p_value"] <= 1
        assert aucs[key]["box_geometry_auc"] == pytest.approx(row["auc_box_geometry"])
        assert aucs[key]["vs_box_geometry"].startswith(f"{row['difference']:+.3f}")
    headline = metrics["index_section"]["tables"][0]["records"]
    assert all("vs_box_geometry" in r for r in headline)
    baselines = json.loads((report / "45_baselines.metrics.json").read_text())
    assert "box_geometry" in baselines["models"] and baselines["best_model"] != "box_geometry"


def test_reader_study_is_labelled_simulated(study_run):
    _, report, run = study_run
    reads = pd.read_csv(run / "reader_study" / "reads.csv")
    assert (reads["simulated"] == 1).all() and reads["reader_id"].nunique() == 4
    metrics = json.loads((report / "60_reader_study.metrics.json").read_text())
    assert metrics["simulated_readers"] is True
    assert all(r["simulated"] == 1 for r in metrics["reader_operating_points"])
    assert "simulated readers" in metrics["index_section"]["title"]
    assert "simulated readers" in (report / "60_reader_study.clinician.html").read_text()
    orh = {r["comparison"]: r for r in metrics["orh"]}
    primary = orh["all simulated readers (jackknife)"]
    assert primary["ci_low"] < primary["difference"] < primary["ci_high"] and primary["n_readers"] == 4


def test_reader_study_without_reads_is_skipped_with_reason(tmp_path):
    raw = {"name": "skip", "seed": 0, "stages": ["data_audit", "reader_study"],
           "data": {"phantom": {"n_per_center": 6, "image_size": 64}, "audit_examples_per_group": 1}}
    code, report, _ = run_study(raw, tmp_path)
    assert code == 0
    index = (report / "index.html").read_text()
    assert "skipped" in index and "no read table given" in index
