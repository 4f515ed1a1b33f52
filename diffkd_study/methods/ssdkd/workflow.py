"""The SSD-KD dermoscopy stage end to end: data, teachers, SS heads, six students, evaluation.

:func:`run_stage` is what the notebook calls with its parameters. Artifacts under ``{run_dir}/ssdkd/``::

    init/                     init.safetensors, init.json, images.csv (the students' initialisation)
    teacher/seed<k>/          best.safetensors, last.pt, history.json (diffkd_study.training.trainer.fit)
    ss_head/seed<k>/          head.safetensors, ss_head.json (stage A, diffkd_study.methods.ssdkd.ss_head)
    students/<method>/seed<k>/  best.safetensors, last.pt, history.json
    predictions/<model>.csv   per-class probabilities of every seed on the validation and test images
    records.json              settings, data counts, every fit, metrics with intervals, paired
                              differences (SSD-KD - every other model, lesion bootstrap), timings

Every fit resumes from its checkpoint, so re-running the stage with the same settings re-uses the
finished work (a finished fit returns at once) and continues an interrupted one.

Protocol (where we depart from the official settings of docs/methods/ssdkd.md §3.4; all our choices: §3.9)
    * Split: the study manifest's lesion-grouped, label-stratified train/val/test split (seeded by the
      study seed; the config states the fractions). Official: a 10% test split by image (not by lesion)
      and fold 2 of a 5-fold split of the rest as validation.
    * Order: seed by seed, the teacher, its SS head, then every student, so an interrupted run holds
      complete comparisons for the seeds it finished; the student of seed ``s`` learns from the teacher
      of seed ``s`` and every student of a seed starts from the same initialisation.
    * Class weights ``round(N / n_c, 3)`` from the training images (the official ``frequency``).
    * Optimiser: the shared trainer's AdamW with warm-up and cosine decay, selection of the best epoch
      by validation balanced accuracy, early stopping (official: SGD lr 1e-3, ReduceLROnPlateau,
      selection by validation loss, up to 150 epochs). Same epochs, seeds and augmentation for every
      student.
    * Teacher: fine-tuned end to end from its ImageNet weights (the paper's ResNet-50 has no offline
      weights here: ``teacher_model: resnet50`` with ``file:PATH#sha256=HEX`` uses one); student: every
      method starts from one general-distillation initialisation (``student_weights: distilled``;
      :mod:`diffkd_study.training.general_distillation`): the packaged ImageNet EfficientNet-Lite2 distilled into the
      MobileNetV2 on every *training* image, unlabeled, before any student trains (``init/``). The official
      MobileNetV2 starts from ImageNet weights, which do not exist offline; ``none`` is the ablation "from
      scratch".
    * Augmentation: the trainer's ``dermoscopy`` preset, the official imgaug pipeline without its
      (p 0.1) pixel / coarse dropout; SSD-KD applies it to every rotated copy (see
      :mod:`diffkd_study.methods.ssdkd.tasks`).
    * SSD-KD's DR term is the intended computation of the official ``class DR`` (whose constructor
      crashes in every committed version; docs/methods/ssdkd.md §3.8 item 1), over all 4B rows, as
      :class:`~diffkd_study.methods.ssdkd.losses.SSDKDLoss` computes it.
    * ``kd_class_weighting`` (CPU profile; not official): the softened-output KL terms of the KD students
      average their rows with the WCE class weights (:mod:`diffkd_study.methods.ssdkd.stage`). It is part of
      every KD student's checkpoint signature, so the two settings never share a fit.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from diffkd_study.data.schema import Manifest, read_manifest
from diffkd_study.io import atomic_path, sha256_file, write_json
from diffkd_study.methods.ssdkd.data import lesion_subsample
from diffkd_study.methods.ssdkd.metrics import (
    PAIRED_RESAMPLES,
    format_interval,
    mean_sd,
    multiclass_report,
    paired_bootstrap_differences,
)
from diffkd_study.methods.ssdkd.stage import METHODS, SSDKDStageConfig
from diffkd_study.metrics.clustered import holm_adjust
from diffkd_study.nbutil import format_p
from diffkd_study.sections import section_from_parameters
from diffkd_study.stage_output import StageRecord
from diffkd_study.training.data import ImageTensors, class_weights, load_images
from diffkd_study.training.initialisation import DISTILLED

__all__ = [
    "GOAL_ACCURACY_MARGIN", "GOAL_BALANCED_ACCURACY_GAIN", "GOAL_COMPARISONS", "GOAL_STATEMENT", "SSDKDStageResult",
    "StageData", "comparison_table", "difference_table", "paired_differences",
    "evaluate_predictions", "goal_check", "goal_text", "history_frame", "load_stage_data", "model_title",
    "per_class_table", "read_records", "run_stage", "seed_table", "timing_table",
]

STAGE_FOLDER = "ssdkd"
RECORDS = "records.json"
TEACHER = "teacher"
EVALUATED_SPLITS: tuple[str, ...] = ("val", "test")


@dataclass
class StageData:
    """The stage's images as tensors (train, possibly subsampled by lesion; validation; test), the lesion of
    every image, and the training counts before subsampling.
    """

    manifest: Manifest
    train: ImageTensors
    val: ImageTensors
    test: ImageTensors
    lesions: dict[str, str]  # image_id -> lesion (patient) id
    n_train_before_subsample: int
    n_train_lesions_before_subsample: int
    train_all: ImageTensors | None = None  # every training image, before the subsample (unlabeled use only)

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names in class-index order."""
        return tuple(self.manifest.schema.label_set)

    def split(self, name: str) -> ImageTensors:
        """The images of split ``name`` (``train``, ``val`` or ``test``)."""
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def counts(self) -> pd.DataFrame:
        """Images (and lesions) per class and split."""
        rows = []
        for name in ("train", "val", "test"):
            part = self.split(name)
            counts = np.bincount(part.labels.numpy(), minlength=len(self.classes))
            lesions = {self.lesions[i] for i in part.image_ids}
            rows.append({"split": name, **{c: int(n) for c, n in zip(self.classes, counts, strict=True)},
                         "images": len(part), "lesions": len(lesions)})
        return pd.DataFrame(rows)


