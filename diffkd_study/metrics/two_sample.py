"""Real vs synthetic: a classifier two-sample test (C2ST) on the classifier's own input tensors.

If a simple classifier can tell real images (set A) from synthetic ones (set B) on held-out patients, the two
sets differ by a cue the teacher could learn instead of the lesion; an AUC near 0.5 means no such cue is found by
this classifier (Friedman 2003, "On multivariate goodness-of-fit and two-sample testing", SLAC-PUB-10325;
Lopez-Paz & Oquab 2017, ICLR, "Revisiting classifier two-sample tests").

* :func:`c2st_features` runs the test on given feature matrices (e.g. a frozen network's pooled features);
  :func:`c2st_images` computes :func:`image_features` from N x C x H x W tensors (as the teacher gets them) and
  calls it.
* Classifier: standardised features (fitted on the training folds) + L2 logistic regression with balanced class
  weights. ``C`` is chosen in every outer training fold by an inner grouped CV among :data:`C2ST_C_GRID` (rule
  fixed before any result: the highest inner out-of-fold AUC, the smaller ``C`` on a tie; the grid's middle value
  when a training part has too few groups for inner folds); a single float fixes it.
* Folds: ``StratifiedGroupKFold`` (default 5 folds, shuffled with ``seed``) over the groups, so a patient never
  lies in both a training and a test fold. For a synthetic image the caller passes the *source* patient whose
  conditions / mask produced it, so a real patient and its synthetic images fall in the same fold.
* AUC: of the pooled out-of-fold scores, positive = synthetic (B), with the patient-clustered DeLong interval of
  Obuchowski (1997) (clusters = groups; :func:`~diffkd_study.metrics.roc.auc_delong`), Newcombe's interval at
  AUC 0 or 1. The AUC is rank-based, so it stays valid when the sets differ in size (the balanced class weights
  keep the fitted intercept from following each fold's A:B ratio, which would bias pooled scores below 0.5; a
  slight downward bias of cross-validated AUCs under the null remains, mean 0.49 in the unit test's simulation).
* Per class (``labels_a`` / ``labels_b``): the same test on real class c vs synthetic class c, one row per class;
  a scope with fewer than ``min_images`` images or ``min_groups`` groups on a side is *not estimable* (AUC NaN
  and a reason), never a degenerate number.

:meth:`TwoSampleResult.verdict` compares the AUC with the issue's goal (default :data:`C2ST_GOAL` = 0.70).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from diffkd_study.metrics.clustered import check_groups
from diffkd_study.metrics.roc import auc_delong, roc_auc

C2ST_C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0)
C2ST_GOAL = 0.70
DOWNSAMPLE = 16  # the area-downsampled image is DOWNSAMPLE x DOWNSAMPLE
HISTOGRAM_BINS = 32
GRADIENT_BINS = 16
SPECTRUM_BANDS = 16

__all__ = ["C2ST_C_GRID", "C2ST_GOAL", "TwoSampleResult", "c2st_features", "c2st_images", "channel_range",
           "image_feature_names",
           "image_features", "two_sample_table"]


# ----------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------


def _as_array(images: ArrayLike) -> np.ndarray:
    """N x C x H x W array (its own dtype, not copied) from a numpy array or a (CPU or GPU) torch tensor."""
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    x = np.asarray(images)
    if x.ndim != 4:
        raise ValueError(f"images must be N x C x H x W; got shape {x.shape}")
    return x


def channel_range(*image_sets: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel minimum and maximum over all images of all sets: the shared scale of :func:`image_features`.

    Computed once over real and synthetic images together (label-free), so both sets are binned on the same
    edges and "exactly black" means the darkest value of the channel in either set.
    """
    arrays = [_as_array(s) for s in image_sets]
    low = np.min([a.min(axis=(0, 2, 3)) for a in arrays], axis=0).astype(np.float64)
    high = np.max([a.max(axis=(0, 2, 3)) for a in arrays], axis=0).astype(np.float64)
    return low, high


def _area_downsample(gray: np.ndarray, size: int) -> np.ndarray:
    """(n, H, W) -> (n, size, size) block means over a size x size partition (exact area averaging when H, W
    are multiples of size; the nearest integer blocks otherwise)."""
    rows = np.floor(np.linspace(0, gray.shape[1], size + 1)).astype(int)[:-1]
    cols = np.floor(np.linspace(0, gray.shape[2], size + 1)).astype(int)[:-1]
    sums = np.add.reduceat(np.add.reduceat(gray, rows, axis=1), cols, axis=2)
    counts = np.outer(np.diff(np.append(rows, gray.shape[1])), np.diff(np.append(cols, gray.shape[2])))
    return sums / counts


