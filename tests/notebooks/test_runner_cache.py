"""The runner's cache: unchanged stages are re-used, a changed parameter re-runs that stage and those after
it, --force / --from / --dry-run, and a failed stage stops the run and is resumed after the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from diffkd_study.cli import main

PROJECT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.notebook
STAGES = ["data_audit", "baselines", "evaluation"]


@pytest.fixture
def study(tmp_path, monkeypatch):
    raw = {"name": "cache", "seed": 0, "stages": STAGES,
           "data": {"phantom": {"n_per_center": 16, "image_size": 64}, "external": {"center": ["center_C"]},
                    "split": {"val_frac": 0.25, "test_frac": 0.25}, "audit_examples_per_group": 1},
           "evaluation": {"bootstrap": 100, "band_resamples": 100, "efficiency_runs": 2}}
    config = tmp_path / "cache.yaml"
    monkeypatch.setenv("DIFFKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(PROJECT)

    def run(*extra: str, **changes) -> tuple[int, dict]:
        merged = {**raw, **changes}
        config.write_text(yaml.safe_dump(merged))
        code = main(["run", str(config), "--reports-dir", str(tmp_path / "reports"), "--runs-dir",
                     str(tmp_path / "runs"), *extra])
        prov_path = tmp_path / "reports" / "cache" / "provenance.json"
        prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
        return code, {s["stage"]: s["status"] for s in prov.get("stages", [])}

    return run, tmp_path


def test_cache_force_from_dry_run(study, capsys):
    run, tmp_path = study
    assert run() == (0, dict.fromkeys(STAGES, "ok"))
    assert run() == (0, dict.fromkeys(STAGES, "cached"))
    index = (tmp_path / "reports" / "cache" / "index.html").read_text()
    assert "Diagnostic performance" in index and "cached" in index  # cached stages keep their index sections
    changed = {"evaluation": {"bootstrap": 150, "band_resamples": 100, "efficiency_runs": 2}}
    assert run(**changed) == (0, {"data_audit": "cached", "baselines": "cached", "evaluation": "ok"})
    assert run("--force", "baselines", **changed) == (0, {"data_audit": "cached", "baselines": "ok",
                                                           "evaluation": "cached"})
    assert run("--from", "baselines", **changed) == (0, {"data_audit": "cached", "baselines": "ok",
                                                          "evaluation": "ok"})
    ledger = (tmp_path / "runs" / "cache" / "stages.json").read_text()
    capsys.readouterr()
    code, _ = run("--dry-run", **{"evaluation": {"bootstrap": 300}})
    plan = capsys.readouterr().out
    assert code == 0 and "evaluation" in plan and "run" in plan and "cached" in plan
    assert (tmp_path / "runs" / "cache" / "stages.json").read_text() == ledger  # a dry run changes nothing
    assert run("--from", "nonexistent")[0] == 2


def test_failed_stage_stops_the_run_and_resumes_after_the_fix(study):
    run, tmp_path = study
    code, statuses = run(evaluation={"models": ["no_such_model"], "bootstrap": 100, "band_resamples": 100})
    assert code == 1 and statuses == {"data_audit": "ok", "baselines": "ok", "evaluation": "failed"}
    report = tmp_path / "reports" / "cache"
    assert "no_such_model" in (report / "index.html").read_text()
    assert (report / "50_evaluation.ipynb").is_file()  # the failed notebook is kept with its error
    ledger = json.loads((tmp_path / "runs" / "cache" / "stages.json").read_text())
    assert set(ledger) == {"data_audit", "baselines"}
    prov = json.loads((report / "50_evaluation.provenance.json").read_text())
    assert prov["status"] == "failed" and prov["stage_key"] and prov["stage_started"]
    assert run() == (0, {"data_audit": "cached", "baselines": "cached", "evaluation": "ok"})
    prov = json.loads((report / "45_baselines.provenance.json").read_text())
    assert any(name.startswith("run/predictions/") for name in prov["artifacts_sha256"])
