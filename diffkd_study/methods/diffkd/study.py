"""The teacher and student stages: every (variant, seed) trained, its predictions and records written.

Both notebooks call :func:`run_stage` with their parameters (the stage section of the study config
plus the common run parameters); with ``launcher: torchrun`` it runs the same function under
``torchrun --standalone --nproc-per-node N -m diffkd_study.methods.diffkd.launch`` and reads what rank 0 wrote,
so the notebook is unchanged on one CPU, one GPU or several.

Artifacts (``{run_dir}/teacher/`` and ``{run_dir}/student/``)::

    <variant>/seed<k>/best.safetensors, last.pt, history.json     one fit (see trainer.fit); older fits
                                                                   a fresh one replaced: .superseded/
    records.json                                                   every fit: settings, epochs, validation
                                                                   metrics, weights path and sha256, wall time

and one prediction table per variant in ``predictions_dir`` (every seed; validation, internal test and
external rows; see :mod:`diffkd_study.predictions`): ``teacher_real.csv``, ``teacher_real+syn.csv``,
``student_alone.csv``, ``student_kd_real.csv``, ``student_diffkd.csv``, ``student_diffkd+syn.csv``.

Choices of ours (DiffKD-DCIS publishes none of them): the teacher is an ImageNet EfficientNet-Lite2
fine-tuned end to end with class-balanced cross-entropy; the student (PP-LCNet x0.35, from the general-distillation initialisation)
minimises ``0.5 CE + 0.5 T^2 KL`` at ``T = 4`` (Hinton KD) by default (the section's ``loss`` recipe,
built by :func:`student_recipe`); model selection by
validation AUC; the same epochs, optimiser and augmentation for every variant of a stage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from diffkd_study.data.schema import Manifest, read_manifest
from diffkd_study.distill.distiller import build_objective
from diffkd_study.io import sha256_file, write_json
from diffkd_study.loss_catalog import build_loss, describe_objective
from diffkd_study.methods.diffkd.stage import (
    CROP_RESIZE_MODES,
    SCRATCH_SUFFIX,
    STUDENT_VARIANTS,
    TEACHER_VARIANTS,
    StudentStageConfig,
    TeacherStageConfig,
    TrainingSection,
    crop_suffix,
)
from diffkd_study.stage_output import StageRecord
from diffkd_study.training.data import EpochPlan, ImageTensors, class_weights_from_counts, concat, load_images
from diffkd_study.training.initialisation import DISTILLED

__all__ = [
    "StageData", "TrainingStageResult", "ablation_table", "fits_table", "history_frame", "load_stage_data", "model_name",
    "parameter_names", "read_records", "run_stage", "stage_config", "student_objective", "student_recipe",
    "synthetic_source",
]

EVALUATED_SPLITS: tuple[str, ...] = ("val", "test", "external")
RECORDS = "records.json"


def model_name(kind: str, variant: str) -> str:
    """The prediction-table name of a variant: ``teacher_real``, ``student_diffkd+syn``, ..."""
    return f"{kind}_{variant}"


def synthetic_source(run_dir: str | os.PathLike[str]) -> tuple[Path | None, bool]:
    """The synthetic manifest to train with and whether it was audited for memorization."""
    folder = Path(run_dir) / "synthetic"
    if (folder / "augmentation.csv").is_file():
        return folder / "augmentation.csv", True
    if (folder / "synthetic.csv").is_file():
        return folder / "synthetic.csv", False
    return None, False


@dataclass
class StageData:
    """The rows a teacher or student stage trains and scores, as in-memory tensors, with the synthetic set (if
    any) and where it came from."""

    manifest: Manifest
    train: ImageTensors
    val: ImageTensors
    evaluated: ImageTensors  # val + test + external rows, scored after training
    synthetic: ImageTensors | None
    synthetic_path: Path | None
    synthetic_audited: bool

    @property
    def n_classes(self) -> int:
        """The number of classes of the study's label set."""
        return len(self.manifest.schema.label_set)

    @property
    def positive_index(self) -> int:
        """Class index of the schema's positive class (1 when the schema names none)."""
        schema = self.manifest.schema
        return list(schema.label_set).index(schema.positive_class) if schema.positive_class else 1

    def counts(self) -> pd.DataFrame:
        """Images per class (and in total) of the real training, synthetic training and validation rows."""
        classes = list(self.manifest.schema.label_set)
        rows = {"train (real)": self.train, "validation": self.val}
        if self.synthetic is not None:
            rows["train (synthetic)"] = self.synthetic
        table = pd.DataFrame({name: np.bincount(part.labels.numpy(), minlength=len(classes))
                              for name, part in rows.items()}, index=classes).T
        table["total"] = table.sum(axis=1)
        return table


