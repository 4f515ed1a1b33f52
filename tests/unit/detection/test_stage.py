"""The comoto_dbt section: YAML parsing, profiles, checks, teacher paths, and no torch import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from diffkd_study.config import ConfigError, load_config, parse_section
from diffkd_study.methods.comoto.stage import (
    METHODS,
    ComotoStageConfig,
    FullProfile,
    resolve_teacher_paths,
    stage_config_from_parameters,
)
from diffkd_study.report import section_parameters

PROJECT = Path(__file__).resolve().parents[3]


def test_the_shipped_config_parses_with_both_profiles():
    config = load_config(PROJECT / "configs" / "comoto_dbt.yaml")
    section = config.section("comoto_dbt")
    assert config.stages == ("data_audit", "comoto_dbt")
    assert section.methods == tuple(METHODS) and section.regimes == (0.1, 0.25, 1.0) and section.folds == 5
    assert section.active is section.cpu and section.cpu.image_size == 256
    full = section.full
    assert (full.optimizer, full.lr, full.momentum, full.batch_size, full.student_epochs) == ("sgd", 5e-5, 0.9, 8, 50)
    assert full.anchor_sizes == (32, 64, 128, 256, 512) and full.lr_step_fraction == 0.6
    assert section.teachers_needed == ("plain", "impa")


def test_a_partial_full_profile_keeps_the_paper_like_defaults():
    section = parse_section({"profile": "full", "full": {"batch_size": 4}}, ComotoStageConfig, "x")
    assert section.active.batch_size == 4 and section.active.optimizer == "sgd" and section.active.image_size == 1024
    assert isinstance(section.active, FullProfile)


@pytest.mark.parametrize("raw, message", [
    ({"methods": ["comoto", "mystery"]}, "methods must name each of"),
    ({"regimes": [0.5, 0.25]}, "increasing fractions"),
    ({"regimes": [0.0, 1.0]}, "increasing fractions"),
    ({"folds": 1}, "folds must be >= 2"),
    ({"profile": "gpu"}, "profile must be one of"),
    ({"cpu": {"image_size": 300}}, "x.cpu: image_size must be a multiple of 32"),
    ({"cpu": {"optimizer": "adam"}}, "optimizer must be one of"),
    ({"cpu": {"student_epochs": 0, "student_min_steps": 0}}, "at least one step"),
    ({"num_points": 3}, "num_points must be"),
    ({"sensitivity_method": "linear"}, "sensitivity_method"),
    ({"alpha": "two"}, "x.alpha: expected float"),
    ({"teacher": "x"}, "unknown key"),
])
def test_bad_sections_are_config_errors_naming_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_section(raw, ComotoStageConfig, "x")


def test_notebook_parameters_round_trip():
    section = parse_section({"profile": "full", "regimes": [0.5, 1], "cpu": {"lr": 0.01}}, ComotoStageConfig, "x")
    parameters = {**section_parameters(section), "run_dir": "/tmp/run", "image_size": 224}  # + common ones
    assert stage_config_from_parameters(**parameters) == section
    with pytest.raises(ConfigError, match="80_comoto_dbt parameters.folds"):
        stage_config_from_parameters(**{**parameters, "folds": "five"})


def test_teacher_paths_resolve_against_project_and_data_root(tmp_path):
    (tmp_path / "project" / "m").mkdir(parents=True)
    (tmp_path / "project" / "m" / "t.csv").write_text("x\n")
    (tmp_path / "data" / "mammo").mkdir(parents=True)
    config = ComotoStageConfig(teacher_manifest="m/t.csv", teacher_root="mammo")
    manifest, root = resolve_teacher_paths(config, tmp_path / "project", tmp_path / "data")
    assert manifest == (tmp_path / "project" / "m" / "t.csv").resolve() and root == (tmp_path / "data" / "mammo").resolve()
    with pytest.raises(FileNotFoundError, match="teacher_manifest .*nope.csv not found"):
        resolve_teacher_paths(ComotoStageConfig(teacher_manifest="nope.csv"), tmp_path / "project", tmp_path / "data")
    with pytest.raises(FileNotFoundError, match="no --data-root was given"):
        resolve_teacher_paths(config, tmp_path / "project", "")
    with pytest.raises(FileNotFoundError, match="teacher_root .*missing is not a directory"):
        resolve_teacher_paths(ComotoStageConfig(teacher_manifest="m/t.csv", teacher_root="missing"),
                              tmp_path / "project", tmp_path / "data")


def test_the_stage_module_does_not_import_torch():
    code = "import sys, diffkd_study.methods.comoto.stage; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT)
    assert out.stdout.strip() == "False"