@dataclass(frozen=True)
class SSDKDStageResult(StageRecord):
    """What the stage did: the content of ``records.json``, as typed fields.

    :func:`run_stage` returns it and :func:`read_records` reads it back; :meth:`to_dict` is the JSON record
    (the fields in this order). ``teachers`` and ``students`` hold one fit record per (model, seed),
    ``ss_heads`` one per teacher seed, ``evaluation`` is :func:`evaluate_predictions`' result and ``timings``
    the wall time of each part; the report tables of this module read it.
    """

    config: dict[str, Any]  # the ssdkd_dermoscopy section's fields
    image_size: int
    study_seed: int
    classes: list[str]
    device: str
    threads: int
    counts: list[dict[str, Any]]  # StageData.counts as records
    subsample: dict[str, Any]  # train_fraction, images/lesions before and after the subsample
    class_weights: list[float] | None
    teachers: list[dict[str, Any]]
    ss_heads: list[dict[str, Any]]
    students: list[dict[str, Any]]
    evaluation: dict[str, Any]
    timings: list[dict[str, Any]]
    wall_s: float
    initialisation: dict[str, Any] | None = None  # the students' general distillation and its linear probes


def load_stage_data(manifest_path: str | os.PathLike[str], data_root: str | os.PathLike[str], image_size: int, *,
                    train_fraction: float, seed: int, cache_dir: str | os.PathLike[str] | None = None,
                    progress: bool = False) -> StageData:
    """Train/val/test images (RGB, ``image_size`` square, through the preprocessing cache); the training
    lesions subsampled to ``train_fraction`` (:func:`~diffkd_study.methods.ssdkd.data.lesion_subsample`)."""
    manifest = read_manifest(manifest_path)
    schema = manifest.schema
    if schema.task != "multiclass":
        raise ValueError(f"{manifest_path}: the SSD-KD stage is a multiclass study; this manifest has task "
                         f"{schema.task!r} with labels {list(schema.label_set)}")
    df = manifest.df
    if "split" not in df.columns:
        raise ValueError(f"{manifest_path}: no split column; the study manifest must be split (train/val/test)")
    missing = [s for s in ("train", "val", "test") if not (df["split"] == s).any()]
    if missing:
        raise ValueError(f"{manifest_path}: no image in split(s) {missing}; set data.split.val_frac and test_frac > 0")
    options = {"size": image_size, "mode": "RGB", "cache_dir": cache_dir, "progress": progress}
    train = load_images(manifest, data_root, splits=("train",), **options)
    val = load_images(manifest, data_root, splits=("val",), **options)
    test = load_images(manifest, data_root, splits=("test",), **options)
    lesions = dict(zip(df["image_id"].astype(str), df["patient_id"].astype(str), strict=True))
    train_lesions = [lesions[i] for i in train.image_ids]
    keep = lesion_subsample([train.classes[int(v)] for v in train.labels], train_lesions, train_fraction, seed)
    n_before, lesions_before, train_all = len(train), len(set(train_lesions)), train
    if not keep.all():
        train = train.subset(np.flatnonzero(keep))
    return StageData(manifest, train, val, test, lesions, n_before, lesions_before, train_all)


# -- models ------------------------------------------------------------------------------------------------
def _resolve_weights(spec: str, project_root: str | os.PathLike[str] | None) -> str:
    """A ``file:`` weight path relative to the project root (the notebook runs in notebooks/)."""
    if not spec.startswith("file:") or not project_root:
        return spec
    path, sep, digest = spec.removeprefix("file:").partition("#")
    if Path(path).is_absolute():
        return spec
    return f"file:{Path(project_root) / path}{sep}{digest}"