@dataclass(frozen=True)
class TrainingStageResult(StageRecord):
    """What a teacher or student stage did: the content of its ``records.json``, as typed fields.

    :func:`run_stage` returns it and :func:`read_records` reads it back; :meth:`to_dict` is the JSON record
    (the fields in this order). ``fits`` holds one record per (variant, seed) (settings, ``fit``: the
    :class:`~diffkd_study.training.trainer.FitConfig`, epochs, validation metrics, weights path and sha256);
    ``skipped`` maps each variant not trained to the reason; ``counts`` is :meth:`StageData.counts` as records.
    """

    kind: str  # "teacher" | "student"
    config: dict[str, Any]  # the stage section's fields
    image_size: int
    in_chans: int
    classes: list[str]
    fits: list[dict[str, Any]]
    skipped: dict[str, str]
    synthetic_manifest: str | None
    synthetic_audited: bool
    counts: list[dict[str, Any]]
    device: str
    world_size: int
    wall_s: float
    initialisation: dict[str, Any] | None = None  # students: the general-distillation record and linear probes


def load_stage_data(manifest_path: str | os.PathLike[str], data_root: str | os.PathLike[str], run_dir: str | os.PathLike[str],
                    image_size: int, *, use_synthetic: str = "auto", mode: str = "L", crop: str = "none",
                    crop_margin: float = 0.25, via: int = 0, cache_dir: str | os.PathLike[str] | None = None,
                    progress: bool = False) -> StageData:
    """The study's training, validation and evaluated rows, plus the synthetic set when there is one.

    Every image goes through one preprocessing: ``crop`` (:data:`~diffkd_study.methods.diffkd.stage.CROP_RESIZE_MODES`),
    then ``via`` px, then ``image_size``. Lesion-crop synthetic images (``synthetic_crop=lesion``) are that crop
    already: they are read without a second crop, through the same ``via`` chain, and need ``crop: lesion`` and
    ``via`` equal to their size (a ``ValueError`` otherwise: their resize chain would differ from the real crops').
    """
    manifest = read_manifest(manifest_path)
    options = {"size": image_size, "mode": mode, "cache_dir": cache_dir, "progress": progress, "via": via,
               "resize_mode": CROP_RESIZE_MODES[crop], "roi_margin": crop_margin}
    train = load_images(manifest, data_root, splits=("train",), **options)
    val = load_images(manifest, data_root, splits=("val",), **options)
    present = tuple(s for s in EVALUATED_SPLITS if (manifest.df["split"] == s).any())
    evaluated = load_images(manifest, data_root, splits=present, **options)
    synthetic_path, audited = (None, False) if use_synthetic == "none" else synthetic_source(run_dir)
    if use_synthetic == "required" and synthetic_path is None:
        raise FileNotFoundError(f"synthetic: required, but {Path(run_dir) / 'synthetic'} holds no synthetic.csv or "
                                "augmentation.csv: run the diffusion stage first")
    synthetic = None
    if synthetic_path is not None:
        synthetic_manifest = read_manifest(synthetic_path)
        if tuple(synthetic_manifest.schema.label_set) != tuple(manifest.schema.label_set):
            raise ValueError(f"{synthetic_path}: label set {list(synthetic_manifest.schema.label_set)} differs from the "
                             f"study's {list(manifest.schema.label_set)}")
        if len(synthetic_manifest.df):
            synthetic = load_images(synthetic_manifest, synthetic_path.parent, synthetic=True,
                                    **_synthetic_options(synthetic_manifest, synthetic_path, options, crop))
    return StageData(manifest, train, val, evaluated, synthetic, synthetic_path, audited)


