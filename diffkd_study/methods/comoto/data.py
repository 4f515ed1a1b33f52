"""Detection data: manifest rows with boxes -> letterboxed, cached grayscale images and network-frame boxes.

Loading (:func:`load_detection_data`)
    The manifest is validated first (:func:`diffkd_study.data.validate.validate_manifest`: missing or
    corrupt files, unparsable boxes, boxes outside the image, unknown labels...); any error stops
    the load with the validator's report, which names the file, CSV line and rule. Two detection
    rules are added here, with the same kind of message: a row whose label is lesion-free (``normal``)
    must have no box (rule ``lesion-free-with-box``), and the ``scale`` column, where used, must be a
    positive number (rule ``invalid-scale``). A row with a lesion label but no box (mini-MIAS lists 4
    abnormalities without coordinates) can be neither a positive nor a negative image: it is left
    out and listed in ``excluded`` with the reason.

Pixels
    Every image is decoded once into the preprocessing cache (:func:`diffkd_study.data.cache.build_cache`)
    at ``S x S`` with ``resize_mode="pad"``: scaled to fit, aspect kept, centred on black
    (:class:`Letterbox` reproduces that arithmetic to map boxes). Letterboxing instead of the
    official fixed ``[1024, 2048]`` stretch keeps lesions' shapes and lets a square feature grid cover
    both the portrait DBT slices and the square mammograms.

Boxes
    The manifest's ``[x, y, w, h]`` (top-left origin, stored-image pixels) become ``(x, y, x + w, y + h)``
    in the stored image (``boxes``: what evaluation compares against) and, scaled and offset, in the
    network frame (:meth:`DetectionData.network_boxes`: what training uses).

Hit distance
    ``min_distance`` per image = ``hit_min_distance`` (pixels of the full-resolution release; official
    BCS-DBT: 100) x the image's stored/release pixel-size ratio: the manifest's ``scale`` column
    (BCS-DBT slices: 0.5) or one fixed ratio (mini-MIAS: 512 / 1024 = 0.5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from diffkd_study.data.cache import build_cache, pixel_sources
from diffkd_study.data.schema import Manifest, read_manifest, row_boxes
from diffkd_study.data.validate import DEFAULT_LESION_FREE_LABELS, validate_manifest

__all__ = [
    "BatchStream",
    "DetectionData",
    "DetectionDataError",
    "Letterbox",
    "letterbox",
    "load_detection_data",
    "network_batch",
]


class DetectionDataError(ValueError):
    """A detection manifest cannot be used; the message names the file, line and rule."""


@dataclass(frozen=True)
class Letterbox:
    """How a ``width x height`` stored image sits in the ``size x size`` network input (cache ``pad`` mode)."""

    width: int
    height: int
    size: int
    new_width: int
    new_height: int
    offset_x: int
    offset_y: int

    def to_network(self, boxes: np.ndarray) -> np.ndarray:
        """(K, 4) xyxy stored-image boxes -> network-frame boxes."""
        sx, sy = self.new_width / self.width, self.new_height / self.height
        out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * [sx, sy, sx, sy]
        return out + [self.offset_x, self.offset_y, self.offset_x, self.offset_y]

    def to_image(self, boxes: np.ndarray) -> np.ndarray:
        """(K, 4) network-frame boxes -> stored-image boxes, clipped to the image."""
        sx, sy = self.new_width / self.width, self.new_height / self.height
        out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) - [self.offset_x, self.offset_y] * 2
        out = out / [sx, sy, sx, sy]
        out[:, 0::2] = out[:, 0::2].clip(0, self.width)
        out[:, 1::2] = out[:, 1::2].clip(0, self.height)
        return out


def letterbox(width: int, height: int, size: int) -> Letterbox:
    """The placement ``diffkd_study.data.cache`` uses for ``resize_mode="pad"`` (same rounding)."""
    scale = min(size / width, size / height)
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    return Letterbox(width, height, size, new_w, new_h, (size - new_w) // 2, (size - new_h) // 2)


@dataclass
class DetectionData:
    """Images (memory-mapped cache rows), boxes and metadata of a detection manifest, or a subset of it."""

    source: str
    image_size: int
    image_ids: np.ndarray
    patient_ids: np.ndarray
    labels: np.ndarray
    boxes: list[np.ndarray]  # stored-image xyxy, (K, 4) per image
    letterboxes: list[Letterbox]
    min_distance: np.ndarray  # hit reach in stored-image pixels, per image
    pixels: np.ndarray = field(repr=False)  # the cache's (N_cache, S, S) uint8 array
    positions: np.ndarray = field(repr=False)  # row of each image in ``pixels``
    excluded: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["image_id", "reason"]))

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def has_lesion(self) -> np.ndarray:
        """One bool per image: whether it has at least one box."""
        return np.array([len(b) > 0 for b in self.boxes], dtype=bool)

    @property
    def n_boxes(self) -> int:
        """The number of boxes over all images."""
        return int(sum(len(b) for b in self.boxes))

    def subset(self, indices: Sequence[int] | np.ndarray) -> DetectionData:
        """The images at ``indices`` (in that order), sharing the same pixel array."""
        idx = np.asarray(indices, dtype=np.int64)
        return replace(
            self,
            image_ids=self.image_ids[idx],
            patient_ids=self.patient_ids[idx],
            labels=self.labels[idx],
            boxes=[self.boxes[i] for i in idx],
            letterboxes=[self.letterboxes[i] for i in idx],
            min_distance=self.min_distance[idx],
            positions=self.positions[idx],
        )

    def image(self, i: int) -> np.ndarray:
        """The letterboxed (S, S) uint8 image of row ``i``."""
        return np.asarray(self.pixels[self.positions[i]])

    def network_boxes(self, i: int) -> np.ndarray:
        """The boxes of image ``i`` in network-input pixels (after its letterbox)."""
        return self.letterboxes[i].to_network(self.boxes[i])

    def truth(self) -> dict[str, np.ndarray]:
        """image_id -> stored-image GT boxes, for :mod:`diffkd_study.metrics.froc`."""
        return {str(i): b for i, b in zip(self.image_ids, self.boxes, strict=True)}

    def reach(self) -> dict[str, float]:
        """``{image_id: hit reach in stored-image pixels}``, the ``min_distance`` of the FROC matching."""
        return {str(i): float(d) for i, d in zip(self.image_ids, self.min_distance, strict=True)}

    def summary(self) -> dict[str, Any]:
        """Counts for the records: source, images, patients, images with a lesion, boxes, excluded rows."""
        return {
            "source": self.source, "n_images": len(self), "n_patients": int(pd.Series(self.patient_ids).nunique()),
            "n_lesion_images": int(self.has_lesion.sum()), "n_boxes": self.n_boxes,
            "n_excluded": len(self.excluded),
        }


def _where(manifest: Manifest, index: Any) -> str:
    name = str(manifest.path) if manifest.path is not None else "<manifest>"
    return f"{name}:{manifest.csv_line(index)} [image_id={manifest.df.at[index, 'image_id']}]"


def _row_scale(manifest: Manifest, index: Any, release_scale: float | str) -> float:
    if not isinstance(release_scale, str):
        return float(release_scale)
    raw = manifest.df.at[index, release_scale]
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise DetectionDataError(
            f"{_where(manifest, index)} error invalid-scale: column {release_scale!r} must be a positive number "
            f"(stored / release pixel size); got {raw!r}"
        )
    return value


def load_detection_data(
    manifest: str | Path | Manifest,
    root: str | Path,
    image_size: int,
    *,
    hit_min_distance: float = 100.0,
    release_scale: float | str = 1.0,
    lesion_free_labels: Sequence[str] = DEFAULT_LESION_FREE_LABELS,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> DetectionData:
    """Validate a detection manifest, cache its images at ``image_size`` (letterboxed) and read its boxes.

    ``hit_min_distance``: the fixed part of the hit reach, in pixels of the full-resolution release.
    ``release_scale``: stored / release pixel-size ratio, one number for every row or the name of a
    manifest column holding it per row (a missing column or a non-positive value is an error).
    """
    manifest = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    name = str(manifest.path) if manifest.path is not None else "<manifest>"
    df = manifest.df
    if "boxes" not in df.columns and "box_x" not in df.columns:
        raise DetectionDataError(
            f"{name}: error missing-column: a detection manifest needs a 'boxes' column (JSON [[x, y, w, h], ...]) "
            f"or box_x/box_y/box_w/box_h; columns are {list(df.columns)}"
        )
    if isinstance(release_scale, str) and release_scale not in df.columns:
        raise DetectionDataError(f"{name}: error missing-column: the pixel-scale column {release_scale!r} is absent")
    report = validate_manifest(manifest, root, lesion_free_labels=lesion_free_labels, progress=progress)
    if not report.ok:
        raise DetectionDataError(report.format())

    keep, excluded, boxes, scales = [], [], [], []
    for index, row in df.iterrows():
        xywh = row_boxes(row.to_dict())  # parsed by the validator already: cannot fail here
        label = row["label"]
        if label in lesion_free_labels and xywh:
            raise DetectionDataError(
                f"{_where(manifest, index)} error lesion-free-with-box: label {label!r} is lesion-free but the row "
                f"has {len(xywh)} box(es)"
            )
        if label not in lesion_free_labels and not xywh:
            excluded.append({"image_id": row["image_id"], "reason": f"label {label!r} but no lesion box (unlocated)"})
            continue
        keep.append(index)
        boxes.append(np.array([[x, y, x + w, y + h] for x, y, w, h in xywh], dtype=np.float64).reshape(-1, 4))
        scales.append(_row_scale(manifest, index, release_scale))
    if not keep:
        raise DetectionDataError(f"{name}: no usable rows (every row is a lesion without a box)")

    cache = build_cache(manifest, root, size=image_size, mode="L", resize_mode="pad", cache_dir=cache_dir,
                        progress=progress)
    sources = pixel_sources(manifest)
    kept_sources = [sources[df.index.get_loc(i)] for i in keep]
    kept = df.loc[keep]
    letterboxes = [letterbox(*report.image_sizes[str(i)], image_size) for i in kept["image_id"]]
    return DetectionData(
        source=name,
        image_size=image_size,
        image_ids=kept["image_id"].astype(str).to_numpy(),
        patient_ids=kept["patient_id"].astype(str).to_numpy(),
        labels=kept["label"].astype(str).to_numpy(),
        boxes=boxes,
        letterboxes=letterboxes,
        min_distance=np.asarray(scales, dtype=np.float64) * float(hit_min_distance),
        pixels=cache.images,
        positions=cache.positions(kept_sources),
        excluded=pd.DataFrame(excluded, columns=["image_id", "reason"]),
    )


def network_batch(
    data: DetectionData, indices: Sequence[int], flips: Sequence[bool], device: torch.device | str = "cpu"
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Images (1, S, S) in [0, 1] and RetinaNet targets (network-frame boxes, label 0), optionally flipped.

    A horizontal flip mirrors the letterboxed image and its boxes (``x -> S - x``).
    """
    size = data.image_size
    images, targets = [], []
    for i, flip in zip(indices, flips, strict=True):
        pixels = data.image(int(i))
        boxes = data.network_boxes(int(i))
        if flip:
            pixels = pixels[:, ::-1]
            boxes = np.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], axis=1)
        images.append(torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32) / 255.0)[None].to(device))
        targets.append({
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).to(device),
            "labels": torch.zeros(len(boxes), dtype=torch.int64, device=device),
        })
    return images, targets


class BatchStream:
    """Endless batches of indices: consecutive seeded permutations of ``range(n)``, cut into ``batch_size``.

    Every image is used once per pass; a batch may span two passes (and holds repeats when
    ``n < batch_size``), so every batch is full. Flip decisions come from the same generator.
    """

    def __init__(self, n: int, batch_size: int, seed: int, flip_prob: float = 0.0):
        if n < 1:
            raise ValueError("cannot draw batches from an empty set")
        self.n, self.batch_size, self.flip_prob = n, batch_size, flip_prob
        self.rng = np.random.default_rng(seed)
        self._queue: list[int] = []

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        """The next batch: ``(indices (batch_size,), flip flags (batch_size,) bool)``."""
        while len(self._queue) < self.batch_size:
            self._queue.extend(self.rng.permutation(self.n).tolist())
        batch, self._queue = self._queue[: self.batch_size], self._queue[self.batch_size :]
        flips = self.rng.random(self.batch_size) < self.flip_prob
        return np.asarray(batch, dtype=np.int64), flips
