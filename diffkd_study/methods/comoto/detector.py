"""Detector factory: a torchvision RetinaNet on one feature level of a timm backbone, grayscale input.

CoMoTo (``comoto/models/retina_net.py``, ``backbones.py``; ``docs/methods/comoto.md`` §2.2) uses torchvision's
``RetinaNet`` on the raw ``layer4`` output (C5, stride 32) of an ImageNet ResNet-50: **no FPN**, one
feature level, 5 anchor sizes x 3 aspect ratios on it, teacher and student the same network. This
factory keeps that structure and makes its size a choice (:class:`DetectorSpec`):

Backbone
    Any timm model with ``feature_info``, truncated after one stage (``feature_stage``: an index
    into its ``feature_info``, -1 the last). Weights come from :mod:`diffkd_study.models.pretrained`
    (``package:efficientnet-lite0`` and friends are ImageNet weights installed offline; there are no
    offline ImageNet ResNet weights, so a ResNet is ``none`` = from scratch, or ``file:...#sha256=``).
    The first convolution is adapted to one input channel as in :func:`create_classifier`. The
    module at path :data:`FEATURE_MODULE` (``"backbone"``) returns the single feature map that the
    head reads: the map LsKD and ImPA hook, as the official code hooks ``model.backbone``.
    ``head_channels`` > 0 adds a 1x1 convolution + BatchNorm + ReLU after the stage (our option, to
    narrow a wide stage such as ResNet-50's 2048 channels); 0 (default) feeds the stage as it is.

Head
    torchvision's ``RetinaNetHead`` (sigmoid focal classification + L1 box regression, as in the
    official code) with ``head_convs`` of its 3x3 convolutions per branch (torchvision: 4; fewer is
    our CPU option).

Classes
    One foreground class, "lesion" (label 0, ``num_classes=1``). The official ``num_classes=2``
    (``background``, ``abnormality``) adds a second sigmoid output that no target ever switches on;
    with sigmoid focal loss the two set-ups train the lesion output identically.

Input
    A list of (1, S, S) tensors in [0, 1], already letterboxed to ``image_size`` S (a multiple of 32).
    The RetinaNet transform normalises with mean = std = 0.5 (the EfficientNet-Lite weights' own;
    see :mod:`diffkd_study.models.classifier`) and, with ``min_size = max_size = S``, neither resizes
    a S x S input nor pads it. This removes two quirks of the official pipeline (``docs/methods/comoto.md`` §2.2 and
    §2.6 item 4): the second, internal resize by ``GeneralizedRCNNTransform`` (800/1333 defaults) and
    the padding to a multiple of 32 that offsets the feature grid from the image.

Memory layout
    Training and inference (:mod:`diffkd_study.methods.comoto.train`) move the detector to channels-last
    (NHWC, :data:`diffkd_study.layout.MEMORY_FORMAT`); the transform's batch stays NCHW and the first convolution switches it
    to the weights' layout. Measured on the default :class:`DetectorSpec` (EfficientNet-Lite0 stage 3 +
    2-convolution head, 320 px, batch 4, detection loss + AdamW, one CPU thread,
    ``benchmarks/training_throughput.py``, layouts interleaved): 5.5 -> 7.7 images/s (1.39x). The outputs
    equal the contiguous ones to float rounding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from timm.models import FeatureListNet
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetHead

from diffkd_study.models.classifier import INPUT_MEAN, INPUT_STD, create_classifier

__all__ = ["FEATURE_MODULE", "DetectorSpec", "SingleLevelBackbone", "create_detector",
           "detector_info"]

FEATURE_MODULE = "backbone"
LESION_LABEL = 0
#: the layout the detectors are trained and run in (see the module notes)


@dataclass(frozen=True)
class DetectorSpec:
    """Everything that determines the detector's architecture and post-processing."""

    backbone: str = "tf_efficientnet_lite0"
    weights: str = "package:efficientnet-lite0"
    feature_stage: int = 3  # tf_efficientnet_lite0: blocks.4, 112 channels, stride 16
    head_channels: int = 0
    head_convs: int = 2
    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    image_size: int = 320
    score_thresh: float = 0.001
    nms_thresh: float = 0.5
    detections_per_img: int = 20

    def __post_init__(self) -> None:
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32 (no padding offset); got {self.image_size}")
        if self.head_convs < 0 or self.head_convs > 4:
            raise ValueError(f"head_convs must be 0..4 (torchvision's head has 4); got {self.head_convs}")
        if self.head_channels < 0:
            raise ValueError(f"head_channels must be >= 0 (0: no 1x1 neck); got {self.head_channels}")
        if not self.anchor_sizes or min(self.anchor_sizes) <= 0:
            raise ValueError(f"anchor_sizes must be positive pixel sizes; got {self.anchor_sizes}")
        if not self.aspect_ratios or min(self.aspect_ratios) <= 0:
            raise ValueError(f"aspect_ratios must be positive; got {self.aspect_ratios}")
        if not 0 <= self.score_thresh < 1 or not 0 < self.nms_thresh <= 1 or self.detections_per_img < 1:
            raise ValueError("score_thresh must be in [0, 1), nms_thresh in (0, 1], detections_per_img >= 1")

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data (tuples as lists), for records and run keys."""
        out = asdict(self)
        out["anchor_sizes"] = list(self.anchor_sizes)
        out["aspect_ratios"] = list(self.aspect_ratios)
        return out


class SingleLevelBackbone(nn.Module):
    """A timm network cut after one stage (+ optional 1x1 neck); ``forward`` returns one (B, C, h, w) map."""

    def __init__(self, body: nn.Module, stage_channels: int, stride: int, head_channels: int = 0):
        super().__init__()
        self.body = body
        self.neck: nn.Module = (
            nn.Sequential(
                nn.Conv2d(stage_channels, head_channels, 1, bias=False),
                nn.BatchNorm2d(head_channels),
                nn.ReLU(inplace=True),
            )
            if head_channels
            else nn.Identity()
        )
        self.out_channels = head_channels or stage_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The one feature map (B, out_channels, H / stride, W / stride) of a batch ``x``."""
        return self.neck(self.body(x)[0])