def _synthetic_options(synthetic: Manifest, path: Path, options: dict[str, Any], crop: str) -> dict[str, Any]:
    """How to read a synthetic set so that it meets the real images' preprocessing (see :func:`load_stage_data`)."""
    crops = set(synthetic.df["synthetic_crop"].astype(str)) if "synthetic_crop" in synthetic.df.columns else {"none"}
    if crops == {"none"}:
        return options
    if crops != {"lesion"}:
        raise ValueError(f"{path}: synthetic_crop must be one value, lesion or none; found {sorted(crops)}")
    if crop != "lesion":
        raise ValueError(f"{path}: the synthetic images are lesion crops, the stage's crop is {crop!r}: a real+synthetic "
                         "model needs crop: lesion (or diffusion.crop: none for whole-frame synthesis)")
    from PIL import Image

    with Image.open(path.parent / str(synthetic.df["image_path"].iloc[0])) as first:
        size = first.width
    if options["via"] != size:
        raise ValueError(f"{path}: the synthetic lesion crops are {size} px; set via: {size} in the teacher and student "
                         f"sections (now {options['via']}) so that real crops take the same resize chain")
    return {**options, "resize_mode": "stretch"}


RUN_PARAMETERS: tuple[str, ...] = ("manifest_path", "data_root", "predictions_dir", "run_dir", "image_size")


def parameter_names(kind: str) -> tuple[str, ...]:
    """The notebook parameters :func:`run_stage` reads: the run's and the stage section's fields."""
    from dataclasses import fields

    cls = TeacherStageConfig if kind == "teacher" else StudentStageConfig
    return RUN_PARAMETERS + tuple(f.name for f in fields(cls))


def stage_config(kind: str, params: Mapping[str, Any]) -> TeacherStageConfig | StudentStageConfig:
    """The stage section from notebook parameters, type-checked (the fields of the dataclass; other keys ignored)."""
    from diffkd_study.sections import section_from_parameters

    cls = TeacherStageConfig if kind == "teacher" else StudentStageConfig
    return section_from_parameters(cls, params, "parameters")


def _expected_class_weights(train: ImageTensors, plan: EpochPlan, n_classes: int, scheme: str) -> list[float] | None:
    """Class weights for the rows an epoch draws in expectation (real rows + the synthetic share)."""
    labels = train.labels.numpy()
    counts = np.bincount(labels[plan.real_rows], minlength=n_classes).astype(float)
    if len(plan.synthetic_rows):
        counts += np.bincount(labels[plan.synthetic_rows], minlength=n_classes) * plan.n_synthetic / len(plan.synthetic_rows)
    weights = class_weights_from_counts(counts, scheme)
    return None if weights is None else weights.tolist()


def _fit_config(cfg: Any, seed: int, synthetic_ratio: float, binary: bool):
    from diffkd_study.training.trainer import FitConfig

    return FitConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                     warmup_epochs=cfg.warmup_epochs, grad_clip=cfg.grad_clip, patience=cfg.patience,
                     min_epochs=cfg.min_epochs, selection="auc" if binary else "balanced_accuracy",
                     augment=cfg.augment, synthetic_ratio=synthetic_ratio, seed=seed,
                     eval_batch_size=cfg.eval_batch_size, device=cfg.device,
                     checkpoint_minutes=cfg.checkpoint_minutes)


def student_recipe(cfg: StudentStageConfig) -> dict[str, dict[str, Any]]:
    """The student objective (the section's ``loss``) as a ``build_loss`` recipe: each term is the registered
    loss of its name, with its weight and parameters, in the order written."""
    return {name: {"type": name, "weight": term.weight, "params": dict(term.params)}
            for name, term in cfg.loss.items()}


