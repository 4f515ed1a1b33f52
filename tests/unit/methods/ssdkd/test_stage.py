"""Stage parameters: defaults = the CPU profile, the GPU profile a preset; every rule fails naming the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from diffkd_study.config import load_config
from diffkd_study.methods.ssdkd.stage import METHODS, SSDKDStageConfig
from diffkd_study.sections import ConfigError, parse_section, section_from_parameters

PROJECT = Path(__file__).resolve().parents[4]


def test_cpu_config_equals_the_defaults_and_full_config_parses():
    cpu = load_config(PROJECT / "configs" / "ham10000_ssdkd.yaml")
    assert cpu.section("ssdkd_dermoscopy") == SSDKDStageConfig()
    assert cpu.data.resolution == 96 and cpu.stages == ("ssdkd_dermoscopy",)
    full = load_config(PROJECT / "configs" / "ham10000_ssdkd_full.yaml")
    section = full.section("ssdkd_dermoscopy")
    assert full.data.resolution == 224 and section.train_fraction == 1.0 and section.ss_head_epochs == 60
    assert section.ss_head_views == 0 and section.batch_size == 128 and section.threads == 0
    assert section.amp is False and cpu.section("ssdkd_dermoscopy").amp is True
    assert section.kd_class_weighting is False and cpu.section("ssdkd_dermoscopy").kd_class_weighting is True
    assert cpu.data.split == full.data.split and cpu.seed == full.seed  # the same split
    assert section == parse_section({"profile": "full"}, SSDKDStageConfig, "x") and section.seeds == (0, 1, 2)
    raw = yaml.safe_load((PROJECT / "configs" / "ham10000_ssdkd_full.yaml").read_text(encoding="utf-8"))
    assert raw["ssdkd_dermoscopy"] == {"profile": "full"}  # the preset, not a copy of its values


def test_keys_given_with_a_profile_override_it():
    section = parse_section({"profile": "full", "seeds": [5], "amp": True}, SSDKDStageConfig, "x")
    assert (section.seeds, section.amp, section.batch_size, section.teacher_epochs) == ((5,), True, 128, 150)
    with pytest.raises(ConfigError, match=r"x.profile: profile must be one of \['cpu', 'full'\], got 'gpu'"):
        parse_section({"profile": "gpu"}, SSDKDStageConfig, "x")


@pytest.mark.parametrize("change, message", [
    ({"methods": ("ce", "fitnet")}, "methods: unknown"),
    ({"methods": ("ce", "ce")}, "each method once"),
    ({"seeds": ()}, "seeds"),
    ({"train_fraction": 0.0}, "train_fraction"),
    ({"train_fraction": 1.5}, "train_fraction"),
    ({"class_weighting": "inverse"}, "class_weighting"),
    ({"class_weighting": "none"}, "kd_class_weighting"),
    ({"kd_class_weighting": "yes"}, "true or false"),
    ({"augment": "jitter"}, "augment"),
    ({"batch_size": 30}, "multiple of 4"),
    ({"batch_size": 4}, "multiple of 4"),
    ({"student_epochs": 0}, "student_epochs"),
    ({"ss_head_lr": 0.0}, "ss_head_lr"),
    ({"lambd_crkd": -1.0}, "lambd_crkd"),
    ({"kd_lambda": 1.5}, "kd_lambda"),
    ({"bootstrap": 10}, "bootstrap"),
    ({"teacher_weights": "imagenet"}, "teacher_weights"),
    ({"device": "tpu"}, "device"),
    ({"profile": "gpu"}, "profile must be one of"),
])
def test_invalid_values_are_rejected(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SSDKDStageConfig(), **change)


def test_yaml_errors_name_the_file_and_key():
    with pytest.raises(ConfigError, match=r"x.yaml: ssdkd_dermoscopy: .*unknown key"):
        parse_section({"epochs": 3}, SSDKDStageConfig, "x.yaml: ssdkd_dermoscopy")
    with pytest.raises(ConfigError, match=r"ssdkd_dermoscopy.batch_size: expected int"):
        parse_section({"batch_size": "big"}, SSDKDStageConfig, "x.yaml: ssdkd_dermoscopy")
    with pytest.raises(ConfigError, match=r"x.yaml: ssdkd_dermoscopy: methods: unknown \['crd'\]"):
        parse_section({"methods": ["crd"]}, SSDKDStageConfig, "x.yaml: ssdkd_dermoscopy")


def test_from_parameters_turns_lists_into_tuples_and_ignores_other_keys():
    config = section_from_parameters(SSDKDStageConfig, {"methods": ["ce", "ssd_kd"], "seeds": [3], "run_dir": "/x"},
                                     "parameters")
    assert config.methods == ("ce", "ssd_kd") and config.seeds == (3,)
    assert config.method_title("ssd_kd") == METHODS["ssd_kd"] == "SSD-KD"


def test_the_stage_is_registered_with_its_notebook():
    from diffkd_study.stages import STAGES

    assert STAGES["ssdkd_dermoscopy"].notebook == "70_ssdkd_dermoscopy"
    assert STAGES["ssdkd_dermoscopy"].section is SSDKDStageConfig
    assert (PROJECT / "notebooks" / "70_ssdkd_dermoscopy.ipynb").is_file()