def student_initialisation(cfg: SSDKDStageConfig, data: StageData, out_dir: Path, *,
                           progress: bool = False) -> dict[str, Any]:
    """Make (or re-use) the students' general-distillation initialisation on every training image and probe it.

    Returns the initialisation's record (``weights``: its ``distilled:PATH#sha256=HEX`` source) with ``probe``:
    the linear-probe table (macro AUC and balanced accuracy on validation and test; C chosen on validation) of
    the student's features at random weights and after general distillation, and of the ImageNet teacher's.
    """
    from diffkd_study.training.general_distillation import (
        general_distillation,
        probe_representations,
        starting_points,
    )

    df = data.manifest.df
    split_of = dict(zip(df["image_id"].astype(str), df["split"], strict=True))
    pool = data.train_all if data.train_all is not None else data.train
    init = general_distillation(cfg.student_model, {"training image": pool}, split_of, cfg.initialisation, out_dir,
                                augment=cfg.augment, progress=progress)
    parts = {split: data.split(split) for split in ("train", "val", "test")}
    probe = probe_representations(
        starting_points(cfg.student_model, init.weights, cfg.initialisation.teacher_model,
                        cfg.initialisation.teacher_weights),
        parts, {s: np.asarray([data.lesions[i] for i in part.image_ids]) for s, part in parts.items()},
        n_classes=len(data.classes), batch_size=cfg.eval_batch_size)
    return {**init.record, "reused": init.reused, "probe": probe.to_dict("records")}


def _fit_config(cfg: SSDKDStageConfig, *, epochs: int, lr: float, seed: int, batch_size: int, augment: str):
    from diffkd_study.training.trainer import FitConfig

    return FitConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=cfg.weight_decay,
                     warmup_epochs=cfg.warmup_epochs, grad_clip=cfg.grad_clip, patience=cfg.patience,
                     min_epochs=min(cfg.min_epochs, epochs), selection="balanced_accuracy", augment=augment,
                     seed=seed, eval_batch_size=cfg.eval_batch_size, amp=cfg.amp, device=cfg.device)


def _fit_record(name: str, seed: int, result: Any, fit_config: Any, out_dir: Path) -> dict[str, Any]:
    best = result.history[result.best_epoch - 1]
    return {"model": name, "seed": seed, "fit": asdict(fit_config), **result.summary(),
            "train_s": round(result.training_s, 1),
            "val_balanced_accuracy": best.get("val_balanced_accuracy"), "val_accuracy": best.get("val_accuracy"),
            "val_macro_auc": best.get("val_macro_auc"), "weights": str(result.best_weights),
            "weights_sha256": sha256_file(result.best_weights), "history": str(out_dir / "history.json")}


