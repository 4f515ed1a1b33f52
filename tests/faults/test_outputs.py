"""Issue 20, items 1, 6, 7 (system faults), 9, 10: nothing the user made is deleted, outputs are written
whole with the umask's mode, one run per folder, one line for every system error."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from diffkd_study import io
from diffkd_study.repro import thread_setting
from diffkd_study.runlock import LOCK_FILE, RunLock
from tests.faults.conftest import PROJECT, TINY_STUDY, error_lines, umask


# -- 1. data loss ---------------------------------------------------------------------------------------------
def test_phantom_refuses_a_folder_of_the_users_and_keeps_it(cli, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.docx").write_text("two years of work")
    code, err = cli("phantom", "--out", out, "--n-per-center", "4", "--size", "32")
    assert code == 2 and len(error_lines(err)) == 1 and "--overwrite" in err
    assert (out / "thesis.docx").read_text() == "two years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary or .old folder left


def test_phantom_onto_a_file_is_refused_and_the_file_kept(cli, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    code, err = cli("phantom", "--out", target, "--n-per-center", "4", "--size", "32")
    assert code == 2 and "is a file" in err and len(error_lines(err)) == 1
    assert target.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_phantom_replaces_its_own_output_and_overwrite_is_explicit(cli, tmp_path):
    out = tmp_path / "cohort"
    assert cli("phantom", "--out", out, "--n-per-center", "4", "--size", "32")[0] == 0
    assert io.is_owned(out)
    assert cli("phantom", "--out", out, "--n-per-center", "4", "--size", "32", "--seed", "1")[0] == 0  # its own
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("x")
    assert cli("phantom", "--out", other, "--n-per-center", "4", "--size", "32", "--overwrite")[0] == 0
    assert not (other / "x.txt").exists() and (other / "phantom.csv").is_file()


@pytest.mark.parametrize("command", [
    ["data", "split", "{manifest}", "--out", "{existing}"],
    ["data", "build", "bus-bra", "--root", "{root}", "--out", "{existing}"],
    ["data", "combine", "{manifest}=phantom", "--out", "{existing}"],
    ["data", "validate", "{manifest}", "--root", "{root}", "--json", "{existing}"],
])
def test_commands_never_overwrite_a_users_file(cli, cohort, tmp_path, command):
    existing = tmp_path / "mine.csv"
    existing.write_text("my own table\n")
    argv = [a.format(manifest=cohort / "phantom.csv", existing=existing, root=cohort) for a in command]
    code, err = cli(*argv)
    assert code == 2 and "already exists" in err and len(error_lines(err)) == 1
    assert existing.read_text() == "my own table\n"


def test_atomic_dir_refuses_before_the_work_and_leaves_nothing(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "user.txt").write_text("u")
    ran = []
    with pytest.raises(io.OutputExistsError), io.atomic_dir(target) as tmp:
        ran.append(tmp)
    assert not ran and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# -- 9. file modes --------------------------------------------------------------------------------------------
def test_files_get_the_mode_the_umask_gives(tmp_path):
    io.write_json(tmp_path / "a.json", {"x": 1})
    with io.atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "f.txt").write_text("x")
    expected_file, expected_dir = 0o666 & ~umask(), 0o777 & ~umask()
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == expected_file
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == expected_dir


def test_report_files_are_readable_by_the_group(study, tmp_path):
    code, _ = study({**TINY_STUDY, "stages": ["data_audit"]})
    assert code == 0
    report = tmp_path / "reports" / "faults"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in report.iterdir() if p.is_file()}
    assert set(modes.values()) == {0o666 & ~umask()}, modes


# -- 6. concurrent runs ---------------------------------------------------------------------------------------
def test_a_second_run_of_a_locked_folder_is_refused_naming_the_holder(study, tmp_path):
    run_dir = tmp_path / "runs" / "faults"
    with RunLock(run_dir):
        code, err = study({**TINY_STUDY, "stages": ["data_audit"]})
    assert code == 3 and f"pid {os.getpid()}" in err and "started" in err and len(error_lines(err)) == 1
    assert not (run_dir / "stages.json").exists()  # the refused run did nothing


def test_a_stale_lock_is_taken_over_with_a_note(study, tmp_path):
    run_dir = tmp_path / "runs" / "faults"
    run_dir.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run_dir / LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "started": "2026-01-01T00:00:00"}))
    code, err = study({**TINY_STUDY, "stages": ["data_audit"]})
    assert code == 0 and f"pid {int(dead.stdout)}" in err and "took over" in err


def test_temporary_names_are_unique(tmp_path):
    names = set()
    for _ in range(3):
        with io.atomic_path(tmp_path / "x.json") as tmp:
            names.add(tmp.name)
            tmp.write_text("{}")
    assert len(names) == 3


# -- 7. system faults: one line each --------------------------------------------------------------------------
def test_disk_full_is_one_line(cli, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.csv"))

    monkeypatch.setattr("diffkd_study.data.phantom.generate_phantom_cohort", full)
    code, err = cli("phantom", "--out", tmp_path / "new", "--n-per-center", "4", "--size", "32")
    assert code == 3 and "disk is full" in err and len(error_lines(err)) == 1


def test_read_only_reports_folder_is_one_line(study, monkeypatch):
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if "reports" in self.parts:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    code, err = study({**TINY_STUDY, "stages": ["data_audit"]})
    assert code == 3 and "read-only file system" in err and len(error_lines(err)) == 1


def test_ctrl_c_names_the_stage_and_how_to_resume(study, monkeypatch):
    import diffkd_study.report as report

    def interrupted(stage, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "execute_stage", interrupted)
    code, err = study({**TINY_STUDY, "stages": ["data_audit"]})
    lines = [line for line in err.splitlines() if line.startswith("stopped:")]
    assert code == 130 and len(lines) == 1 and "data_audit" in lines[0] and "same command" in lines[0]


# -- 10. threads ----------------------------------------------------------------------------------------------
def test_threads_follow_omp_num_threads_then_the_cpu_affinity(monkeypatch):
    assert thread_setting({"OMP_NUM_THREADS": "3"}) == (3, "OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    threads, source = thread_setting({})
    assert threads == 1 and "affinity" in source


def test_a_pinned_run_uses_one_thread_and_its_kernels_inherit_it(tmp_path):
    if len(os.sched_getaffinity(0)) < 1:
        pytest.skip("no CPU affinity on this system")
    cpu = min(os.sched_getaffinity(0))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["DIFFKD_CACHE_DIR"] = str(tmp_path / "cache")
    config = tmp_path / "threads.yaml"
    import yaml

    config.write_text(yaml.safe_dump({**TINY_STUDY, "name": "threads", "stages": ["data_audit"]}))
    done = subprocess.run(["taskset", "-c", str(cpu), sys.executable, "-m", "diffkd_study.cli", "run", str(config),
                           "--reports-dir", str(tmp_path / "reports"), "--runs-dir", str(tmp_path / "runs")],
                          cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 thread(s) per process (from CPU affinity" in done.stderr
    provenance = json.loads((tmp_path / "reports" / "threads" / "provenance.json").read_text())
    assert provenance["env"]["OMP_NUM_THREADS"] == "1"


# -- 3/7. weights: a truncated or altered file is one line naming it and the remedy -------------------------
def test_truncated_or_altered_weights_name_the_file_and_the_remedy(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(64)}, str(path))
    recorded = io.sha256_file(path)
    assert io.read_safetensors(path, recorded)["w"].shape == (64,)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="sha256") as altered:
        io.read_safetensors(path, recorded)
    with pytest.raises(ValueError, match="cannot be read") as unreadable:
        io.read_safetensors(path)
    for err in (altered, unreadable):
        assert str(path) in str(err.value) and "--force" in str(err.value) and "\n" not in str(err.value)