def _truncated_body(model: nn.Module, stage: int) -> FeatureListNet:
    """timm's FeatureListNet returning only ``stage``; stages inside a Sequential need flattening."""
    module = model.feature_info[stage]["module"]
    return FeatureListNet(model, out_indices=(stage,), flatten_sequential="." in module)


def create_detector(spec: DetectorSpec | None = None) -> RetinaNet:
    """A RetinaNet for ``spec`` (see the module notes). Seed torch first for a reproducible initialisation."""
    spec = spec or DetectorSpec()
    classifier = create_classifier(spec.backbone, num_classes=1, in_chans=1, pretrained=spec.weights)
    info = classifier.feature_info
    stage = spec.feature_stage if spec.feature_stage >= 0 else len(info) + spec.feature_stage
    if not 0 <= stage < len(info):
        raise ValueError(
            f"feature_stage {spec.feature_stage} is outside the {len(info)} stages of {spec.backbone}: "
            + ", ".join(f"{i}: {f['module']} ({f['num_chs']} ch, stride {f['reduction']})" for i, f in enumerate(info))
        )
    stride = info[stage]["reduction"]
    backbone = SingleLevelBackbone(_truncated_body(classifier, stage), info[stage]["num_chs"], stride, spec.head_channels)
    anchors = AnchorGenerator((tuple(spec.anchor_sizes),), (tuple(spec.aspect_ratios),))
    head = RetinaNetHead(backbone.out_channels, anchors.num_anchors_per_location()[0], num_classes=1)
    for branch in (head.classification_head, head.regression_head):
        branch.conv = branch.conv[: spec.head_convs]
    model = RetinaNet(
        backbone,
        num_classes=1,
        min_size=spec.image_size,
        max_size=spec.image_size,
        image_mean=[INPUT_MEAN],
        image_std=[INPUT_STD],
        anchor_generator=anchors,
        head=head,
        score_thresh=spec.score_thresh,
        nms_thresh=spec.nms_thresh,
        detections_per_img=spec.detections_per_img,
    )
    model.spec = spec  # type: ignore[assignment]
    return model


def detector_info(model: RetinaNet) -> dict[str, Any]:
    """Sizes of a detector built by :func:`create_detector`: parameters, feature map, anchors."""
    spec: DetectorSpec = model.spec  # type: ignore[assignment]
    backbone: SingleLevelBackbone = model.backbone  # type: ignore[assignment]
    grid = spec.image_size // backbone.stride
    return {
        "backbone": spec.backbone,
        "weights": spec.weights,
        "params": sum(p.numel() for p in model.parameters()),
        "backbone_params": sum(p.numel() for p in backbone.parameters()),
        "feature_channels": backbone.out_channels,
        "feature_stride": backbone.stride,
        "feature_grid": [grid, grid],
        "anchors_per_location": len(spec.anchor_sizes) * len(spec.aspect_ratios),
        "image_size": spec.image_size,
    }

