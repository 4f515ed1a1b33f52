"""End-to-end: a second external set whose manifest records no conditions (like the `busi` builder's)
runs through baselines and evaluation; the clinical baseline is not applicable there, not a constant."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from diffkd_study.data.phantom import generate_phantom_cohort
from diffkd_study.data.schema import CONDITION_PREFIX, Manifest, ManifestSchema, write_manifest
from tests.studyrun import run_study

pytestmark = pytest.mark.notebook
NO_CONDITIONS = "external: center_D"
STAGES = ["data_audit", "baselines", "evaluation", "summary"]


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("nocond")
    data_root = tmp_path / "data"
    cohort = generate_phantom_cohort(data_root / "phantom", n_per_center=40, image_size=64, progress=False)
    df = cohort.df
    center_c = df.index[df["center"] == "center_C"]
    moved = center_c[::2]  # half of center C becomes a second dataset that released no conditions
    with_conditions = Manifest(df.drop(index=moved).reset_index(drop=True), cohort.schema)
    without = df.loc[moved, [c for c in df.columns if not c.startswith(CONDITION_PREFIX)]]
    without = without.assign(dataset="nocond", center="center_D").reset_index(drop=True)
    schema = ManifestSchema(dataset="nocond", label_set=cohort.schema.label_set, task=cohort.schema.task,
                            positive_class=cohort.schema.positive_class, conditions={})
    write_manifest(with_conditions, tmp_path / "manifests" / "phantom.csv")
    write_manifest(Manifest(without, schema), tmp_path / "manifests" / "nocond.csv")
    raw = {
        "name": "nocond", "seed": 1, "stages": STAGES,
        "data": {"manifests": [{"path": str(tmp_path / "manifests" / "phantom.csv"), "root": "phantom"},
                               {"path": str(tmp_path / "manifests" / "nocond.csv"), "root": "phantom"}],
                 "external": {"center": ["center_C"], "dataset": ["nocond"]}, "image_size": 64,
                 "split": {"val_frac": 0.25, "test_frac": 0.25}, "audit_examples_per_group": 1},
        "evaluation": {"bootstrap": 100, "band_resamples": 100, "efficiency_runs": 2},
        "summary": {"band_resamples": 100},
    }
    return run_study(raw, tmp_path, "--data-root", str(data_root))


def test_study_with_a_condition_less_external_set_runs(study_run):
    code, report, _ = study_run
    prov = json.loads((report / "provenance.json").read_text())
    assert [s["status"] for s in prov["stages"]] == ["ok"] * len(STAGES), prov["stages"]
    assert code == 0
    for figure in ("auc_forest", "roc_external_center_D", "calibration_external_center_D",
                   "decision_curves_external_center_D", "confusion_matrices"):
        assert (report / "figures" / f"{figure}.png").is_file(), figure


def test_clinical_baseline_is_not_applicable_without_conditions(study_run):
    _, report, run = study_run
    clinical = pd.read_csv(run / "predictions" / "clinical.csv")
    assert "center_D" not in set(clinical["center"]) and "center_C" in set(clinical["center"])
    image = pd.read_csv(run / "predictions" / "image_features.csv")
    assert "center_D" in set(image["center"])
    baselines = json.loads((report / "45_baselines.metrics.json").read_text())
    assert set(baselines["not_applicable"]["clinical"]) == {NO_CONDITIONS}
    assert "no condition" in baselines["not_applicable"]["clinical"][NO_CONDITIONS]
    assert any("not applicable" in line and NO_CONDITIONS in line for line in baselines["index_section"]["text"])


def test_evaluation_reports_the_pair_as_not_applicable(study_run):
    _, report, _ = study_run
    metrics = json.loads((report / "50_evaluation.metrics.json").read_text())
    rows = {(r["model"], r["test_set"]): r for r in metrics["auc"]}
    assert rows[("clinical", NO_CONDITIONS)]["note"].startswith("not applicable")
    assert rows[("clinical", NO_CONDITIONS)]["n"] == 0
    assert rows[("image_features", NO_CONDITIONS)]["n"] > 0 and rows[("image_features", NO_CONDITIONS)]["auc"] > 0
    headline = metrics["index_section"]["tables"][0]["records"]
    assert any("not applicable" in str(r.values()) for r in headline)
    assert not any(NO_CONDITIONS == r["test_set"] and "clinical" in (r["model_a"], r["model_b"])
                   for r in metrics["paired_delong"])
    assert any(NO_CONDITIONS in text and "clinical" in text for text in metrics["index_section"]["limitations"])


def test_summary_lists_the_best_baseline_as_not_applicable_there(study_run):
    _, report, _ = study_run
    summary = json.loads((report / "90_summary.metrics.json").read_text())
    assert summary["models"] == {"model": "clinical"}  # the best baseline stands in for the networks
    table = {(r["model"], r["test_set"]): r for r in summary["index_section"]["tables"][0]["records"]}
    assert table[("clinical", NO_CONDITIONS)]["auc_95ci"] == "not applicable"
    assert {r["test_set"] for r in summary["auc"]} == {"internal test", "external: center_C"}
    assert summary["not_applicable"][0]["test_set"] == NO_CONDITIONS


def test_a_listed_model_without_its_predictions_file_is_a_clear_error(tmp_path):
    raw = {"name": "missing", "seed": 0, "stages": ["baselines", "evaluation"],
           "data": {"phantom": {"n_per_center": 12, "image_size": 64}, "external": {"center": ["center_C"]},
                    "audit_examples_per_group": 1},
           "baselines": {"models": ["clinical"]},
           "evaluation": {"models": ["clinical", "teacher_real"], "bootstrap": 100, "band_resamples": 100,
                          "efficiency_runs": 2}}
    code, report, run = run_study(raw, tmp_path)
    assert code != 0
    prov = json.loads((report / "provenance.json").read_text())
    evaluation = next(s for s in prov["stages"] if s["stage"] == "evaluation")
    assert evaluation["status"] == "failed"
    assert evaluation["error"].startswith("NotebookParameterError: no predictions file for model(s) teacher_real (")
    assert str(run / "predictions" / "teacher_real.csv") in evaluation["error"]
