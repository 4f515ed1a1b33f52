"""Lesion-detection evaluation: hits by centre distance, FROC, sensitivity at k false positives per image.

The hit and counting rules are the official BCS-DBT (Duke DBT challenge) metric, adapted from volumes to
2-D images; the official code, the slice condition dropped here and the two official-code problems fixed
here are in docs/methods/comoto.md §2.5, §2.6 items 5 and 6, and §2.7 ("Metric").

Hit
    A detection hits a ground-truth (GT) box when the distance between the detection's box centre and
    the GT box centre is at most ``max(half the GT box diagonal, min_distance)`` (inclusive).
    ``min_distance`` is given per image, in the pixels of the frame the boxes are in, so callers scale
    the official 100 px of the full-resolution DBT volume to their resolution. A detection within reach
    of several GT boxes is assigned to the nearest, whether or not that box was already found by a
    higher-scoring detection.

Counting
    At a score threshold ``t`` the detections with ``score >= t`` are kept. A GT box counts once as a
    true positive however many detections hit it; a detection that hits an already-found box is
    neither a second true positive nor a false positive. Every other detection is a false positive.
    Sensitivity = found GT boxes / all GT boxes; false positives per image = false positives /
    number of images evaluated (images without GT boxes included: they can only hold false
    positives). Each image counts once however many boxes it holds.

FROC and sensitivity at k FPs per image
    The FROC curve has one operating point per distinct score (ties enter together), starting at
    (0 FPs, 0 sensitivity). ``method="step"`` is the official rule: the highest sensitivity among
    operating points with at most k FPs per image. ``method="interpolate"`` (default) reduces the curve
    to its upper envelope (the highest sensitivity at each distinct FP rate) and interpolates linearly
    in the FP rate between the two envelope points around k. Both agree where an operating point has
    exactly k FPs per image. Beyond the last operating point (the detector produced fewer than k false
    positives per image at its lowest score) the curve is extended flat at its final sensitivity: no
    threshold can find more boxes. The result records whether k was reached.

Mean sensitivity
    The mean of the sensitivities at 1, 2, 3 and 4 FPs per image: CoMoTo's headline metric.

Boxes are ``(x1, y1, x2, y2)`` in pixels. :func:`evaluate_detections` is the one-call API; the
accumulating :class:`FROCMetric` gathers images one at a time (MONAI style) and gives the same
result. :func:`fold_summary` gives mean +- SD across cross-validation folds.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "DETECTION_COLUMNS",
    "DEFAULT_FPS",
    "FROCMetric",
    "FROCResult",
    "evaluate_detections",
    "fold_summary",
    "froc_curve",
    "match_detections",
    "mean_sensitivity",
    "sensitivity_at",
]

DETECTION_COLUMNS: tuple[str, ...] = ("image_id", "score", "x1", "y1", "x2", "y2")
DEFAULT_FPS: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)
SensitivityMethod = Literal["interpolate", "step"]
SENSITIVITY_METHODS: tuple[str, ...] = typing.get_args(SensitivityMethod)

Truth = Mapping[str, Any]  # image_id -> (K, 4) xyxy boxes (K may be 0)


def _truth_arrays(truth: Truth) -> dict[str, np.ndarray]:
    out = {}
    for image_id, boxes in truth.items():
        array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if len(boxes) else np.zeros((0, 4))
        if not np.isfinite(array).all():
            raise ValueError(f"ground truth of image {image_id!r} has non-finite coordinates: {array.tolist()}")
        bad = (array[:, 2] <= array[:, 0]) | (array[:, 3] <= array[:, 1])
        if bad.any():
            raise ValueError(
                f"ground-truth box {array[bad][0].tolist()} of image {image_id!r} is not (x1, y1, x2, y2) "
                "with x2 > x1 and y2 > y1"
            )
        out[str(image_id)] = array
    return out


def _min_distances(min_distance: float | Mapping[str, float], images: Iterable[str]) -> dict[str, float]:
    if isinstance(min_distance, Mapping):
        missing = [i for i in images if i not in min_distance]
        if missing:
            raise ValueError(f"min_distance is not given for {len(missing)} image(s), e.g. {missing[:3]}")
        values = {i: float(min_distance[i]) for i in images}
    else:
        values = dict.fromkeys(images, float(min_distance))
    bad = {i: v for i, v in values.items() if not (math.isfinite(v) and v >= 0)}
    if bad:
        raise ValueError(f"min_distance must be finite and >= 0; got {dict(list(bad.items())[:3])}")
    return values


def _check_detections(detections: pd.DataFrame, truth: Mapping[str, np.ndarray]) -> pd.DataFrame:
    missing = [c for c in DETECTION_COLUMNS if c not in detections.columns]
    if missing:
        raise ValueError(
            f"detections need the columns {list(DETECTION_COLUMNS)}; missing {missing} (have {list(detections.columns)})"
        )
    frame = detections.copy()
    frame["image_id"] = frame["image_id"].astype(str)
    for column in DETECTION_COLUMNS[1:]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    values = frame[list(DETECTION_COLUMNS[1:])].to_numpy()
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise ValueError(f"detection row {row} has a missing or non-finite score or coordinate: {detections.iloc[row].to_dict()}")
    inverted = (frame["x2"] < frame["x1"]) | (frame["y2"] < frame["y1"])
    if inverted.any():
        row = int(np.flatnonzero(inverted.to_numpy())[0])
        raise ValueError(f"detection row {row} has x2 < x1 or y2 < y1: {detections.iloc[row].to_dict()}")
    unknown = sorted(set(frame["image_id"]) - set(truth))
    if unknown:
        raise ValueError(
            f"{len(unknown)} detection image_id(s) have no ground-truth entry, e.g. {unknown[:3]}; "
            "list every evaluated image in the ground truth (with no boxes for negatives)"
        )
    return frame.reset_index(drop=True)


def match_detections(
    detections: pd.DataFrame, truth: Truth, min_distance: float | Mapping[str, float]
) -> pd.DataFrame:
    """The detections with ``hit`` (bool), ``gt_index`` (nearest GT box in reach, else -1) and ``distance``.

    ``truth`` maps every evaluated image to its (K, 4) GT boxes; ``min_distance`` is one value or one
    per image, in the boxes' pixels (see the module notes).
    """
    boxes = _truth_arrays(truth)
    frame = _check_detections(detections, boxes)
    reach = _min_distances(min_distance, boxes)
    hit = np.zeros(len(frame), dtype=bool)
    gt_index = np.full(len(frame), -1, dtype=np.int64)
    distance = np.full(len(frame), np.nan)
    for image_id, rows in frame.groupby("image_id").groups.items():
        gt = boxes[str(image_id)]
        if len(gt) == 0:
            continue
        rows = np.asarray(rows)
        part = frame.loc[rows]
        pred_centre = np.stack([(part["x1"] + part["x2"]) / 2, (part["y1"] + part["y2"]) / 2], axis=1)
        gt_centre = np.stack([(gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2], axis=1)
        radius = np.maximum(np.hypot(gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]) / 2, reach[str(image_id)])
        dist = np.linalg.norm(pred_centre[:, None, :] - gt_centre[None, :, :], axis=2)  # (n_pred, K)
        in_reach = dist <= radius[None, :]
        nearest = np.where(in_reach, dist, np.inf).argmin(axis=1)
        found = in_reach.any(axis=1)
        hit[rows] = found
        gt_index[rows] = np.where(found, nearest, -1)
        distance[rows] = np.where(found, dist[np.arange(len(rows)), nearest], dist.min(axis=1))
    frame["hit"] = hit
    frame["gt_index"] = gt_index
    frame["distance"] = distance
    return frame


def froc_curve(matched: pd.DataFrame, n_images: int, n_boxes: int) -> pd.DataFrame:
    """Operating points of matched detections: one row per distinct score, plus the start at (0, 0).

    Columns: ``threshold`` (keep ``score >= threshold``; ``inf`` for the start), ``n_detections``,
    ``tp`` (GT boxes found), ``fp``, ``sensitivity`` (tp / n_boxes) and ``fps_per_image``
    (fp / n_images).
    """
    if n_images < 1:
        raise ValueError("n_images must be >= 1")
    if n_boxes < 1:
        raise ValueError("the ground truth has no boxes: sensitivity is undefined")
    ordered = matched.sort_values(["score", "image_id", "gt_index"], ascending=[False, True, True], kind="mergesort")
    hits = ordered["hit"].to_numpy(dtype=bool)
    keys = list(zip(ordered["image_id"], ordered["gt_index"], strict=True))
    seen: set[tuple[str, int]] = set()
    new_box = np.zeros(len(ordered), dtype=bool)
    for i, (key, is_hit) in enumerate(zip(keys, hits, strict=True)):
        if is_hit and key not in seen:
            seen.add(key)
            new_box[i] = True
    tp = np.cumsum(new_box)
    fp = np.cumsum(~hits)
    scores = ordered["score"].to_numpy()
    last_of_score = np.r_[scores[1:] != scores[:-1], True] if len(scores) else np.zeros(0, dtype=bool)
    curve = pd.DataFrame({
        "threshold": np.r_[np.inf, scores[last_of_score]],
        "n_detections": np.r_[0, np.flatnonzero(last_of_score) + 1],
        "tp": np.r_[0, tp[last_of_score]],
        "fp": np.r_[0, fp[last_of_score]],
    })
    curve["sensitivity"] = curve["tp"] / n_boxes
    curve["fps_per_image"] = curve["fp"] / n_images
    return curve


def sensitivity_at(
    curve: pd.DataFrame, fps: Sequence[float] = DEFAULT_FPS, method: SensitivityMethod = "interpolate"
) -> dict[float, float]:
    """Sensitivity at each FP rate in ``fps`` (false positives per image) from a :func:`froc_curve`."""
    if method not in ("interpolate", "step"):
        raise ValueError(f"method must be 'interpolate' or 'step'; got {method!r}")
    rate = curve["fps_per_image"].to_numpy(dtype=float)
    sens = curve["sensitivity"].to_numpy(dtype=float)
    out = {}
    for k in fps:
        k = float(k)
        if k < 0:
            raise ValueError(f"FP rates must be >= 0; got {k}")
        if method == "step":
            out[k] = float(sens[rate <= k].max())
            continue
        envelope = pd.Series(sens).groupby(rate).max()
        out[k] = float(np.interp(k, envelope.index.to_numpy(), envelope.to_numpy()))
    return out


def mean_sensitivity(sensitivities: Mapping[float, float]) -> float:
    """The mean of the sensitivities at the given FP rates (CoMoTo's headline metric at 1, 2, 3, 4)."""
    return float(np.mean(list(sensitivities.values())))


@dataclass(frozen=True)
class FROCResult:
    """FROC curve, sensitivities at the requested FP rates, their mean, and the sample sizes."""

    curve: pd.DataFrame
    sensitivity: dict[float, float]
    mean_sensitivity: float
    n_images: int
    n_boxes: int
    n_detections: int
    max_fps_per_image: float  # FP rate at the lowest score: FP rates above it are extrapolated flat
    method: str
    matched: pd.DataFrame = field(repr=False)

    def summary(self, prefix: str = "") -> dict[str, float | int | str]:
        """Flat metrics ``{prefix}sens@<k>fp``, ``mean_sensitivity``, ``n_images``, ``n_boxes``, ``n_detections``
        and ``max_fps_per_image``, for records and tables.
        """
        out: dict[str, float | int | str] = {
            f"{prefix}sens@{k:g}fp": v for k, v in self.sensitivity.items()
        }
        out[f"{prefix}mean_sensitivity"] = self.mean_sensitivity
        out.update({f"{prefix}n_images": self.n_images, f"{prefix}n_boxes": self.n_boxes,
                    f"{prefix}n_detections": self.n_detections,
                    f"{prefix}max_fps_per_image": self.max_fps_per_image})
        return out


def evaluate_detections(
    detections: pd.DataFrame,
    truth: Truth,
    min_distance: float | Mapping[str, float],
    fps: Sequence[float] = DEFAULT_FPS,
    method: SensitivityMethod = "interpolate",
) -> FROCResult:
    """Match, build the FROC and read the sensitivities (see the module notes for every rule)."""
    matched = match_detections(detections, truth, min_distance)
    n_boxes = sum(len(np.asarray(b).reshape(-1, 4)) if len(b) else 0 for b in truth.values())
    curve = froc_curve(matched, len(truth), n_boxes)
    sens = sensitivity_at(curve, fps, method)
    return FROCResult(
        curve=curve, sensitivity=sens, mean_sensitivity=mean_sensitivity(sens), n_images=len(truth),
        n_boxes=n_boxes, n_detections=len(matched), max_fps_per_image=float(curve["fps_per_image"].iloc[-1]),
        method=method, matched=matched,
    )


class FROCMetric:
    """Accumulate images one at a time, then :meth:`aggregate` into a :class:`FROCResult`.

    ``update(image_id, boxes, scores, truth_boxes, min_distance)``: one image's detections (N, 4),
    scores (N,) and GT boxes (K, 4); an image id may be given once.
    """

    def __init__(self, fps: Sequence[float] = DEFAULT_FPS, method: SensitivityMethod = "interpolate"):
        self.fps = tuple(fps)
        self.method = method
        self.reset()

    def reset(self) -> None:
        """Forget every image added."""
        self._detections: list[pd.DataFrame] = []
        self._truth: dict[str, np.ndarray] = {}
        self._reach: dict[str, float] = {}

    def update(self, image_id: str, boxes: Any, scores: Any, truth_boxes: Any, min_distance: float) -> None:
        """Add one image: detections ``boxes`` (N, 4) with ``scores`` (N,), GT ``truth_boxes`` (K, 4), and its hit
        reach ``min_distance``. Raises ``ValueError`` for an image added twice or boxes and scores of different lengths.
        """
        image_id = str(image_id)
        if image_id in self._truth:
            raise ValueError(f"image {image_id!r} was already added")
        pred = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        score = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(pred) != len(score):
            raise ValueError(f"image {image_id!r}: {len(pred)} boxes but {len(score)} scores")
        self._truth[image_id] = np.asarray(truth_boxes, dtype=np.float64).reshape(-1, 4)
        self._reach[image_id] = float(min_distance)
        self._detections.append(pd.DataFrame({
            "image_id": image_id, "score": score,
            "x1": pred[:, 0], "y1": pred[:, 1], "x2": pred[:, 2], "y2": pred[:, 3],
        }))

    def aggregate(self) -> FROCResult:
        """The :class:`FROCResult` of every image added; ``ValueError`` when none was."""
        if not self._truth:
            raise ValueError("no image was added")
        frames = [f for f in self._detections if len(f)]
        detections = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(DETECTION_COLUMNS))
        return evaluate_detections(detections, self._truth, self._reach, self.fps, self.method)


def fold_summary(results: pd.DataFrame, value: str, by: Sequence[str]) -> pd.DataFrame:
    """Mean, SD (n - 1) and number of folds of ``value`` per group of ``by`` (one row per fold in ``results``)."""
    missing = [c for c in [value, *by] if c not in results.columns]
    if missing:
        raise ValueError(f"results lack the column(s) {missing}")
    grouped = results.groupby(list(by), sort=False)[value]
    out = grouped.agg(mean="mean", sd="std", n_folds="count").reset_index()
    return out
