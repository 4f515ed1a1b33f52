"""build_objective: a recipe of registered losses -> the composite loss, its hooks, adapters and class weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffkd_study.distill import distiller
from diffkd_study.distill.distiller import build_objective, default_feature_paths, objective_inputs
from diffkd_study.distill.hooks import build_adapter
from diffkd_study.loss_catalog import LOSSES  # noqa: F401  (every loss registered)
from diffkd_study.models.classifier import create_classifier

SIZE = 32
HINTON = {"ce": {"type": "ce", "weight": 0.5}, "kd": {"type": "kd", "weight": 0.5, "params": {"temperature": 4.0}}}


@pytest.fixture(scope="module")
def networks() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return create_classifier("lcnet_035", 2, 1, "none"), create_classifier("tf_efficientnet_lite0", 2, 1, "none")


def test_logit_recipe_hooks_nothing_and_weights_the_cross_entropy(networks, monkeypatch):
    student, teacher = networks

    def no_probe(model):
        raise AssertionError("a logit-only objective must not probe the networks")

    monkeypatch.setattr(distiller, "default_feature_paths", no_probe)
    objective = build_objective(HINTON, student, teacher, input_shape=(1, SIZE, SIZE), class_weights=[1.0, 3.0])
    assert list(objective.loss.losses) == ["ce", "kd"] and objective.loss.weights == {"ce": 0.5, "kd": 0.5}
    assert objective.loss.losses["ce"].class_weights.tolist() == [1.0, 3.0]
    assert objective.loss.losses["kd"].class_weights is None and objective.loss.losses["kd"].temperature == 4.0
    assert objective.student_features == {} and objective.teacher_features == {}
    assert objective_inputs(HINTON) == {"student_logits", "teacher_logits", "target"}


def test_feature_terms_get_the_hooks_they_read(networks):
    student, teacher = networks
    at = build_objective({**HINTON, "at": {"type": "at", "weight": 10.0}}, student, teacher,
                         input_shape=(1, SIZE, SIZE))
    assert at.student_features == {"feature": default_feature_paths(student)["feature"]}
    assert at.teacher_features == {"feature": default_feature_paths(teacher)["feature"]}
    rkd = build_objective({"rkd": {"type": "rkd"}}, student, teacher, input_shape=(1, SIZE, SIZE))
    assert set(rkd.student_features) == set(rkd.teacher_features) == {"embedding"}


def test_an_adapter_is_built_before_the_loss_with_the_terms_use_relu(networks):
    student, teacher = networks
    paths_s, paths_t = default_feature_paths(student), default_feature_paths(teacher)
    recipe = {"fitnet": {"type": "fitnet", "weight": 100.0, "params": {"use_relu": False}}}
    torch.manual_seed(5)
    objective = build_objective(recipe, student, teacher, input_shape=(1, SIZE, SIZE))
    torch.manual_seed(5)
    expected = build_adapter(student, teacher, paths_s["feature"], paths_t["feature"], input_shape=(1, SIZE, SIZE),
                             use_relu=False)
    adapter = objective.loss.losses["fitnet"].adapter
    assert isinstance(adapter.relu, nn.Identity)
    assert torch.equal(adapter.conv.weight, expected.conv.weight)  # the same draws, in the same order


def test_a_recipe_that_reads_the_teacher_needs_one(networks):
    student, _ = networks
    with pytest.raises(ValueError, match="reads the teacher's outputs; no teacher was given"):
        build_objective(HINTON, student, None, input_shape=(1, SIZE, SIZE))
    alone = build_objective({"ce": {"type": "ce"}}, student, None, input_shape=(1, SIZE, SIZE))
    assert list(alone.loss.losses) == ["ce"]
