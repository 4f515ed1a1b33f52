"""Smoke run of the SSD-KD stage (notebook 70_ssdkd_dermoscopy) through `diffkd-study run` on a tiny synthetic
RGB dermoscopy cohort written by the test (no ../shared data needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.studyrun import run_study
from tests.unit.methods.ssdkd.conftest import CLASSES, write_dermoscopy_cohort

pytestmark = pytest.mark.notebook
METHODS = ["ce", "kd", "rkd", "dkd", "diverse_kd", "ssd_kd"]


@pytest.fixture(scope="module")
def ssdkd_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("ssdkd")
    csv = write_dermoscopy_cohort(tmp_path / "data" / "derm", lesions_per_class=4, images_per_lesion=2)
    raw = {
        "name": "ssdkdsmoke", "seed": 0, "stages": ["ssdkd_dermoscopy"],
        "data": {"manifests": [{"path": str(csv), "root": "derm"}], "split": {"val_frac": 0.25, "test_frac": 0.25},
                 "image_size": 32},
        "ssdkd_dermoscopy": {"teacher_model": "tf_efficientnet_lite0", "teacher_weights": "none",
                             "student_model": "mobilenetv2_035", "seeds": [0], "batch_size": 8, "teacher_epochs": 1,
                             "student_epochs": 1, "min_epochs": 1, "ss_head_epochs": 2, "bootstrap": 100,
                             "efficiency_runs": 2, "train_fraction": 1.0, "device": "cpu",
                             "initialisation": {"views": 2, "epochs": 1, "batch_size": 8, "whole_images": False}},
    }
    return run_study(raw, tmp_path, "--data-root", str(tmp_path / "data"))


def test_stage_runs_and_writes_reports(ssdkd_run):
    code, report, _ = ssdkd_run
    ledger = json.loads((report / "provenance.json").read_text())
    assert [s["status"] for s in ledger["stages"]] == ["ok"], ledger["stages"]
    assert code == 0
    for suffix in (".html", ".clinician.html", ".metrics.json", ".ipynb"):
        assert (report / f"70_ssdkd_dermoscopy{suffix}").is_file(), suffix
    for figure in ("ssdkd_comparison", "ssdkd_confusion_ssd_kd", "ssdkd_curves_ssd_kd", "ssdkd_ss_head"):
        assert (report / "figures" / f"{figure}.png").is_file(), figure
        assert (report / "figures" / f"{figure}.svg").is_file(), figure
    assert "SSD-KD on dermoscopy" in (report / "index.html").read_text()


def test_every_model_is_compared_on_the_held_out_test_split(ssdkd_run):
    _, report, run = ssdkd_run
    metrics = json.loads((report / "70_ssdkd_dermoscopy.metrics.json").read_text())
    assert [r["model"] for r in metrics["comparison"]] == ["Teacher", "Plain student (WCE)", "Hinton KD", "RKD",
                                                           "DKD", "D-KD (KD + RKD + Gram)", "SSD-KD"]
    study = pd.read_csv(run / "data" / "study.csv")
    test_ids = set(study.loc[study["split"] == "test", "image_id"])
    assert all(r["n images"] == len(test_ids) for r in metrics["comparison"])
    for name in ["teacher", *METHODS]:
        pred = pd.read_csv(run / "ssdkd" / "predictions" / f"{name}.csv")
        assert set(pred["split"]) == {"val", "test"} and set(pred.loc[pred["split"] == "test", "image_id"]) == test_ids
        probabilities = pred[[f"prob_{c}" for c in CLASSES]].sum(axis=1)
        assert ((probabilities - 1).abs() < 1e-4).all(), name
    assert metrics["goal"]["evaluated"] is True
    assert metrics["goal_validation"]["evaluated"] is True
    assert {"params", "GFLOPs at 32 px", "GFLOPs at 224 px"} <= {r["metric"] for r in metrics["efficiency"]}


def test_ssd_kd_trains_on_rotation_batches_and_logs_every_term(ssdkd_run):
    _, _, run = ssdkd_run
    records = json.loads((run / "ssdkd" / "records.json").read_text())
    fits = {f["method"]: f for f in records["students"]}
    assert set(fits) == set(METHODS)
    assert fits["ssd_kd"]["images_per_step"] == 2 and fits["ssd_kd"]["rows_per_step"] == 8
    assert fits["ce"]["rows_per_step"] == 8 and fits["ce"]["teacher_seed"] is None
    history = json.loads(Path(fits["ssd_kd"]["history"]).read_text())["history"][0]
    for term in ("ce", "kd", "tf", "ss", "rkd_dist", "rkd_angle", "crkd"):
        assert f"train_ssd_kd.{term}" in history, term
    assert records["ss_heads"][0]["epochs"] == 2 and records["ss_heads"][0]["teacher_seed"] == 0
    study = pd.read_csv(run / "data" / "study.csv")
    counts = study[study["split"] == "train"]["label"].value_counts()
    assert records["class_weights"] == [round(counts.sum() / counts[c], 3) for c in CLASSES]  # official N / n_c


def test_every_student_starts_from_one_general_distillation_of_the_training_images(ssdkd_run):
    _, report, run = ssdkd_run
    study = pd.read_csv(run / "data" / "study.csv")
    seen = pd.read_csv(run / "ssdkd" / "init" / "images.csv")
    assert set(seen["image_id"]) == set(study.loc[study["split"] == "train", "image_id"])
    records = json.loads((run / "ssdkd" / "records.json").read_text())
    init = records["initialisation"]
    descriptions = [json.loads(Path(f["history"]).read_text())["description"] for f in records["students"]]
    assert {d["init_sha256"] for d in descriptions} == {init["sha256"]}
    probe = pd.DataFrame(init["probe"])
    assert set(probe["split"]) == {"val", "test"} and len(probe) == 6
    assert json.loads((report / "70_ssdkd_dermoscopy.metrics.json").read_text())["initialisation_probe"]
