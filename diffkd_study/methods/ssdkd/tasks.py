"""Training tasks of the SSD-KD study: the teacher, the six students, and the rotation batch of SSD-KD.

Every task follows the trainer's contract (:func:`diffkd_study.training.trainer.fit`): ``.model`` is the
deployable network, ``forward(batch)`` returns ``(loss, {term: value})``. Student features are hooked
by module path (:func:`~diffkd_study.distill.distiller.default_feature_paths`): ``feature`` = the last
feature map before pooling (official: student ``features[18]``, teacher ``layer4``), ``embedding`` =
the pooled vector the classifier reads (official ``avg_pool``).

SSD-KD rotation batches (:class:`RotationDistillationTask`)
    The trainer hands over ``B`` normalised, *un-augmented* images (the stage gives it ``augment:
    none`` for this method); the task builds the official layout ``[x0_0, x0_90, x0_180, x0_270, x1_0,
    ...]`` with :func:`~diffkd_study.methods.ssdkd.diverse.rotate_batch` and then augments **every copy
    independently** with the dermoscopy preset, as the official ``MyDataset_ss`` applies the imgaug
    pipeline to each rotated copy. The official dataset also flips the image horizontally (p 0.5)
    once before rotating; that flip is left out because each copy is flipped independently with p
    0.5 afterwards, which gives every copy (and any set of copies) the same distribution of
    orientations up to which copy is called 90 and which 270 degrees, and nothing in the loss depends
    on that. The augmentation generator is seeded from torch's global generator, which the trainer
    re-seeds from (seed, epoch) at the start of every epoch, so a resumed run repeats it exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from diffkd_study.distill.composite import CompositeLoss, build_loss
from diffkd_study.distill.distiller import DistillationTask, default_feature_paths
from diffkd_study.distill.hooks import build_adapter
from diffkd_study.methods.ssdkd.diverse import rotate_batch
from diffkd_study.methods.ssdkd.losses import DiverseKDLossDual, SSDKDLossDual
from diffkd_study.methods.ssdkd.stage import METHODS, SSDKDStageConfig
from diffkd_study.training.augment import augmentation
from diffkd_study.training.trainer import ClassifierTask, input_normalisation

__all__ = ["DIAGNOSTIC_PREFIX", "RotationDistillationTask", "build_student_task", "build_teacher_task",
           "rotated_views", "wce_loss"]

DIAGNOSTIC_PREFIX = "diag."  # logged values that are not loss terms (row counts, SS accuracies)


def wce_loss(class_weights: Sequence[float] | None) -> CompositeLoss:
    """The class-weighted cross-entropy of the official code (``None``: unweighted)."""
    return build_loss({"ce": {"type": "ce", "params": {"class_weights": class_weights}}})


def build_teacher_task(model: nn.Module, class_weights: Sequence[float] | None) -> ClassifierTask:
    """Fine-tuning of the teacher with weighted cross-entropy (official ``isic.py``)."""
    return ClassifierTask(model, wce_loss(class_weights))


def rotated_views(
    images01: torch.Tensor, augment_name: str, generator: torch.Generator
) -> torch.Tensor:
    """(B, C, H, W) images in [0, 1] -> (4B, C, H, W) rotation layout, each copy augmented independently."""
    rows = rotate_batch(images01)
    augment = augmentation(augment_name)
    out, _ = augment(rows, None, generator=generator)
    return out


class RotationDistillationTask(DistillationTask):
    """A :class:`DistillationTask` whose batches are expanded to the SSD-KD 4-rotation layout (module notes)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, loss: nn.Module, *, augment: str,
                 student_features: Mapping[str, str], teacher_features: Mapping[str, str]) -> None:
        super().__init__(student, teacher, loss, student_features=student_features, teacher_features=teacher_features)
        augmentation(augment)  # fail fast on an unknown preset
        self.augment = augment

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        mean, std = input_normalisation(self.model)
        images01 = batch["images"] * std + mean
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        generator = torch.Generator().manual_seed(seed)
        rows = rotated_views(images01, self.augment, generator)
        rotated = {"images": (rows - mean) / std, "target": batch["target"], "image_size": tuple(rows.shape[-2:])}
        loss, terms = super().forward(rotated)
        stats = getattr(self.loss, "last_stats", {})
        return loss, {**terms, **{f"{DIAGNOSTIC_PREFIX}{k}": float(v) for k, v in stats.items()}}


