"""The pointwise ROC band and everything a ROC figure shows for one model (``roc_summary``).

``roc_summary`` gathers the curve, the AUC with its interval and the pointwise bootstrap band, so that
``diffkd_study.viz.plot_roc`` computes nothing. With ``groups`` (one patient id per image) the AUC
interval is Obuchowski's clustered one and the band resamples whole patients (the cluster bootstrap),
so a patient's several images move together.

Reference: Fawcett (2006) Pattern Recogn Lett 27:861 (vertical averaging of ROC curves).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from diffkd_study.metrics.clustered import check_groups, cluster_bootstrap_weights
from diffkd_study.metrics.roc import (
    _BOOTSTRAP_CHUNK_CELLS,
    AUCResult,
    ROCCurve,
    _generator,
    _resample_weights,
    auc_delong,
    check_labels_scores,
    require_classes,
    roc_curve,
    tpr_at_fpr,
    z_quantile,
)

__all__ = ["ROCBand", "RocSummary", "roc_confidence_band", "roc_summary"]


# ----------------------------------------------------------------------------------------------
# Pointwise confidence band for plots
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ROCBand:
    """Pointwise bootstrap interval of the sensitivity at each FPR of ``fpr`` (for plots only).

    Pointwise: each vertical interval covers the true sensitivity at that FPR with probability
    ``level``; the band as a whole does not (it is not a simultaneous band).
    """

    fpr: np.ndarray
    tpr: np.ndarray
    tpr_low: np.ndarray
    tpr_high: np.ndarray
    level: float
    n_resamples: int
    seed: int | None  # None when a Generator was passed
    n_pos: int
    n_neg: int

    def to_frame(self) -> pd.DataFrame:
        """The band as a table: fpr, tpr and its lower and upper limits."""
        return pd.DataFrame(
            {"fpr": self.fpr, "tpr": self.tpr, "tpr_low": self.tpr_low, "tpr_high": self.tpr_high}
        )


def roc_confidence_band(
    y_true: ArrayLike,
    y_score: ArrayLike,
    fpr_grid: ArrayLike | None = None,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int | np.random.Generator = 0,
    groups: ArrayLike | None = None,
) -> ROCBand:
    """Pointwise ROC band: stratified bootstrap of the sensitivity at a grid of FPR values.

    The grid defaults to 0, 0.01, ..., 1. Each resample's curve is read at the grid with
    ``tpr_at_fpr`` (vertical averaging); the band is the percentile interval at each grid value.
    With ``groups`` (one patient id per image) whole patients are resampled instead of positives and
    negatives separately (a resample without both classes is dropped).
    """
    y, s = check_labels_scores(y_true, y_score)
    n_pos, n_neg = require_classes(y)
    z_quantile(level)
    grid = np.linspace(0.0, 1.0, 101) if fpr_grid is None else np.asarray(fpr_grid, dtype=float)
    if grid.ndim != 1 or np.any((grid < 0) | (grid > 1)):
        raise ValueError("fpr_grid must be a 1-D array of values in [0, 1]")
    curve = roc_curve(y, s)
    observed = tpr_at_fpr(curve.fpr, curve.tpr, grid)

    # Each resample's curve has its points at the observed distinct scores (descending); the counts
    # of positives/negatives at or above each score come from cumulative resampling multiplicities.
    thresholds = curve.thresholds[1:]
    pos, neg = s[y], s[~y]
    pos_order, neg_order = np.argsort(-pos, kind="stable"), np.argsort(-neg, kind="stable")
    k_pos = np.searchsorted(-pos[pos_order], -thresholds, side="right")
    k_neg = np.searchsorted(-neg[neg_order], -thresholds, side="right")
    gen = _generator(seed)
    codes = None if groups is None else check_groups(groups, y.size)
    boot = np.full((n_resamples, grid.size), np.nan)
    chunk = max(1, _BOOTSTRAP_CHUNK_CELLS // (n_pos + n_neg + 1))
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        cum_pos = np.zeros((b, n_pos + 1))
        cum_neg = np.zeros((b, n_neg + 1))
        if codes is None:
            w_pos, w_neg = _resample_weights(gen, n_pos, b), _resample_weights(gen, n_neg, b)
        else:
            weights = cluster_bootstrap_weights(codes, y.size, b, gen)
            w_pos, w_neg = weights[:, y], weights[:, ~y]
        np.cumsum(w_pos[:, pos_order], axis=1, out=cum_pos[:, 1:])
        np.cumsum(w_neg[:, neg_order], axis=1, out=cum_neg[:, 1:])
        for i in range(b):
            if cum_pos[i, -1] > 0 and cum_neg[i, -1] > 0:
                tpr = np.concatenate([[0.0], cum_pos[i, k_pos] / cum_pos[i, -1]])
                fpr = np.concatenate([[0.0], cum_neg[i, k_neg] / cum_neg[i, -1]])
                boot[start + i] = tpr_at_fpr(fpr, tpr, grid)
    boot = boot[~np.isnan(boot[:, 0])]
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)
    seed_value = int(seed) if isinstance(seed, int | np.integer) else None
    return ROCBand(grid, observed, low, high, level, n_resamples, seed_value, n_pos, n_neg)


# ----------------------------------------------------------------------------------------------
# Everything a ROC figure shows, for one model
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RocSummary:
    """One model's ROC results as a figure shows them: the curve, the DeLong AUC and the pointwise band.

    ``curve`` is the empirical ROC curve (``fpr``/``tpr``), ``auc`` the DeLong AUC with its interval,
    ``band`` the pointwise bootstrap band (``None`` when not computed) and ``constant_score`` says that
    every score is the same (the AUC is 0.5 by construction and its interval has no width).
    """

    curve: ROCCurve
    auc: AUCResult
    band: ROCBand | None
    constant_score: bool

    @property
    def fpr(self) -> np.ndarray:
        """False-positive rates of the curve."""
        return self.curve.fpr

    @property
    def tpr(self) -> np.ndarray:
        """True-positive rates of the curve."""
        return self.curve.tpr


def roc_summary(
    y_true: ArrayLike,
    y_score: ArrayLike,
    level: float = 0.95,
    band: bool = True,
    n_resamples: int = 2000,
    seed: int | np.random.Generator = 0,
    groups: ArrayLike | None = None,
) -> RocSummary:
    """The ROC curve, the DeLong AUC (logit-scale interval) and, with ``band``, the pointwise bootstrap band.

    Computes ``roc_curve``, ``auc_delong(level=level, groups=groups)`` and ``roc_confidence_band(
    n_resamples=n_resamples, level=level, seed=seed, groups=groups)`` on the same cases, so a figure draws
    the numbers it is given. An integer ``seed`` gives each call its own ``numpy.random.default_rng(seed)``:
    every model's band uses the same seed, whatever the order the models are summarised in. ``groups``
    (patient ids) makes both the interval and the band patient-clustered.
    """
    curve = roc_curve(y_true, y_score)
    result = auc_delong(y_true, y_score, level=level, groups=groups)
    interval = (
        roc_confidence_band(y_true, y_score, n_resamples=n_resamples, level=level, seed=seed, groups=groups)
        if band else None
    )
    constant = bool(np.ptp(np.asarray(y_score, dtype=float)) == 0)
    return RocSummary(curve, result, interval, constant)