def _predictions(model: torch.nn.Module, data: StageData, *, name: str, seed: int, batch_size: int,
                 device: torch.device) -> pd.DataFrame:
    from diffkd_study.training.trainer import predict_proba

    frames = []
    for split in EVALUATED_SPLITS:
        part = data.split(split)
        probabilities = predict_proba(model, part, batch_size=batch_size, device=device)
        frame = pd.DataFrame({"model": name, "seed": seed, "split": split, "image_id": part.image_ids,
                              "lesion_id": [data.lesions[i] for i in part.image_ids],
                              "label": [data.classes[int(v)] for v in part.labels],
                              "label_index": part.labels.numpy()})
        for c, cls in enumerate(data.classes):
            frame[f"prob_{cls}"] = probabilities[:, c]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _write_predictions(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


# -- the stage ---------------------------------------------------------------------------------------------
def run_stage(params: Mapping[str, Any], *, progress: bool = True) -> SSDKDStageResult:
    """Train and evaluate the teacher(s), the SS head(s) and every student of the config; write the records.

    ``params`` are the ``70_ssdkd_dermoscopy`` notebook's parameters: the ``ssdkd_dermoscopy`` section's fields
    (checked into :class:`~diffkd_study.methods.ssdkd.stage.SSDKDStageConfig`) plus ``run_dir``,
    ``manifest_path``, ``data_root``, ``image_size``, ``seed`` and ``project_root``. Seed by seed it fits the
    teacher, its SS head (when a method needs one) and every student method, each resuming from its
    checkpoint (a finished fit returns at once), and scores the validation and test images. Writes the artifacts of the
    module docstring under ``run_dir/ssdkd/`` (predictions, ``records.json``) and returns them as an
    :class:`SSDKDStageResult`.

    Raises ``ConfigError`` (a ``ValueError``) for invalid section values, and the trainer's errors (e.g. a
    teacher weights file whose sha256 changed since its fit).
    """
    from diffkd_study.devices import resolve_device
    from diffkd_study.distill.distiller import default_feature_paths
    from diffkd_study.methods.ssdkd.ss_head import SSHeadConfig, train_ss_head
    from diffkd_study.methods.ssdkd.tasks import build_student_task, build_teacher_task, uses_rotation_batches
    from diffkd_study.models.classifier import create_classifier
    from diffkd_study.training.trainer import fit, load_best

    cfg = section_from_parameters(SSDKDStageConfig, params, "ssdkd_dermoscopy parameters")
    started = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir = Path(params["run_dir"])
    stage_dir = run_dir / STAGE_FOLDER
    image_size = int(params["image_size"])
    study_seed = int(params.get("seed", 0))
    project_root = params.get("project_root") or None
    device = resolve_device(cfg.device)
    timings: list[dict[str, Any]] = []

    def timed(part: str, seed: int | None, began: float, **extra: Any) -> None:
        timings.append({"part": part, "seed": seed, "wall_s": round(time.perf_counter() - began, 1), **extra})

    began = time.perf_counter()
    data = load_stage_data(params["manifest_path"], params["data_root"], image_size,
                           train_fraction=cfg.train_fraction, seed=study_seed, progress=progress)
    timed("data", None, began)
    n_classes, classes = len(data.classes), data.classes
    weights_tensor = class_weights(data.train.labels, n_classes, cfg.class_weighting)
    weights = None if weights_tensor is None else [round(float(w), 3) for w in weights_tensor]
    teacher_weights = _resolve_weights(cfg.teacher_weights, project_root)
    student_weights, initialisation = _resolve_weights(cfg.student_weights, project_root), None
    if cfg.student_weights == DISTILLED:
        began = time.perf_counter()
        initialisation = student_initialisation(cfg, data, stage_dir / "init", progress=progress)
        student_weights = initialisation["weights"]
        timed("initialisation", None, began, train_s=initialisation["wall_s"])
    prediction_frames: dict[str, list[pd.DataFrame]] = {}

    teacher_fits: list[dict[str, Any]] = []
    ss_records: list[dict[str, Any]] = []
    student_fits: list[dict[str, Any]] = []
    for seed in cfg.seeds:  # seed by seed, so that a partial run holds complete comparisons
        # 1. the teacher of this seed
        began = time.perf_counter()
        out_dir = stage_dir / TEACHER / f"seed{seed}"
        torch.manual_seed(seed)
        model = create_classifier(cfg.teacher_model, n_classes, 3, teacher_weights)
        fit_config = _fit_config(cfg, epochs=cfg.teacher_epochs, lr=cfg.teacher_lr, seed=seed,
                                 batch_size=cfg.batch_size, augment=cfg.augment)
        description = {"role": "teacher", "model": cfg.teacher_model, "weights": cfg.teacher_weights,
                       "class_weights": weights, "train_fraction": cfg.train_fraction}
        result = fit(build_teacher_task(model, weights), data.train, data.val, fit_config, out_dir,
                     description=description, progress=progress, desc=f"teacher seed {seed}")
        teacher_record = _fit_record(TEACHER, seed, result, fit_config, out_dir)
        teacher_fits.append(teacher_record)
        prediction_frames.setdefault(TEACHER, []).append(
            _predictions(model, data, name=TEACHER, seed=seed, batch_size=cfg.eval_batch_size, device=device))
        timed(TEACHER, seed, began, train_s=teacher_record["train_s"])

        def frozen_teacher(record: dict[str, Any] = teacher_record) -> torch.nn.Module:
            # a fresh copy for every student: forward hooks of one task never stay on another's teacher
            teacher = create_classifier(cfg.teacher_model, n_classes, 3, "none")
            return load_best(teacher, Path(record["weights"]).parent,
                             expected_sha256=record["weights_sha256"]).to(device)

        # 2. its self-supervision head (stage A of SSD-KD)
        ss_head = None
        if any(uses_rotation_batches(m, cfg) for m in cfg.methods):
            began = time.perf_counter()
            teacher = frozen_teacher()
            head_config = SSHeadConfig(epochs=cfg.ss_head_epochs, lr=cfg.ss_head_lr,
                                       batch_images=cfg.batch_size // 4, views=cfg.ss_head_views,
                                       augment=cfg.augment, seed=seed,
                                       embed_batch_images=max(1, cfg.eval_batch_size // 4))
            head_dir = stage_dir / "ss_head" / f"seed{seed}"
            head = train_ss_head(teacher, default_feature_paths(teacher)["embedding"], data.train, data.val,
                                 head_config, head_dir, teacher_sha256=teacher_record["weights_sha256"],
                                 device=device, progress=progress)
            ss_head = head.head
            ss_records.append({"teacher_seed": seed, "config": asdict(head_config), "best_epoch": head.best_epoch,
                               "best_val_ss_loss": head.best_val_loss, "best_val_ss_accuracy": head.best_val_accuracy,
                               "epochs": len(head.history), "history": head.history, "wall_s": round(head.wall_s, 1),
                               "record": str(head_dir / "ss_head.json")})
            timed("ss_head", seed, began, train_s=round(head.wall_s, 1))

        # 3. every student of this seed, from the same initialisation
        for method in cfg.methods:
            began = time.perf_counter()
            teacher = frozen_teacher() if method != "ce" else None
            torch.manual_seed(seed)
            student = create_classifier(cfg.student_model, n_classes, 3, student_weights)
            rotation = uses_rotation_batches(method, cfg)
            task = build_student_task(method, cfg, student, teacher, weights, image_size=image_size,
                                      teacher_head=ss_head if rotation else None)
            fit_config = _fit_config(cfg, epochs=cfg.student_epochs, lr=cfg.student_lr, seed=seed,
                                     batch_size=cfg.batch_size // 4 if rotation else cfg.batch_size,
                                     augment="none" if rotation else cfg.augment)
            description = {"role": "student", "method": method, "model": cfg.student_model,
                           "init": cfg.student_weights, "class_weights": weights,
                           "teacher_weights_sha256": None if teacher is None else teacher_record["weights_sha256"],
                           "per_copy_augment": cfg.augment if rotation else None,
                           "loss": {k: getattr(cfg, k) for k in ("kd_lambda", "kd_temperature", "lambd_rkd",
                                                                 "lambd_crkd", "dkd_alpha", "dkd_beta",
                                                                 "dkd_temperature")}}
            if initialisation is not None:
                description["init_sha256"] = initialisation["sha256"]
            if method != "ce":  # the plain student has no KD term (and keeps its signature)
                description["loss"]["kd_class_weighting"] = cfg.kd_class_weighting
            out_dir = stage_dir / "students" / method / f"seed{seed}"
            result = fit(task, data.train, data.val, fit_config, out_dir, description=description,
                         progress=progress, desc=f"{method} seed {seed}")
            record = _fit_record(method, seed, result, fit_config, out_dir)
            record.update({"method": method, "teacher_seed": None if teacher is None else seed,
                           "images_per_step": fit_config.batch_size,
                           "rows_per_step": fit_config.batch_size * (4 if rotation else 1)})
            student_fits.append(record)
            prediction_frames.setdefault(method, []).append(
                _predictions(student, data, name=method, seed=seed, batch_size=cfg.eval_batch_size, device=device))
            timed(method, seed, began, train_s=record["train_s"])

    # 4. predictions and metrics
    began = time.perf_counter()
    for name, frames in prediction_frames.items():
        _write_predictions(pd.concat(frames, ignore_index=True), stage_dir / "predictions" / f"{name}.csv")
    evaluation = evaluate_predictions(
        pd.concat([f for frames in prediction_frames.values() for f in frames], ignore_index=True), classes,
        n_resamples=cfg.bootstrap, seed=study_seed)
    timed("evaluation", None, began)

    result = SSDKDStageResult(
        config=asdict(cfg), image_size=image_size, study_seed=study_seed, classes=list(classes),
        device=str(device), threads=torch.get_num_threads(),
        counts=data.counts().to_dict("records"),
        subsample={"train_fraction": cfg.train_fraction, "images_before": data.n_train_before_subsample,
                   "lesions_before": data.n_train_lesions_before_subsample, "images_after": len(data.train),
                   "lesions_after": len({data.lesions[i] for i in data.train.image_ids})},
        class_weights=weights, teachers=teacher_fits, ss_heads=ss_records, students=student_fits,
        evaluation=evaluation, timings=timings, wall_s=round(time.perf_counter() - started, 1),
        initialisation=initialisation,
    )
    write_json(stage_dir / RECORDS, result.to_dict())
    return result


# -- evaluation --------------------------------------------------------------------------------------------
def evaluate_predictions(predictions: pd.DataFrame, classes: tuple[str, ...], *, n_resamples: int, seed: int,
                         n_paired_resamples: int = PAIRED_RESAMPLES) -> dict[str, Any]:
    """Metrics (with intervals) of every (model, seed, split): summary rows, per-class rows, confusion matrices;
    and per split the paired differences SSD-KD - every other model (:func:`paired_differences`)."""
    summary, per_class, confusion = [], [], []
    columns = [f"prob_{c}" for c in classes]
    for (model, model_seed, split), part in predictions.groupby(["model", "seed", "split"], sort=False):
        report = multiclass_report(part["label_index"].to_numpy(), part[columns].to_numpy(), part["lesion_id"],
                                   classes, n_resamples=n_resamples, seed=seed)
        key = {"model": model, "seed": int(model_seed), "split": split}
        summary.append({**key, **report.flat()})
        per_class.extend({**key, **row} for row in report.per_class.to_dict("records"))
        confusion.append({**key, "matrix": report.confusion.tolist()})
    differences = [row for split in dict.fromkeys(predictions["split"])
                   for row in paired_differences(predictions, classes, split, n_resamples=n_paired_resamples,
                                                 seed=seed)]
    return {"summary": summary, "per_class": per_class, "confusion": confusion, "n_resamples": n_resamples,
            "level": 0.95, "differences": differences, "n_paired_resamples": n_paired_resamples}


def paired_differences(predictions: pd.DataFrame, classes: tuple[str, ...], split: str, *, n_resamples: int,
                       seed: int) -> list[dict[str, Any]]:
    """SSD-KD - each other model on ``split``: accuracy, balanced accuracy and macro AUC, by the lesion-clustered
    paired bootstrap of :func:`~diffkd_study.methods.ssdkd.metrics.paired_bootstrap_differences` (means over
    each model's seeds; every model must have scored the same images). The goal's two comparisons
    (:data:`GOAL_COMPARISONS`) are the planned primary ones and keep their own p; the others get Holm-adjusted
    p-values (Holm 1979) within each metric (``p_holm``). Empty when SSD-KD was not run."""
    part = predictions[predictions["split"] == split]
    models = [m for m in (TEACHER, *METHODS) if m in set(part["model"])]
    if "ssd_kd" not in models or len(models) < 2:
        return []
    columns = [f"prob_{c}" for c in classes]
    first = None
    probabilities: dict[str, list[np.ndarray]] = {}
    for (model, _), frame in part.groupby(["model", "seed"], sort=True):
        frame = frame.sort_values("image_id", kind="stable")
        if first is None:
            first = frame
        elif not np.array_equal(frame["image_id"].to_numpy(), first["image_id"].to_numpy()):
            raise ValueError(f"{split} split: model {model!r} scored other images than {first['model'].iloc[0]!r}; "
                             "a paired comparison needs the same images")
        probabilities.setdefault(model, []).append(frame[columns].to_numpy())
    pairs = [("ssd_kd", other) for other in models if other != "ssd_kd"]
    table = paired_bootstrap_differences(first["label_index"].to_numpy(), probabilities, first["lesion_id"], pairs,
                                         n_resamples=n_resamples, seed=seed)
    table["primary"] = [(r, m) in GOAL_COMPARISONS for r, m in zip(table["reference"], table["metric"], strict=True)]
    table["p_holm"] = table["p"]
    for _, block in table[~table["primary"]].groupby("metric", sort=False):
        table.loc[block.index, "p_holm"] = holm_adjust(block["p"].to_numpy())
    return [{"split": split, **row} for row in table.to_dict("records")]


def read_records(run_dir: str | os.PathLike[str]) -> SSDKDStageResult:
    """The stage's result in a run, read back from its ``records.json``."""
    path = Path(run_dir) / STAGE_FOLDER / RECORDS
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the ssdkd_dermoscopy stage has not run")
    return SSDKDStageResult.from_dict(json.loads(path.read_text(encoding="utf-8")))


def model_title(name: str) -> str:
    """The display name of a model: ``Teacher`` or the method's title (the name itself when unknown)."""
    return "Teacher" if name == TEACHER else METHODS.get(name, name)


def comparison_table(result: SSDKDStageResult, split: str = "test") -> pd.DataFrame:
    """One row per model: accuracy, balanced accuracy and macro AUC, mean ± SD over seeds, on ``split``."""
    summary = pd.DataFrame(result.evaluation["summary"])
    part = summary[summary["split"] == split]
    rows = []
    order = [TEACHER, *[m for m in METHODS if m in set(part["model"])]]
    for name in [m for m in order if m in set(part["model"])]:
        model = part[part["model"] == name]
        rows.append({"model": model_title(name), "seeds": len(model), "n images": int(model["n"].iloc[0]),
                     "n lesions": int(model["n_lesions"].iloc[0]),
                     "accuracy": mean_sd(model["accuracy"].tolist()),
                     "balanced accuracy": mean_sd(model["balanced_accuracy"].tolist()),
                     "macro AUC": mean_sd(model["macro_auc"].tolist()),
                     "accuracy_mean": float(model["accuracy"].mean()),
                     "balanced_accuracy_mean": float(model["balanced_accuracy"].mean()),
                     "macro_auc_mean": float(model["macro_auc"].mean())})
    return pd.DataFrame(rows)


def seed_table(result: SSDKDStageResult, split: str = "test") -> pd.DataFrame:
    """One row per (model, seed) with each metric and its 95% interval."""
    summary = pd.DataFrame(result.evaluation["summary"])
    part = summary[summary["split"] == split]
    rows = []
    for row in part.to_dict("records"):
        rows.append({"model": model_title(row["model"]), "seed": row["seed"], "n": row["n"],
                     **{label: format_interval(row[m], row[f"{m}_low"], row[f"{m}_high"])
                        for m, label in (("accuracy", "accuracy (Wilson)"),
                                         ("balanced_accuracy", "balanced accuracy (lesion bootstrap)"),
                                         ("macro_auc", "macro AUC (lesion bootstrap)"))}})
    return pd.DataFrame(rows)


def per_class_table(result: SSDKDStageResult, model: str, seed: int, split: str = "test") -> pd.DataFrame:
    """Recall, precision (Wilson), F1 and AUC (lesion bootstrap) per class for one model and seed."""
    rows = [r for r in result.evaluation["per_class"]
            if r["model"] == model and r["seed"] == seed and r["split"] == split]
    if not rows:
        raise KeyError(f"no per-class metrics for model {model!r}, seed {seed}, split {split!r}")
    return pd.DataFrame([{"class": r["class"], "n": r["n"], "predicted": r["predicted"],
                          "recall": format_interval(r["recall"], r["recall_low"], r["recall_high"]),
                          "precision": format_interval(r["precision"], r["precision_low"], r["precision_high"]),
                          "F1": format_interval(r["f1"], r["f1_low"], r["f1_high"]),
                          "AUC": format_interval(r["auc"], r["auc_low"], r["auc_high"])} for r in rows])


GOAL_BALANCED_ACCURACY_GAIN = 0.03
"""The goal's first half: SSD-KD's mean balanced accuracy at least this far above the plain student's."""
GOAL_ACCURACY_MARGIN = 0.02
"""The goal's second half: SSD-KD's mean accuracy at most this far below the teacher's."""
GOAL_COMPARISONS = frozenset({("ce", "balanced_accuracy"), (TEACHER, "accuracy")})
"""The goal's (reference, metric) comparisons with SSD-KD: the planned primary comparisons of the stage."""
GOAL_STATEMENT = (f"SSD-KD student at least {GOAL_BALANCED_ACCURACY_GAIN * 100:g} points of balanced accuracy above "
                  f"the plain student, and within {GOAL_ACCURACY_MARGIN * 100:g} points of the teacher's accuracy "
                  "or above it")
"""The goal in words, for reports."""


_EPS = 1e-12  # a gain of exactly 3 points computed from rounded means must not fail on float round-off


def _difference(result: SSDKDStageResult, split: str, reference: str, metric: str) -> dict[str, Any] | None:
    rows = [r for r in result.evaluation.get("differences", []) if r["split"] == split and r["model"] == "ssd_kd"
            and r["reference"] == reference and r["metric"] == metric]
    return rows[0] if rows else None


def _goal_half(estimate: float, low: float, high: float, margin: float) -> tuple[bool, bool, str]:
    """(met on the point estimate, met with confidence, status words) of ``difference >= margin``."""
    met = bool(estimate >= margin - _EPS)
    confident = bool(np.isfinite(low) and low >= margin - _EPS)
    if confident:
        return met, True, "met with confidence"
    if not (np.isfinite(low) and np.isfinite(high)):
        return met, False, f"{'met' if met else 'not met'} on the point estimate; the CI is not estimable"
    if met:
        return met, False, "the point estimate meets the goal, the CI does not exclude failing it: not met with confidence"
    if high < margin - _EPS:
        return met, False, "not met (the CI excludes meeting it)"
    return met, False, "not met on the point estimate; the CI does not exclude meeting it"


def goal_check(result: SSDKDStageResult, split: str = "test") -> dict[str, Any]:
    """The issue's goal: SSD-KD >= plain student + :data:`GOAL_BALANCED_ACCURACY_GAIN` balanced accuracy, and
    SSD-KD accuracy >= the teacher's - :data:`GOAL_ACCURACY_MARGIN` (means over seeds), each half judged on the
    point estimate (``*_goal_met``) and on the lesion-clustered paired bootstrap CI (``*_goal_met_with_confidence``:
    the CI's lower bound clears the margin; :func:`paired_differences`), with the CI, the p of no difference and
    the status in words; ``evaluated: False`` with a reason when a model (or its paired difference) is missing."""
    table = comparison_table(result, split).set_index("model")
    ssd, plain, teacher = model_title("ssd_kd"), model_title("ce"), model_title(TEACHER)
    if not {ssd, plain, teacher} <= set(table.index):
        return {"evaluated": False, "reason": "the teacher, the plain student and SSD-KD must all be trained"}
    ba = _difference(result, split, "ce", "balanced_accuracy")
    acc = _difference(result, split, TEACHER, "accuracy")
    if ba is None or acc is None:
        return {"evaluated": False, "reason": "the records hold no paired bootstrap differences for this split"}
    ba_gain = table.loc[ssd, "balanced_accuracy_mean"] - table.loc[plain, "balanced_accuracy_mean"]
    acc_gap = table.loc[ssd, "accuracy_mean"] - table.loc[teacher, "accuracy_mean"]
    ba_met, ba_confident, ba_status = _goal_half(ba_gain, ba["low"], ba["high"], GOAL_BALANCED_ACCURACY_GAIN)
    acc_met, acc_confident, acc_status = _goal_half(acc_gap, acc["low"], acc["high"], -GOAL_ACCURACY_MARGIN)
    return {"evaluated": True, "balanced_accuracy_gain_over_plain": float(ba_gain),
            "accuracy_minus_teacher": float(acc_gap), "balanced_accuracy_goal_met": ba_met,
            "accuracy_goal_met": acc_met, "goal_met": ba_met and acc_met,
            "balanced_accuracy_gain_low": ba["low"], "balanced_accuracy_gain_high": ba["high"],
            "balanced_accuracy_gain_p": ba["p"], "balanced_accuracy_goal_met_with_confidence": ba_confident,
            "balanced_accuracy_goal_status": ba_status,
            "accuracy_minus_teacher_low": acc["low"], "accuracy_minus_teacher_high": acc["high"],
            "accuracy_minus_teacher_p": acc["p"], "accuracy_goal_met_with_confidence": acc_confident,
            "accuracy_goal_status": acc_status, "goal_met_with_confidence": ba_confident and acc_confident,
            "level": ba["level"], "n_resamples": result.evaluation.get("n_paired_resamples")}


def _points(estimate: float, low: float, high: float, p: float, level: float) -> str:
    """``+4.0 points (95% CI +1.0 to +7.0; p = 0.012 for no difference: significant)``."""
    if not (np.isfinite(low) and np.isfinite(high) and np.isfinite(p)):
        return f"{estimate * 100:+.1f} points (CI not estimable)"
    verdict = "significant" if p < 0.05 else "not significant"
    p_text = format_p(p)
    p_text = f"p {p_text}" if p_text.startswith("<") else f"p = {p_text}"
    return (f"{estimate * 100:+.1f} points ({level * 100:g}% CI {low * 100:+.1f} to {high * 100:+.1f}; {p_text} "
            f"for no difference: {verdict})")


def goal_text(goal: Mapping[str, Any], split: str) -> str:
    """Markdown sentences on the goal check of ``split`` (from :func:`goal_check`): each half's difference with
    its CI and p, and whether the goal is met with confidence, on the point estimate only, or not."""
    where = {"test": "held-out test split", "val": "validation split"}.get(split, f"{split} split")
    if not goal["evaluated"]:
        return f"Goal not evaluated on the {where}: {goal['reason']}."
    ba = _points(goal["balanced_accuracy_gain_over_plain"], goal["balanced_accuracy_gain_low"],
                 goal["balanced_accuracy_gain_high"], goal["balanced_accuracy_gain_p"], goal["level"])
    acc = _points(goal["accuracy_minus_teacher"], goal["accuracy_minus_teacher_low"],
                  goal["accuracy_minus_teacher_high"], goal["accuracy_minus_teacher_p"], goal["level"])
    overall = ("reached with confidence" if goal["goal_met_with_confidence"] else
               "reached on the point estimates only, not with confidence" if goal["goal_met"] else "not reached")
    return (f"On the {where}: balanced accuracy {ba} over the plain student; goal at least "
            f"{GOAL_BALANCED_ACCURACY_GAIN * 100:+g}: {goal['balanced_accuracy_goal_status']}. Accuracy {acc} "
            f"relative to the teacher; goal at least {-GOAL_ACCURACY_MARGIN * 100:+g}: {goal['accuracy_goal_status']}. "
            f"Overall: **{overall}**.")


def difference_table(result: SSDKDStageResult, split: str = "test") -> pd.DataFrame:
    """SSD-KD - each other model on ``split``, one row per comparison and metric: difference, CI, bootstrap p,
    Holm-adjusted p (secondary comparisons, within a metric) and the verdict on the deciding p (the primary's
    own, the others' Holm p; see :func:`paired_differences`)."""
    rows = [{"comparison": f"SSD-KD - {model_title(r['reference'])}", "metric": r["metric"].replace("_", " "),
             "role": "primary (goal)" if r["primary"] else "secondary",
             "difference": r["estimate"], "ci_low": r["low"], "ci_high": r["high"], "p": r["p"], "p_holm": r["p_holm"],
             "verdict": ("not estimable" if not np.isfinite(r["p"]) else
                         "significant" if r["p_holm"] < 0.05 else "not significant")}
            for r in result.evaluation.get("differences", []) if r["split"] == split]
    return pd.DataFrame(rows)


def history_frame(result: SSDKDStageResult) -> pd.DataFrame:
    """Tidy per-epoch values of every fit: ``model, seed, epoch, term, value, split`` (loss terms on the
    training split; validation NLL and balanced accuracy on the validation split; diagnostics left out)."""
    from diffkd_study.methods.ssdkd.tasks import DIAGNOSTIC_PREFIX
    from diffkd_study.training.trainer import tidy_history

    rows = []
    for fit_record in [*result.teachers, *result.students]:
        history = json.loads(Path(fit_record["history"]).read_text(encoding="utf-8"))["history"]
        rows += [{"model": fit_record["model"], "seed": fit_record["seed"], **row}
                 for row in tidy_history(history, validation=("val_loss", "val_balanced_accuracy"),
                                         skip_prefix=DIAGNOSTIC_PREFIX)]
    return pd.DataFrame(rows)


def timing_table(result: SSDKDStageResult) -> pd.DataFrame:
    """Wall time of each part (data, each teacher, SS head, student fit, evaluation) in minutes.

    ``train min`` sums the epochs actually trained (across interrupted and resumed calls); ``wall min``
    is this call's time (near 0 when a finished fit was re-used).
    """
    names = {"data": "data (read, split, cache)", "ss_head": "teacher SS head", "evaluation": "evaluation",
             "initialisation": "students' initialisation (general distillation)"}
    rows = []
    for t in result.timings:
        rows.append({"part": model_title(t["part"]) if t["part"] in (TEACHER, *METHODS) else names[t["part"]],
                     "seed": t["seed"], "wall min": round(t["wall_s"] / 60, 2),
                     "train min": None if t.get("train_s") is None else round(t["train_s"] / 60, 2)})
    table = pd.DataFrame(rows)
    table["seed"] = table["seed"].astype("Int64")
    return table


def efficiency(result: SSDKDStageResult, *, runs: int | None = None, threads: int = 1) -> pd.DataFrame:
    """Teacher vs student: parameters, FLOPs and single-thread CPU latency (batch 1) at the study resolution,
    plus the FLOPs at the official 224 px (:func:`diffkd_study.metrics.efficiency.compare_models`)."""
    from diffkd_study.metrics.efficiency import compare_models, count_flops
    from diffkd_study.models.classifier import create_classifier

    cfg = result.config
    size, n_classes = int(result.image_size), len(result.classes)
    torch.manual_seed(0)
    teacher = create_classifier(cfg["teacher_model"], n_classes, 3, "none")
    student = create_classifier(cfg["student_model"], n_classes, 3, "none")
    table = compare_models(teacher, student, (1, 3, size, size), threads=threads, warmup=5,
                           runs=runs or int(cfg["efficiency_runs"]))
    if size != 224:
        paper = {role: count_flops(model, (1, 3, 224, 224)).flops / 1e9
                 for role, model in (("teacher", teacher), ("student", student))}
        table.loc["GFLOPs at 224 px"] = [paper["teacher"], paper["student"], paper["student"] / paper["teacher"],
                                         paper["teacher"] / paper["student"]]
    table.index = [f"{i} at {size} px" if i.startswith(("GFLOPs", "GMACs", "CPU")) and "224" not in i else i
                   for i in table.index]
    table.index.name = "metric"
    return table
