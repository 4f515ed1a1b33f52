from __future__ import annotations

import subprocess
import sys

import pytest

from diffkd_study.methods.diffkd.diffusion import stage
from diffkd_study.methods.diffkd.diffusion.stage import (
    DiffusionStageConfig,
    SyntheticQualityStageConfig,
    parse_class_counts,
)
from diffkd_study.sections import ConfigError, parse_section, section_from_parameters
from diffkd_study.stages import STAGES


def test_the_light_module_does_not_import_torch():
    code = "import sys, diffkd_study.config; assert 'torch' not in sys.modules and 'diffusers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_names_match_the_library():
    from diffkd_study.methods.diffkd.diffusion.names import BETA_SCHEDULES, PREDICTION_TYPES, SAMPLERS
    from diffkd_study.methods.diffkd.diffusion.sample import make_sampler
    from diffkd_study.methods.diffkd.diffusion.train import TrainConfig, make_noise_scheduler
    from diffkd_study.methods.diffkd.diffusion.unet import UNET_PROFILES, unet_profile

    assert DiffusionStageConfig.PROFILES.names == tuple(UNET_PROFILES)  # a training preset per UNet
    for name in DiffusionStageConfig.PROFILES.names:  # each trains at its UNet's own resolution
        section = parse_section({"profile": name}, DiffusionStageConfig, "d")
        assert section.diffusion_image_size == unet_profile(name).image_size
    # every name the section accepts is one the training and sampling code implement
    for prediction_type in PREDICTION_TYPES:
        for beta_schedule in BETA_SCHEDULES:
            config = TrainConfig(prediction_type=prediction_type, beta_schedule=beta_schedule)
            scheduler = make_noise_scheduler(config)
            for sampler in SAMPLERS:
                assert len(make_sampler(sampler, scheduler.config, 4).timesteps) == 4
    assert stage.NUM_TRAIN_TIMESTEPS == TrainConfig().num_train_timesteps


def test_stages_are_registered_with_their_sections():
    assert STAGES["diffusion"].notebook == "10_diffusion" and STAGES["diffusion"].section is DiffusionStageConfig
    assert STAGES["synthetic_quality"].notebook == "20_synthetic_quality"
    assert STAGES["synthetic_quality"].section is SyntheticQualityStageConfig


def test_class_counts_are_parsed_and_checked():
    assert parse_class_counts(["benign=120", " malignant = 80 "]) == {"benign": 120, "malignant": 80}
    assert parse_class_counts([]) == {}
    with pytest.raises(ValueError, match="'benign:3' is not of the form"):
        parse_class_counts(["benign:3"])
    with pytest.raises(ValueError, match="twice"):
        parse_class_counts(["a=1", "a=2"])
    with pytest.raises(ValueError, match="no image at all"):
        parse_class_counts(["a=0"])


@pytest.mark.parametrize(("field", "value", "message"), [
    ("profile", "huge", "profile must be one of"),
    ("diffusion_image_size", 40, "multiple of 16"),
    ("diffusion_image_size", 0, "multiple of 16 >= 16"),
    ("conditions", ("birads",), "not condition columns"),
    ("max_steps", 0, "max_steps must be >= 1"),
    ("warmup_steps", -1, "warmup_steps must be >= 0"),
    ("learning_rate", 0.0, r"learning_rate must be in \(0, 1\]"),
    ("ema_decay", 0.0, r"ema_decay must be in \(0, 1\)"),
    ("checkpoint_minutes", -0.5, "checkpoint_minutes must be >= 0"),
    ("label_dropout", 1.5, r"label_dropout must lie in \[0, 1\]"),
    ("sampler", "euler", "sampler must be one of"),
    ("sampling_steps", 0, "sampling_steps must be in"),
    ("guidance_scale", -1.0, "guidance_scale"),
    ("prediction_type", "x0", "prediction_type"),
    ("device", "tpu", "device must be one of"),
])
def test_diffusion_section_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        DiffusionStageConfig(**{field: value})


def test_condition_table_excludes_class_counts():
    with pytest.raises(ValueError, match="either condition_table or class_counts"):
        DiffusionStageConfig(condition_table="c.csv", n_per_class=5)


def test_the_profile_presets_the_training_values_and_keys_override_them():
    demo = parse_section({"profile": "demo"}, DiffusionStageConfig, "d")
    assert demo == DiffusionStageConfig()  # the field defaults are the demo profile
    full = parse_section({"profile": "full", "max_steps": 100, "checkpoint_minutes": 0}, DiffusionStageConfig, "d")
    assert (full.diffusion_image_size, full.batch_size, full.learning_rate, full.warmup_steps, full.ema_decay,
            full.checkpoint_every) == (128, 64, 1e-4, 1000, 0.9999, 5000)
    assert (full.max_steps, full.checkpoint_minutes) == (100, 0.0)  # 0 minutes: no wall-clock checkpoints
    smoke = parse_section({"profile": "smoke"}, DiffusionStageConfig, "d")
    assert (smoke.diffusion_image_size, smoke.max_steps, smoke.checkpoint_every) == (32, 6, 3)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("reference_splits", ("train",), "must not include 'train'"),
    ("reference_splits", ("holdout",), "must name at least one of"),
    ("guidance_sweep", (1.0, 1.0), "twice"),
    ("sweep_images", 2, "sweep_images must be >= 4"),
    ("memorization_percentile", 60.0, "memorization_percentile"),
    ("grid_condition", "birads", "grid_condition must be a condition column"),
])
def test_quality_section_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        SyntheticQualityStageConfig(**{field: value})


def test_yaml_sections_parse_with_errors_naming_the_key():
    section = parse_section({"profile": "smoke", "class_counts": ["benign=3"], "conditions": ["cond_birads"],
                             "guidance_scale": 3}, DiffusionStageConfig, "cfg.yaml: diffusion")
    assert section.class_counts == ("benign=3",) and section.guidance_scale == 3.0
    with pytest.raises(ConfigError, match=r"cfg.yaml: diffusion: unknown key\(s\) \['steps'\]"):
        parse_section({"steps": 3}, DiffusionStageConfig, "cfg.yaml: diffusion")
    with pytest.raises(ConfigError, match="cfg.yaml: synthetic_quality: reference_splits must not include"):
        parse_section({"reference_splits": ["train"]}, SyntheticQualityStageConfig, "cfg.yaml: synthetic_quality")
    quality = parse_section({"guidance_sweep": [0, 1, 2.5]}, SyntheticQualityStageConfig, "q")
    assert quality.guidance_sweep == (0.0, 1.0, 2.5)


def test_section_from_notebook_parameters_turns_lists_into_tuples():
    values = {"profile": "smoke", "conditions": ["cond_a"], "class_counts": [], "run_dir": "/x", "seed": 3}
    section = section_from_parameters(DiffusionStageConfig, values, "parameters")
    assert section == parse_section({"profile": "smoke", "conditions": ["cond_a"]}, DiffusionStageConfig, "d")
    assert section.max_steps == 6  # a parameter not given takes the profile's value
    with pytest.raises(ValueError, match="sampler"):
        section_from_parameters(DiffusionStageConfig, {"sampler": "plms"}, "parameters")
    with pytest.raises(ConfigError, match="parameters.sampling_steps: expected int, got '20'"):
        section_from_parameters(DiffusionStageConfig, {"sampling_steps": "20"}, "parameters")
