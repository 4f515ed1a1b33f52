"""Training tasks of the SSD-KD study: the teacher, the six students, and the rotation batch of SSD-KD.

Every task follows the trainer's contract (:func:`diffkd_study.training.trainer.fit`): ``.model`` is the
deployable network, ``forward(batch)`` returns ``(loss, {term: value})``. Each student method is a
recipe (:func:`method_recipes`: method -> ``build_loss`` terms, data) built by
:func:`~diffkd_study.distill.distiller.build_objective`; what a method needs follows from what its
registered losses declare: features hooked by module path (``feature`` = the last feature map before
pooling, official student ``features[18]`` and teacher ``layer4``; ``embedding`` = the pooled vector
the classifier reads, official ``avg_pool``) for the inputs they read, a ConvReg adapter for
``needs_adapter``, the WCE class weights for ``uses_class_weights``, the rotation batch and the
projection heads for ``rotation_layout`` (SSD-KD), and no teacher when no term reads one.

SSD-KD rotation batches (:class:`RotationDistillationTask`)
    The trainer hands over ``B`` normalised, *un-augmented* images (the stage gives it ``augment:
    none`` for this method); the task builds the official layout ``[x0_0, x0_90, x0_180, x0_270, x1_0,
    ...]`` with :func:`~diffkd_study.methods.ssdkd.rotation.rotate_batch` and then augments **every copy
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

from diffkd_study.distill.composite import CompositeLoss, build_loss, describe_objective, term_class
from diffkd_study.distill.distiller import (
    DistillationTask,
    build_objective,
    default_feature_paths,
    objective_inputs,
)
from diffkd_study.distill.hooks import feature_shapes
from diffkd_study.methods.ssdkd import losses as _losses  # noqa: F401  (registers the SSD-KD losses)
from diffkd_study.methods.ssdkd.rotation import rotate_batch
from diffkd_study.methods.ssdkd.stage import METHODS, SSDKDStageConfig
from diffkd_study.training.augment import augmentation
from diffkd_study.training.trainer import ClassifierTask, input_normalisation

__all__ = ["DIAGNOSTIC_PREFIX", "RotationDistillationTask", "build_student_task", "build_teacher_task",
           "method_objective", "method_recipes", "rotated_views", "uses_rotation_batches", "wce_loss"]

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
        """Expand ``batch`` to the 4-rotation layout (each copy augmented with a seed drawn from torch's RNG),
        then ``(loss, terms)`` as :class:`DistillationTask`, with the loss's ``last_stats`` added as diagnostics.
        """
        mean, std = input_normalisation(self.model)
        images01 = batch["images"] * std + mean
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        generator = torch.Generator().manual_seed(seed)
        rows = rotated_views(images01, self.augment, generator)
        rotated = {"images": (rows - mean) / std, "target": batch["target"], "image_size": tuple(rows.shape[-2:])}
        loss, terms = super().forward(rotated)
        stats = getattr(self.loss, "last_stats", {})
        return loss, {**terms, **{f"{DIAGNOSTIC_PREFIX}{k}": float(v) for k, v in stats.items()}}


def method_recipes(cfg: SSDKDStageConfig, class_weights: Sequence[float] | None = None
                   ) -> dict[str, dict[str, dict[str, Any]]]:
    """Every student method's objective as data: ``{method: {term: {type, weight, params}}}`` (``build_loss``).

    The WCE class weights reach every term whose loss ``uses_class_weights`` (``ce``, D-KD, SSD-KD);
    with ``kd_class_weighting`` they also weight the rows of the softened-output KLs (``class_weights``
    of ``kd`` and ``dkd``, ``kd_class_weighting`` of D-KD and SSD-KD). The ``kd`` student is D-KD's
    first two terms, so ``diverse_kd`` minus ``kd`` isolates the relational terms; ``dkd`` has no
    warm-up.
    """
    kd_rows = class_weights if cfg.kd_class_weighting else None  # per-row weights of the softened-output KLs
    relations = {"lambd_rkd": cfg.lambd_rkd, "lambd_crkd": cfg.lambd_crkd, "kd_class_weighting": kd_rows is not None}
    return {
        "ce": {"ce": {"type": "ce"}},
        "kd": {"wce": {"type": "ce", "weight": 1 - cfg.kd_lambda},
               "kd": {"type": "kd", "weight": cfg.kd_lambda,
                      "params": {"temperature": cfg.kd_temperature, "class_weights": kd_rows}}},
        "rkd": {"wce": {"type": "ce"}, "rkd": {"type": "rkd", "weight": cfg.lambd_rkd}},
        "dkd": {"wce": {"type": "ce"},
                "dkd": {"type": "dkd", "params": {"alpha": cfg.dkd_alpha, "beta": cfg.dkd_beta,
                                                  "temperature": cfg.dkd_temperature, "warmup_epochs": 0,
                                                  "class_weights": kd_rows}}},
        "diverse_kd": {"diverse_kd": {"type": "diverse_kd", "params": {"lambd": cfg.kd_lambda,
                                                                       "temperature": cfg.kd_temperature, **relations}}},
        "ssd_kd": {"ssd_kd": {"type": "ssd_kd", "params": relations}},
    }


def _recipe(method: str, cfg: SSDKDStageConfig, class_weights: Sequence[float] | None = None
            ) -> dict[str, dict[str, Any]]:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {list(METHODS)}")
    return method_recipes(cfg, class_weights)[method]


def _rotation_terms(recipe: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [name for name, spec in recipe.items() if getattr(term_class(name, spec), "rotation_layout", False)]


def uses_rotation_batches(method: str, cfg: SSDKDStageConfig) -> bool:
    """Whether ``method`` trains on 4-rotation batches (and so needs the teacher's SS head of stage A)."""
    return bool(_rotation_terms(_recipe(method, cfg)))


def method_objective(method: str, cfg: SSDKDStageConfig) -> str:
    """The objective of ``method`` in words, from the registered loss descriptions (for the report)."""
    return describe_objective(_recipe(method, cfg))


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
    """The task that trains ``student`` with ``method`` (its recipe in :func:`method_recipes`).

    ``teacher`` is required for every method whose terms read the teacher (all but ``ce``);
    ``teacher_head`` (the stage-A projection head, frozen here) for the rotation-batch method ``ssd_kd``.
    """
    recipe = _recipe(method, cfg, class_weights)
    reads_teacher = any(key.startswith("teacher_") for key in objective_inputs(recipe))
    if reads_teacher and teacher is None:
        raise ValueError(f"method {method!r} distils from a teacher; none was given")
    rotation = _rotation_terms(recipe)
    if rotation and teacher_head is None:
        raise ValueError(f"{method} needs the teacher's trained self-supervision head (stage A): train it first")
    extra = {name: {"student_dim": _embedding_dim(student, image_size, in_chans), "teacher_head": teacher_head}
             for name in rotation}
    # ConvReg adapters of the official code (conv + BN + ReLU onto the teacher's channels and spatial size)
    objective = build_objective(recipe, student, teacher, input_shape=(in_chans, image_size, image_size),
                                class_weights=class_weights, extra_params=extra)
    if not reads_teacher:
        return ClassifierTask(student, objective.loss)
    if rotation:
        return RotationDistillationTask(student, teacher, objective.loss, augment=cfg.augment,
                                        student_features=objective.student_features,
                                        teacher_features=objective.teacher_features)
    return DistillationTask(student, teacher, objective.loss, student_features=objective.student_features,
                            teacher_features=objective.teacher_features)


def _embedding_dim(model: nn.Module, image_size: int, in_chans: int) -> int:
    path = default_feature_paths(model)["embedding"]
    shape = feature_shapes(model, {"e": path}, (in_chans, image_size, image_size))["e"]
    return int(torch.Size(shape[1:]).numel())
