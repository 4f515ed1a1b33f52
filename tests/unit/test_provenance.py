from __future__ import annotations

import subprocess
from pathlib import Path

from diffkd_study.provenance import git_state, package_versions, run_provenance


def test_git_state_reports_sha_and_dirty_flag(tmp_path: Path):
    assert git_state(tmp_path) == {"sha": None, "dirty": None}
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.txt").write_text("1")
    env = ["-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", *env, "-C", str(tmp_path), "add", "a.txt"], check=True)
    subprocess.run(["git", *env, "-C", str(tmp_path), "commit", "-qm", "x"], check=True)
    clean = git_state(tmp_path)
    assert len(clean["sha"]) == 40 and clean["dirty"] is False
    (tmp_path / "a.txt").write_text("2")
    assert git_state(tmp_path)["dirty"] is True


def test_run_provenance_fields():
    record = run_provenance({"name": "x"}, 3, {"m.csv": "ab"})
    assert record["seed"] == 3 and record["inputs_sha256"] == {"m.csv": "ab"}
    assert record["packages"]["torch"] == "2.14.1"
    assert record["env"]["HF_HUB_OFFLINE"] == "1"
    assert set(record["hardware"]) >= {"platform", "cpu_count", "memory_gb", "cuda"}
    assert package_versions(("no-such-package-xyz",)) == {"no-such-package-xyz": None}