def student_objective(cfg: StudentStageConfig) -> str:
    """The student objective in words, from the registered loss descriptions (``"0.5 x cross-entropy + 0.5 x
    T^2 KL (Hinton KD, T = 4.0)"``); an unknown loss name or parameter is a ``ValueError`` naming the term."""
    try:
        return describe_objective(student_recipe(cfg))
    except KeyError as err:
        raise ValueError(f"loss: {err.args[0]}") from None


def _predictions(model, data: StageData, *, name: str, seed: int, eval_batch_size: int, device) -> pd.DataFrame:
    from diffkd_study.predictions import predictions_frame
    from diffkd_study.training.trainer import predict_proba

    probabilities = predict_proba(model, data.evaluated, batch_size=eval_batch_size, device=device)
    scores = pd.Series(probabilities[:, data.positive_index], index=data.evaluated.image_ids)
    return predictions_frame(data.manifest, scores, model=name, seed=seed)


def _teacher_weights(run_dir: Path, variant: str, seed: int) -> tuple[dict[str, Any], int]:
    records_path = run_dir / "teacher" / RECORDS
    if not records_path.is_file():
        raise FileNotFoundError(f"{records_path} not found: run the teacher stage before the student stage")
    records = json.loads(records_path.read_text(encoding="utf-8"))
    fits = [r for r in records["fits"] if r["variant"] == variant]
    if not fits:
        raise ValueError(f"the teacher stage trained no {variant!r} teacher ({records_path}); its variants: "
                         f"{sorted({r['variant'] for r in records['fits']})}")
    chosen = next((r for r in fits if r["seed"] == seed), fits[0])
    return chosen, int(chosen["seed"])


