"""The command line itself: help and --version, running from any folder, ``lab``, and the packaging it rests on."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest

import diffkd_study
from diffkd_study.cli import build_parser, executed_run, lab_argv, main
from diffkd_study.data.cache import RESIZE_MODES
from diffkd_study.stages import KNOWN_STAGES, STAGES

PROJECT = Path(__file__).resolve().parents[2]
COMMAND = Path(sys.executable).parent / "diffkd-study"


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


# -- help and --version --------------------------------------------------------------------------------------
def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"diffkd-study {diffkd_study.__version__}"


def test_top_level_help_lists_every_command_without_rst_markup(capsys):
    text = _help(capsys)
    assert "``" not in text
    for command in ("run", "lab", "report compare", "data combine", "data cache", "phantom", "--version"):
        assert command in text, command
    assert "combine" in _help(capsys, "data").split("positional arguments")[0]


def test_help_shows_defaults_but_not_empty_ones(capsys):
    split = _help(capsys, "data", "split")
    assert "(default: 0.15)" in split and "(default: 0.2)" in split and "(default: 0)" in split
    assert "(default: None)" not in split and "(default: False)" not in split and "(default: [])" not in split
    assert "(default: normal)" in _help(capsys, "data", "validate")


def test_run_help_names_the_stages_for_force_and_from(capsys):
    text = " ".join(_help(capsys, "run").split())  # argparse wraps lines anywhere
    assert ", ".join(KNOWN_STAGES) in text and "--from STAGE" in text


def test_cache_offers_every_resize_mode(capsys):
    assert "lesion" in RESIZE_MODES
    assert "{" + ",".join(RESIZE_MODES) + "}" in _help(capsys, "data", "cache")
    args = build_parser().parse_args(["data", "cache", "m.csv", "--root", "r", "--resize-mode", "lesion",
                                      "--roi-margin", "0.5"])
    assert (args.resize_mode, args.roi_margin) == ("lesion", 0.5)


# -- any working folder --------------------------------------------------------------------------------------
def _dry_run(cwd: Path, config: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(COMMAND), "run", "--dry-run", config, "--reports-dir", str(tmp_path / "reports"),
                           "--runs-dir", str(tmp_path / "runs")], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_run_from_another_folder_finds_the_project_config_and_notebooks(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = _dry_run(elsewhere, "configs/demo.yaml", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "study 'demo'" in done.stderr and "every stage would run" in done.stdout


def test_a_relative_config_is_taken_from_the_working_folder_first(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.yaml").write_text((PROJECT / "configs" / "demo.yaml").read_text()
                                                    .replace("name: demo", "name: mine", 1))
    done = _dry_run(tmp_path, "configs/demo.yaml", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "study 'mine'" in done.stderr


def test_a_missing_config_names_both_places(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--dry-run", "configs/nope.yaml"]) == 2
    err = capsys.readouterr().err
    assert f"config configs/nope.yaml not found in {tmp_path} nor in the project folder {PROJECT}" in err


def test_without_notebooks_anywhere_the_error_says_where_to_run(tmp_path, monkeypatch, capsys):
    site = tmp_path / "site-packages" / "diffkd_study"
    monkeypatch.setattr(diffkd_study, "__file__", str(site / "__init__.py"))
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--dry-run", str(PROJECT / "configs" / "demo.yaml")]) == 2
    err = capsys.readouterr().err
    assert "run diffkd-study in the project folder" in err and str(tmp_path / "site-packages") in err
    assert len(err.strip().splitlines()) == 1


# -- lab: JupyterLab on a run's executed notebooks -----------------------------------------------------------
@pytest.fixture()
def reports(tmp_path: Path) -> Path:
    run = tmp_path / "reports" / "demo"
    run.mkdir(parents=True)
    (run / "00_data_audit.ipynb").write_text("{}")
    (run / ".00_data_audit.123.running.ipynb").write_text("{}")
    return tmp_path / "reports"


def test_lab_opens_jupyterlab_from_this_environment_on_the_run_folder(reports):
    folder = executed_run("demo", reports)
    assert folder == reports / "demo"
    assert lab_argv(folder, ["--no-browser", "--port", "8890"]) == [
        sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={(reports / 'demo').resolve()}", "--no-browser",
        "--port", "8890"]
    assert executed_run(str(reports / "demo"), "elsewhere") == reports / "demo"  # a report folder as such


def test_lab_command_passes_jupyterlab_options_on(reports, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append((path, argv)))
    main(["lab", "demo", "--no-browser", "--reports-dir", str(reports), "--port=8890"])
    assert calls == [(sys.executable, lab_argv(reports / "demo", ["--no-browser", "--port=8890"]))]


def test_other_commands_still_refuse_unknown_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "configs/demo.yaml", "--no-browser"])
    assert exit_.value.code == 2 and "unrecognized arguments: --no-browser" in capsys.readouterr().err


def test_lab_on_an_unknown_run_names_the_runs_there(reports, capsys):
    (reports / "empty").mkdir()
    assert main(["lab", "--reports-dir", str(reports), "empty"]) == 2
    err = capsys.readouterr().err
    assert "no executed notebooks" in err and "runs with executed notebooks there: demo." in err
    assert "diffkd-study run CONFIG" in err


def test_lab_without_jupyterlab_says_what_to_install(reports, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jupyterlab" else find_spec(name, *a))
    with pytest.raises(FileNotFoundError, match=r"JupyterLab is not installed .* -m pip install jupyterlab"):
        lab_argv(reports / "demo")


def test_makefile_lab_and_the_kernel_students_see():
    makefile = (PROJECT / "Makefile").read_text()
    assert "ipykernel install --sys-prefix --name python3 --display-name diffkd-study" in makefile
    assert re.search(r"^lab: .*\n\t\$\(BIN\)/diffkd-study lab ", makefile, re.M)


def test_each_notebook_title_carries_its_own_number():
    for spec in STAGES.values():
        number = spec.notebook[:2]
        script = (PROJECT / "notebooks" / f"{spec.notebook}.py").read_text(encoding="utf-8")
        title = re.search(r"^# # (.+)$", script, re.M).group(1)
        cells = json.loads((PROJECT / "notebooks" / f"{spec.notebook}.ipynb").read_text(encoding="utf-8"))["cells"]
        first_markdown = "".join(next(c for c in cells if c["cell_type"] == "markdown")["source"])
        assert title.startswith(f"{number} · ") and first_markdown.startswith(f"# {title}"), spec.notebook


# -- packaging -----------------------------------------------------------------------------------------------
def test_license_is_an_spdx_string_and_builds_without_deprecation(tmp_path, monkeypatch):
    from setuptools import build_meta

    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (tmp_path / name).write_text((PROJECT / name).read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "diffkd_study").mkdir()
    (tmp_path / "diffkd_study" / "__init__.py").write_text("")
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = build_meta.prepare_metadata_for_build_wheel(str(tmp_path / "out"))
    assert not [w for w in caught if "licen" in str(w.message).lower()], [str(w.message) for w in caught]
    metadata = (tmp_path / "out" / info / "METADATA").read_text()
    assert "License-Expression: MIT" in metadata and "License-File: LICENSE" in metadata
