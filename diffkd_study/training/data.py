"""Training data in memory: images at the study resolution as uint8 tensors, with labels and masks.

Classifier training reads its images through the preprocessing cache (decoded and resized once per
manifest and resolution, :mod:`diffkd_study.data.cache`) into one uint8 tensor ``(N, C, H, W)``, so
a batch is an index into memory: no DataLoader workers, no per-image decoding per epoch. A study of
2,000 gray images at 224 px is about 100 MB.

``synthetic`` marks rows from a synthetic manifest (stage 1). Synthetic rows are training rows only:
:func:`load_images` refuses a synthetic row in any other split, and the synthetic set is loaded at
the study resolution from its own folder (images generated at a lower resolution are resized with
the same bilinear, antialiased filter as real ones: stated in the teacher report).

:class:`EpochPlan` draws the rows of one epoch from (seed, epoch) alone: every real training row once
in a seeded permutation, plus ``round(synthetic_ratio * n_real)`` synthetic rows (without replacement
while the synthetic set lasts, with replacement beyond), mixed into the same permutation. Because the
plan is a function of (seed, epoch), a resumed run sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from diffkd_study.data.cache import build_cache, pixel_sources
from diffkd_study.data.schema import Manifest, row_boxes
from diffkd_study.repro import derive_seed
from diffkd_study.training.presets import CLASS_WEIGHTINGS, check_choice

__all__ = ["EpochPlan", "ImageTensors", "class_weights", "concat", "load_images"]


@dataclass
class ImageTensors:
    """Images (uint8 ``N x C x H x W``), integer labels, optional masks (uint8 ``N x 1 x H x W``), ids."""

    images: torch.Tensor
    labels: torch.Tensor
    image_ids: list[str]
    masks: torch.Tensor | None = None
    has_mask: torch.Tensor | None = None  # bool (N,)
    synthetic: torch.Tensor | None = None  # bool (N,)
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.image_ids)
        if self.images.shape[0] != n or self.labels.shape[0] != n:
            raise ValueError(f"images {tuple(self.images.shape)}, labels {tuple(self.labels.shape)} and {n} ids disagree")
        if self.synthetic is None:
            self.synthetic = torch.zeros(n, dtype=torch.bool)
        if self.masks is not None and self.has_mask is None:
            self.has_mask = self.masks.flatten(1).amax(1) > 0

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def channels(self) -> int:
        """Channels per image (1 gray, 3 RGB)."""
        return int(self.images.shape[1])

    @property
    def size(self) -> int:
        """Side of the square images in pixels."""
        return int(self.images.shape[-1])

    def subset(self, rows: torch.Tensor | np.ndarray) -> ImageTensors:
        """The rows ``rows`` (images, labels, ids, masks, synthetic flags) as a new set."""
        index = torch.as_tensor(rows, dtype=torch.long)
        return ImageTensors(
            images=self.images[index], labels=self.labels[index],
            image_ids=[self.image_ids[i] for i in index.tolist()],
            masks=None if self.masks is None else self.masks[index],
            has_mask=None if self.has_mask is None else self.has_mask[index],
            synthetic=self.synthetic[index], classes=self.classes,
        )


def _boxes_mask(rows: pd.DataFrame, heights: list[int], widths: list[int], size: int) -> torch.Tensor:
    """Box masks at ``size`` for rows that have boxes but no mask (a box is a coarse lesion outline)."""
    out = torch.zeros(len(rows), 1, size, size, dtype=torch.uint8)
    for i, (_, row) in enumerate(rows.iterrows()):
        for x, y, w, h in row_boxes(row):
            sx, sy = size / widths[i], size / heights[i]
            x0, y0 = int(np.floor(x * sx)), int(np.floor(y * sy))
            x1, y1 = int(np.ceil((x + w) * sx)), int(np.ceil((y + h) * sy))
            out[i, 0, max(0, y0):min(size, y1), max(0, x0):min(size, x1)] = 1
    return out


def load_images(
    manifest: Manifest,
    root: str | os.PathLike[str],
    *,
    size: int,
    splits: tuple[str, ...] | None = None,
    mode: str = "L",
    resize_mode: str = "stretch",
    roi_margin: float = 0.25,
    via: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    synthetic: bool = False,
    progress: bool = False,
) -> ImageTensors:
    """The rows of ``splits`` (all rows when ``None``) at ``size`` x ``size``, through the preprocessing cache.

    ``resize_mode``/``roi_margin``/``via`` as in :class:`diffkd_study.data.cache.Preprocessing` (``lesion``:
    lesion-centred crops from the masks; ``via``: through that size first). ``synthetic=True`` marks every row synthetic (a stage-1 manifest) and requires them all to be
    training rows. Labels are positions in the manifest's ``label_set``.
    """
    df = manifest.df
    keep = np.ones(len(df), dtype=bool)
    if splits is not None:
        if "split" not in df.columns:
            raise ValueError(f"{manifest.path}: no split column; split the manifest first")
        keep = df["split"].isin(splits).to_numpy()
    if synthetic and "split" in df.columns:
        bad = df[df["split"].astype(str) != "train"]
        if len(bad):
            raise ValueError(
                f"{manifest.path}: synthetic image {bad['image_id'].iloc[0]!r} has split "
                f"{bad['split'].iloc[0]!r}; synthetic images may only be training rows (never validation or test)")
    if not keep.any():
        raise ValueError(f"{manifest.path}: no rows in split(s) {splits}")
    classes = tuple(manifest.schema.label_set)
    rows = df[keep]
    unknown = sorted(set(rows["label"]) - set(classes))
    if unknown:
        raise ValueError(f"{manifest.path}: label(s) {unknown} are not in the label set {list(classes)}")
    # The cache holds every row of the manifest (all splits), so every stage re-uses one cache.
    cache = build_cache(manifest, root, size=size, mode=mode, resize_mode=resize_mode, roi_margin=roi_margin, via=via,
                        cache_dir=cache_dir, progress=progress)
    sources = [s for s, k in zip(pixel_sources(manifest), keep, strict=True) if k]
    positions = cache.positions(sources)
    images = torch.from_numpy(np.ascontiguousarray(cache.images[positions]))
    images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2).contiguous()
    masks = has_mask = None
    if cache.masks is not None:
        masks = torch.from_numpy(np.ascontiguousarray(cache.masks[positions]) > 0).to(torch.uint8)[:, None]
        has_mask = torch.from_numpy(cache.has_mask[positions].copy())
    elif "boxes" in rows.columns or "box_x" in rows.columns:
        heights, widths = _original_sizes(rows, root)
        masks = _boxes_mask(rows, heights, widths, size)
        has_mask = masks.flatten(1).amax(1) > 0
    labels = torch.from_numpy(np.array(rows["label"].map({c: i for i, c in enumerate(classes)}), dtype=np.int64))
    return ImageTensors(images=images, labels=labels, image_ids=rows["image_id"].astype(str).tolist(),
                        masks=masks, has_mask=has_mask,
                        synthetic=torch.full((len(rows),), synthetic, dtype=torch.bool), classes=classes)


def _original_sizes(rows: pd.DataFrame, root: str | os.PathLike[str]) -> tuple[list[int], list[int]]:
    from PIL import Image

    heights, widths = [], []
    for path in rows["image_path"]:
        with Image.open(Path(root) / str(path)) as img:
            widths.append(img.width)
            heights.append(img.height)
    return heights, widths


def concat(parts: list[ImageTensors]) -> ImageTensors:
    """One set from several (e.g. real + synthetic); they must agree on classes, size and channels."""
    if not parts:
        raise ValueError("nothing to concatenate")
    first = parts[0]
    for part in parts[1:]:
        if part.classes != first.classes or part.images.shape[1:] != first.images.shape[1:]:
            raise ValueError(f"cannot mix sets with classes {part.classes} / {first.classes} and image shapes "
                             f"{tuple(part.images.shape[1:])} / {tuple(first.images.shape[1:])}")
    with_masks = any(p.masks is not None for p in parts)

    def masks_of(p: ImageTensors) -> torch.Tensor:
        return p.masks if p.masks is not None else torch.zeros(len(p), 1, *p.images.shape[-2:], dtype=torch.uint8)

    return ImageTensors(
        images=torch.cat([p.images for p in parts]), labels=torch.cat([p.labels for p in parts]),
        image_ids=[i for p in parts for i in p.image_ids],
        masks=torch.cat([masks_of(p) for p in parts]) if with_masks else None,
        has_mask=torch.cat([p.has_mask if p.has_mask is not None else torch.zeros(len(p), dtype=torch.bool)
                            for p in parts]) if with_masks else None,
        synthetic=torch.cat([p.synthetic for p in parts]), classes=first.classes,
    )


def class_weights_from_counts(counts: np.ndarray, scheme: str = "balanced") -> np.ndarray | None:
    """Cross-entropy class weights (float64) from per-class counts (which may be expected, fractional counts):
    ``balanced`` = ``n / (K * n_c)`` (scikit-learn's), ``frequency`` = ``n / n_c`` rounded to 3 decimals (SSD-KD's
    official weighting), ``none`` = ``None`` (the schemes of :data:`~diffkd_study.training.presets.CLASS_WEIGHTINGS`).

    ``ValueError`` when a class has no count or the scheme is unknown.
    """
    check_choice("class weighting", scheme, CLASS_WEIGHTINGS)
    if scheme == "none":
        return None
    counts = np.asarray(counts, dtype=np.float64)
    if (counts == 0).any():
        raise ValueError(f"class(es) {np.flatnonzero(counts == 0).tolist()} have no training images: cannot weight them")
    n = counts.sum()
    return n / (len(counts) * counts) if scheme == "balanced" else np.round(n / counts, 3)


def class_weights(labels: torch.Tensor, n_classes: int, scheme: str = "balanced") -> torch.Tensor | None:
    """:func:`class_weights_from_counts` of the labels' counts, as a float32 tensor (``None`` for ``none``)."""
    weights = class_weights_from_counts(torch.bincount(labels, minlength=n_classes).numpy(), scheme)
    return None if weights is None else torch.from_numpy(weights).float()