def run_stage(kind: str, params: Mapping[str, Any], *, progress: bool = True) -> TrainingStageResult:
    """Train every variant and seed of the ``teacher`` or ``student`` stage; return (and write) the records.

    ``params`` are the stage notebook's parameters: the section's fields (checked by :func:`stage_config`)
    plus ``run_dir``, ``manifest_path``, ``data_root``, ``predictions_dir`` and ``image_size``. Each
    (variant, seed) is fitted by :func:`~diffkd_study.training.trainer.fit` under
    ``run_dir/<kind>/<variant>/seed<k>/`` (re-used when finished, resumed when interrupted); a student
    learns from the stored teacher of its seed. Writes one prediction table per variant to
    ``predictions_dir/<kind>_<variant>.csv`` and the records to ``run_dir/<kind>/records.json`` (rank 0
    only); variants needing synthetic images that the run lacks are skipped with the reason. With
    ``launcher: torchrun`` and ``nproc > 1`` the work is re-launched under torchrun.

    Raises ``ValueError`` (``ConfigError`` for an invalid section; a student whose ``crop`` differs from its
    teacher's), ``FileNotFoundError`` when a student stage finds no teacher records or ``synthetic: required``
    finds no synthetic set, and ``RuntimeError`` when the torchrun launch fails.
    """
    cfg = stage_config(kind, params)
    if cfg.launcher == "torchrun" and cfg.nproc > 1 and "RANK" not in os.environ:
        return _launch_torchrun(kind, params, cfg.nproc)
    from diffkd_study.devices import resolve_device
    from diffkd_study.models.classifier import create_classifier
    from diffkd_study.training.trainer import ClassifierTask, fit

    run_dir = Path(params["run_dir"])
    stage_dir = run_dir / kind
    predictions_dir = Path(params["predictions_dir"])
    image_size = int(params["image_size"])
    rank = int(os.environ.get("RANK", "0"))
    started = time.perf_counter()
    if kind == "student":
        teacher_config = _stored_records(run_dir, "teacher")["config"]
        # records written before these keys existed mean the defaults (the whole image)
        teacher_inputs = {k: teacher_config.get(k, getattr(TrainingSection, k)) for k in ("crop", "crop_margin", "via")}
        mismatch = {k: (t, getattr(cfg, k)) for k, t in teacher_inputs.items() if t != getattr(cfg, k)}
        if mismatch:
            raise ValueError("student: the teacher was trained on other inputs ("
                             + ", ".join(f"{k}: teacher {t!r}, student {s!r}" for k, (t, s) in mismatch.items())
                             + "); set the same crop in both sections: distillation feeds both networks one image")
    data = load_stage_data(params["manifest_path"], params["data_root"], run_dir, image_size,
                           use_synthetic=cfg.synthetic, crop=cfg.crop, crop_margin=cfg.crop_margin, via=cfg.via,
                           progress=progress and rank == 0)
    per_crop = {cfg.crop: data} | {
        crop: load_stage_data(params["manifest_path"], params["data_root"], run_dir, image_size, use_synthetic="none",
                              crop=crop, crop_margin=cfg.crop_margin, via=cfg.via, progress=progress and rank == 0)
        for crop in cfg.extra_crops}
    binary = data.n_classes == 2
    in_chans = data.train.channels
    device = resolve_device(cfg.device)
    variants = TEACHER_VARIANTS if kind == "teacher" else {k: v[1] for k, v in STUDENT_VARIANTS.items()}
    fits: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    init_source, initialisation = cfg.weights, None
    if kind == "student" and cfg.weights == DISTILLED:
        # several processes (torchrun): rank 0 makes the initialisation, the others then find it and re-use it
        ranked = torch.distributed.is_available() and torch.distributed.is_initialized()
        if ranked and rank != 0:
            torch.distributed.barrier()
        initialisation = student_initialisation(cfg, data, params, stage_dir / "init", progress=progress and rank == 0)
        if ranked and rank == 0:
            torch.distributed.barrier()
        init_source = initialisation["weights"]
    # (variant, folder and model-name suffix, weight source, what the records say the weights are, crop)
    runs = [(v, "", init_source, cfg.weights, cfg.crop) for v in cfg.variants]
    runs += [(v, SCRATCH_SUFFIX, "none", "none", cfg.crop) for v in getattr(cfg, "scratch_variants", ())]
    runs += [(v, crop_suffix(crop), init_source, cfg.weights, crop) for crop in cfg.extra_crops
             for v in extra_crop_variants(kind, cfg)]
    for variant, suffix, source, source_word, crop in runs:
        data = per_crop[crop]
        uses_synthetic = variants[variant]
        teacher_variant = STUDENT_VARIANTS[variant][0] if kind == "student" else None
        needs_synthetic = uses_synthetic or teacher_variant == "real+syn"
        if needs_synthetic and data.synthetic is None:
            skipped[variant + suffix] = "no synthetic images in this run (the diffusion stage did not run or made none)"
            continue
        train = concat([data.train, data.synthetic]) if uses_synthetic and data.synthetic is not None else data.train
        tables = []
        for seed in cfg.seeds:
            out_dir = stage_dir / (variant + suffix) / f"seed{seed}"
            ratio = cfg.synthetic_ratio if uses_synthetic else 0.0
            fit_config = _fit_config(cfg, seed, ratio, binary)
            plan = EpochPlan.for_set(train, ratio, seed)
            weights = _expected_class_weights(train, plan, data.n_classes, cfg.class_weighting)
            torch.manual_seed(seed)
            model = create_classifier(cfg.model, data.n_classes, in_chans, source)
            description: dict[str, Any] = {"kind": kind, "variant": variant + suffix, "seed": seed, "model": cfg.model,
                                           "crop": crop,
                                           "init": source_word, "class_weights": weights,
                                           "synthetic_manifest": None if not uses_synthetic else str(data.synthetic_path)}
            if source_word == DISTILLED:
                description["init_sha256"] = initialisation["sha256"]
            teacher_record = None
            if teacher_variant is None:
                task = ClassifierTask(model, build_loss({"ce": {"type": "ce", "params": {"class_weights": weights}}}))
            else:
                from diffkd_study.distill.distiller import DistillationTask
                from diffkd_study.training.trainer import load_best

                teacher_name = teacher_variant + ("" if suffix == SCRATCH_SUFFIX else suffix)  # the same crop's
                teacher_record, teacher_seed = _teacher_weights(run_dir, teacher_name, seed)
                teacher = create_classifier(teacher_record["model"], data.n_classes, in_chans, "none")
                # the recorded digest: a teacher file changed since the teacher stage ran is an error, not used
                load_best(teacher, Path(teacher_record["weights"]).parent,
                          expected_sha256=teacher_record["weights_sha256"])
                objective = build_objective(student_recipe(cfg), model, teacher, class_weights=weights,
                                            input_shape=(in_chans, image_size, image_size))
                task = DistillationTask(model, teacher, objective.loss, student_features=objective.student_features,
                                        teacher_features=objective.teacher_features)
                description.update({"teacher_variant": teacher_name, "teacher_seed": teacher_seed,
                                    "teacher_weights_sha256": teacher_record["weights_sha256"],
                                    "loss": {name: asdict(term) for name, term in cfg.loss.items()}})
            result = fit(task, train, data.val, fit_config, out_dir, positive_index=data.positive_index,
                         description=description, progress=progress, desc=f"{kind} {variant + suffix} seed {seed}")
            name = model_name(kind, variant + suffix)
            tables.append(_predictions(model, data, name=name, seed=seed, eval_batch_size=cfg.eval_batch_size,
                                       device=device))
            last = result.history[result.best_epoch - 1]
            fits.append({
                **description, "name": name, "fit": asdict(fit_config), **result.summary(),
                "val_auc": last.get("val_auc"), "val_balanced_accuracy": last.get("val_balanced_accuracy"),
                "val_accuracy": last.get("val_accuracy"),
                "n_train_real": int((~train.synthetic).sum()), "n_train_synthetic": int(train.synthetic.sum()),
                "synthetic_per_epoch": plan.n_synthetic, "n_val": len(data.val),
                "weights": str(result.best_weights), "weights_sha256": sha256_file(result.best_weights) if rank == 0 else None,
                "history": str(out_dir / "history.json"),
            })
        if rank == 0:
            from diffkd_study.predictions import write_predictions

            write_predictions(pd.concat(tables, ignore_index=True), predictions_dir / f"{model_name(kind, variant + suffix)}.csv",
                              manifest=data.manifest)
    result = TrainingStageResult(
        kind=kind, config=asdict(cfg), image_size=image_size, in_chans=in_chans,
        classes=list(data.manifest.schema.label_set), fits=fits, skipped=skipped,
        synthetic_manifest=None if data.synthetic_path is None else str(data.synthetic_path),
        synthetic_audited=data.synthetic_audited, counts=data.counts().reset_index(names="set").to_dict("records"),
        device=str(device), world_size=int(os.environ.get("WORLD_SIZE", "1")),
        wall_s=round(time.perf_counter() - started, 2), initialisation=initialisation,
    )
    if rank == 0:
        write_json(stage_dir / RECORDS, result.to_dict())
    return result