def _radial_spectrum(gray: np.ndarray, bands: int) -> np.ndarray:
    """log10 of the mean power in ``bands`` equal-width rings of spatial frequency from 0 to 0.5 cycles/pixel
    (the image mean removed, then a 2-D Hann window applied, so the jump between opposite edges of the periodic
    image does not leak power into every frequency (Harris 1978, Proc IEEE 66:51); frequencies beyond 0.5, the
    corners, are left out)."""
    window = np.outer(np.hanning(gray.shape[1]), np.hanning(gray.shape[2]))
    centred = (gray - gray.mean(axis=(1, 2), keepdims=True)) * window
    power = np.abs(np.fft.rfft2(centred)) ** 2
    fy = np.fft.fftfreq(gray.shape[1])[:, None]
    fx = np.fft.rfftfreq(gray.shape[2])[None, :]
    ring = np.floor(np.hypot(fy, fx) / 0.5 * bands).astype(int).ravel()
    inside = ring < bands
    flat = power.reshape(power.shape[0], -1)[:, inside]
    counts = np.bincount(ring[inside], minlength=bands)
    sums = np.stack([np.bincount(ring[inside], weights=row, minlength=bands) for row in flat])
    return np.log10(sums / np.maximum(counts, 1) + 1e-12)


def image_feature_names(channels: int) -> list[str]:
    """Column names of :func:`image_features` for images with ``channels`` channels, in its order."""
    return ([f"down_{r}_{c}" for r in range(DOWNSAMPLE) for c in range(DOWNSAMPLE)]
            + [f"hist_{k}" for k in range(HISTOGRAM_BINS)]
            + ["grad_mean", "grad_sd", "grad_q50", "grad_q90", "grad_q99", "grad_flat_fraction"]
            + [f"grad_hist_{k}" for k in range(GRADIENT_BINS)]
            + [f"spectrum_{k}" for k in range(SPECTRUM_BANDS)]
            + ["black_fraction"]
            + [f"{stat}_channel{c}" for c in range(channels) for stat in ("mean", "sd")])


def image_features(images: ArrayLike, value_range: tuple[ArrayLike, ArrayLike] | None = None,
                   chunk: int = 128) -> np.ndarray:
    """Cheap, shortcut-sensitive descriptors of N x C x H x W image tensors (no network), one row per image.

    Each channel is scaled to [0, 1] by ``value_range`` (per-channel low and high; default :func:`channel_range`
    of ``images``: pass the range of real and synthetic images together so both share one scale), and the
    gray image is the channel mean. Columns (:func:`image_feature_names`):

    1. the gray image area-downsampled to 16 x 16 (layout, vignetting, borders);
    2. its intensity histogram, 32 equal bins on [0, 1], as fractions (contrast, saturation, quantisation);
    3. gradient magnitude (forward differences): mean, SD, 50/90/99th percentiles, the fraction of flat pixels
       (< 1e-6), and a 16-bin histogram on [0, 0.5] (the last bin open; sharpness, noise, edges);
    4. the radially averaged power spectrum (Hann-windowed), log10 mean power in 16 rings from 0 to 0.5
       cycles/pixel (blur, resolution, upsampling or JPEG artefacts);
    5. the fraction of exactly black pixels: every channel at its ``value_range`` low (padding, masks);
    6. per-channel mean and SD (colour or brightness shifts).

    ``chunk`` images are converted to float64 and processed at a time, so large sets need little extra memory.
    """
    x = _as_array(images)
    low, high = channel_range(x) if value_range is None else (np.asarray(v, float) for v in value_range)
    low, high = np.broadcast_to(low, (x.shape[1],)), np.broadcast_to(high, (x.shape[1],))
    scale = np.where(high > low, high - low, 1.0)
    rows = []
    for start in range(0, x.shape[0], chunk):
        part = (x[start : start + chunk].astype(np.float64) - low[:, None, None]) / scale[:, None, None]
        gray = part.mean(axis=1)
        n = gray.shape[0]
        hist = np.stack([np.histogram(np.clip(g, 0, 1), HISTOGRAM_BINS, (0.0, 1.0))[0] for g in gray]) / gray[0].size
        grad = np.hypot(np.diff(gray, axis=2)[:, :-1, :], np.diff(gray, axis=1)[:, :, :-1]).reshape(n, -1)
        grad_stats = np.column_stack([grad.mean(1), grad.std(1), *np.quantile(grad, [0.5, 0.9, 0.99], axis=1),
                                      (grad < 1e-6).mean(1)])
        grad_hist = np.stack([np.histogram(np.minimum(g, 0.5), GRADIENT_BINS, (0.0, 0.5))[0] for g in grad])
        black = np.all(np.abs(part) <= 1e-6, axis=1).reshape(n, -1).mean(1)
        moments = np.stack([part.mean(axis=(2, 3)), part.std(axis=(2, 3))], axis=2).reshape(n, -1)
        rows.append(np.column_stack([_area_downsample(gray, DOWNSAMPLE).reshape(n, -1), hist, grad_stats,
                                     grad_hist / grad.shape[1], _radial_spectrum(gray, SPECTRUM_BANDS), black,
                                     moments]))
    return np.vstack(rows)


