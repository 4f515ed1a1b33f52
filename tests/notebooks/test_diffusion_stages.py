"""End-to-end: the diffusion and synthetic-quality notebooks on a tiny phantom cohort (smoke profile)
through `diffkd-study run`, then a re-run that resumes instead of retraining (a changed section is
refused with the difference: tests/unit/methods/diffkd/diffusion/test_workflow.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from diffkd_study.cli import main
from diffkd_study.data.datasets import ManifestDataset
from diffkd_study.data.schema import read_manifest
from diffkd_study.data.validate import validate_manifest

PROJECT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.notebook
RAW = {
    "name": "diffsmoke", "seed": 3, "stages": ["diffusion", "synthetic_quality"],
    "data": {"phantom": {"n_per_center": 12, "image_size": 48}, "external": {"center": ["center_C"]},
             "split": {"val_frac": 0.2, "test_frac": 0.25}},
    "diffusion": {"profile": "smoke", "conditions": ["cond_birads", "cond_scanner", "cond_age"],
                  "sampling_steps": 2, "class_counts": ["benign=6", "malignant=5"], "sample_batch_size": 6},
    "synthetic_quality": {"reference_splits": ["val", "test"], "kid_subsets": 5, "guidance_sweep": [1, 3],
                          "sweep_images": 4, "min_group_size": 3, "faithfulness_min_per_level": 2,
                          "grid_images": 2},
    "teacher": {"crop": "lesion"},  # so the diffusion model makes the classifier's lesion crops (crop: auto)
}


def _run(tmp_path: Path, raw: dict) -> int:
    config = tmp_path / "diffsmoke.yaml"
    config.write_text(yaml.safe_dump(raw))
    cwd = os.getcwd()
    os.chdir(PROJECT)
    try:
        return main(["run", str(config), "--reports-dir", str(tmp_path / "reports"), "--runs-dir",
                     str(tmp_path / "runs")])
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("diffusion")
    code = _run(tmp_path, RAW)
    return code, tmp_path, tmp_path / "reports" / "diffsmoke", tmp_path / "runs" / "diffsmoke"


def test_both_stages_run_and_write_their_reports(study_run):
    code, _, report, _ = study_run
    prov = json.loads((report / "provenance.json").read_text())
    assert [s["status"] for s in prov["stages"]] == ["ok", "ok"], prov["stages"]
    assert code == 0
    for name in ("10_diffusion", "20_synthetic_quality"):
        for suffix in (".html", ".clinician.html", ".metrics.json", ".ipynb"):
            assert (report / f"{name}{suffix}").is_file(), name + suffix
    for figure in ("diffusion_loss", "synthetic_guidance_sweep", "synthetic_memorization_histogram",
                   "synthetic_closest_pairs", "synthetic_grid_per_class", "synthetic_grid_per_level"):
        assert (report / "figures" / f"{figure}.png").is_file(), figure
        assert (report / "figures" / f"{figure}.svg").is_file(), figure
    index = (report / "index.html").read_text()
    assert "Stage 1: quality of the synthetic images" in index and "figures/synthetic_grid_per_class.png" in index
    assert "FID floor" in index


def test_diffusion_artifacts(study_run):
    _, _, report, run = study_run
    diffusion = run / "diffusion"
    assert (diffusion / "checkpoint-000006" / "model.safetensors").is_file()
    loss = pd.read_csv(diffusion / "loss.csv")
    assert loss["step"].tolist() == list(range(1, 7)) and np.isfinite(loss["loss"]).all()
    training = json.loads((diffusion / "training.json").read_text())
    assert training["steps"] == 6 and training["config"]["conditions"] == ["cond_birads", "cond_scanner", "cond_age"]

    synthetic = read_manifest(run / "synthetic" / "synthetic.csv")
    df = synthetic.df
    assert df.groupby("label").size().to_dict() == {"benign": 6, "malignant": 5}
    assert set(df["split"]) == {"train"} and set(df["synthetic"]) == {"1"}
    assert set(df["sampler"]) == {"dpmsolver++"} and set(df["steps"]) == {"2"} and set(df["guidance"]) == {"2.0"}
    study = read_manifest(run / "data" / "study.csv")
    assert dict(synthetic.schema.conditions) == dict(study.schema.conditions)
    train_ids = set(study.df.loc[study.df["split"] == "train", "image_id"])
    assert set(df["source_image_id"]) <= train_ids  # conditions come from training rows only
    assert validate_manifest(synthetic, run / "synthetic", progress=False).ok
    image = np.asarray(Image.open(run / "synthetic" / df["image_path"].iloc[0]))
    assert image.dtype == np.uint8 and image.shape == (32, 32)  # the smoke model's resolution
    metrics = json.loads((report / "10_diffusion.metrics.json").read_text())
    assert metrics["training"]["steps"] == 6 and metrics["synthetic"]["n_images"] == 11


def test_quality_metrics_memorization_and_augmentation(study_run):
    _, _, report, run = study_run
    metrics = json.loads((report / "20_synthetic_quality.metrics.json").read_text())
    sets = metrics["image_sets"]
    assert sets["n_synthetic"] == 11 and sets["n_eval"] == min(11, sets["n_training"])
    rows = {(r["set"], r["extractor"]): r for r in metrics["fidelity"]}
    for extractor in ("TF-Inception (pool3)", "EfficientNet-Lite0 (domain)"):
        for name in ("synthetic", "classic augmentation (baseline)", "real training (floor)"):
            row = rows[(name, extractor)]
            assert row["n_generated"] == sets["n_eval"] and row["n_real"] == sets["n_reference"]
            assert np.isfinite(row["fid"]) and row["kid_std"] >= 0
    assert len(metrics["floor"]["reference_split_half"]) == 2
    assert {r["guidance"] for r in metrics["guidance_sweep"] if r["guidance"] is not None} == {1.0, 3.0}
    assert metrics["faithfulness"]["records"][0]["target"] == "label"

    memorization = pd.read_csv(run / "synthetic" / "memorization.csv")
    synthetic = read_manifest(run / "synthetic" / "synthetic.csv").df
    assert memorization["image_id"].tolist() == synthetic["image_id"].tolist()
    assert {"nearest_feature_image_id", "feature_distance", "nearest_pixel_image_id", "pixel_distance",
            "flagged"} <= set(memorization.columns)
    augmentation = read_manifest(run / "synthetic" / "augmentation.csv")
    flagged = set(memorization.loc[memorization["flagged"], "image_id"])
    assert set(augmentation.df["image_id"]) == set(synthetic["image_id"]) - flagged
    assert metrics["memorization"]["n_flagged"] == len(flagged)
    # the teacher reads it with paths relative to synthetic/, at the study resolution
    dataset = ManifestDataset(augmentation, run / "synthetic", size=48)
    assert len(dataset) == len(augmentation.df) > 0  # the smoke model's noise images are never near-copies
    assert tuple(dataset[0]["image"].shape) == (1, 48, 48)


def test_synthesis_is_in_the_classifier_domain_and_audited_by_a_two_sample_test(study_run):
    _, _, report, run = study_run
    synthetic = read_manifest(run / "synthetic" / "synthetic.csv").df
    assert set(synthetic["synthetic_crop"]) == {"lesion"}  # the teacher crops the lesion: so does the diffusion model
    summary = json.loads((run / "synthetic" / "quality.json").read_text())
    assert summary["domain"] == {"crop": "lesion", "roi_margin": 0.25, "resolution_px": 32}
    scopes = {r["scope"]: r for r in summary["two_sample"]}
    assert "all" in scopes and {"class=benign", "class=malignant"} <= set(scopes)
    assert {g["goal"].split(" (")[0] for g in summary["goals"]} >= {"FID within 2x the real-vs-real floor"}
    metrics = json.loads((report / "20_synthetic_quality.metrics.json").read_text())
    assert metrics["two_sample"] == summary["two_sample"]
    html = (report / "20_synthetic_quality.clinician.html").read_text()  # outputs only: both tables are shown
    assert "Images compared" in html and "FID within 2x the real-vs-real floor" in html


def test_rerun_resumes_and_keeps_the_synthetic_set(study_run, tmp_path):
    first = study_run[2].parents[1]
    shutil.copytree(first / "runs", tmp_path / "runs")  # a copy: the other tests keep their run
    report, run = tmp_path / "reports" / "diffsmoke", tmp_path / "runs" / "diffsmoke"
    before = (run / "synthetic" / "synthetic.csv").read_bytes()
    code = _run(tmp_path, {**RAW, "stages": ["diffusion"]})
    assert code == 0
    metrics = json.loads((report / "10_diffusion.metrics.json").read_text())
    assert metrics["training"]["steps_run"] == 0 and metrics["training"]["resumed_from"] == 6
    assert metrics["synthetic"]["reused"] is True
    assert (run / "synthetic" / "synthetic.csv").read_bytes() == before
    assert (run / "synthetic" / "memorization.csv").is_file()  # a kept set keeps its audit
