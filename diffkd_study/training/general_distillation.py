"""General distillation: a compact student learns the packaged ImageNet teacher's representation on the study's
training images, without labels, and becomes the starting point of every student of the stage.

The settings and the objective are :class:`~diffkd_study.training.initialisation.InitialisationConfig`'s (its
module docstring states them). :func:`general_distillation` runs it:

1. every image may be a *training* image only (:func:`check_training_only` against the manifest's splits;
   a validation, test or external image is an error, never used);
2. ``views`` fixed views per image (as it is, mirrored, and draws of the study's augmentation from a
   generator seeded by the config's seed), and the teacher's pooled pre-logit features and 1,000 ImageNet
   logits for each, computed once in eval mode;
3. the student (with a 1,000-class head and a linear adapter to the teacher's width) trained for ``epochs``
   passes over all views in a seeded order, channels-last;
4. the student's weights (the adapter is dropped) written atomically to ``init.safetensors`` with metadata
   (:data:`~diffkd_study.models.pretrained.DISTILLED_FORMAT`, student, teacher, normalisation), its
   sha256, the record ``init.json`` and the list of images it saw, ``images.csv``.

The result is re-used when ``init.json`` records the same signature (the code of this module and what it
imports, the settings, the student, the image ids and pixels) and the weights file still has its sha256;
otherwise the old files are moved to ``.superseded/`` and the initialisation is made afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from diffkd_study.codedigest import code_digest
from diffkd_study.io import atomic_path, set_aside, sha256_file, write_json, write_text
from diffkd_study.layout import MEMORY_FORMATS
from diffkd_study.models.classifier import create_classifier
from diffkd_study.models.pretrained import DISTILLED_FORMAT
from diffkd_study.progress import progress_bar
from diffkd_study.repro import derive_seed
from diffkd_study.training.augment import augmentation
from diffkd_study.training.data import ImageTensors
from diffkd_study.training.initialisation import InitialisationConfig
from diffkd_study.training.trainer import input_normalisation, warmup_cosine_factor

logger = logging.getLogger(__name__)

WEIGHTS = "init.safetensors"
RECORD = "init.json"
IMAGES = "images.csv"
IMAGENET_CLASSES = 1000

__all__ = ["IMAGES", "Initialisation", "RECORD", "WEIGHTS", "check_training_only", "general_distillation",
           "pre_logits", "probe_features", "probe_representations", "starting_points"]


@dataclass(frozen=True)
class Initialisation:
    """A general-distillation initialisation: its weight-source string (``distilled:PATH#sha256=HEX``), file,
    digest, record (``init.json``'s content) and whether this call re-used it."""

    weights: str
    path: Path
    sha256: str
    record: dict[str, Any]
    reused: bool


def check_training_only(split_of: Mapping[str, str], image_ids: Sequence[str], where: str) -> None:
    """Raise ``ValueError`` unless every id in ``image_ids`` is a row of split ``train`` in ``split_of``
    (image id -> split, the study manifest's): the initialisation never sees a validation, test or external
    image, and an id the manifest lacks is refused too."""
    bad = [(i, split_of.get(i, "not in the manifest")) for i in image_ids if split_of.get(i) != "train"]
    if bad:
        shown = ", ".join(f"{i} ({s})" for i, s in bad[:3])
        raise ValueError(f"{where}: general distillation may see training images only; {len(bad)} image(s) are "
                         f"not in the training split: {shown}{' ...' if len(bad) > 3 else ''}")


def pre_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """A timm classifier's pooled pre-logit features (the input of its classifier head)."""
    return model.forward_head(model.forward_features(images), pre_logits=True)


def _views(images: torch.Tensor, n_views: int, augment: str, seed: int, name: str, chunk: int = 256) -> torch.Tensor:
    """``n_views`` uint8 views of every image, view-major: as it is, mirrored, then augmented draws."""
    out = [images]
    if n_views > 1:
        out.append(images.flip(-1))
    transform = augmentation(augment)
    for view in range(2, n_views):
        generator = torch.Generator().manual_seed(derive_seed(seed, "general-distillation", name, view))
        parts = []
        for start in range(0, len(images), chunk):
            batch = images[start:start + chunk].float().div_(255.0)
            augmented, _ = transform(batch, None, generator=generator)
            parts.append(augmented.clamp_(0, 1).mul_(255.0).round_().to(torch.uint8))
        out.append(torch.cat(parts))
    return torch.cat(out)


def _normalised(images: torch.Tensor, normalisation: tuple[float, float], layout: torch.memory_format) -> torch.Tensor:
    mean, std = normalisation
    return ((images.float() / 255.0 - mean) / std).contiguous(memory_format=layout)


@torch.no_grad()
def _frozen_pre_logits(model: nn.Module, images: torch.Tensor, batch_size: int, layout: torch.memory_format, *,
                       progress: bool = False, desc: str = "features") -> torch.Tensor:
    """Pooled pre-logit features (float32) of ``model`` in eval mode on uint8 ``images``, batch by batch."""
    model.eval()
    normalisation = input_normalisation(model)
    starts = range(0, len(images), batch_size)
    return torch.cat([pre_logits(model, _normalised(images[start:start + batch_size], normalisation, layout)).float()
                      for start in progress_bar(starts, desc=desc, unit="batch", disable=not progress, leave=False)])


@torch.no_grad()
def _teacher_targets(teacher: nn.Module, views: torch.Tensor, batch_size: int, layout: torch.memory_format,
                     progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    features = _frozen_pre_logits(teacher, views, batch_size, layout, progress=progress, desc="teacher targets")
    logits = [teacher.get_classifier()(f).float() for f in features.split(batch_size)]
    return features, torch.cat(logits)


def _signature(student_model: str, sets: Mapping[str, ImageTensors], config: InitialisationConfig, augment: str,
               memory_format: str, code: str) -> str:
    digest = hashlib.sha256(code.encode())
    digest.update(json.dumps({"student": student_model, "config": asdict(config), "augment": augment,
                              "memory_format": memory_format}, sort_keys=True).encode())
    for name, data in sets.items():
        digest.update(name.encode())
        digest.update("|".join(data.image_ids).encode())
        digest.update(str(tuple(data.images.shape)).encode())
        digest.update(data.images.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _reusable(out_dir: Path, signature: str) -> tuple[dict[str, Any] | None, str]:
    record_path = out_dir / RECORD
    if not record_path.is_file():
        return None, f"{record_path} is missing"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except ValueError as err:
        return None, f"{record_path} cannot be read ({err})"
    if record.get("signature") != signature:
        return None, "the code, the settings or the training images changed"
    path = out_dir / WEIGHTS
    if not path.is_file() or sha256_file(path) != record.get("sha256"):
        return None, f"{path} is missing or differs from the sha256 {RECORD} recorded"
    return record, ""


def general_distillation(student_model: str, sets: Mapping[str, ImageTensors], split_of: Mapping[str, str],
                         config: InitialisationConfig, out_dir: str | os.PathLike[str], *, augment: str,
                         memory_format: str = "channels_last", progress: bool = False) -> Initialisation:
    """Make (or re-use) the general-distillation initialisation of timm model ``student_model``.

    ``sets`` maps a name (``lesion crop``, ``whole image``, ``training images``) to unlabeled images of one
    size and channel count; ``split_of`` maps every image id of the study to its split, and every image of
    ``sets`` must be a training one. ``augment`` is the study's augmentation preset (for views 3...). Writes
    ``init.safetensors``, ``init.json`` and ``images.csv`` under ``out_dir`` and returns the
    :class:`Initialisation` whose ``weights`` string the stage hands to ``create_classifier``.
    """
    for name, data in sets.items():
        check_training_only(split_of, data.image_ids, f"general distillation ({name})")
    shapes = {tuple(data.images.shape[1:]) for data in sets.values()}
    if len(shapes) != 1 or not sum(len(d) for d in sets.values()):
        raise ValueError(f"general distillation needs images of one shape, at least one; got {sorted(shapes)}")
    in_chans, size, _ = shapes.pop()
    out_dir = Path(out_dir)
    code = code_digest([__name__])
    signature = _signature(student_model, sets, config, augment, memory_format, code)
    record, why_not = _reusable(out_dir, signature)
    if record is not None:
        return Initialisation(record["weights"], out_dir / WEIGHTS, record["sha256"], record, reused=True)
    old = [n for n in (WEIGHTS, RECORD, IMAGES) if (out_dir / n).exists()]
    if old:
        aside = set_aside(out_dir, old)
        logger.warning("general distillation: %s: made afresh; the old files are moved to %s", why_not, aside)
    started = time.perf_counter()
    layout = MEMORY_FORMATS[memory_format]
    torch.manual_seed(config.seed)
    teacher = create_classifier(config.teacher_model, IMAGENET_CLASSES, in_chans, config.teacher_weights)
    teacher = teacher.to(memory_format=layout).requires_grad_(False)
    views = torch.cat([_views(d.images, config.views, augment, config.seed, name) for name, d in sets.items()])
    target_features, target_logits = _teacher_targets(teacher, views, 2 * config.batch_size, layout, progress)
    teacher_s = time.perf_counter() - started
    del teacher

    student = create_classifier(student_model, IMAGENET_CLASSES, in_chans, "none").to(memory_format=layout)
    with torch.no_grad():
        width = pre_logits(student.eval(), torch.zeros(2, in_chans, size, size)).shape[1]
    adapter = nn.Linear(width, target_features.shape[1])
    params = list(student.parameters()) + list(adapter.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps = len(views) // config.batch_size
    if steps == 0:
        raise ValueError(f"general distillation: {len(views)} views make no batch of {config.batch_size}")
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine_factor(int(round(config.warmup_epochs * steps)), config.epochs * steps))
    normalisation = input_normalisation(student)
    history = []
    trained = time.perf_counter()
    temperature = config.temperature
    for epoch in range(config.epochs):
        began = time.perf_counter()
        student.train()
        order = torch.randperm(len(views), generator=torch.Generator().manual_seed(
            derive_seed(config.seed, "general-distillation", "epoch", epoch)))
        sums = {"feature": 0.0, "logit": 0.0, "total": 0.0}
        batches = [order[i * config.batch_size:(i + 1) * config.batch_size] for i in range(steps)]
        for rows in progress_bar(batches, desc=f"general distillation epoch {epoch + 1}/{config.epochs}",
                                 unit="batch", disable=not progress, leave=False):
            features = pre_logits(student, _normalised(views[rows], normalisation, layout))
            feature_loss = 1.0 - F.cosine_similarity(adapter(features), target_features[rows], dim=1).mean()
            logit_loss = F.kl_div(F.log_softmax(student.get_classifier()(features) / temperature, dim=1),
                                  F.log_softmax(target_logits[rows] / temperature, dim=1),
                                  log_target=True, reduction="batchmean") * temperature ** 2
            loss = config.feature_weight * feature_loss + config.logit_weight * logit_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            for key, value in (("feature", feature_loss), ("logit", logit_loss), ("total", loss)):
                sums[key] += float(value.detach()) * len(rows)
        n = steps * config.batch_size
        history.append({"epoch": epoch + 1, **{f"train_{k}": v / n for k, v in sums.items()},
                        "epoch_s": round(time.perf_counter() - began, 2),
                        "images_per_s": round(n / max(time.perf_counter() - began, 1e-9), 1)})
    train_s = time.perf_counter() - trained

    mean, std = normalisation
    metadata = {"format": DISTILLED_FORMAT, "student": student_model, "teacher": config.teacher_model,
                "teacher_weights": config.teacher_weights, "in_chans": str(in_chans),
                "mean": ",".join([str(mean)] * in_chans), "std": ",".join([str(std)] * in_chans),
                "signature": signature}
    path = out_dir / WEIGHTS
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in student.state_dict().items()}, tmp, metadata=metadata)
        sha256 = sha256_file(tmp)
    images = pd.DataFrame([{"image_id": i, "set": name, "split": split_of[i]}
                           for name, data in sets.items() for i in data.image_ids])
    write_text(out_dir / IMAGES, images.to_csv(index=False))
    weights = f"distilled:{path.resolve()}#sha256={sha256}"
    record = {"weights": weights, "sha256": sha256, "signature": signature, "student": student_model,
              "config": asdict(config), "augment": augment, "memory_format": memory_format,
              "in_chans": in_chans, "image_size": size,
              "images": {name: len(data) for name, data in sets.items()}, "views": int(len(views)),
              "images_csv": str(out_dir / IMAGES), "history": history, "teacher_s": round(teacher_s, 1),
              "train_s": round(train_s, 1), "wall_s": round(time.perf_counter() - started, 1)}
    write_json(out_dir / RECORD, record)
    return Initialisation(weights, path, sha256, record, reused=False)


def probe_features(model: nn.Module, data: ImageTensors, *, batch_size: int = 64,
                   memory_format: str = "channels_last") -> np.ndarray:
    """The pooled pre-logit features ``(N, D)`` of ``model`` (eval mode) on every image of ``data``."""
    layout = MEMORY_FORMATS[memory_format]
    features = _frozen_pre_logits(model.to(memory_format=layout), data.images, batch_size, layout)
    return features.numpy().astype(np.float64)


def starting_points(student_model: str, init_weights: str, teacher_model: str, teacher_weights: str
                    ) -> dict[str, tuple[str, str]]:
    """The three representations a stage probes: the student at random weights (the floor), the student after
    general distillation, and the ImageNet teacher it imitated (label -> (timm model, weight source))."""
    return {"student, random weights": (student_model, "none"),
            "student, general distillation": (student_model, init_weights),
            "teacher, ImageNet weights": (teacher_model, teacher_weights)}


def probe_representations(representations: Mapping[str, tuple[str, str]], parts: Mapping[str, ImageTensors],
                          groups: Mapping[str, np.ndarray], *, n_classes: int, positive_index: int = 1,
                          batch_size: int = 64) -> pd.DataFrame:
    """:func:`~diffkd_study.metrics.probe.linear_probe` of each representation (label -> (timm model, weight
    source)) on ``parts`` (split -> images; ``train`` and ``val`` required), ``groups`` the patient or lesion id
    of every image of each part."""
    from diffkd_study.metrics.probe import linear_probe

    tables = []
    for label, (model_name, weights) in representations.items():
        torch.manual_seed(0)
        channels = next(iter(parts.values())).channels
        model = create_classifier(model_name, n_classes, channels, weights)
        tables.append(linear_probe({s: probe_features(model, part, batch_size=batch_size) for s, part in parts.items()},
                                   {s: part.labels.numpy() for s, part in parts.items()}, groups,
                                   positive_index=positive_index, representation=label))
    return pd.concat(tables, ignore_index=True)
