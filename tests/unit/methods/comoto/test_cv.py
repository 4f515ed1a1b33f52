"""Folds, regimes, teacher hold-out, and resuming the cross-validation from completed runs."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from diffkd_study.methods.comoto import cv
from diffkd_study.methods.comoto.data import load_detection_data
from diffkd_study.methods.comoto.stage import ComotoStageConfig

TINY = dict(backbone="resnet18", weights="none", feature_stage=2, detector_image_size=64, anchor_sizes=(8, 16, 32),
            batch_size=2, warmup_steps=0, detections_per_img=5, teacher_epochs=0, teacher_min_steps=2,
            student_epochs=0, student_min_steps=2)
CPU = torch.device("cpu")


@pytest.fixture()
def tiny(cohorts):
    dbt = load_detection_data(cohorts["dbt"], cohorts["root"] / "dbt", 64, hit_min_distance=10,
                              release_scale="scale", progress=False)
    mammo = load_detection_data(cohorts["mammo"], cohorts["root"] / "mammo", 64, release_scale=0.5, progress=False)
    return dbt, mammo


def test_folds_group_patients_and_stratify(tiny):
    dbt, _ = tiny
    fold = cv.patient_folds(dbt, 3, seed=0)
    per_patient = pd.Series(fold).groupby(dbt.patient_ids).nunique()
    assert (per_patient == 1).all() and set(fold) == {0, 1, 2}
    malignant = pd.Series(dbt.labels == "malignant").groupby(fold).sum()
    assert (malignant == 2).all()  # 3 malignant patients x 2 slices, one patient per fold
    assert np.array_equal(fold, cv.patient_folds(dbt, 3, seed=0))
    with pytest.raises(ValueError, match="6 patients cannot fill 7 folds"):
        cv.patient_folds(dbt, 7, seed=0)


def test_regimes_are_nested_patient_subsets(tiny):
    dbt, _ = tiny
    train = np.arange(len(dbt))  # 6 patients
    small, half, full = (cv.regime_indices(dbt, train, f, seed=3) for f in (0.1, 0.5, 1.0))
    patients = [set(dbt.patient_ids[i]) for i in (small, half, full)]
    assert [len(p) for p in patients] == [1, 3, 6]  # max(1, round(0.6)), round(3), 6
    assert patients[0] <= patients[1] <= patients[2]
    assert len(half) == 6  # all slices of the chosen patients
    assert cv.regime_name(0.1) == "10%" and cv.regime_name(0.25) == "25%" and cv.regime_name(1.0) == "100%"


def test_teacher_holdout_groups_patients_by_lesion_stratum(tiny):
    _, mammo = tiny  # 4 lesion patients, 2 normal patients, 2 images each
    train, holdout = cv.teacher_holdout_split(mammo, 0.5, seed=1)
    assert not set(mammo.patient_ids[train]) & set(mammo.patient_ids[holdout])
    assert mammo.has_lesion[holdout].sum() == 4 and (~mammo.has_lesion[holdout]).sum() == 2
    everything, none = cv.teacher_holdout_split(mammo, 0.0, seed=1)
    assert len(everything) == len(mammo) and len(none) == 0


def test_cross_validation_writes_runs_and_resumes(tiny, tmp_path, monkeypatch):
    dbt, mammo = tiny
    config = ComotoStageConfig(methods=("dbt_only", "comoto"), regimes=(0.5, 1.0), folds=2, teacher_holdout_frac=0.25,
                               **TINY)
    teachers = cv.train_teachers(config, mammo, tmp_path, seed=0, device=CPU, progress=False)
    assert list(teachers) == ["impa"] and not teachers["impa"].reused and teachers["impa"].steps == 2
    # hold-out: round(0.25 x 4) = 1 lesion patient and round(0.25 x 2) = 0 normal ones, 2 images each
    assert teachers["impa"].holdout is not None and teachers["impa"].holdout.n_images == 2
    results = cv.run_cross_validation(config, dbt, teachers, mammo, tmp_path, seed=0, device=CPU, progress=False)
    assert len(results) == 2 * 2 * 2
    assert results.groupby(["method", "regime"])["n_images"].sum().eq(len(dbt)).all()
    assert (results["steps"] == 2).all()
    run = tmp_path / "runs" / "fold1" / "50pct" / "comoto"
    assert {p.name for p in run.iterdir()} == {"detections.csv", "history.csv", "run.json"}
    assert json.loads((tmp_path / "folds.json").read_text()).keys() == set(dbt.image_ids)

    def no_training(*args, **kwargs):
        raise AssertionError("a completed run was retrained")

    monkeypatch.setattr(cv, "fit_detector", no_training)
    again = cv.train_teachers(config, mammo, tmp_path, seed=0, device=CPU, progress=False)
    assert again["impa"].reused and again["impa"].key == teachers["impa"].key
    resumed = cv.run_cross_validation(config, dbt, again, mammo, tmp_path, seed=0, device=CPU, progress=False)
    pd.testing.assert_frame_equal(resumed, results)
    pooled = cv.pooled_detections(tmp_path, config)
    assert set(pooled) == {(r, m) for r in (0.5, 1.0) for m in ("dbt_only", "comoto")}
    assert set(pooled[(1.0, "comoto")]["image_id"]) <= set(dbt.image_ids)

    # a new student budget keeps the teachers but invalidates the stored runs
    longer = replace(config, student_min_steps=3)
    kept = cv.train_teachers(longer, mammo, tmp_path, seed=0, device=CPU, progress=False)
    assert kept["impa"].reused
    with pytest.raises(AssertionError, match="retrained"):
        cv.run_cross_validation(longer, dbt, kept, mammo, tmp_path, seed=0, device=CPU, progress=False)
    with pytest.raises(AssertionError, match="retrained"):  # so does a new KD weight
        cv.run_cross_validation(replace(config, alpha=1.0), dbt, again, mammo, tmp_path, seed=0, device=CPU,
                                progress=False)
    with pytest.raises(AssertionError, match="retrained"):  # and a new teacher setting retrains the teacher
        cv.train_teachers(replace(config, beta=1.0), mammo, tmp_path, seed=0, device=CPU, progress=False)


def test_same_seed_and_data_for_every_method_of_a_fold_and_regime(tiny, tmp_path):
    dbt, mammo = tiny
    config = ComotoStageConfig(methods=("dbt_only", "pretraining", "lskd"), regimes=(1.0,), folds=2, **TINY)
    teachers = cv.train_teachers(config, mammo, tmp_path, seed=2, device=CPU, progress=False)
    assert list(teachers) == ["plain", "impa"]
    # same initial weights and batches: the two teachers differ only by the ImPA term
    plain, impa = teachers["plain"].history, teachers["impa"].history
    assert "impa" not in plain.columns and "impa" in impa.columns
    assert plain.loc[0, "classification"] == pytest.approx(impa.loc[0, "classification"])
    results = cv.run_cross_validation(config, dbt, teachers, mammo, tmp_path, seed=2, device=CPU, progress=False)
    assert results.groupby("fold")["n_train_images"].nunique().eq(1).all()
    # every method of the fold made the same number of steps; only the KD method logs a KD term
    first = {m: pd.read_csv(tmp_path / "runs" / "fold0" / "100pct" / m / "history.csv").loc[0] for m in config.methods}
    assert first["lskd"]["lskd"] > 0 and "lskd" not in first["pretraining"] and "lskd" not in first["dbt_only"]
    assert results.groupby("fold")["steps"].nunique().eq(1).all()
