"""Detector factory: one feature level, the hooked map the head reads, no resize, spec checks."""

from __future__ import annotations

import pytest
import torch

from diffkd_study.distill.hooks import FeatureHooks
from diffkd_study.methods.comoto.detector import FEATURE_MODULE, DetectorSpec, create_detector, detector_info

SMALL = DetectorSpec(backbone="resnet18", weights="none", feature_stage=2, image_size=64, anchor_sizes=(8, 16))


def test_single_level_map_and_anchor_count():
    torch.manual_seed(0)
    model = create_detector(SMALL)
    info = detector_info(model)
    # resnet18 feature_info: act1 (64, /2), layer1 (64, /4), layer2 (128, /8), ...
    assert (info["feature_channels"], info["feature_stride"], info["feature_grid"]) == (128, 8, [8, 8])
    assert info["anchors_per_location"] == 6
    model.train()
    with FeatureHooks(model, {"f": FEATURE_MODULE}) as hooks:
        losses = model([torch.rand(1, 64, 64)] * 2, [{"boxes": torch.tensor([[8.0, 8.0, 30.0, 30.0]]),
                                                     "labels": torch.tensor([0])}] * 2)
        assert hooks.features["f"].shape == (2, 128, 8, 8)  # the transform neither resized nor padded
    assert set(losses) == {"classification", "bbox_regression"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_head_depth_neck_and_inference_outputs():
    torch.manual_seed(0)
    model = create_detector(DetectorSpec(backbone="resnet18", weights="none", feature_stage=-1, head_channels=32,
                                         head_convs=1, image_size=64, detections_per_img=7))
    assert detector_info(model)["feature_channels"] == 32 and detector_info(model)["feature_stride"] == 32
    assert len(model.head.classification_head.conv) == 1 and len(model.head.regression_head.conv) == 1
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(1, 64, 64)])[0]
    assert out["boxes"].shape[1] == 4 and len(out["scores"]) <= 7 and set(out["labels"].tolist()) <= {0}


def test_imagenet_backbone_loads_the_offline_weights():
    model = create_detector(DetectorSpec(image_size=64))
    assert detector_info(model)["feature_channels"] == 112
    first_conv = model.backbone.body.conv_stem.weight
    assert first_conv.shape[1] == 1  # adapted to grayscale
    again = create_detector(DetectorSpec(image_size=64))
    assert torch.equal(first_conv, again.backbone.body.conv_stem.weight)  # pretrained, not random


@pytest.mark.parametrize("changes, message", [
    ({"image_size": 100}, "multiple of 32"),
    ({"head_convs": 5}, "head_convs"),
    ({"anchor_sizes": ()}, "anchor_sizes"),
    ({"score_thresh": 1.0}, "score_thresh"),
])
def test_spec_checks(changes, message):
    with pytest.raises(ValueError, match=message):
        DetectorSpec(**{**SMALL.__dict__, **changes})


def test_feature_stage_out_of_range_lists_the_stages():
    with pytest.raises(ValueError, match="outside the 5 stages of resnet18: 0: act1"):
        create_detector(DetectorSpec(backbone="resnet18", weights="none", feature_stage=9, image_size=64))
