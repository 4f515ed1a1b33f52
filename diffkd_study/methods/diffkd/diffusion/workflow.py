"""The diffusion stage as library calls: section -> training config, train/resume, class counts, sampling.

The notebook ``10_diffusion`` calls these; the artifacts are described in :mod:`diffkd_study.methods.diffkd.diffusion.stage`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from diffkd_study.data.schema import Manifest, read_manifest
from diffkd_study.io import atomic_path, write_json
from diffkd_study.methods.diffkd.diffusion.conditioning import ConditionDropout
from diffkd_study.methods.diffkd.diffusion.stage import DiffusionStageConfig, parse_class_counts
from diffkd_study.methods.diffkd.diffusion.train import (
    SCHEDULE_FIELDS,
    TrainConfig,
    TrainResult,
    checkpoint_sha256,
    list_checkpoints,
    read_checkpoint_config,
    train_diffusion,
)

LOSS_FILE = "loss.csv"
TRAINING_FILE = "training.json"
GENERATION_FILE = "generation.json"


def train_config_from_section(section: DiffusionStageConfig, manifest: Manifest, seed: int) -> TrainConfig:
    """The :class:`TrainConfig` of a ``diffusion`` section (its values are resolved: the parser applied the
    profile's preset); ``profile`` names the UNet. Weight decay, gradient clipping and the number of noise
    levels are :class:`TrainConfig`'s.

    ``conditions`` empty means every condition the manifest's sidecar declares (in its order). The
    categorical dropout applies to each categorical condition independently.
    """
    conditions = tuple(section.conditions) or tuple(manifest.schema.conditions)
    undeclared = [c for c in conditions if c not in manifest.schema.conditions]
    if undeclared:
        source = manifest.path or manifest.schema.dataset
        raise ValueError(f"diffusion.conditions names {undeclared}, which {source} does not declare; declared: "
                         f"{sorted(manifest.schema.conditions)}")
    dropout = ConditionDropout(label=section.label_dropout, categorical=section.condition_dropout,
                               numeric=section.numeric_dropout, mask=section.mask_dropout,
                               default_categorical=section.condition_dropout)
    crop = "none" if section.crop == "auto" else section.crop
    return TrainConfig(profile=section.profile, image_size=section.diffusion_image_size, crop=crop,
                       roi_margin=section.crop_margin, conditions=conditions,
                       mask_conditioning=section.mask_conditioning, dropout=dropout, batch_size=section.batch_size,
                       max_steps=section.max_steps, learning_rate=section.learning_rate,
                       warmup_steps=section.warmup_steps, ema_decay=section.ema_decay,
                       prediction_type=section.prediction_type, beta_schedule=section.beta_schedule,
                       checkpoint_every=section.checkpoint_every, checkpoint_minutes=section.checkpoint_minutes,
                       seed=seed)


def _config_difference(saved: TrainConfig, given: TrainConfig) -> str:
    changed = [f"{f.name}: {getattr(saved, f.name)!r} -> {getattr(given, f.name)!r}" for f in fields(TrainConfig)
               if f.name not in SCHEDULE_FIELDS and getattr(saved, f.name) != getattr(given, f.name)]
    return "; ".join(changed)


@dataclass
class TrainingSummary:
    """What :func:`run_training` returns (and ``training.json`` records): steps in all and in this call, the
    resume point, wall times, throughput, the final checkpoint and its sha256, the losses and the config."""

    steps: int  # steps of the finished model (all calls)
    steps_run: int  # steps run by this call (0 when the run was already complete)
    resumed_from: int  # step of the checkpoint this call started from (0 = from scratch)
    wall_s: float  # this call
    wall_s_total: float  # every call that trained this model, as recorded in training.json
    images_per_second: float  # this call's training throughput (0 when no step was run)
    checkpoint: Path
    checkpoint_sha256: str
    losses: list[float]
    config: TrainConfig
    memory_format: str = "channels_last"  # the layout the UNet trained in (diffkd_study.layout)

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data, without the losses (they go to ``loss.csv``)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("losses", "config")}
        out["checkpoint"] = str(self.checkpoint)
        out["config"] = self.config.to_dict()
        return out


def run_training(manifest: Manifest, out_dir: str | os.PathLike[str], config: TrainConfig, *,
                 root: str | os.PathLike[str] | None = None, resume: bool = True, device: str = "cpu",
                 progress: bool = True) -> TrainingSummary:
    """Train into ``out_dir``, continuing from its latest checkpoint (``resume``) or from scratch.

    With ``resume`` and a latest checkpoint trained with another configuration this is an error that
    lists the differences (nothing is deleted; the checkpoint schedule may change). A checkpoint written
    by other training code is not continued: :func:`train_diffusion` moves the folder's files to
    ``.superseded/`` and trains afresh. ``resume=False`` deletes the folder's checkpoints, ``loss.csv``
    and ``training.json`` first. Writes ``loss.csv`` and ``training.json`` atomically.
    """
    out_dir = Path(out_dir)
    existing = list_checkpoints(out_dir)
    previous_wall = 0.0
    if existing and not resume:
        for path in existing:
            shutil.rmtree(path)
        for name in (LOSS_FILE, TRAINING_FILE):
            (out_dir / name).unlink(missing_ok=True)
        existing = []
    if existing:
        saved = TrainConfig.from_dict(read_checkpoint_config(existing[-1])["train"])
        if saved.training_settings() != config.training_settings():
            raise ValueError(
                f"{existing[-1]} was trained with another configuration ({_config_difference(saved, config)}). "
                "Re-running resumes only the same configuration: restore the section, or set "
                "diffusion.resume: false to delete the checkpoints and train afresh.")
        record = out_dir / TRAINING_FILE
        if record.is_file():
            previous_wall = float(json.loads(record.read_text(encoding="utf-8")).get("wall_s_total", 0.0))
    began = time.perf_counter()
    result: TrainResult = train_diffusion(manifest, out_dir, config, root=root,
                                          resume="latest" if existing else None, device=device, progress=progress)
    wall = time.perf_counter() - began
    resumed_from = result.resumed_from
    if not resumed_from:  # trained afresh (other training code): earlier calls' time was for another model
        previous_wall = 0.0
    steps_run = result.steps - resumed_from
    summary = TrainingSummary(
        steps=result.steps, steps_run=steps_run, resumed_from=resumed_from, wall_s=round(wall, 2),
        wall_s_total=round(previous_wall + (wall if steps_run else 0.0), 2),
        images_per_second=round(result.images_per_second, 2), checkpoint=result.checkpoint,
        checkpoint_sha256=checkpoint_sha256(result.checkpoint), losses=result.losses, config=config,
        memory_format=result.memory_format)
    with atomic_path(out_dir / LOSS_FILE) as tmp:
        pd.DataFrame({"step": np.arange(1, len(result.losses) + 1), "loss": result.losses}).to_csv(tmp, index=False)
    write_json(out_dir / TRAINING_FILE, summary.to_dict())
    return summary


def loss_history(losses: list[float] | np.ndarray, n_bins: int = 60) -> pd.DataFrame:
    """Per-step losses as the tidy table of :func:`diffkd_study.viz.plot_loss_curves`: the mean over
    consecutive blocks of steps (at most ``n_bins`` blocks), at the block's last step."""
    values = np.asarray(losses, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no losses to summarise")
    block = max(1, int(np.ceil(values.size / n_bins)))
    steps = np.arange(1, values.size + 1)
    edges = list(range(0, values.size, block))
    return pd.DataFrame({
        "step": [int(steps[min(e + block, values.size) - 1]) for e in edges],
        "value": [float(values[e:e + block].mean()) for e in edges],
        "term": "denoising loss (MSE)", "split": "train"})


def training_label_counts(manifest: Manifest) -> dict[str, int]:
    """Images per label in the training split (every row without a ``split`` column), label-set order."""
    df = manifest.df
    if "split" in df.columns:
        df = df[df["split"] == "train"]
    counts = df["label"].value_counts()
    return {label: int(counts.get(label, 0)) for label in manifest.schema.label_set if counts.get(label, 0)}


def resolve_class_counts(manifest: Manifest, *, n_per_class: int = 0, class_counts: tuple[str, ...] | list[str] = (),
                         label_mix: str = "balanced", n_synthetic: int = 0) -> dict[str, int]:
    """How many synthetic images per label (see "Class counts" in :mod:`diffkd_study.methods.diffkd.diffusion.stage`)."""
    present = training_label_counts(manifest)
    if not present:
        raise ValueError("the training split has no rows: nothing to draw conditions from")
    explicit = parse_class_counts(tuple(class_counts))
    if explicit:
        unknown = [label for label in explicit if label not in manifest.schema.label_set]
        if unknown:
            raise ValueError(f"class_counts names label(s) {unknown} outside the label set "
                             f"{list(manifest.schema.label_set)}")
        absent = [label for label, n in explicit.items() if n > 0 and label not in present]
        if absent:
            raise ValueError(f"class_counts asks for label(s) {absent} that the training split does not contain "
                             f"(training labels: {present})")
        return {label: n for label, n in explicit.items() if n > 0}
    if label_mix == "prior":
        return prior_counts(present, n_synthetic or sum(present.values()))
    per_class = n_per_class or max(present.values())
    return {label: per_class for label in present}


def prior_counts(present: Mapping[str, int], total: int) -> dict[str, int]:
    """``total`` images split in the proportions of ``present`` (label -> training images), by largest remainder
    (ties to the label listed first), so the counts sum to ``total`` exactly."""
    n = sum(present.values())
    exact = {label: total * count / n for label, count in present.items()}
    counts = {label: int(value) for label, value in exact.items()}
    order = sorted(present, key=lambda label: (-(exact[label] - counts[label]), list(present).index(label)))
    for label in order[:total - sum(counts.values())]:
        counts[label] += 1
    return {label: count for label, count in counts.items() if count > 0}


def read_condition_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A user table of conditions (CSV, every column as text, empty cells missing); needs ``label``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"condition_table {path} not found")
    table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    if "label" not in table.columns or table.empty:
        raise ValueError(f"{path}: a condition table needs a 'label' column and at least one row")
    return table


@dataclass
class SyntheticSet:
    """What :func:`ensure_synthetic` returns: the synthetic manifest, whether an identical earlier set was kept,
    the sampling time and the generation record."""

    manifest: Manifest
    reused: bool  # an identical earlier set was kept
    wall_s: float
    record: dict[str, Any]


def generation_record(checkpoint: str | os.PathLike[str], *, sampler: str, steps: int, guidance_scale: float,
                      seed: int, per_class: Mapping[str, int] | None = None,
                      table: pd.DataFrame | None = None) -> dict[str, Any]:
    """What determines a synthetic set (a re-run with the same record gives the same images)."""
    from diffkd_study.io import sha256_bytes

    return {"checkpoint": str(Path(checkpoint).name), "checkpoint_sha256": checkpoint_sha256(checkpoint),
            "sampler": sampler, "steps": int(steps), "guidance_scale": float(guidance_scale), "seed": int(seed),
            "per_class": dict(per_class) if per_class is not None else None,
            "condition_table_sha256": None if table is None else sha256_bytes(
                table.to_csv(index=False, lineterminator="\n").encode())}


def ensure_synthetic(checkpoint: str | os.PathLike[str], manifest: Manifest, out_dir: str | os.PathLike[str], *,
                     root: str | os.PathLike[str] | None, per_class: Mapping[str, int] | None = None,
                     table: pd.DataFrame | None = None, sampler: str = "dpmsolver++", steps: int = 20,
                     guidance_scale: float = 2.0, seed: int = 0, batch_size: int = 32, device: str = "cpu",
                     progress: bool = True) -> SyntheticSet:
    """Sample the synthetic set into ``out_dir`` unless ``generation.json`` there shows the same one."""
    from diffkd_study.methods.diffkd.diffusion.sample import generate_synthetic

    out_dir = Path(out_dir)
    record = generation_record(checkpoint, sampler=sampler, steps=steps, guidance_scale=guidance_scale, seed=seed,
                               per_class=per_class, table=table)
    previous = out_dir / GENERATION_FILE
    if previous.is_file() and (out_dir / "synthetic.csv").is_file():
        if json.loads(previous.read_text(encoding="utf-8")).get("generation") == record:
            return SyntheticSet(read_manifest(out_dir / "synthetic.csv"), True, 0.0, record)
    began = time.perf_counter()
    synthetic = generate_synthetic(checkpoint, manifest, out_dir, root=root, per_class=per_class, table=table,
                                   sampler=sampler, steps=steps, guidance_scale=guidance_scale, seed=seed,
                                   batch_size=batch_size, device=device, progress=progress,
                                   record={"generation": record})
    wall = time.perf_counter() - began
    write_json(previous, {"generation": record, "n_images": len(synthetic.df), "wall_s": round(wall, 2),
                          "s_per_image": round(wall / max(1, len(synthetic.df)), 4)})
    # read back, so that a new and a reused set look the same (as the next stage will read them)
    return SyntheticSet(read_manifest(out_dir / "synthetic.csv"), False, wall, record)
