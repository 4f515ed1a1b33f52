"""The comoto_dbt section: YAML parsing, profiles, checks, teacher paths, and no torch import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from diffkd_study.config import load_config
from diffkd_study.methods.comoto.stage import METHODS, SETTINGS, ComotoStageConfig, resolve_teacher_paths
from diffkd_study.sections import ConfigError, parse_section, section_from_parameters, section_parameters

PROJECT = Path(__file__).resolve().parents[4]


def test_the_shipped_config_parses_with_both_profiles():
    config = load_config(PROJECT / "configs" / "comoto_dbt.yaml")
    section = config.section("comoto_dbt")
    assert config.stages == ("data_audit", "comoto_dbt")
    assert section.methods == tuple(METHODS) and section.regimes == (0.1, 0.25, 1.0) and section.folds == 5
    assert section == ComotoStageConfig() and section.profile == "cpu" and section.detector_image_size == 256
    assert section.teachers_needed == ("plain", "impa")
    full = parse_section({"profile": "full"}, ComotoStageConfig, "x")
    assert (full.optimizer, full.lr, full.momentum, full.batch_size, full.student_epochs) == ("sgd", 5e-5, 0.9, 8, 50)
    assert full.anchor_sizes == (32, 64, 128, 256, 512) and full.lr_step_fraction == 0.6
    assert full.detector_image_size == 1024 and full.feature_stage == -1


def test_keys_given_with_the_full_profile_override_only_themselves():
    section = parse_section({"profile": "full", "batch_size": 4}, ComotoStageConfig, "x")
    assert section.batch_size == 4 and section.optimizer == "sgd" and section.detector_image_size == 1024


def test_the_former_nested_profile_blocks_get_a_one_line_error_saying_how_to_write_them():
    with pytest.raises(ConfigError, match=r"^x.full: profiles are no longer nested blocks; write `profile: full` and "
                                          r"give its settings as keys of the section itself; `image_size` is now "
                                          r"`detector_image_size`$"):
        parse_section({"profile": "full", "full": {"batch_size": 4}}, ComotoStageConfig, "x")
    with pytest.raises(ConfigError, match="x.cpu: profiles are no longer nested blocks"):
        parse_section({"cpu": {"lr": 0.01}}, ComotoStageConfig, "x")


def test_the_settings_keep_their_cache_key_names():
    section = ComotoStageConfig()
    assert list(section.settings_dict()) == [name.replace("detector_image_size", "image_size") for name in SETTINGS]
    assert section.settings_dict()["image_size"] == 256 and section.settings_dict()["anchor_sizes"] == [16, 32, 64, 128]
    assert section.detector_fields()["image_size"] == 256 and "batch_size" not in section.detector_fields()
    assert "student_epochs" not in section.teacher_dict() and section.teacher_dict()["teacher_epochs"] == 5


@pytest.mark.parametrize("raw, message", [
    ({"methods": ["comoto", "mystery"]}, "methods must name each of"),
    ({"regimes": [0.5, 0.25]}, "increasing fractions"),
    ({"regimes": [0.0, 1.0]}, "increasing fractions"),
    ({"folds": 1}, "folds must be >= 2"),
    ({"profile": "gpu"}, r"x.profile: profile must be one of \['cpu', 'full'\], got 'gpu'"),
    ({"detector_image_size": 300}, "x: detector_image_size must be a multiple of 32"),
    ({"optimizer": "adam"}, "optimizer must be one of"),
    ({"student_epochs": 0, "student_min_steps": 0}, "at least one step"),
    ({"num_points": 3}, "num_points must be"),
    ({"sensitivity_method": "linear"}, "sensitivity_method"),
    ({"alpha": "two"}, "x.alpha: expected float"),
    ({"teacher": "x"}, "unknown key"),
])
def test_bad_sections_are_config_errors_naming_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_section(raw, ComotoStageConfig, "x")


def test_notebook_parameters_round_trip():
    section = parse_section({"profile": "full", "regimes": [0.5, 1], "lr": 0.01}, ComotoStageConfig, "x")
    parameters = {**section_parameters(section), "run_dir": "/tmp/run", "image_size": 224}  # + common ones
    assert section_from_parameters(ComotoStageConfig, parameters, "parameters") == section
    with pytest.raises(ConfigError, match="parameters.folds: expected int"):
        section_from_parameters(ComotoStageConfig, {**parameters, "folds": "five"}, "parameters")
    assert section_from_parameters(ComotoStageConfig, {"cpu": {}, "full": {}}, "parameters") == ComotoStageConfig()
    assert section_from_parameters(ComotoStageConfig, {"profile": "full"}, "parameters").optimizer == "sgd"


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
