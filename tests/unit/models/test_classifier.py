"""Classifier factory: grayscale adaptation, head replacement, timm names, model_info, default pair."""

from __future__ import annotations

import pytest
import torch

from diffkd_study.models.classifier import (
    DEFAULT_STUDENT,
    DEFAULT_STUDENT_WEIGHTS,
    DEFAULT_TEACHER,
    DEFAULT_TEACHER_WEIGHTS,
    create_classifier,
    model_info,
)
from diffkd_study.models.pretrained import load_weights


@pytest.fixture(scope="module")
def gray_and_rgb_lite0():
    kwargs = {"pretrained": "package:efficientnet-lite0"}
    return (
        create_classifier("tf_efficientnet_lite0", 1000, in_chans=1, **kwargs).eval(),
        create_classifier("tf_efficientnet_lite0", 1000, in_chans=3, **kwargs).eval(),
    )


def test_gray_model_equals_rgb_model_on_repeated_gray_image(gray_and_rgb_lite0):
    gray_model, rgb_model = gray_and_rgb_lite0
    gray = torch.rand(2, 1, 96, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(gray_model(gray), rgb_model(gray.repeat(1, 3, 1, 1)), rtol=0, atol=1e-4)


def test_gray_stem_is_the_sum_of_the_rgb_kernels(gray_and_rgb_lite0):
    gray_model, rgb_model = gray_and_rgb_lite0
    assert gray_model.conv_stem.weight.shape == (32, 1, 3, 3)
    torch.testing.assert_close(gray_model.conv_stem.weight, rgb_model.conv_stem.weight.sum(1, keepdim=True))


def test_head_is_replaced_and_the_rest_is_pretrained():
    model = create_classifier("tf_efficientnet_lite2", 3, in_chans=3, pretrained="package:efficientnet-lite2")
    weights = load_weights("package:efficientnet-lite2", "tf_efficientnet_lite2").state_dict
    state = model.state_dict()
    assert state["classifier.weight"].shape == (3, 1280) and state["classifier.bias"].shape == (3,)
    backbone = {k: v for k, v in weights.items() if not k.startswith("classifier.")}
    torch.testing.assert_close({k: state[k] for k in backbone}, backbone, rtol=0, atol=0)
    assert set(state) == set(weights)


@pytest.mark.parametrize("name", ["lcnet_035", "mobilenetv3_small_050", "resnet18", "tf_efficientnet_lite0"])
def test_factory_builds_any_timm_model_for_gray_input(name):
    model = create_classifier(name, 4, drop_rate=0.3)
    with torch.no_grad():
        out = model.eval()(torch.zeros(2, 1, 64, 64))
    assert out.shape == (2, 4)
    assert model.drop_rate == 0.3
    assert model.pretrained_cfg["in_chans"] == 1 and model.pretrained_cfg["input_size"][0] == 1
    assert model.pretrained_cfg["mean"] == (0.5,) and model.pretrained_cfg["weights"] == "none"


def test_unknown_timm_model_is_explained():
    with pytest.raises(ValueError, match="unknown timm model 'efficientnet_lite9'"):
        create_classifier("efficientnet_lite9", 2)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="num_classes and in_chans must be >= 1"):
        create_classifier("lcnet_035", 0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "tf_efficientnet_lite2",
            {
                "last_stage": "blocks.6",
                "last_stage_channels": 352,
                "features": "bn2",
                "feature_channels": 1280,
                "embedding": "global_pool",
                "embedding_dim": 1280,
            },
        ),
        (
            "lcnet_035",
            {
                "last_stage": "blocks.5",
                "last_stage_channels": 176,
                "features": "blocks",
                "feature_channels": 176,
                "embedding": "flatten",
                "embedding_dim": 1280,
            },
        ),
        (
            "resnet18",
            {
                "last_stage": "layer4",
                "last_stage_channels": 512,
                "features": "layer4",
                "feature_channels": 512,
                "embedding": "global_pool",
                "embedding_dim": 512,
            },
        ),
    ],
)
def test_model_info_names_hookable_modules(name, expected):
    model = create_classifier(name, 2)
    info = model_info(model)
    assert {k: info[k] for k in expected} == expected
    assert info["params"] == info["trainable_params"] == sum(p.numel() for p in model.parameters())
    assert model.training  # the probe forward pass left the mode as it was
    captured = {}
    for key in ("last_stage", "features", "embedding"):
        model.get_submodule(info[key]).register_forward_hook(
            lambda _m, _i, out, key=key: captured.update({key: out})
        )
    x = torch.rand(2, 1, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.eval()
        features = model.forward_features(x)
        torch.testing.assert_close(captured["features"], features)
        embedding = model.forward_head(features, pre_logits=True)
        model(x)
    torch.testing.assert_close(captured["embedding"], embedding)
    assert captured["last_stage"].shape == (2, info["last_stage_channels"], 4, 4)  # stride 32 at 128 px
    assert captured["embedding"].shape == (2, info["embedding_dim"])


def test_model_info_refuses_a_plain_module():
    with pytest.raises(TypeError, match="not a timm classifier"):
        model_info(torch.nn.Linear(2, 2))


def test_default_student_has_at_most_an_eighth_of_the_teachers_parameters():
    teacher = create_classifier(DEFAULT_TEACHER, 2, pretrained=DEFAULT_TEACHER_WEIGHTS)
    student = create_classifier(DEFAULT_STUDENT, 2, pretrained=DEFAULT_STUDENT_WEIGHTS)
    ratio = model_info(student)["params"] / model_info(teacher)["params"]
    assert ratio <= 1 / 8, ratio
    assert teacher.pretrained_cfg["weights_sha256"] is not None
