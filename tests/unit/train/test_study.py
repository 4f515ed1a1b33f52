"""Stage-level rules of the teacher/student stages that need no training."""

from __future__ import annotations

import json

import pytest

from diffkd_study.train.stage import StudentStageConfig, TeacherStageConfig
from diffkd_study.train.study import parameter_names, run_stage, stage_config


def test_parameter_names_are_the_run_and_section_fields():
    names = parameter_names("student")
    assert names[:5] == ("manifest_path", "data_root", "predictions_dir", "run_dir", "image_size")
    assert {"variants", "seeds", "crop", "loss", "temperature"} <= set(names)
    assert stage_config("teacher", {"variants": ["real"], "seeds": [3], "unrelated": 1}) == \
        TeacherStageConfig(variants=("real",), seeds=(3,))


@pytest.mark.parametrize("bad, message", [
    ({"variants": ("scratch", "oracle")}, "unknown \\['oracle'\\]"),
    ({"seeds": (0, 0)}, "list each once"),
    ({"crop": "box"}, "crop must be one of"),
    ({"loss": "kd+fitnet"}, "needs feature_weight > 0"),
    ({"nproc": 2}, "nproc > 1 needs launcher: torchrun"),
])
def test_bad_sections_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        StudentStageConfig(**bad)


def test_student_refuses_a_teacher_trained_on_other_inputs(tmp_path):
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "records.json").write_text(json.dumps({"config": {"crop": "none", "crop_margin": 0.25},
                                                                   "fits": []}))
    params = {"run_dir": str(tmp_path), "predictions_dir": str(tmp_path / "p"), "manifest_path": "unused.csv",
              "data_root": str(tmp_path), "image_size": 32, "crop": "lesion"}
    with pytest.raises(ValueError, match="teacher was trained on other inputs \\(crop: teacher 'none', student 'lesion'"):
        run_stage("student", params, progress=False)