@dataclass(frozen=True)
class EpochPlan:
    """The rows of each epoch (see the module docstring): a function of (seed, epoch) only."""

    real_rows: np.ndarray
    synthetic_rows: np.ndarray
    synthetic_ratio: float
    seed: int

    @classmethod
    def for_set(cls, data: ImageTensors, synthetic_ratio: float, seed: int) -> EpochPlan:
        """The plan for ``data``: its real and synthetic rows, ``synthetic_ratio`` synthetic per real row, ``seed``.

        Raises ``ValueError`` for a negative ratio, or a positive one when ``data`` has no synthetic rows.
        """
        flags = data.synthetic.numpy()
        if synthetic_ratio < 0:
            raise ValueError(f"synthetic_ratio must be >= 0, got {synthetic_ratio}")
        if synthetic_ratio > 0 and not flags.any():
            raise ValueError("synthetic_ratio > 0 but the training set has no synthetic images")
        return cls(np.flatnonzero(~flags), np.flatnonzero(flags), synthetic_ratio, seed)

    @property
    def n_synthetic(self) -> int:
        """Synthetic rows per epoch: ``round(synthetic_ratio * n_real)`` (0 without synthetic rows)."""
        return int(round(self.synthetic_ratio * len(self.real_rows))) if len(self.synthetic_rows) else 0

    def rows(self, epoch: int) -> np.ndarray:
        """The shuffled row indices of epoch ``epoch``: every real row once plus the epoch's synthetic draw
        (without replacement while the pool suffices).
        """
        rng = np.random.default_rng(derive_seed(self.seed, "epoch-plan", epoch))
        k = self.n_synthetic
        pool = self.synthetic_rows
        if k <= len(pool):
            synthetic = rng.choice(pool, size=k, replace=False) if k else pool[:0]
        else:
            synthetic = np.concatenate([rng.permutation(pool), rng.choice(pool, size=k - len(pool), replace=True)])
        return rng.permutation(np.concatenate([self.real_rows, synthetic]))

    def batches(self, epoch: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
        """This rank's batches: global batches of ``batch_size * world_size`` rows, each split by rank.

        A last global batch that would leave a rank fewer than 2 rows is dropped (BatchNorm needs 2).
        """
        rows = self.rows(epoch)
        global_size = batch_size * world_size
        out = []
        for start in range(0, len(rows), global_size):
            chunk = rows[start:start + global_size]
            if len(chunk) < 2 * world_size:
                break
            out.append(np.array_split(chunk, world_size)[rank])
        return out
