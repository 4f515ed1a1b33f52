"""Cross-validation run end to end on a tiny phantom cohort (K = 2): folds, per-fold sub-studies trained on their
own training patients only, out-of-fold predictions, pooled tables and the pooled report; plus the driver's pieces."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from diffkd_study.config import parse_config
from diffkd_study.cvrun import fold_config, fold_timings, pooled_config
from diffkd_study.data.folds import FOLD_COLUMN
from diffkd_study.sections import ConfigError
from diffkd_study.stages import POOLED_STAGE
from tests.studyrun import run_study

TRAIN = {"epochs": 1, "batch_size": 8, "min_epochs": 1, "crop": "lesion"}
RAW = {
    "name": "cvsmoke", "seed": 0, "stages": ["diffusion", "teacher", "student", "baselines"],
    "cv": {"folds": 2},
    "data": {"phantom": {"n_per_center": 20, "image_size": 48}, "external": {"center": ["center_C"]},
             "split": {"val_frac": 0.2, "test_frac": 0.25}},
    "diffusion": {"profile": "smoke", "sampling_steps": 2, "class_counts": ["benign=6", "malignant=5"],
                  "sample_batch_size": 6},
    "teacher": {**TRAIN, "seeds": [0], "model": "tf_efficientnet_lite0", "weights": "none"},
    "student": {**TRAIN, "seeds": [0, 1], "variants": ["alone", "kd_real", "diffkd"]},
    "baselines": {"models": ["image_features", "box_geometry"]},
}


# -- the driver's pieces ---------------------------------------------------------------------------------------
def test_fold_and_pooled_configs():
    config = parse_config(RAW)
    assert config.cv.folds == 2 and config.fold is None
    one = fold_config(config, 1)
    assert one.fold == 1 and one.stages == config.stages and one.to_dict()["fold"] == 1
    assert pooled_config(config).stages == (POOLED_STAGE,)
    with pytest.raises(ValueError, match="not a fold"):
        fold_config(config, 3)


@pytest.mark.parametrize("cv, message", [
    ({"folds": 1}, r"cv\.folds"),
    ({"folds": 5, "fould": 2}, r"cv: unknown key\(s\) \['fould'\]"),
    ({"column": "fold_5"}, r"cv: .*folds"),
    ({"folds": "five"}, r"cv\.folds"),
    (None, r"cv: .*folds"),
])
def test_bad_cv_sections_are_one_line_errors(cv, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_config({**RAW, "cv": cv})
    assert "\n" not in str(err.value)


def test_the_validation_share_must_leave_training_data():
    raw = {**RAW, "data": {**RAW["data"], "split": {"val_frac": 0.5, "test_frac": 0.2}}}
    with pytest.raises(ConfigError, match=r"cv\.folds: .*leaves no training data"):
        parse_config(raw)
    assert parse_config({**raw, "cv": {"folds": 3}}).cv.folds == 3  # 0.5 / (2/3) = 0.75 < 1


def test_the_cv_section_round_trips():
    config = parse_config({**RAW, "cv": {"folds": 5, "column": "fold_5", "seed": 3}})
    assert config.cv.column == "fold_5" and config.cv.seed == 3
    assert parse_config(config.to_dict()) == config
    assert "cv" not in parse_config({k: v for k, v in RAW.items() if k != "cv"}).to_dict()


def test_the_pooled_stage_is_not_listed_by_hand():
    with pytest.raises(ConfigError, match="runs by itself after the folds"):
        parse_config({**RAW, "stages": ["baselines", POOLED_STAGE]})


# -- end to end --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    return run_study(RAW, tmp_path_factory.mktemp("cv"))


@pytest.mark.slow
@pytest.mark.notebook
def test_every_fold_and_the_pooled_report_run(cv_run):
    code, report, run = cv_run
    assert code == 0
    for fold in ("fold-1", "fold-2"):
        assert (run / fold / "stages.json").is_file() and (report / fold / "index.html").is_file()
        prov = json.loads((report / fold / "provenance.json").read_text())
        assert [s["status"] for s in prov["stages"]] == ["ok"] * 4 and prov["config"]["fold"] == int(fold[-1])
    assert (report / "55_cv_pooled.html").is_file() and (report / "55_cv_pooled.clinician.html").is_file()
    index = (report / "index.html").read_text()
    assert "fold-1/index.html" in index and "fold-2/index.html" in index and "55_cv_pooled.html" in index
    assert "Cross-validation: pooled results" in index
    assert index.index("id='headline'") < index.index("fold-1/index.html")  # the pooled headline comes first
    assert "What it is" in (report / "55_cv_pooled.clinician.html").read_text()  # models described in words
    assert "What it is" in index and "Obuchowski clustered (logit scale)</td>" not in index  # not on every row
    assert "../index.html" in (report / "fold-1" / "index.html").read_text()
    timings = fold_timings(run)
    assert [t["fold"] for t in timings] == ["fold-1", "fold-2"] and all(t["diffusion"] > 0 for t in timings)


@pytest.mark.slow
@pytest.mark.notebook
def test_folds_partition_the_internal_patients(cv_run):
    _, _, run = cv_run
    study = pd.read_csv(run / "data" / "study.csv")
    internal = study[study["split"] != "external"]
    assert set(internal["split"]) == {"test"} and internal[FOLD_COLUMN].notna().all()
    assert internal.groupby("patient_id")[FOLD_COLUMN].nunique().max() == 1
    tested = []
    for fold in (1, 2):
        split = pd.read_csv(run / f"fold-{fold}" / "data" / "study.csv")
        test = split[split["split"] == "test"]
        assert set(test["patient_id"]) == set(internal.loc[internal[FOLD_COLUMN] == fold, "patient_id"])
        train_val = split[split["split"].isin(["train", "val"])]
        assert not set(test["patient_id"]) & set(train_val["patient_id"])
        assert set(split.loc[split["split"] == "external", "image_id"]) == set(study.loc[study["split"] == "external",
                                                                                          "image_id"])
        tested += test["patient_id"].tolist()
    assert sorted(tested) == sorted(internal["patient_id"])  # every internal patient tested exactly once


@pytest.mark.slow
@pytest.mark.notebook
def test_each_folds_diffusion_saw_only_its_training_patients(cv_run):
    _, report, run = cv_run
    for fold in (1, 2):
        split = pd.read_csv(run / f"fold-{fold}" / "data" / "study.csv")
        train = set(split.loc[split["split"] == "train", "image_id"])
        params = json.loads((report / f"fold-{fold}" / "10_diffusion.provenance.json").read_text())["parameters"]
        assert params["manifest_path"] == str((run / f"fold-{fold}" / "data" / "study.csv").resolve())
        synthetic = pd.read_csv(run / f"fold-{fold}" / "synthetic" / "synthetic.csv")
        assert set(synthetic["source_image_id"]) <= train  # the rows it was conditioned on: training rows
        teacher = json.loads((run / f"fold-{fold}" / "teacher" / "records.json").read_text())
        assert teacher["fits"]


@pytest.mark.slow
@pytest.mark.notebook
def test_pooled_tables(cv_run):
    _, report, run = cv_run
    study = pd.read_csv(run / "data" / "study.csv")
    internal = study[study["split"] != "external"]
    oof = pd.read_csv(run / "cv" / "oof_predictions.csv")
    for _, part in oof.groupby("model"):
        assert sorted(part["image_id"]) == sorted(internal["image_id"])  # each internal image once, out of fold
        assert (part["fold"].to_numpy() == part["image_id"].map(internal.set_index("image_id")[FOLD_COLUMN])).all()
    ext = pd.read_csv(run / "cv" / "external_predictions.csv")
    assert (ext.groupby(["model", "image_id"]).size() == 2).all()
    pooled = pd.read_csv(run / "cv" / "pooled_auc.csv")
    assert {"teacher_real", "student_alone", "student_diffkd", "image_features"} <= set(pooled["model"])
    comparisons = pd.read_csv(run / "cv" / "comparisons.csv")
    assert comparisons["comparison"].tolist() == ["teacher_real+syn vs teacher_real",
                                                  "student_kd_real vs student_alone",
                                                  "student_diffkd vs student_kd_real"]
    assert (pd.read_csv(run / "cv" / "external_auc.csv")["test_set"] == "external: center_C").all()
    metrics = json.loads((report / "55_cv_pooled.metrics.json").read_text())
    assert metrics["folds"] == 2 and metrics["index_section"]["title"] == "Cross-validation: pooled results"
    # every model beside the box geometry, pooled; the goals on the pooled scores; the wall time of every stage
    beside = {(r["test_set"], r["model"]) for r in metrics["box_geometry_reference"]}
    assert ("internal (pooled out of fold)", "teacher_real") in beside and ("external: center_C", "student_diffkd") in beside
    assert {g["goal"] for g in metrics["goals"]} >= {"distillation adds at least 0.02 AUC (same initialisation)"}
    assert [t["fold"] for t in metrics["wall_s"]] == ["fold-1", "fold-2"]
    # what the study can and cannot conclude: one row per planned comparison, first in the index section
    questions = [r["question"] for r in metrics["reading"]]
    assert sum(q.startswith("Does the") and "differ from" in q for q in questions) == 3
    assert {r["verdict"] for r in metrics["reading"]} <= {"can conclude", "cannot conclude"}
    assert metrics["index_section"]["tables"][0]["title"].startswith("What this study can and cannot conclude")


def test_one_fold_runs_alone_under_its_own_lock_without_the_pooled_stage(tmp_path, monkeypatch):
    import dataclasses

    from diffkd_study import cvrun
    from diffkd_study.runlock import RunLock, RunLockedError

    @dataclasses.dataclass
    class Result:
        stages: list
        wall_s: float = 0.0
        ok: bool = True

    prepared, ran = [], []
    monkeypatch.setattr(cvrun, "prepare_study_data", lambda config, run_dir, **_: prepared.append(run_dir))

    def run_one(config, run_dir, report_dir):
        with pytest.raises(RunLockedError):  # the fold's folder is held while it runs
            RunLock(run_dir).acquire()
        RunLock(run_dir.parent).acquire().release()  # the study folder is free: the other fold can prepare
        ran.append((config.fold, run_dir.name))
        return Result(stages=[])

    config = parse_config(RAW)
    result = cvrun.run_cross_validation(config, tmp_path / "runs", tmp_path / "reports", run_one, only_fold=2)
    assert ran == [(2, "fold-2")] and prepared == [tmp_path / "runs"] and result.stages == []
    with pytest.raises(ValueError, match=r"--fold 3: this study has folds 1..2"):
        cvrun.run_cross_validation(config, tmp_path / "runs", tmp_path / "reports", run_one, only_fold=3)


def test_two_fold_runs_started_together_wait_for_each_others_preparation(tmp_path, monkeypatch, capsys):
    """``--fold 1 & --fold 2`` started in the same second: the second waits for the first's data preparation
    instead of stopping with "in use by another run"; a whole-study run holding the folder is still refused."""
    import dataclasses
    import threading

    from diffkd_study import cvrun
    from diffkd_study.runlock import RunLock, RunLockedError

    @dataclasses.dataclass
    class Result:
        stages: list
        wall_s: float = 0.0
        ok: bool = True

    monkeypatch.setattr(cvrun, "prepare_study_data", lambda config, run_dir, **_: None)
    config = parse_config(RAW)
    runs = tmp_path / "runs"
    held = RunLock(runs, purpose=cvrun.PREPARING).acquire()  # another fold run, preparing
    threading.Timer(1.0, held.release).start()
    ran = []
    result = cvrun.run_cross_validation(config, runs, tmp_path / "reports",
                                        lambda c, r, _: ran.append(c.fold) or Result(stages=[]), only_fold=1)
    assert ran == [1] and result.stages == []
    assert "waiting for pid" in capsys.readouterr().err
    with RunLock(runs):  # a whole-study run holds the folder: a fold run is refused at once, naming it
        with pytest.raises(RunLockedError, match="in use by another run"):
            cvrun.run_cross_validation(config, runs, tmp_path / "reports",
                                       lambda c, r, _: Result(stages=[]), only_fold=2)
