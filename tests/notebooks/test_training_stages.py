"""End-to-end: teacher and student notebooks via `diffkd-study run` on a tiny phantom cohort, with a
synthetic set planted where the diffusion stage writes it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from diffkd_study.cli import main
from diffkd_study.data.phantom import generate_phantom_cohort
from diffkd_study.data.schema import Manifest, write_manifest
from tests.studyrun import run_study

pytestmark = pytest.mark.notebook
STAGES = ["teacher", "student", "evaluation", "reader_study", "summary"]
TRAINING = {"epochs": 2, "batch_size": 8, "min_epochs": 1, "seeds": [0, 1], "crop": "lesion"}


def _plant_synthetic(folder: Path) -> None:
    """A stand-in synthetic set (phantom images of another seed) in the synthetic-manifest layout."""
    cohort = generate_phantom_cohort(folder, n_per_center=4, seed=99, image_size=64, progress=False)
    df = cohort.df.assign(split="train", synthetic="1", center="synthetic")
    write_manifest(Manifest(df, cohort.schema), folder / "synthetic.csv")
    (folder / "phantom.csv").unlink()


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("train")
    raw = {
        "name": "trainsmoke", "seed": 0, "stages": STAGES,
        "data": {"phantom": {"n_per_center": 20, "image_size": 64}, "external": {"center": ["center_C"]},
                 "split": {"val_frac": 0.25, "test_frac": 0.25}},
        "teacher": {**TRAINING, "seeds": [0], "model": "tf_efficientnet_lite0", "weights": "none",
                    "extra_crops": ["whole"]},
        "student": {**TRAINING, "loss": {"ce": {"weight": 0.5}, "kd": {"weight": 0.5, "params": {"temperature": 4.0}},
                                         "at": {"weight": 10.0}},
                    "initialisation": {"views": 2, "epochs": 1, "batch_size": 16}, "scratch_variants": ["alone"],
                    "extra_crops": ["whole"], "crop_variants": ["kd_real"]},
        "evaluation": {"bootstrap": 200, "band_resamples": 100, "efficiency_runs": 3},
        "reader_study": {"simulate": {"n_junior": 2, "n_senior": 2}},
        "summary": {"band_resamples": 100},
    }
    _plant_synthetic(tmp_path / "runs" / "trainsmoke" / "synthetic")
    return run_study(raw, tmp_path)


def test_stages_run_and_report(study_run):
    code, report, _ = study_run
    prov = json.loads((report / "provenance.json").read_text())
    assert [s["status"] for s in prov["stages"]] == ["ok"] * len(STAGES), prov["stages"]
    assert code == 0
    for name in ("30_teacher", "40_student"):
        for suffix in (".html", ".clinician.html", ".metrics.json"):
            assert (report / f"{name}{suffix}").is_file(), name + suffix
    for figure in ("teacher_curves_real", "teacher_curves_real_syn", "student_curves_diffkd_syn"):
        assert (report / "figures" / f"{figure}.png").is_file(), figure


def test_every_variant_and_seed_predicts_held_out_rows_only(study_run):
    _, _, run = study_run
    study = pd.read_csv(run / "data" / "study.csv")
    train = set(study.loc[study["split"] == "train", "image_id"])
    names = ["teacher_real", "teacher_real+syn", "student_alone", "student_kd_real", "student_diffkd",
             "student_diffkd+syn", "student_alone-scratch"]
    for name in names:
        pred = pd.read_csv(run / "predictions" / f"{name}.csv")
        assert set(pred["seed"]) == ({0} if name.startswith("teacher") else {0, 1}), name
        assert set(pred["split"]) == {"val", "test", "external"} and not train & set(pred["image_id"]), name


def test_records_log_every_term_and_the_teacher_used(study_run):
    _, report, run = study_run
    records = json.loads((run / "student" / "records.json").read_text())
    diffkd = [f for f in records["fits"] if f["variant"] == "diffkd+syn"]
    assert {f["teacher_variant"] for f in diffkd} == {"real+syn"} and all(f["synthetic_per_epoch"] > 0 for f in diffkd)
    history = json.loads(Path(diffkd[0]["history"]).read_text())["history"]
    assert {"train_ce", "train_kd", "train_at", "train_total", "val_auc"} <= set(history[0])
    teacher = json.loads((run / "teacher" / "records.json").read_text())
    assert teacher["synthetic_audited"] is False and teacher["fits"][0]["weights_sha256"]
    metrics = json.loads((report / "40_student.metrics.json").read_text())
    assert set(metrics["efficiency_ratios"]) == {"params", "GFLOPs", "cpu_latency"}
    assert {r["model"] for r in metrics["ablation"]} >= {"student_alone", "student_diffkd"}


def test_summary_index_checklist_and_compare(study_run, capsys):
    _, report, _ = study_run
    headline = json.loads((report / "headline.json").read_text())
    assert headline["models"] == {"teacher": "teacher_real+syn", "student": "student_diffkd"}
    assert {r["test_set"] for r in headline["auc"]} == {"internal test", "external: center_C"}
    assert (report / "figures" / "headline_roc.png").is_file()
    index = (report / "index.html").read_text()
    assert index.index("The study at a glance") < index.index("<h2>Stages</h2>")
    assert "simulated readers" in index.lower() and "checklist.html" in index
    checklist = (report / "checklist.html").read_text()
    assert "40_student.clinician.html" in checklist and "not in this run" in checklist  # no data audit here
    assert main(["report", "compare", str(report), str(report), "--out", str(report.parent / "cmp.html")]) == 0
    out = capsys.readouterr().out
    assert "AUC student: internal test" in out and "+0.0000" in out
    assert (report.parent / "cmp.html").is_file()


def test_every_student_starts_from_the_general_distillation_of_training_images(study_run):
    _, report, run = study_run
    study = pd.read_csv(run / "data" / "study.csv")
    seen = pd.read_csv(run / "student" / "init" / "images.csv")
    train = set(study.loc[study["split"] == "train", "image_id"])
    assert set(seen["image_id"]) == train and set(seen["set"]) == {"lesion crop", "whole image"}
    records = json.loads((run / "student" / "records.json").read_text())
    init = records["initialisation"]
    assert init["weights"].startswith("distilled:") and init["views"] == 2 * 2 * len(train)
    by_variant = {f["variant"]: f for f in records["fits"]}
    assert by_variant["alone"]["init"] == "distilled" and by_variant["alone"]["init_sha256"] == init["sha256"]
    assert by_variant["alone-scratch"]["init"] == "none" and "init_sha256" not in by_variant["alone-scratch"]
    probe = pd.DataFrame(init["probe"])
    assert set(probe["representation"]) == {"student, random weights", "student, general distillation",
                                            "teacher, ImageNet weights"}
    assert set(probe["split"]) == {"val", "test", "external"} and probe["auc"].between(0, 1).all()
    metrics = json.loads((report / "40_student.metrics.json").read_text())
    assert len(metrics["initialisation_probe"]) == 9
    for page in ("40_student.html", "40_student.clinician.html"):  # the probe table is on the page, not only in JSON
        assert "student, general distillation" in (report / page).read_text(), page


def test_a_standalone_reader_crop_trains_and_is_judged_against_the_outline_crop(study_run):
    _, report, run = study_run
    teacher = json.loads((run / "teacher" / "records.json").read_text())
    student = json.loads((run / "student" / "records.json").read_text())
    whole = [f for f in teacher["fits"] if f["variant"] == "real-whole"]
    assert whole and whole[0]["crop"] == "whole"
    kd = [f for f in student["fits"] if f["variant"] == "kd_real-whole"]
    assert kd and {f["teacher_variant"] for f in kd} == {"real-whole"}  # the teacher of the same crop
    assert {f["teacher_weights_sha256"] for f in kd} == {whole[0]["weights_sha256"]}
    metrics = json.loads((report / "50_evaluation.metrics.json").read_text())
    goals = [g for g in metrics["student_goals"] if g["model_b"] == "teacher_real-whole"]
    assert goals and all("within 0.05 AUC of the outline crop" in g["goal"] for g in goals)
