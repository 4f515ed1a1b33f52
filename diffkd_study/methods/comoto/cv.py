"""The CoMoTo study: mammography teachers, then every method x data regime x fold on DBT.

Teachers (:func:`train_teachers`)
    Trained once on mammography, independent of the DBT folds. ``teacher_holdout_frac`` of the
    mammography patients (stratified by whether a patient has a lesion box) are held out; the
    teacher's FROC on them is a sanity check only (CoMoTo's mammography evaluation used IoU matching;
    here the same centre-distance rule as on DBT is used, with the 100 px of the 1024-px release).
    The ``plain`` and ``impa`` teachers share the seed, hence the initialisation and the batches:
    they differ only by the ImPA term.

Folds (:func:`patient_folds`)
    Patient-grouped, label-stratified K-fold over **all** DBT patients (scikit-learn
    ``StratifiedGroupKFold``, shuffled with the study seed; a patient's stratum is malignant if any
    of their slices is). The runner's train/val/test ``split`` column is not used: with 50 patients
    cross-validation replaces a single split. Each image is a test image in exactly one fold.

Regimes (:func:`regime_indices`)
    A regime keeps ``max(1, round(fraction x n))`` of the fold's ``n`` training patients, the first ones
    of one seeded permutation per fold, so the regimes are nested (10% within 25% within 100%) and
    every method of a fold and regime trains on the same patients. The official low-data setting
    samples 10% of the training *images* (``random.sample``); sampling patients keeps all slices of a
    patient together, as the issue asks.

Runs (:func:`run_cross_validation`)
    Each (fold, regime, method) trains one student with ``seed = derive_seed(seed, "student", fold,
    regime)``: the same seed, batches and flips for every method of a fold and regime. Its test-fold
    detections, step history and metrics are written atomically under
    ``<out>/runs/fold<k>/<regime>/<method>/``; a run whose ``run.json`` matches the current settings
    (a sha256 key) is read back instead of retrained, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedGroupKFold

from diffkd_study.io import atomic_path, write_json
from diffkd_study.methods.comoto.data import DetectionData
from diffkd_study.methods.comoto.detector import DetectorSpec, create_detector
from diffkd_study.methods.comoto.lesion import ImageLevelKDLoss, ImPALoss, LesionKDLoss
from diffkd_study.methods.comoto.stage import METHODS, ComotoStageConfig, MethodSpec
from diffkd_study.methods.comoto.train import (
    Distillation,
    fit_detector,
    load_state,
    median_step_seconds,
    predict,
    save_state,
    steps_for,
)
from diffkd_study.metrics.froc import FROCResult, evaluate_detections
from diffkd_study.progress import progress_bar
from diffkd_study.repro import derive_seed, seed_everything

__all__ = [
    "Teacher",
    "patient_folds",
    "regime_indices",
    "regime_name",
    "run_cross_validation",
    "teacher_holdout_split",
    "train_teachers",
]


def _key(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def regime_name(fraction: float) -> str:
    """``0.1`` -> ``"10%"``."""
    return f"{fraction * 100:g}%"


def _patient_strata(data: DetectionData, positive: Callable[[np.ndarray], np.ndarray]) -> pd.Series:
    flags = pd.Series(positive(np.arange(len(data))), index=data.patient_ids)
    return flags.groupby(level=0).max().astype(int)


def patient_folds(data: DetectionData, n_folds: int, seed: int) -> np.ndarray:
    """The test fold (0..n_folds-1) of every image: patient-grouped, stratified by malignancy."""
    n_patients = len(set(data.patient_ids))
    if n_patients < n_folds:
        raise ValueError(f"{data.source}: {n_patients} patients cannot fill {n_folds} folds")
    malignant = (data.labels == "malignant").astype(int)
    strata = pd.Series(malignant, index=data.patient_ids).groupby(level=0).transform("max").to_numpy()
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.full(len(data), -1, dtype=np.int64)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(data)), strata, groups=data.patient_ids)):
        fold[test] = k
    return fold


def regime_indices(data: DetectionData, train: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of the images of the first ``max(1, round(fraction * n))`` patients of a seeded permutation."""
    patients = sorted(set(data.patient_ids[train]))
    order = np.random.default_rng(seed).permutation(len(patients))
    keep = {patients[i] for i in order[: max(1, round(fraction * len(patients)))]}
    return np.array([i for i in train if data.patient_ids[i] in keep], dtype=np.int64)


