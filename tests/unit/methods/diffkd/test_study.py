"""Stage-level rules of the teacher/student stages that need no training."""

from __future__ import annotations

import json

import pytest

from diffkd_study.methods.diffkd.stage import LossTerm, StudentStageConfig, TeacherStageConfig
from diffkd_study.methods.diffkd.study import (
    parameter_names,
    run_stage,
    stage_config,
    student_objective,
    student_recipe,
)
from diffkd_study.sections import ConfigError, parse_section


def test_parameter_names_are_the_run_and_section_fields():
    names = parameter_names("student")
    assert names[:5] == ("manifest_path", "data_root", "predictions_dir", "run_dir", "image_size")
    assert {"variants", "seeds", "crop", "loss", "checkpoint_minutes"} <= set(names)
    assert stage_config("teacher", {"variants": ["real"], "seeds": [3], "unrelated": 1}) == \
        TeacherStageConfig(variants=("real",), seeds=(3,))


@pytest.mark.parametrize("bad, message", [
    ({"variants": ("alone", "oracle")}, "unknown \\['oracle'\\]"),
    ({"seeds": (0, 0)}, "list each once"),
    ({"crop": "box"}, "crop must be one of"),
    ({"loss": {}}, "name at least one term"),
    ({"loss": {"ce": LossTerm(weight=0.0), "kd": LossTerm(weight=0.0)}}, "every term has weight 0"),
    ({"loss": {"kd": {"weight": 1.0}}}, "each term must be a LossTerm"),
    ({"nproc": 2}, "nproc > 1 needs launcher: torchrun"),
    ({"checkpoint_minutes": -1.0}, "checkpoint_minutes must be >= 0"),
])
def test_bad_sections_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        StudentStageConfig(**bad)


def test_the_default_objective_is_half_cross_entropy_half_hinton_kd_at_t4():
    recipe = student_recipe(StudentStageConfig())
    assert recipe == {"ce": {"type": "ce", "weight": 0.5, "params": {}},
                      "kd": {"type": "kd", "weight": 0.5, "params": {"temperature": 4.0}}}
    assert student_objective(StudentStageConfig()) == "0.5 x cross-entropy + 0.5 x T^2 KL (Hinton KD, T = 4.0)"


def test_the_objective_is_a_recipe_in_the_yaml():
    raw = {"loss": {"ce": {"weight": 0.5}, "dkd": {"weight": 0.5, "params": {"temperature": 2}}, "at": {"weight": 10}}}
    section = parse_section(raw, StudentStageConfig, "student")
    assert list(student_recipe(section)) == ["ce", "dkd", "at"]  # built in the order written
    assert student_objective(section) == ("0.5 x cross-entropy + 0.5 x decoupled KD (1.0 x TCKD + 8.0 x NCKD, T = 2) + "
                                          "10.0 x attention transfer (beta = 1000.0, p = 2.0)")
    with pytest.raises(ConfigError, match=r"student.loss.kd.weight: -1.0 is outside"):
        parse_section({"loss": {"kd": {"weight": -1}}}, StudentStageConfig, "student")
    with pytest.raises(ConfigError, match=r"student.loss.kd: unknown key\(s\) \['temperature'\]"):
        parse_section({"loss": {"kd": {"temperature": 4.0}}}, StudentStageConfig, "student")


@pytest.mark.parametrize("loss, message", [
    ({"kd_hinton": LossTerm()}, "loss: unknown loss 'kd_hinton'; known: .*kd"),
    ({"kd": LossTerm(params={"tau": 4.0})}, r"KDLoss takes no parameter\(s\) \['tau'\]"),
])
def test_unknown_losses_and_parameters_are_named_when_the_stage_starts(loss, message):
    with pytest.raises(ValueError, match=message):
        student_objective(StudentStageConfig(loss=loss))


def test_student_refuses_a_teacher_trained_on_other_inputs(tmp_path):
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "records.json").write_text(json.dumps({"config": {"crop": "none", "crop_margin": 0.25},
                                                                   "fits": []}))
    params = {"run_dir": str(tmp_path), "predictions_dir": str(tmp_path / "p"), "manifest_path": "unused.csv",
              "data_root": str(tmp_path), "image_size": 32, "crop": "lesion"}
    with pytest.raises(ValueError, match="teacher was trained on other inputs \\(crop: teacher 'none', student 'lesion'"):
        run_stage("student", params, progress=False)


