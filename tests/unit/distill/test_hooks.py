"""Forward hooks by module path on a tiny timm model, and adapter shapes."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from diffkd_study.distill.hooks import Adapter, FeatureHooks, build_adapter, feature_shapes, resolve_module


@pytest.fixture(scope="module")
def student() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=3).eval()


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    torch.manual_seed(1)
    return timm.create_model("resnet18", pretrained=False, num_classes=3).eval()


def _hook_count(model: nn.Module) -> int:
    return sum(len(module._forward_hooks) for module in model.modules())


def test_hooks_record_named_outputs_and_are_removed(student):
    x = torch.randn(2, 3, 64, 64)
    before = _hook_count(student)
    with FeatureHooks(student, {"last_block": "blocks.5", "head": "conv_head"}) as hooks:
        assert _hook_count(student) == before + 2
        logits = student(x)
        assert hooks.features["last_block"].shape == (2, 288, 2, 2)
        assert hooks.features["head"].shape == (2, 1024, 1, 1)
        # the last block's output is what forward_features returns
        assert torch.allclose(hooks.features["last_block"], student.forward_features(x))
    assert logits.shape == (2, 3)
    assert _hook_count(student) == before
    assert not hooks.active and hooks.features == {}


def test_run_returns_output_and_features_and_detach_option(student):
    x = torch.randn(1, 3, 64, 64)
    with FeatureHooks(student, ["blocks.2"], detach=True) as hooks:
        output, features = hooks.run(x)
    assert output.shape == (1, 3)
    assert set(features) == {"blocks.2"} and not features["blocks.2"].requires_grad
    with FeatureHooks(student, ["blocks.2"]) as hooks:
        _, features = hooks.run(x)
    assert features["blocks.2"].requires_grad


def test_unknown_path_lists_close_matches(student):
    with pytest.raises(KeyError, match=r"no submodule 'blocks\.50'.*close matches: .*'blocks\.5'"):
        FeatureHooks(student, {"x": "blocks.50"})
    with pytest.raises(KeyError, match="top-level children: 'conv_stem'"):
        resolve_module(student, "zzz_not_a_layer")


def test_module_never_called_is_reported():
    class OneLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            return self.used(x)

    model = OneLayer()
    with FeatureHooks(model, {"u": "unused"}) as hooks, pytest.raises(RuntimeError, match="never called"):
        hooks.run(torch.zeros(1, 2))


def test_feature_shapes_restores_training_mode(student):
    student.train()
    try:
        shapes = feature_shapes(student, {"b3": "blocks.3"}, (3, 64, 64))
        assert shapes["b3"] == (1, 24, 4, 4)
        assert student.training
    finally:
        student.eval()


@pytest.mark.parametrize(
    "student_path, kernel, stride",
    [("blocks.5", (1, 1), (1, 1)), ("blocks.3", (3, 3), (2, 2))],  # 2x2 -> 2x2, 4x4 -> 2x2
)
def test_build_adapter_maps_student_onto_teacher(student, teacher, student_path, kernel, stride):
    adapter = build_adapter(student, teacher, student_path, "layer4", input_shape=(3, 64, 64))
    assert adapter.conv.kernel_size == kernel and adapter.conv.stride == stride
    x = torch.randn(2, 3, 64, 64)
    with (
        FeatureHooks(student, {"s": student_path}) as s_hooks,
        FeatureHooks(teacher, {"t": "layer4"}) as t_hooks,
    ):
        student(x)
        teacher(x)
        adapted = adapter(s_hooks.features["s"])
        assert adapted.shape == t_hooks.features["t"].shape == (2, 512, 2, 2)


@pytest.mark.parametrize(
    "student_size, teacher_size, conv_type",
    [
        ((8, 8), (4, 4), nn.Conv2d),
        ((4, 4), (8, 8), nn.ConvTranspose2d),
        ((7, 7), (5, 5), nn.Conv2d),
        (None, None, nn.Conv2d),
    ],
)
def test_adapter_spatial_rules(student_size, teacher_size, conv_type):
    adapter = Adapter(3, 5, student_size=student_size, teacher_size=teacher_size)
    assert type(adapter.conv) is conv_type
    size = student_size or (6, 6)
    out = adapter(torch.randn(2, 3, *size))
    assert out.shape == (2, 5, *(teacher_size or size))
    assert (out >= 0).all()  # ReLU by default
    assert (Adapter(3, 5, use_relu=False)(torch.randn(2, 3, 4, 4)) < 0).any()


def test_adapter_rejects_unmappable_sizes():
    with pytest.raises(ValueError, match="no adapter maps"):
        Adapter(3, 5, student_size=(4, 4), teacher_size=(6, 6))