def input_sentence(cfg: TeacherStageConfig | StudentStageConfig) -> str:
    """What the networks of a stage see, in words for a report: the crop, the resize chain and the other crops."""
    words = {"none": "the whole image (stretched)",
             "lesion": f"the lesion's region of interest (the square around the expert lesion outline, "
                       f"{cfg.crop_margin:.0%} margin on each side, kept inside the image), also for the test images: "
                       "the networks classify a lesion someone has outlined",
             "jittered": "a rough box around the lesion, as a reader would draw it (the outline's square, its centre "
                         "moved by up to 15% of the lesion's longer side and its side scaled by 0.8-1.25, drawn once "
                         "per image)",
             "whole": "the whole frame with its proportions kept (no outline needed)"}
    text = words[cfg.crop] + (f"; every image passes through {cfg.via} px first (the diffusion model's resolution), "
                              "so real and synthetic images share one resize chain" if cfg.via else "") + "."
    if cfg.extra_crops:
        variants = extra_crop_variants("teacher" if isinstance(cfg, TeacherStageConfig) else "student", cfg)
        text += (f" Trained again on inputs that need no exact outline ({', '.join(variants)}): "
                 + "; ".join(f"`-{c}`: {words[c]}" for c in cfg.extra_crops) + ".")
    return text


