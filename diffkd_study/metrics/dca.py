"""Decision curve analysis (Vickers & Elkin 2006, Med Decis Making 26:565), implemented directly.

At a threshold probability pt a patient is treated (e.g. biopsied) when the predicted risk is
>= pt, and the net benefit is

    NB(pt) = TP/n - FP/n * pt / (1 - pt),

the true positives per patient minus the false positives weighted by the odds of the threshold
(the harm:benefit ratio that pt expresses). The reference strategies are "treat all"
(NB = prev - (1 - prev) pt / (1 - pt)) and "treat none" (NB = 0). The same definitions and the
same ``>=`` rule are used by the dcurves/rmda packages (Vickers et al. 2019, Diagn Progn Res 3:18).
Net benefit is computed on the sample as given (no cohort/case-control prevalence adjustment).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from diffkd_study.metrics.calibration import check_probabilities
from diffkd_study.metrics.roc import check_labels

TREAT_ALL = "treat all"
TREAT_NONE = "treat none"
DEFAULT_THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)


def _check_thresholds(thresholds: ArrayLike | None) -> np.ndarray:
    pt = DEFAULT_THRESHOLDS if thresholds is None else np.asarray(thresholds, dtype=float)
    if pt.ndim != 1 or pt.size == 0 or np.any((pt <= 0) | (pt >= 1)):
        raise ValueError("thresholds must be a non-empty 1-D array of probabilities strictly between 0 and 1")
    return pt


def net_benefit(y_true: ArrayLike, y_prob: ArrayLike, thresholds: ArrayLike | None = None) -> np.ndarray:
    """Net benefit of treating when ``y_prob >= pt``, at each threshold pt (default 0.01..0.99)."""
    y, p = check_probabilities(y_true, y_prob)
    if y.size == 0:
        raise ValueError("no cases")
    pt = _check_thresholds(thresholds)
    treated = p[None, :] >= pt[:, None]
    n = y.size
    tp = (treated & y).sum(axis=1)
    fp = (treated & ~y).sum(axis=1)
    return tp / n - fp / n * pt / (1 - pt)


def net_benefit_treat_all(y_true: ArrayLike, thresholds: ArrayLike | None = None) -> np.ndarray:
    """Net benefit of treating everyone: prev - (1 - prev) pt / (1 - pt)."""
    y = check_labels(y_true)
    if y.size == 0:
        raise ValueError("no cases")
    pt = _check_thresholds(thresholds)
    prev = y.mean()
    return prev - (1 - prev) * pt / (1 - pt)


def decision_curves(
    y_true: ArrayLike, models: Mapping[str, ArrayLike], thresholds: ArrayLike | None = None
) -> pd.DataFrame:
    """Tidy decision curves for several models on the same cases, plus treat-all and treat-none.

    One row per (model, threshold): ``model, threshold, net_benefit, tp, fp, n, prevalence``
    (``tp``/``fp`` count the treated positives/negatives). Plot ``net_benefit`` against
    ``threshold`` by ``model``.
    """
    if not models:
        raise ValueError("give at least one model as {name: predicted probabilities}")
    reserved = {TREAT_ALL, TREAT_NONE} & set(models)
    if reserved:
        raise ValueError(f"model names {sorted(reserved)} are reserved for the reference strategies")
    pt = _check_thresholds(thresholds)
    y = check_labels(y_true)
    if y.size == 0:
        raise ValueError("no cases")
    frames = []
    for name, prob in models.items():
        _, p = check_probabilities(y, prob)
        treated = p[None, :] >= pt[:, None]
        tp = (treated & y).sum(axis=1)
        fp = (treated & ~y).sum(axis=1)
        frames.append(_frame(name, pt, tp, fp, y))
    n_pos, n = int(y.sum()), y.size
    frames.append(_frame(TREAT_ALL, pt, np.full(pt.size, n_pos), np.full(pt.size, n - n_pos), y))
    frames.append(_frame(TREAT_NONE, pt, np.zeros(pt.size, int), np.zeros(pt.size, int), y))
    return pd.concat(frames, ignore_index=True)


def _frame(name: str, pt: np.ndarray, tp: np.ndarray, fp: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    n = y.size
    return pd.DataFrame(
        {
            "model": name,
            "threshold": pt,
            "net_benefit": tp / n - fp / n * pt / (1 - pt),
            "tp": tp.astype(int),
            "fp": fp.astype(int),
            "n": n,
            "prevalence": y.mean(),
        }
    )
