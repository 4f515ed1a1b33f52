"""Training and inference of the CoMoTo detectors: detection loss + ImPA (teacher) or + KD (student).

One loop (:func:`fit_detector`) serves the teacher and every student variant; each step logs every
loss term separately (mdistiller's contract) and their sum is minimised.

Teacher (official ``engine.py::warmup``; ``docs/methods/comoto.md`` §2.4)
    RetinaNet loss on mammography batches (lesion and normal images alike; normals give background
    anchors only) ``+ ImPA`` on the backbone map of the same forward pass, read through a forward hook
    (:class:`diffkd_study.distill.hooks.FeatureHooks` at ``"backbone"``), with lesion boxes in the
    network frame (``per_axis_scale`` is irrelevant: inputs are square).

Student (official ``engine.py::train``; ``docs/methods/comoto.md`` §2.3)
    RetinaNet loss on a DBT batch ``+ KD``. For every DBT batch the next batch of the frozen
    teacher's own *lesion* mammograms is drawn (an independent seeded stream: the data are
    unpaired); the teacher runs in ``eval()`` under ``no_grad`` and its backbone map is compared with
    the student's hooked map: LsKD (:class:`~diffkd_study.methods.comoto.lesion.LesionKDLoss`, lesion points of
    both batches) or image-level KD (:class:`~diffkd_study.methods.comoto.lesion.ImageLevelKDLoss`). The
    teacher's map is computed by calling its backbone on the transformed batch: the same tensor a
    hook on ``teacher.backbone`` would record, without running its head. Drawing the teacher batches
    from lesion images only is our choice: the official teacher set (OMI-DB ROIs) holds only lesion
    images, and a lesion-free mammogram contributes nothing to LsKD. The KD modules' learnable
    projections (``Linear(9, 9)``, ``Linear(hw, hw)``) are trained with the student, as officially.

Optimisation
    SGD (official: lr 5e-5, momentum 0.9, no weight decay) or AdamW; linear warm-up over
    ``warmup_steps``; the learning rate is multiplied by ``lr_gamma`` after ``lr_step_fraction`` of the
    steps (official StepLR: x0.1 at epoch 30 of 50); optional gradient-norm clipping. The budget is a
    number of steps (``steps_for``) rather than epochs, so that every method of a fold and regime
    makes the same number of updates on the same batches (same seed).

Memory layout: the student, the frozen teacher and inference run channels-last (NHWC,
:data:`~diffkd_study.layout.MEMORY_FORMAT`, 1.39x faster on one CPU thread; see
:mod:`~diffkd_study.methods.comoto.detector`); the history's ``attrs["memory_format"]`` names the layout.

Model selection: the official code keeps the checkpoint with the best validation mAP. With 50 DBT
patients there is no room for a validation split inside each training fold, so the final weights are
used (a deliberate deviation).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision.models.detection import RetinaNet

from diffkd_study.distill.hooks import FeatureHooks
from diffkd_study.io import atomic_path, read_safetensors
from diffkd_study.layout import MEMORY_FORMAT
from diffkd_study.methods.comoto.data import BatchStream, DetectionData, network_batch
from diffkd_study.methods.comoto.detector import FEATURE_MODULE
from diffkd_study.methods.comoto.lesion import ImageLevelKDLoss, ImPALoss, LesionKDLoss
from diffkd_study.methods.comoto.stage import ComotoStageConfig
from diffkd_study.metrics.froc import DETECTION_COLUMNS
from diffkd_study.progress import progress_bar

__all__ = [
    "Distillation",
    "fit_detector",
    "load_state",
    "make_optimizer",
    "predict",
    "save_state",
    "steps_for",
]


def steps_for(n_images: int, batch_size: int, epochs: int, min_steps: int) -> int:
    """``max(min_steps, epochs * ceil(n_images / batch_size))``: the training budget in optimiser steps."""
    return max(min_steps, epochs * math.ceil(n_images / batch_size))


def make_optimizer(
    parameters: Sequence[nn.Parameter], config: ComotoStageConfig, steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The section's optimiser and its schedule (linear warm-up, one step decay)."""
    if config.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    decay_at = math.ceil(config.lr_step_fraction * steps)

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
        return warm * (config.lr_gamma if step >= decay_at else 1.0)

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class Distillation:
    """A frozen teacher, the mammography images it is fed, and the KD loss between backbone maps."""

    teacher: RetinaNet
    data: DetectionData  # lesion images only (see the module notes)
    loss: LesionKDLoss | ImageLevelKDLoss
    name: str  # the loss term's name in the history: "lskd" or "image_kd"
    seed: int

    def __post_init__(self) -> None:
        if not self.data.has_lesion.all():
            raise ValueError("the teacher's KD images must all have lesion boxes")
        self.teacher.eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)


def _teacher_map(teacher: RetinaNet, images: list[torch.Tensor]) -> torch.Tensor:
    transformed, _ = teacher.transform(images)
    return teacher.backbone(transformed.tensors)


