"""End-to-end: `diffkd-study run` on a tiny phantom cohort executes the data-audit notebook with
papermill and writes the clinician and reviewer HTML, the index and the provenance record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from diffkd_study.cli import main
from diffkd_study.data.schema import read_manifest, write_manifest

PROJECT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.notebook


def _config(tmp_path: Path, **data) -> Path:
    raw = {"name": "smoke", "seed": 1, "data": data, "stages": ["data_audit"]}
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, monkeypatch_module=None):
    tmp_path = tmp_path_factory.mktemp("run")
    config = _config(tmp_path, phantom={"n_per_center": 8, "image_size": 64}, external={"center": ["center_C"]},
                     split={"val_frac": 0.2, "test_frac": 0.2}, audit_examples_per_group=2)
    import os

    cwd = os.getcwd()
    os.chdir(PROJECT)  # the runner finds notebooks/ relative to the project root
    try:
        code = main(["run", str(config), "--reports-dir", str(tmp_path / "reports"),
                     "--runs-dir", str(tmp_path / "runs")])
    finally:
        os.chdir(cwd)
    return code, tmp_path


def test_run_succeeds_and_writes_every_artifact(demo_run):
    code, tmp_path = demo_run
    assert code == 0
    report = tmp_path / "reports" / "smoke"
    for name in ("index.html", "provenance.json", "00_data_audit.ipynb", "00_data_audit.html",
                 "00_data_audit.clinician.html", "00_data_audit.metrics.json",
                 "figures/examples_per_center.png", "figures/examples_per_center.svg", "figures/label_balance.png"):
        assert (report / name).is_file(), name
    assert not list(report.glob(".*running*"))


def test_clinician_html_has_no_code_and_reviewer_html_has_it(demo_run):
    _, tmp_path = demo_run
    report = tmp_path / "reports" / "smoke"
    clinician = (report / "00_data_audit.clinician.html").read_text()
    reviewer = (report / "00_data_audit.html").read_text()
    assert "read_manifest" in reviewer and "read_manifest" not in clinician
    assert "Provenance" in clinician and "Example images" in clinician
    assert "data:image/png;base64" in clinician  # figures embedded: the page stands alone


def test_provenance_and_metrics(demo_run):
    _, tmp_path = demo_run
    report = tmp_path / "reports" / "smoke"
    prov = json.loads((report / "provenance.json").read_text())
    assert prov["seed"] == 1 and prov["config"]["data"]["phantom"]["n_per_center"] == 8
    assert prov["stages"][0]["status"] == "ok" and prov["wall_s"] > 0
    assert len(prov["inputs_sha256"]["study.csv"]) == 64
    metrics = json.loads((report / "00_data_audit.metrics.json").read_text())
    assert metrics["n_images"] == 24 and metrics["validation"]["n_errors"] == 0
    assert {row["split"] for row in metrics["split_table"]} == {"train", "val", "test", "external", "total"}
    index = (report / "index.html").read_text()
    assert "00_data_audit.clinician.html" in index and "figures/examples_per_center.png" in index
    study = read_manifest(tmp_path / "runs" / "smoke" / "data" / "study.csv")
    assert set(study.df.loc[study.df["split"] == "external", "center"]) == {"center_C"}


def test_bad_manifest_stops_before_writing_reports(tmp_path, capsys):
    good = _config(tmp_path, phantom={"n_per_center": 4, "image_size": 64})
    runs = tmp_path / "runs"
    assert main(["run", str(good), "--reports-dir", str(tmp_path / "r0"), "--runs-dir", str(runs)]) in (0, 1)
    cohort = runs / "smoke" / "data" / "phantom"
    manifest = read_manifest(cohort / "phantom.csv")
    manifest.df.loc[0, "label"] = "cancer"
    (cohort / manifest.df.loc[1, "image_path"]).unlink()
    bad_csv = write_manifest(manifest, tmp_path / "bad" / "bad.csv")
    bad = _config(tmp_path, manifests=[{"path": str(bad_csv), "root": str(cohort)}])
    capsys.readouterr()
    code = main(["run", str(bad), "--data-root", str(tmp_path), "--reports-dir", str(tmp_path / "reports"),
                 "--runs-dir", str(tmp_path / "runs2")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{bad_csv}:2 [image_id={manifest.df.loc[0, 'image_id']}] error label-outside-set" in err
    assert f"{bad_csv}:3 [image_id={manifest.df.loc[1, 'image_id']}] error missing-file" in err
    assert not (tmp_path / "reports" / "smoke").exists()