def _adapter(student: nn.Module, teacher: nn.Module, image_size: int, in_chans: int,
             student_paths: Mapping[str, str], teacher_paths: Mapping[str, str]) -> nn.Module:
    # ConvReg of the official code: conv + BN + ReLU onto the teacher's channels (and spatial size)
    return build_adapter(student, teacher, student_paths["feature"], teacher_paths["feature"],
                         input_shape=(in_chans, image_size, image_size), use_relu=True)


def build_student_task(
    method: str,
    cfg: SSDKDStageConfig,
    student: nn.Module,
    teacher: nn.Module | None,
    class_weights: Sequence[float] | None,
    *,
    image_size: int,
    in_chans: int = 3,
    teacher_head: nn.Module | None = None,
) -> nn.Module:
    """The task that trains ``student`` with ``method`` (see :mod:`diffkd_study.methods.ssdkd.stage`).

    ``teacher`` is required for every method but ``ce``; ``teacher_head`` (the stage-A projection
    head, frozen here) for ``ssd_kd``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {list(METHODS)}")
    if method == "ce":
        return ClassifierTask(student, wce_loss(class_weights))
    if teacher is None:
        raise ValueError(f"method {method!r} distils from a teacher; none was given")
    student_paths, teacher_paths = default_feature_paths(student), default_feature_paths(teacher)
    ce = {"type": "ce", "params": {"class_weights": class_weights}}
    kd_rows = class_weights if cfg.kd_class_weighting else None  # per-row weights of the softened-output KLs
    if method == "kd":
        loss = build_loss({"wce": {**ce, "weight": 1 - cfg.kd_lambda},
                           "kd": {"type": "kd", "weight": cfg.kd_lambda,
                                  "params": {"temperature": cfg.kd_temperature, "class_weights": kd_rows}}})
        return DistillationTask(student, teacher, loss)
    if method == "dkd":
        loss = build_loss({"wce": ce, "dkd": {"type": "dkd", "params": {
            "alpha": cfg.dkd_alpha, "beta": cfg.dkd_beta, "temperature": cfg.dkd_temperature, "warmup_epochs": 0,
            "class_weights": kd_rows}}})
        return DistillationTask(student, teacher, loss)
    if method == "rkd":
        loss = build_loss({"wce": ce, "rkd": {"type": "rkd", "weight": cfg.lambd_rkd}})
        return DistillationTask(student, teacher, loss, student_features={"embedding": student_paths["embedding"]},
                                teacher_features={"embedding": teacher_paths["embedding"]})
    adapter = _adapter(student, teacher, image_size, in_chans, student_paths, teacher_paths)
    if method == "d_kd":
        d_kd = DiverseKDLossDual(class_weights=class_weights, lambd=cfg.kd_lambda, temperature=cfg.kd_temperature,
                                 lambd_rkd=cfg.lambd_rkd, lambd_crkd=cfg.lambd_crkd, adapter=adapter,
                                 kd_class_weighting=kd_rows is not None)
        return DistillationTask(student, teacher, CompositeLoss({"d_kd": (1.0, d_kd)}),
                                student_features=student_paths, teacher_features=teacher_paths)
    if teacher_head is None:
        raise ValueError("ssd_kd needs the teacher's trained self-supervision head (stage A): train it first")
    student_dim = _embedding_dim(student, student_paths["embedding"], image_size, in_chans)
    ssd = SSDKDLossDual(student_dim=student_dim, teacher_head=teacher_head, class_weights=class_weights,
                        lambd_rkd=cfg.lambd_rkd, lambd_crkd=cfg.lambd_crkd, adapter=adapter,
                        kd_class_weighting=kd_rows is not None)
    return RotationDistillationTask(student, teacher, CompositeLoss({"ssd_kd": (1.0, ssd)}), augment=cfg.augment,
                                    student_features=student_paths, teacher_features=teacher_paths)


def _embedding_dim(model: nn.Module, path: str, image_size: int, in_chans: int) -> int:
    from diffkd_study.distill.hooks import feature_shapes

    shape = feature_shapes(model, {"e": path}, (in_chans, image_size, image_size))["e"]
    return int(torch.Size(shape[1:]).numel())