def fit_detector(
    model: RetinaNet,
    data: DetectionData,
    *,
    steps: int,
    config: ComotoStageConfig,
    seed: int,
    device: torch.device,
    impa: ImPALoss | None = None,
    distill: Distillation | None = None,
    progress: bool = True,
    desc: str = "train",
    memory_format: torch.memory_format = MEMORY_FORMAT,
) -> pd.DataFrame:
    """Train ``model`` in place for ``steps`` steps; returns the history (one row per step, one column per term).

    Columns: ``step``, ``classification``, ``bbox_regression``, the ImPA / KD term if any (its value
    *after* its weight), ``total``, ``lr`` and ``seconds`` (wall time of the step). The model (and a
    teacher) are moved to ``memory_format``, named in ``history.attrs["memory_format"]``.
    """
    if impa is not None and distill is not None:
        raise ValueError("ImPA trains the teacher and KD the student: give one of impa / distill")
    model.to(device, memory_format=memory_format).train()
    size = data.image_size
    kd_params = list(distill.loss.parameters()) if distill is not None else []
    if distill is not None:
        distill.teacher.to(device, memory_format=memory_format)
        distill.loss.to(device)
    optimizer, schedule = make_optimizer(list(model.parameters()) + kd_params, config, steps)
    stream = BatchStream(len(data), config.batch_size, seed, config.flip_prob)
    teacher_stream = (BatchStream(len(distill.data), config.batch_size, distill.seed, config.flip_prob)
                      if distill is not None else None)
    hooks = FeatureHooks(model, {"feature": FEATURE_MODULE}) if (impa or distill) else None
    rows: list[dict[str, Any]] = []
    bar = progress_bar(range(steps), desc=desc, disable=not progress, leave=False, unit="step")
    try:
        for step in bar:
            started = time.perf_counter()
            indices, flips = stream.next()
            images, targets = network_batch(data, indices, flips, device)
            terms = dict(model(images, targets))
            if impa is not None:
                terms["impa"] = impa(hooks.features["feature"], [t["boxes"] for t in targets], (size, size))
            if distill is not None:
                t_indices, t_flips = teacher_stream.next()
                t_images, t_targets = network_batch(distill.data, t_indices, t_flips, device)
                with torch.no_grad():
                    teacher_map = _teacher_map(distill.teacher, t_images)
                student_map = hooks.features["feature"]
                if isinstance(distill.loss, LesionKDLoss):
                    terms[distill.name] = distill.loss(
                        student_map, teacher_map, [t["boxes"] for t in targets], [t["boxes"] for t in t_targets],
                        (size, size), (size, size))
                else:
                    terms[distill.name] = distill.loss(student_map, teacher_map)
            total = sum(terms.values())
            if not torch.isfinite(total):
                raise FloatingPointError(
                    f"{desc}: loss is not finite at step {step}: "
                    + ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
                    + "; lower the learning rate or enable grad_clip")
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if config.grad_clip:
                nn.utils.clip_grad_norm_(list(model.parameters()) + kd_params, config.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            schedule.step()
            row = {"step": step + 1, **{k: float(v.detach()) for k, v in terms.items()}, "total": float(total.detach()),
                   "lr": lr, "seconds": time.perf_counter() - started}
            rows.append(row)
            if progress and (step % 10 == 0 or step + 1 == steps):
                bar.set_postfix(loss=f"{row['total']:.3f}")
    finally:
        if hooks is not None:
            hooks.close()
    model.eval()
    history = pd.DataFrame(rows)
    history.attrs["memory_format"] = "channels_last" if memory_format == torch.channels_last else "contiguous"
    return history


@torch.no_grad()
def predict(model: RetinaNet, data: DetectionData, device: torch.device, batch_size: int = 8,
            memory_format: torch.memory_format = MEMORY_FORMAT) -> pd.DataFrame:
    """Detections on every image of ``data`` in stored-image pixels (columns ``DETECTION_COLUMNS``), the model
    moved to ``memory_format``."""
    model.to(device, memory_format=memory_format).eval()
    frames = []
    for start in range(0, len(data), batch_size):
        indices = list(range(start, min(start + batch_size, len(data))))
        images, _ = network_batch(data, indices, [False] * len(indices), device)
        for i, output in zip(indices, model(images), strict=True):
            boxes = data.letterboxes[i].to_image(output["boxes"].cpu().numpy())
            frames.append(pd.DataFrame({
                "image_id": data.image_ids[i], "score": output["scores"].cpu().numpy().astype(float),
                "x1": boxes[:, 0], "y1": boxes[:, 1], "x2": boxes[:, 2], "y2": boxes[:, 3],
            }))
    if not frames:
        return pd.DataFrame(columns=list(DETECTION_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(DETECTION_COLUMNS)]


def save_state(model: nn.Module, path: str | Path) -> None:
    """The model's state dict as safetensors, written atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def load_state(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a safetensors state dict from ``path`` into ``model`` (strict) and return the model."""
    model.load_state_dict(read_safetensors(path), strict=True)
    return model


def history_long(history: pd.DataFrame, **labels: Any) -> pd.DataFrame:
    """A step history in the tidy form of ``plots.plot_loss_curves`` (term, value, split = 'train')."""
    terms = [c for c in history.columns if c not in ("step", "lr", "seconds")]
    out = history.melt(id_vars=["step"], value_vars=terms, var_name="term", value_name="value")
    out["split"] = "train"
    for key, value in labels.items():
        out[key] = value
    return out


def median_step_seconds(history: pd.DataFrame) -> float:
    """Median wall time of a step, skipping the first (warm-up of allocators and kernels)."""
    seconds = history["seconds"].to_numpy()
    return float(np.median(seconds[1:] if len(seconds) > 1 else seconds))
