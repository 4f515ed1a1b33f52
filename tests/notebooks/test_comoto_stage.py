"""Smoke run of the CoMoTo stage (notebook 80_comoto_dbt) through `diffkd-study run` on tiny synthetic data."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.studyrun import run_study
from tests.unit.methods.comoto.conftest import write_detection_cohort

pytestmark = pytest.mark.notebook
METHODS = ["dbt_only", "pretraining", "image_kd", "lskd", "comoto"]


@pytest.fixture(scope="module")
def comoto_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("comoto")
    data = tmp_path / "data"
    dbt_csv = write_detection_cohort(data / "dbt", kind="dbt", n_patients=6, seed=1)
    mammo_csv = write_detection_cohort(data / "mammo", kind="mammo", n_patients=4, n_normal_patients=2,
                                       size=(96, 96), unlocated=1, seed=2)
    tiny = {"detector_image_size": 64, "batch_size": 2, "anchor_sizes": [8, 16, 32], "detections_per_img": 5,
            "warmup_steps": 0, "teacher_epochs": 0, "teacher_min_steps": 2, "student_epochs": 0, "student_min_steps": 2}
    raw = {
        "name": "comotosmoke", "seed": 3, "stages": ["comoto_dbt"],
        "data": {"manifests": [{"path": str(dbt_csv), "root": "dbt"}], "split": {"val_frac": 0.2, "test_frac": 0.2}},
        "comoto_dbt": {"teacher_manifest": str(mammo_csv), "teacher_root": "mammo", "folds": 2, "regimes": [0.5, 1.0],
                       "example_slices": 2, "device": "cpu", "hit_min_distance": 10.0, **tiny},
    }
    return run_study(raw, tmp_path, "--data-root", str(data))


def test_stage_runs_and_writes_reports(comoto_run):
    code, report, _ = comoto_run
    prov = json.loads((report / "provenance.json").read_text())
    assert [s["status"] for s in prov["stages"]] == ["ok"], prov["stages"]
    assert code == 0
    for suffix in (".html", ".clinician.html", ".metrics.json", ".ipynb"):
        assert (report / f"80_comoto_dbt{suffix}").is_file(), suffix
    for figure in ("comoto_froc", "comoto_examples", "comoto_teacher_loss"):
        assert (report / "figures" / f"{figure}.png").is_file(), figure
        assert (report / "figures" / f"{figure}.svg").is_file(), figure


def test_every_method_regime_and_fold_is_evaluated_on_all_slices(comoto_run):
    _, report, run = comoto_run
    results = pd.read_csv(run / "comoto" / "results.csv")
    assert len(results) == 2 * 2 * len(METHODS)
    per_cell = results.groupby(["method", "regime"])[["n_images", "n_boxes"]].sum()
    assert (per_cell["n_images"] == 12).all() and (per_cell["n_boxes"] == 12).all()  # each slice tested once
    assert results.groupby(["fold", "regime"])["n_train_images"].nunique().eq(1).all()  # same data for every method
    assert ((results["mean_sensitivity"] >= 0) & (results["mean_sensitivity"] <= 1)).all()
    metrics = json.loads((report / "80_comoto_dbt.metrics.json").read_text())
    tables = {t["title"]: t["records"] for t in metrics["index_section"]["tables"]}
    mean_table = tables["Mean sensitivity (mean ± SD over folds)"]
    assert [r["method"] for r in mean_table] == ["DBT only", "Pre-training", "Image-level KD", "LsKD without ImPA",
                                                 "CoMoTo (LsKD + ImPA)"]
    assert all("(n=2)" in r["100% of DBT training patients"] for r in mean_table)
    assert {r["teacher"] for r in metrics["teachers"]} == {"plain", "impa"}
    index = (report / "index.html").read_text()
    assert "figures/comoto_froc.png" in index and "Mean sensitivity" in index


def test_kd_terms_are_logged_for_kd_methods_only(comoto_run):
    _, _, run = comoto_run
    folder = run / "comoto" / "runs" / "fold0" / "100pct"
    assert "lskd" in pd.read_csv(folder / "comoto" / "history.csv").columns
    assert "image_kd" in pd.read_csv(folder / "image_kd" / "history.csv").columns
    plain = pd.read_csv(folder / "pretraining" / "history.csv").columns
    assert "lskd" not in plain and "image_kd" not in plain
    impa = pd.read_csv(run / "comoto" / "teachers" / "impa" / "history.csv")
    assert "impa" in impa.columns and "impa" not in pd.read_csv(run / "comoto" / "teachers" / "plain" / "history.csv")