def extra_crop_variants(kind: str, cfg: TeacherStageConfig | StudentStageConfig) -> tuple[str, ...]:
    """The variants trained again in each of ``extra_crops``: ``crop_variants``, or by default every variant that
    needs no synthetic image (teacher ``real``; students ``alone`` and ``kd_real``). A variant needing synthetic
    images is a ``ValueError``: the synthetic lesion crops exist in the stage's ``crop`` only."""
    def synthetic(v: str) -> bool:
        return TEACHER_VARIANTS[v] if kind == "teacher" else (
            STUDENT_VARIANTS[v][1] or STUDENT_VARIANTS[v][0] == "real+syn")

    chosen = cfg.crop_variants or tuple(v for v in cfg.variants if not synthetic(v))
    bad = [v for v in chosen if synthetic(v)]
    if bad:
        raise ValueError(f"crop_variants: {bad} need synthetic images, which exist in crop {cfg.crop!r} only")
    return chosen


def student_initialisation(cfg: StudentStageConfig, data: StageData, params: Mapping[str, Any], out_dir: Path, *,
                           progress: bool = False) -> dict[str, Any]:
    """Make (or re-use) the students' general-distillation initialisation on the training split and probe it.

    Unlabeled images: the training rows as the students see them (lesion crops for ``crop: lesion``) and, when
    ``initialisation.whole_images`` and the students see crops, the same rows' whole frames. Returns the
    initialisation's record (``weights`` holds its ``distilled:PATH#sha256=HEX`` source) with ``probe``: the
    linear-probe table (:func:`~diffkd_study.metrics.probe.linear_probe`) of the student's features at random
    weights and after general distillation, and of the ImageNet teacher's, on every evaluated split.
    """
    from diffkd_study.training.general_distillation import (
        general_distillation,
        probe_representations,
        starting_points,
    )

    manifest = data.manifest
    split_of = dict(zip(manifest.df["image_id"], manifest.df["split"], strict=True))
    sets = {"lesion crop" if cfg.crop == "lesion" else "whole image": data.train}
    if cfg.crop == "lesion" and cfg.initialisation.whole_images:
        sets["whole image"] = load_images(manifest, params["data_root"], splits=("train",), size=data.train.size,
                                          mode="L" if data.train.channels == 1 else "RGB", resize_mode="stretch",
                                          progress=progress)
    init = general_distillation(cfg.model, sets, split_of, cfg.initialisation, out_dir, augment=cfg.augment,
                                progress=progress)
    df = manifest.df.set_index("image_id")
    evaluated_split = df.loc[data.evaluated.image_ids, "split"].to_numpy()
    parts = {"train": data.train, "val": data.val}
    parts |= {split: data.evaluated.subset(np.flatnonzero(evaluated_split == split)) for split in ("test", "external")
              if (evaluated_split == split).any()}
    probe = probe_representations(
        starting_points(cfg.model, init.weights, cfg.initialisation.teacher_model, cfg.initialisation.teacher_weights),
        parts, {s: df.loc[part.image_ids, "patient_id"].astype(str).to_numpy() for s, part in parts.items()},
        n_classes=data.n_classes, positive_index=data.positive_index, batch_size=cfg.eval_batch_size)
    return {**init.record, "reused": init.reused, "probe": probe.to_dict("records")}


def _launch_torchrun(kind: str, params: Mapping[str, Any], nproc: int) -> TrainingStageResult:
    """Run :func:`run_stage` under torchrun (one process per device) and return rank 0's records."""
    stage_dir = Path(params["run_dir"]) / kind
    stage_dir.mkdir(parents=True, exist_ok=True)
    launch = stage_dir / "launch.json"
    write_json(launch, dict(params))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "diffkd_study.methods.diffkd.launch", kind, str(launch)]
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with status {completed.returncode}")
    return read_records(params["run_dir"], kind)


