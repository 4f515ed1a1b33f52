"""The synthetic-quality stage as library calls: image sets, features, the fidelity tables with their
floors, the guidance sweep, conditional faithfulness and the memorization table.

Choices (ours; the paper states none):

- **Resolution.** Every set is compared at the diffusion model's resolution: real images are loaded at
  that size (the study's ``stretch`` resize), synthetic images are used as sampled.
- **Reference.** The real images of ``reference_splits`` (default: the internal test split), which
  the diffusion model never saw.
- **Main table, same sizes throughout.** ``n_eval = min(n_synthetic, n_train)``: a seeded subset of
  ``n_eval`` synthetic images, ``n_eval`` classic augmentations of real training images (the simple
  baseline, :mod:`diffkd_study.methods.diffkd.diffusion.augment`) and ``n_eval`` real training images (the floor:
  disjoint real images, other patients, same size) are each compared with the same reference set. FID
  depends on the sample size, so only rows with the same ``n`` are comparable. The split-half floor of
  the reference itself (two disjoint halves, :func:`~diffkd_study.metrics.fidelity.real_vs_real_floor`)
  is reported too.
- **Groups.** Per class and per center (a synthetic image belongs to the center of its source row),
  synthetic vs reference and, as floor, real training images of the group vs reference, with
  ``n = min(n_synthetic_group, n_train_group)`` on both sides; only groups where every set has at
  least ``min_group_size`` images.
- **Guidance sweep.** A label-stratified seeded subset of the synthetic set's own conditions (and
  masks) is sampled again at each scale with the set's sampler, steps and seed, so every scale starts
  from the same noise; FID/KID vs the reference at that size, with the matched real floor. Scale 1 is
  the model without guidance (the other baseline), 0 the unconditional model.
- **KID uncertainty.** KID is the full-set unbiased estimate with a 95% bootstrap interval over images
  (:func:`~diffkd_study.metrics.fidelity.kid_with_ci`); ``kid_std`` is the SD between random subsets of
  ``kid_subset_size`` images (default at most half of each set), reported with that size for comparison
  with papers, not as a standard error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from diffkd_study.data.datasets import ManifestDataset
from diffkd_study.data.schema import Manifest
from diffkd_study.io import atomic_path
from diffkd_study.methods.diffkd.diffusion.names import DOMAIN_RESIZE_MODES
from diffkd_study.metrics import fidelity
from diffkd_study.repro import derive_seed

EXTRACTORS: dict[str, str] = {"TF-Inception (pool3)": fidelity.INCEPTION_EXTRACTOR,
                              "EfficientNet-Lite0 (domain)": fidelity.DOMAIN_EXTRACTOR}
MEMORIZATION_FILE = "memorization.csv"
SUMMARY_FILE = "quality.json"  # the headline numbers beside the synthetic set (FID vs floor, two-sample test, goals)


@dataclass
class ImageSet:
    """uint8 images ``(N, H, W)`` (gray) or ``(N, H, W, C)``, their manifest rows and, if any, masks."""

    name: str
    images: np.ndarray
    frame: pd.DataFrame
    masks: np.ndarray | None = None  # uint8 {0, 1} (N, H, W); rows without a mask are all 0
    features: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, rows: np.ndarray | Sequence[int], name: str | None = None) -> ImageSet:
        """The rows ``rows`` (images, table rows, masks and computed features) as a new set, named ``name``."""
        rows = np.asarray(rows, dtype=int)
        return ImageSet(name or self.name, self.images[rows], self.frame.iloc[rows].reset_index(drop=True),
                        None if self.masks is None else self.masks[rows],
                        {k: v[rows] for k, v in self.features.items()})

    def ensure_features(self, extractor: str, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """The features of ``extractor`` for every image, computed once and kept in ``features``."""
        if extractor not in self.features:
            self.features[extractor] = fidelity.extract_features(self.images, extractor, batch_size, progress)
        return self.features[extractor]


def load_image_set(manifest: Manifest, root: str | os.PathLike[str], size: int, *, name: str,
                   splits: Sequence[str] | None = None, crop: str = "none", roi_margin: float = 0.25,
                   progress: bool = False) -> ImageSet:
    """The rows of ``splits`` (all rows when ``None``) decoded at ``size`` px in the diffusion model's domain:
    whole frames (``crop: none``) or the lesion-centred squares (``crop: lesion``, the classifier's input), so
    that real and synthetic images are compared as the model made them."""
    from diffkd_study.progress import progress_bar

    df = manifest.df
    if splits is not None:
        if "split" not in df.columns:
            raise ValueError(f"{manifest.path}: no split column, cannot select splits {list(splits)}")
        df = df[df["split"].isin(list(splits))]
    if df.empty:
        raise ValueError(f"{manifest.path}: no rows in split(s) {list(splits or [])} for the {name} set")
    subset = Manifest(df.reset_index(drop=True), manifest.schema, manifest.path)
    dataset = ManifestDataset(subset, root, size=size, resize_mode=DOMAIN_RESIZE_MODES[crop], roi_margin=roi_margin)
    images, masks = [], []
    for index in progress_bar(range(len(dataset)), desc=f"loading {name}", unit="img", disable=not progress):
        sample = dataset[index]
        pixels = (sample["image"] * 255).round().to(torch.uint8).numpy()
        images.append(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
        mask = sample.get("mask")
        masks.append(np.zeros(pixels.shape[1:], np.uint8) if mask is None else mask[0].numpy().astype(np.uint8))
    return ImageSet(name, np.stack(images), dataset.df.reset_index(drop=True), np.stack(masks))


def seeded_subset(n_total: int, n: int, seed: int, *keys: object) -> np.ndarray:
    """``n`` of ``range(n_total)`` without replacement (sorted), from ``derive_seed(seed, *keys)``."""
    if n > n_total:
        raise ValueError(f"cannot draw {n} of {n_total} without replacement")
    rng = np.random.default_rng(derive_seed(seed, "subset", *keys))
    return np.sort(rng.choice(n_total, size=n, replace=False))


def stratified_subset(labels: Sequence[Any], n: int, seed: int) -> np.ndarray:
    """About ``n`` rows with the labels as equally represented as the data allow (seeded, sorted)."""
    labels = np.asarray([str(v) for v in labels])
    groups = {v: np.flatnonzero(labels == v) for v in sorted(set(labels))}
    quota = {v: 0 for v in groups}
    remaining = min(n, len(labels))
    while remaining:  # round-robin over the labels that still have rows left
        open_groups = [v for v in groups if quota[v] < len(groups[v])]
        for v in open_groups[:remaining]:
            quota[v] += 1
        remaining -= len(open_groups[:remaining])
    picked = [groups[v][seeded_subset(len(groups[v]), quota[v], seed, "stratified", v)] for v in groups]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=int)


def _metric_row(name: str, extractor_label: str, result: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {"set": name, "extractor": extractor_label, **extra,
            "n_generated": result["n_generated"], "n_real": result["n_real"], "fid": result["fid"],
            "kid_mean": result["kid_mean"], "kid_ci_low": result["kid_ci_low"], "kid_ci_high": result["kid_ci_high"],
            "kid_std": result["kid_std"], "kid_subset_size": result["kid_subset_size"],
            "precision": result["precision"], "recall": result["recall"]}


def fidelity_table(candidates: Mapping[str, ImageSet], reference: ImageSet, *, kid_subsets: int = 100,
                   kid_subset_size: int = 0, batch_size: int = 32, progress: bool = False,
                   **extra: Any) -> pd.DataFrame:
    """One row per (candidate set, extractor): FID, KID with its 95% bootstrap CI, the KID SD over subsets of
    ``kid_subset_size`` images (0: the default, at most half of each set), precision, recall, with the sizes."""
    rows = []
    for label, extractor in EXTRACTORS.items():
        real = reference.ensure_features(extractor, batch_size, progress)
        for name, candidate in candidates.items():
            generated = candidate.ensure_features(extractor, batch_size, progress)
            result = fidelity.fidelity_from_features(generated, real, kid_subsets=kid_subsets,
                                                     kid_subset_size=kid_subset_size or None)
            rows.append(_metric_row(name, label, result, **extra))
    return pd.DataFrame(rows)


def split_half_floor(reference: ImageSet, *, kid_subsets: int = 100, seed: int = 0, batch_size: int = 32,
                     progress: bool = False) -> pd.DataFrame:
    """The reference set against itself: two disjoint random halves (per extractor)."""
    rows = []
    for label, extractor in EXTRACTORS.items():
        result = fidelity.real_vs_real_floor(None, features=reference.ensure_features(extractor, batch_size, progress),
                                             seed=seed, kid_subsets=kid_subsets)
        rows.append(_metric_row("reference split-half (real vs real)", label, result))
    return pd.DataFrame(rows)


def group_fidelity(synthetic: ImageSet, training: ImageSet, reference: ImageSet, *, by: str,
                   synthetic_by: str | None = None, min_group_size: int = 10, kid_subsets: int = 50,
                   seed: int = 0, batch_size: int = 32) -> tuple[pd.DataFrame, list[str]]:
    """Per-group FID/KID of synthetic vs reference and of the real floor; groups too small are listed."""
    synthetic_by = synthetic_by or by
    rows, skipped = [], []
    groups = sorted(set(reference.frame[by].dropna().astype(str)))
    for group in groups:
        syn_rows = np.flatnonzero(synthetic.frame[synthetic_by].astype(str).to_numpy() == group)
        train_rows = np.flatnonzero(training.frame[by].astype(str).to_numpy() == group)
        ref_rows = np.flatnonzero(reference.frame[by].astype(str).to_numpy() == group)
        n = min(len(syn_rows), len(train_rows))
        if min(n, len(ref_rows)) < min_group_size:
            skipped.append(f"{group} (synthetic {len(syn_rows)}, training {len(train_rows)}, "
                           f"reference {len(ref_rows)})")
            continue
        candidates = {
            "synthetic": synthetic.subset(syn_rows[seeded_subset(len(syn_rows), n, seed, by, group, "syn")]),
            "real training (floor)": training.subset(train_rows[seeded_subset(len(train_rows), n, seed, by, group)]),
        }
        table = fidelity_table(candidates, reference.subset(ref_rows), kid_subsets=kid_subsets, batch_size=batch_size)
        table.insert(0, by, group)
        rows.append(table)
    return (pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()), skipped


def compare_to_floor(table: pd.DataFrame, keys: Sequence[str] = ("extractor",),
                     candidate: str = "synthetic", floor: str = "real training (floor)") -> pd.DataFrame:
    """Wide view: per ``keys``, the candidate's FID/KID next to the floor's, and FID minus floor.

    KID comes with its 95% bootstrap interval over images (``KID CI low`` / ``KID CI high``), the candidate's
    and the floor's.
    """
    syn = table[table["set"] == candidate].set_index(list(keys))
    ref = table[table["set"] == floor].set_index(list(keys))
    out = pd.DataFrame({"n": syn["n_generated"], "n_reference": syn["n_real"], "FID": syn["fid"],
                        "FID floor": ref["fid"], "FID - floor": syn["fid"] - ref["fid"],
                        "KID": syn["kid_mean"], "KID CI low": syn["kid_ci_low"], "KID CI high": syn["kid_ci_high"],
                        "KID floor": ref["kid_mean"], "KID floor CI low": ref["kid_ci_low"],
                        "KID floor CI high": ref["kid_ci_high"]})
    return out.reset_index()


# -- guidance sweep -------------------------------------------------------------------------------------------
def synthetic_conditions(synthetic_dir: str | os.PathLike[str], rows: pd.DataFrame, model: Any, size: int):
    """Encoded conditions (and masks) of synthetic manifest rows, to sample the same images again."""
    from diffkd_study.methods.diffkd.diffusion.sample import _load_masks

    if model.mask_conditioning:
        masks, has_mask = _load_masks(rows, synthetic_dir, None, size)
    else:
        masks, has_mask = None, np.zeros(len(rows), dtype=bool)
    return model.encoder.encode_rows(rows, has_mask=has_mask), masks


def guidance_sweep(checkpoint: str | os.PathLike[str], synthetic: ImageSet, synthetic_dir: str | os.PathLike[str],
                   reference: ImageSet, training: ImageSet, *, scales: Sequence[float], n: int, sampler: str,
                   steps: int, seed: int, kid_subsets: int = 50, batch_size: int = 32, device: str = "cpu",
                   progress: bool = False) -> tuple[pd.DataFrame, dict[float, ImageSet]]:
    """FID/KID vs guidance scale (see the module docstring); also the images of each scale."""
    from diffkd_study.methods.diffkd.diffusion.sample import sample_images
    from diffkd_study.methods.diffkd.diffusion.train import load_model

    model, config = load_model(checkpoint)
    size = int(config["train"]["image_size"])
    rows = stratified_subset(synthetic.frame["label"], n, seed)
    frame = synthetic.frame.iloc[rows].reset_index(drop=True)
    conditions, masks = synthetic_conditions(synthetic_dir, frame, model, size)
    sets: dict[float, ImageSet] = {}
    candidates: dict[str, ImageSet] = {}
    for scale in scales:
        images = sample_images(model, config["noise_scheduler"], conditions, masks, image_size=size, sampler=sampler,
                               steps=steps, guidance_scale=float(scale), seed=seed, batch_size=batch_size,
                               device=device, progress=progress)
        sets[float(scale)] = ImageSet(f"guidance {scale:g}", images, frame)
        candidates[f"guidance {scale:g}"] = sets[float(scale)]
    floor_rows = seeded_subset(len(training), min(len(rows), len(training)), seed, "sweep-floor")
    candidates["real training (floor)"] = training.subset(floor_rows)
    table = fidelity_table(candidates, reference, kid_subsets=kid_subsets, batch_size=batch_size)
    table["guidance"] = [float(s.split(" ")[1]) if s.startswith("guidance ") else np.nan for s in table["set"]]
    return table, sets


# -- faithfulness ------------------------------------------------------------------------------------------
def faithfulness_table(training: ImageSet, reference: ImageSet, synthetic: ImageSet, targets: Sequence[str], *,
                       min_per_level: int = 10, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """Probes on domain features of real training images: agreement on real reference and synthetic images."""
    extractor = fidelity.DOMAIN_EXTRACTOR
    records: list[dict[str, Any]] = []
    notes = []
    for target in targets:
        if target not in training.frame.columns or target not in synthetic.frame.columns:
            notes.append(f"{target}: not a column of both the training and the synthetic table")
            continue
        result = fidelity.conditional_faithfulness(
            training.features[extractor], training.frame[target].tolist(),
            {"real reference (held out)": (reference.features[extractor], reference.frame[target].tolist()),
             "synthetic": (synthetic.features[extractor], synthetic.frame[target].tolist())},
            target=target, min_per_level=min_per_level, seed=seed)
        if result is None:
            notes.append(f"{target}: fewer than two levels with {min_per_level} training images; not probed")
            continue
        if result.excluded_levels:
            notes.append(f"{target}: level(s) {result.excluded_levels} have fewer than {min_per_level} training "
                         "images and were left out of its probe")
        records.extend(result.records())
    return pd.DataFrame(records), notes


# -- memorization ------------------------------------------------------------------------------------------
def memorization_table(audit: fidelity.MemorizationAudit, synthetic: ImageSet, training: ImageSet) -> pd.DataFrame:
    """One row per synthetic image: nearest training image and distance per space, thresholds, ``flagged``."""
    train_ids = training.frame["image_id"].astype(str).to_numpy()
    out = pd.DataFrame({"image_id": synthetic.frame["image_id"].astype(str).to_numpy()})
    if "source_image_id" in synthetic.frame.columns:
        out["source_image_id"] = synthetic.frame["source_image_id"].astype(str).to_numpy()
    for space, nn in audit.spaces.items():
        out[f"nearest_{space}_image_id"] = train_ids[nn.index]
        out[f"{space}_distance"] = nn.distance
        out[f"{space}_threshold"] = nn.threshold
        out[f"{space}_flagged"] = nn.distance <= nn.threshold
        if "source_image_id" in out.columns:
            out[f"nearest_{space}_is_source"] = out[f"nearest_{space}_image_id"] == out["source_image_id"]
    flagged = np.zeros(len(out), dtype=bool)
    flagged[audit.flagged] = True
    out["flagged"] = flagged
    return out


def write_table(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``frame`` as CSV (no index, ``\\n`` line ends) to ``path`` atomically and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")
    return path


def read_generation(synthetic_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str]) -> tuple[dict, Path]:
    """The synthetic set's ``generation.json`` and the checkpoint folder it names (sha256 checked)."""
    from diffkd_study.methods.diffkd.diffusion.train import checkpoint_sha256

    record_path = Path(synthetic_dir) / "generation.json"
    if not record_path.is_file():
        raise FileNotFoundError(f"{record_path} not found: run the diffusion stage first")
    record = json.loads(record_path.read_text(encoding="utf-8"))["generation"]
    checkpoint = Path(run_dir) / "diffusion" / record["checkpoint"]
    if not (checkpoint / "model.safetensors").is_file():
        raise FileNotFoundError(f"{checkpoint}: the checkpoint that sampled {synthetic_dir} is missing")
    digest = checkpoint_sha256(checkpoint)
    if digest != record["checkpoint_sha256"]:
        raise ValueError(f"{checkpoint}: sha256 {digest[:12]}… differs from the {record['checkpoint_sha256'][:12]}… "
                         f"recorded in {record_path}; re-run the diffusion stage")
    return record, checkpoint