# ----------------------------------------------------------------------------------------------
# The test
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwoSampleResult:
    """One scope of the classifier two-sample test: sizes, the out-of-fold AUC (positive = set B) and its CI.

    ``auc``, ``ci_low`` and ``ci_high`` are NaN and ``reason`` says why when the scope is not estimable;
    ``c_chosen`` lists the inverse regularisation used in each outer fold.
    """

    scope: str
    n_a: int
    n_b: int
    groups_a: int
    groups_b: int
    auc: float
    ci_low: float
    ci_high: float
    folds: int
    level: float = 0.95
    ci_method: str = ""
    c_chosen: tuple[float, ...] = ()
    reason: str = ""

    @property
    def estimable(self) -> bool:
        """Whether an AUC was computed (``reason`` empty)."""
        return not self.reason

    def verdict(self, threshold: float = C2ST_GOAL) -> str:
        """``met`` when the AUC is at most ``threshold``, saying whether the CI's upper bound is below it too;
        ``not met`` otherwise (saying whether the CI's lower bound is above it); ``not estimable`` with the reason.
        """
        if not self.estimable:
            return f"not estimable: {self.reason}"
        if self.auc <= threshold:
            bound = "below" if self.ci_high < threshold else "not below"
            return f"met (AUC {self.auc:.3f} <= {threshold:.2f}; CI upper bound {self.ci_high:.3f} {bound} it)"
        bound = "above" if self.ci_low > threshold else "not above"
        return f"not met (AUC {self.auc:.3f} > {threshold:.2f}; CI lower bound {self.ci_low:.3f} {bound} it)"