def test_the_checkpoint_interval_reaches_the_trainer():
    from diffkd_study.methods.diffkd.study import _fit_config

    assert TeacherStageConfig().checkpoint_minutes == 10.0
    section = stage_config("teacher", {"checkpoint_minutes": 2.5})
    assert _fit_config(section, seed=0, synthetic_ratio=0.0, binary=True).checkpoint_minutes == 2.5


def test_student_refuses_teacher_weights_changed_since_the_teacher_stage(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from diffkd_study.io import sha256_bytes
    from diffkd_study.methods.diffkd import study
    from tests.unit.training.conftest import toy_set

    weights = tmp_path / "teacher" / "real" / "seed0" / "best.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights written after the teacher stage recorded them")
    record = {"variant": "real", "seed": 0, "model": "lcnet_035", "weights": str(weights),
              "weights_sha256": sha256_bytes(b"the weights the teacher stage trained")}
    (tmp_path / "teacher" / "records.json").write_text(json.dumps({"config": {}, "fits": [record]}))
    schema = SimpleNamespace(label_set=("benign", "malignant"), positive_class="malignant")
    data = study.StageData(SimpleNamespace(schema=schema), toy_set(8), toy_set(4), toy_set(4), None, None, False)
    monkeypatch.setattr(study, "load_stage_data", lambda *args, **kwargs: data)
    params = {"run_dir": str(tmp_path), "predictions_dir": str(tmp_path / "p"), "manifest_path": "unused.csv",
              "data_root": str(tmp_path), "image_size": 16, "variants": ["kd_real"], "device": "cpu",
              "weights": "none"}
    with pytest.raises(ValueError, match=r"best.safetensors has sha256 .*not the recorded .*--force STAGE"):
        run_stage("student", params, progress=False)


def test_extra_crops_retrain_the_variants_without_synthetic_images():
    from diffkd_study.methods.diffkd.study import extra_crop_variants

    teacher = TeacherStageConfig(crop="lesion", extra_crops=("jittered", "whole"))
    student = StudentStageConfig(crop="lesion", extra_crops=("whole",))
    assert extra_crop_variants("teacher", teacher) == ("real",)
    assert extra_crop_variants("student", student) == ("alone", "kd_real")
    with pytest.raises(ValueError, match=r"crop_variants: \['diffkd'\] need synthetic images"):
        extra_crop_variants("student", StudentStageConfig(crop="lesion", extra_crops=("whole",),
                                                          crop_variants=("alone", "diffkd")))
    with pytest.raises(ValueError, match="extra_crops"):
        TeacherStageConfig(crop="lesion", extra_crops=("lesion",))


def test_lesion_crop_synthetic_images_need_the_same_crop_and_resize_chain(tmp_path):
    import pandas as pd
    from PIL import Image

    from diffkd_study.data.schema import Manifest
    from diffkd_study.methods.diffkd.study import _synthetic_options
    from tests.unit.data.conftest import BINARY_SCHEMA

    (tmp_path / "images").mkdir()
    Image.new("L", (16, 16)).save(tmp_path / "images" / "s.png")
    frame = pd.DataFrame({"image_id": ["s"], "image_path": ["images/s.png"], "synthetic_crop": ["lesion"]})
    synthetic, path = Manifest(frame, BINARY_SCHEMA), tmp_path / "synthetic.csv"
    options = {"size": 32, "via": 16, "resize_mode": "lesion", "roi_margin": 0.25}
    assert _synthetic_options(synthetic, path, options, "lesion") == {**options, "resize_mode": "stretch"}
    with pytest.raises(ValueError, match="set via: 16 in the teacher and student sections"):
        _synthetic_options(synthetic, path, {**options, "via": 0}, "lesion")
    with pytest.raises(ValueError, match="the stage's crop is 'whole'"):
        _synthetic_options(synthetic, path, options, "whole")
    frames = Manifest(frame.drop(columns="synthetic_crop"), BINARY_SCHEMA)  # whole-frame synthesis: cropped as real
    assert _synthetic_options(frames, path, options, "lesion") == options