def teacher_holdout_split(data: DetectionData, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, holdout) image indices; patients grouped, stratified by having a lesion box."""
    everything = np.arange(len(data))
    if fraction == 0:
        return everything, everything[:0]
    strata = _patient_strata(data, lambda idx: data.has_lesion[idx])
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    for flag in (0, 1):
        group = sorted(strata.index[strata == flag])
        n = round(fraction * len(group))
        held.update(group[i] for i in rng.permutation(len(group))[:n])
    mask = np.array([p in held for p in data.patient_ids])
    return everything[~mask], everything[mask]


@dataclass
class Teacher:
    """One trained (or read back) mammography teacher: its kind (``plain`` or ``impa``), network, training
    history, hold-out FROC result, cost (seconds, steps), whether it was re-used, and its key (the sha256 of
    everything that determined it, part of every student run's key).
    """

    kind: str  # "plain" | "impa"
    model: torch.nn.Module
    history: pd.DataFrame
    holdout: FROCResult | None
    seconds: float
    steps: int
    reused: bool
    key: str  # sha256 of everything that determined it: part of every student run's key


def _detector_spec(config: ComotoStageConfig) -> DetectorSpec:
    return DetectorSpec(**config.detector_fields())


def train_teachers(
    config: ComotoStageConfig,
    data: DetectionData,
    out_dir: str | Path,
    seed: int,
    device: torch.device,
    progress: bool = True,
) -> dict[str, Teacher]:
    """Train (or read back) the teacher variants the chosen methods need; see the module notes."""
    train_idx, holdout_idx = teacher_holdout_split(data, config.teacher_holdout_frac, derive_seed(seed, "holdout"))
    train, holdout = data.subset(train_idx), data.subset(holdout_idx)
    steps = steps_for(len(train), config.batch_size, config.teacher_epochs, config.teacher_min_steps)
    teacher_seed = derive_seed(seed, "teacher")
    teachers = {}
    for kind in config.teachers_needed:
        folder = Path(out_dir) / "teachers" / kind
        key = _key({"profile": config.teacher_dict(), "kind": kind, "beta": config.beta, "num_points": config.num_points,
                    "seed": teacher_seed, "train": sorted(train.image_ids.tolist()), "steps": steps})
        info_path = folder / "teacher.json"
        model = None
        if info_path.is_file() and json.loads(info_path.read_text())["key"] == key:
            info = json.loads(info_path.read_text())
            model = load_state(create_detector(_detector_spec(config)), folder / "model.safetensors")
            history = pd.read_csv(folder / "history.csv")
            seconds, reused = float(info["seconds"]), True
        else:
            seed_everything(teacher_seed)
            model = create_detector(_detector_spec(config))
            impa = ImPALoss(beta=config.beta, num_points=config.num_points, seed=teacher_seed) if kind == "impa" else None
            started = time.perf_counter()
            history = fit_detector(model, train, steps=steps, config=config, seed=teacher_seed, device=device,
                                   impa=impa, progress=progress, desc=f"teacher ({kind})")
            seconds, reused = time.perf_counter() - started, False
            folder.mkdir(parents=True, exist_ok=True)
            save_state(model, folder / "model.safetensors")
            history.to_csv(folder / "history.csv", index=False)
        result = None
        if len(holdout) and holdout.n_boxes:
            result = evaluate_detections(predict(model, holdout, device), holdout.truth(), holdout.reach(),
                                         config.fps_per_image, config.sensitivity_method)
        if not reused:
            write_json(info_path, {
                "key": key, "kind": kind, "steps": steps, "seconds": seconds,
                "median_step_seconds": median_step_seconds(history), "n_train_images": len(train),
                "n_train_lesion_images": int(train.has_lesion.sum()), "n_holdout_images": len(holdout),
                "holdout": None if result is None else result.summary(),
                "memory_format": history.attrs.get("memory_format"),
            })
        teachers[kind] = Teacher(kind, model.cpu(), history, result, seconds, steps, reused, key)
    return teachers


def _kd_loss(method: MethodSpec, config: ComotoStageConfig, grid_cells: int) -> tuple[torch.nn.Module, str] | None:
    if method.kd == "lskd":
        return LesionKDLoss(alpha=config.alpha, temperature=config.temperature, num_points=config.num_points), "lskd"
    if method.kd == "image":
        return ImageLevelKDLoss(grid_cells, grid_cells, alpha=config.alpha, temperature=config.temperature), "image_kd"
    return None


def _run_student(
    config: ComotoStageConfig,
    method: MethodSpec,
    train: DetectionData,
    test: DetectionData,
    teachers: dict[str, Teacher],
    teacher_kd_data: DetectionData,
    seed: int,
    device: torch.device,
    progress: bool,
    desc: str,
) -> tuple[pd.DataFrame, pd.DataFrame, FROCResult, dict[str, Any]]:
    steps = steps_for(len(train), config.batch_size, config.student_epochs, config.student_min_steps)
    seed_everything(seed)
    model = create_detector(_detector_spec(config))
    if method.init == "teacher":
        model.load_state_dict(teachers[method.teacher].model.state_dict())
    distill = None
    stride = model.backbone.stride
    kd = _kd_loss(method, config, (config.detector_image_size // stride) ** 2)
    if kd is not None:
        teacher = copy.deepcopy(teachers[method.teacher].model)
        distill = Distillation(teacher, teacher_kd_data, kd[0], kd[1], derive_seed(seed, "teacher batches"))
    started = time.perf_counter()
    history = fit_detector(model, train, steps=steps, config=config, seed=seed, device=device, distill=distill,
                           progress=progress, desc=desc)
    train_seconds = time.perf_counter() - started
    detections = predict(model, test, device)
    result = evaluate_detections(detections, test.truth(), test.reach(), config.fps_per_image,
                                 config.sensitivity_method)
    info = {"steps": steps, "train_seconds": train_seconds, "median_step_seconds": median_step_seconds(history),
            "n_train_images": len(train), "n_train_patients": int(len(set(train.patient_ids))),
            "n_train_boxes": train.n_boxes}
    return detections, history, result, info


def run_cross_validation(
    config: ComotoStageConfig,
    data: DetectionData,
    teachers: dict[str, Teacher],
    teacher_data: DetectionData,
    out_dir: str | Path,
    seed: int,
    device: torch.device,
    progress: bool = True,
    step_progress: bool = False,
) -> pd.DataFrame:
    """Every (fold, regime, method) run (see the module notes); one row per run with its test metrics."""
    out_dir = Path(out_dir)
    fold_of = patient_folds(data, config.folds, derive_seed(seed, "folds"))
    train_idx, _ = teacher_holdout_split(teacher_data, config.teacher_holdout_frac, derive_seed(seed, "holdout"))
    teacher_train = teacher_data.subset(train_idx)
    teacher_kd_data = teacher_train.subset(np.flatnonzero(teacher_train.has_lesion))
    write_json(out_dir / "folds.json", {str(i): int(k) for i, k in zip(data.image_ids, fold_of, strict=True)})
    plan = [(k, r, m) for k in range(config.folds) for r in config.regimes for m in config.methods]
    rows = []
    bar = progress_bar(plan, desc="CoMoTo runs", disable=not progress, unit="run")
    for fold, regime, name in bar:
        method = METHODS[name]
        bar.set_postfix(fold=fold, regime=regime_name(regime), method=name, refresh=False)
        train = data.subset(regime_indices(data, np.flatnonzero(fold_of != fold), regime, derive_seed(seed, "regime", fold)))
        test = data.subset(np.flatnonzero(fold_of == fold))
        run_seed = derive_seed(seed, "student", fold, regime)
        folder = out_dir / "runs" / f"fold{fold}" / regime_name(regime).replace("%", "pct") / name
        key = _key({"profile": config.settings_dict(), "method": method.__dict__, "seed": run_seed,
                    "alpha": config.alpha, "temperature": config.temperature, "num_points": config.num_points,
                    "train": sorted(train.image_ids.tolist()), "test": sorted(test.image_ids.tolist()),
                    "teacher": teachers[method.teacher].key if method.teacher else None, "fps": list(config.fps_per_image),
                    "sensitivity_method": config.sensitivity_method, "reach": test.min_distance.tolist()})
        run_file = folder / "run.json"
        if run_file.is_file() and json.loads(run_file.read_text()).get("key") == key:
            rows.append(json.loads(run_file.read_text())["row"])
            continue
        detections, history, result, info = _run_student(
            config, method, train, test, teachers, teacher_kd_data, run_seed, device, step_progress,
            desc=f"fold {fold} {regime_name(regime)} {name}")
        row = {"fold": fold, "regime": regime, "regime_name": regime_name(regime), "method": name,
               "method_title": method.title, **info, **result.summary(),
               "n_test_patients": int(len(set(test.patient_ids)))}
        folder.mkdir(parents=True, exist_ok=True)
        _write_csv(detections, folder / "detections.csv")
        _write_csv(history, folder / "history.csv")
        write_json(run_file, {"key": key, "row": row})
        rows.append(row)
    results = pd.DataFrame(rows)
    _write_csv(results, out_dir / "results.csv")
    return results


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def pooled_detections(out_dir: str | Path, config: ComotoStageConfig) -> dict[tuple[float, str], pd.DataFrame]:
    """(regime, method) -> the out-of-fold detections of every fold, concatenated (each image once)."""
    out: dict[tuple[float, str], pd.DataFrame] = {}
    for regime in config.regimes:
        for name in config.methods:
            frames = []
            for fold in range(config.folds):
                path = Path(out_dir) / "runs" / f"fold{fold}" / regime_name(regime).replace("%", "pct") / name / "detections.csv"
                frames.append(pd.read_csv(path, dtype={"image_id": str}))
            out[(regime, name)] = pd.concat(frames, ignore_index=True)
    return out