def _stored_records(run_dir: str | os.PathLike[str], kind: str) -> dict[str, Any]:
    path = Path(run_dir) / kind / RECORDS
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the {kind} stage has not run")
    return json.loads(path.read_text(encoding="utf-8"))


# -- report helpers -------------------------------------------------------------------------------------------
def read_records(run_dir: str | os.PathLike[str], kind: str) -> TrainingStageResult:
    """The result of the ``teacher`` or ``student`` stage of a run, read back from its ``records.json``."""
    return TrainingStageResult.from_dict(_stored_records(run_dir, kind))


def history_frame(result: TrainingStageResult) -> pd.DataFrame:
    """Tidy per-epoch values of every fit: ``variant, seed, epoch, term, value, split``.

    Training rows: each loss term averaged over the epoch (split ``train``). Validation rows: the
    validation NLL (term ``validation NLL``) and the selection metric (``validation AUC`` or
    ``validation balanced accuracy``), split ``validation``.
    """
    from diffkd_study.training.trainer import tidy_history

    rows = []
    for fit_record in result.fits:
        history = json.loads(Path(fit_record["history"]).read_text(encoding="utf-8"))["history"]
        rows += [{"variant": fit_record["variant"], "seed": fit_record["seed"], **row} for row in tidy_history(history)]
    return pd.DataFrame(rows)


def fits_table(result: TrainingStageResult) -> pd.DataFrame:
    """One row per (variant, seed): epochs, best epoch, validation metrics, data sizes, time."""
    columns = ["name", "variant", "seed", "epochs_run", "best_epoch", "val_auc", "val_balanced_accuracy",
               "n_train_real", "synthetic_per_epoch", "n_val", "training_s", "train_images_per_s"]
    table = pd.DataFrame(result.fits)
    return table[[c for c in columns if c in table.columns]] if len(table) else pd.DataFrame(columns=columns)


def ablation_table(predictions_dir: str | os.PathLike[str], names: list[str], manifest: Manifest) -> pd.DataFrame:
    """AUC of each model on the validation set and each test set, mean +- SD over seeds, one column per set
    (its number of images and positives in the header).

    (The evaluation stage adds the DeLong intervals and the paired tests against the full model.)
    """
    from diffkd_study.methods.diffkd.evaluate import seed_variability_table
    from diffkd_study.predictions import read_predictions

    paths = [Path(predictions_dir) / f"{n}.csv" for n in names if (Path(predictions_dir) / f"{n}.csv").is_file()]
    if not paths:
        return pd.DataFrame()
    table = seed_variability_table(read_predictions(paths, manifest=manifest), names, min_seeds=1, validation=True)
    sets = list(dict.fromkeys(table["test_set"]))
    header = {s: f"{s} (n={int(r['n'])}, {int(r['n_pos'])} pos)" for s, r in table.drop_duplicates("test_set")
              .set_index("test_set").iterrows()}
    wide = table.pivot(index="model", columns="test_set", values="summary")[sets].rename(columns=header)
    wide.columns.name = None
    return wide.loc[[n for n in names if n in wide.index]]


def save_training_curves(result: TrainingStageResult, figures_dir: str | os.PathLike[str], *,
                         show: bool = True) -> list[tuple[str, str]]:
    """One figure of per-term training curves per variant (seeds as mean +- SD), saved as PNG + SVG;
    returns ``[(variant, figure name)]``."""
    import matplotlib.pyplot as plt

    from diffkd_study import viz as plots

    kind = result.kind
    history = history_frame(result)
    saved = []
    for variant in dict.fromkeys(history["variant"]):
        fig = plots.plot_loss_curves(history[history["variant"] == variant], x="epoch",
                                     title=f"{kind.capitalize()} {variant}: training curves")
        name = f"{kind}_curves_{variant.replace('+', '_')}"
        plots.save_figure(fig, figures_dir, name)
        if show:
            plt.show()
        else:
            plt.close(fig)
        saved.append((variant, name))
    return saved