def _splits(y: np.ndarray, codes: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Grouped, stratified folds whose every training part holds both sets; None when that cannot be had."""
    k = min(folds, int(np.unique(codes).size))
    if k < 2:
        return None
    splits = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(y, y, codes))
    if any(np.unique(y[train]).size < 2 for train, _ in splits):
        return None
    return splits


def _model(c: float):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=5000))


def _choose_c(x: np.ndarray, y: np.ndarray, codes: np.ndarray, grid: Sequence[float], inner_folds: int,
              seed: int) -> float:
    """The grid's C with the highest inner out-of-fold AUC (the smaller C on a tie); the grid's middle value
    when the training part has too few groups for inner folds."""
    if len(grid) == 1:
        return float(grid[0])
    splits = _splits(y, codes, inner_folds, seed)
    if splits is None:
        return float(sorted(grid)[len(grid) // 2])
    best_c, best_auc = math.nan, -math.inf
    for c in sorted(grid):
        scores = np.empty(y.size)
        for train, test in splits:
            scores[test] = _model(c).fit(x[train], y[train]).decision_function(x[test])
        auc = roc_auc(y, scores)
        if auc > best_auc:
            best_c, best_auc = float(c), auc
    return best_c


def _scope_test(scope: str, x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, folds: int, seed: int,
                c: float | Sequence[float], inner_folds: int, min_images: int, min_groups: int,
                level: float) -> TwoSampleResult:
    n_a, n_b = int((~y).sum()), int(y.sum())
    g_a, g_b = int(np.unique(groups[~y]).size), int(np.unique(groups[y]).size)
    sizes = dict(scope=scope, n_a=n_a, n_b=n_b, groups_a=g_a, groups_b=g_b, level=level)
    small = [f"{side} has {n} images / {g} groups" for side, n, g in (("A", n_a, g_a), ("B", n_b, g_b))
             if n < min_images or g < min_groups]
    if small:
        return TwoSampleResult(**sizes, auc=math.nan, ci_low=math.nan, ci_high=math.nan, folds=0,
                               reason="; ".join(small) + f" (needs >= {min_images} images and >= {min_groups} groups)")
    codes = check_groups(groups, y.size)
    splits = _splits(y, codes, folds, seed)
    if splits is None:
        return TwoSampleResult(**sizes, auc=math.nan, ci_low=math.nan, ci_high=math.nan, folds=0,
                               reason="no grouped split leaves both sets in every training fold")
    grid = (float(c),) if isinstance(c, int | float) else tuple(float(v) for v in c)
    scores, chosen = np.empty(y.size), []
    for train, test in splits:
        c_fold = _choose_c(x[train], y[train], codes[train], grid, inner_folds, seed)
        chosen.append(c_fold)
        scores[test] = _model(c_fold).fit(x[train], y[train]).decision_function(x[test])
    result = auc_delong(y, scores, level=level, groups=codes)
    return TwoSampleResult(**sizes, auc=result.auc, ci_low=result.ci_low, ci_high=result.ci_high, folds=len(splits),
                           ci_method=result.method, c_chosen=tuple(chosen))


def c2st_features(features_a: ArrayLike, features_b: ArrayLike, groups_a: ArrayLike, groups_b: ArrayLike, *,
                  labels_a: ArrayLike | None = None, labels_b: ArrayLike | None = None, folds: int = 5,
                  seed: int = 0, c: float | Sequence[float] = C2ST_C_GRID, inner_folds: int = 3,
                  min_images: int = 10, min_groups: int = 5, level: float = 0.95) -> list[TwoSampleResult]:
    """Classifier two-sample test of feature rows A (real) vs B (synthetic): scope ``all``, then one
    ``class=<label>`` scope per label when ``labels_a`` and ``labels_b`` are given (real class c vs synthetic
    class c; labels missing from one side give a not-estimable row).

    ``groups_a`` / ``groups_b`` hold one id per row in a shared namespace (a synthetic row carries its source
    patient's id). ``c`` is a grid (inner grouped CV with ``inner_folds`` folds picks it per outer fold) or a
    fixed float. A scope needs ``min_images`` rows and ``min_groups`` groups on each side (default 10 and 5,
    one group per fold at least); otherwise it is not estimable.
    """
    xa, xb = np.asarray(features_a, dtype=float), np.asarray(features_b, dtype=float)
    if xa.ndim != 2 or xb.ndim != 2 or xa.shape[1] != xb.shape[1]:
        raise ValueError(f"features must be two matrices with the same columns; got {xa.shape} and {xb.shape}")
    if not (np.isfinite(xa).all() and np.isfinite(xb).all()):
        raise ValueError("features hold NaN or infinite values")
    ga, gb = (np.asarray(g, dtype=object).astype(str) for g in (groups_a, groups_b))
    if ga.size != len(xa) or gb.size != len(xb):
        raise ValueError(f"groups: {ga.size} and {gb.size} ids for {len(xa)} and {len(xb)} rows; give one per row")
    if (labels_a is None) != (labels_b is None):
        raise ValueError("give labels for both sets or for neither")
    x, y, groups = np.vstack([xa, xb]), np.r_[np.zeros(len(xa), bool), np.ones(len(xb), bool)], np.r_[ga, gb]
    options = dict(folds=folds, seed=seed, c=c, inner_folds=inner_folds, min_images=min_images,
                   min_groups=min_groups, level=level)
    results = [_scope_test("all", x, y, groups, **options)]
    if labels_a is not None:
        la, lb = (np.asarray(v, dtype=object).astype(str) for v in (labels_a, labels_b))
        if la.size != len(xa) or lb.size != len(xb):
            raise ValueError(f"labels: {la.size} and {lb.size} for {len(xa)} and {len(xb)} rows; give one per row")
        labels = np.r_[la, lb]
        for value in sorted(set(la) | set(lb)):
            keep = labels == value
            results.append(_scope_test(f"class={value}", x[keep], y[keep], groups[keep], **options))
    return results


def c2st_images(images_a: ArrayLike, images_b: ArrayLike, groups_a: ArrayLike, groups_b: ArrayLike, *,
                labels_a: ArrayLike | None = None, labels_b: ArrayLike | None = None,
                **options) -> list[TwoSampleResult]:
    """:func:`c2st_features` on the :func:`image_features` of N x C x H x W tensors A (real) and B (synthetic),
    both scaled by their joint :func:`channel_range`; ``options`` go to :func:`c2st_features`."""
    value_range = channel_range(images_a, images_b)
    return c2st_features(image_features(images_a, value_range), image_features(images_b, value_range),
                         groups_a, groups_b, labels_a=labels_a, labels_b=labels_b, **options)


def two_sample_table(results: Sequence[TwoSampleResult], threshold: float = C2ST_GOAL) -> pd.DataFrame:
    """One row per scope: sizes, AUC and CI, folds, the CI method, the reason when not estimable and the
    :meth:`TwoSampleResult.verdict` against ``threshold``."""
    columns = ["scope", "n_a", "n_b", "groups_a", "groups_b", "auc", "ci_low", "ci_high", "folds", "ci_method",
               "reason"]
    return pd.DataFrame([{**{k: getattr(r, k) for k in columns}, "verdict": r.verdict(threshold)} for r in results])
