"""Multiclass metrics with confidence intervals, as the SSD-KD study reports them.

Point estimates (one model, one seed, one split of ``n`` images)
    accuracy; balanced accuracy = mean recall over the classes present in the split (scikit-learn's
    ``balanced_accuracy_score``; raug's "balanced accuracy"); macro AUC = mean one-vs-rest AUC over the
    classes present with both positives and negatives; per class: recall, precision, F1 and AUC; the
    confusion matrix (rows true, columns predicted).

Intervals (95% unless ``level`` says otherwise)
    * accuracy, per-class recall and precision: Wilson score intervals on the image counts
      (``k / n`` is stated with each), which treat images as independent;
    * balanced accuracy, macro AUC, per-class F1 and per-class AUC: percentile bootstrap with
      **lesions** as the resampled unit (a cluster bootstrap: HAM10000 has several images of many
      lesions, and images of one lesion are not independent). Each of ``n_resamples`` resamples draws
      the split's lesions with replacement and weights every image by how often its lesion was drawn;
      a resample in which a metric is undefined (a class absent) is left out of that metric's interval.
      The generator is seeded, so the intervals are reproducible.

Weighted AUC: ``sum_{i pos, j neg} w_i w_j ([s_i > s_j] + 0.5 [s_i = s_j]) / (W_pos W_neg)``, which is
the Mann-Whitney AUC of the resampled set (equal to scikit-learn's AUC when every weight is 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from diffkd_study.metrics.operating_points import wilson_ci

__all__ = [
    "MulticlassReport",
    "cluster_bootstrap_weights",
    "confusion_matrix",
    "format_interval",
    "mean_sd",
    "multiclass_report",
    "weighted_auc",
]


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> np.ndarray:
    """``counts[t, p]``: images of true class ``t`` predicted as ``p``."""
    truth, pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (truth, pred), 1)
    return counts


def weighted_auc(scores: ArrayLike, positive: ArrayLike, weights: ArrayLike) -> np.ndarray:
    """One-vs-rest AUC for each row of ``weights`` (``(R, n)``, or ``(n,)`` for one); NaN where a side is empty."""
    s = np.asarray(scores, dtype=float)
    pos = np.asarray(positive, dtype=bool)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    if s.ndim != 1 or pos.shape != s.shape or w.shape[1] != len(s):
        raise ValueError(f"scores {s.shape}, positive {pos.shape} and weights {w.shape} do not agree")
    order = np.argsort(s, kind="mergesort")
    s, pos, w = s[order], pos[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # tie groups of equal scores
    w_pos = np.add.reduceat(w * pos, starts, axis=1)
    w_neg = np.add.reduceat(w * ~pos, starts, axis=1)
    neg_below = np.cumsum(w_neg, axis=1) - w_neg
    numerator = (w_pos * (neg_below + 0.5 * w_neg)).sum(axis=1)
    denominator = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def cluster_bootstrap_weights(groups: ArrayLike, n_resamples: int, seed: int) -> np.ndarray:
    """``(n_resamples, n)`` image weights: how often each image's group (lesion) was drawn in each resample."""
    codes, _ = pd.factorize(pd.Series(np.asarray(groups)).astype(str), sort=True)
    n_groups = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_resamples, n_groups))
    counts = np.zeros((n_resamples, n_groups), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(n_resamples), n_groups), draws.ravel()), 1)
    return counts[:, codes]


def _recalls(conf: np.ndarray) -> np.ndarray:
    """(..., K, K) confusion -> (..., K) recall, NaN for an absent class."""
    support = conf.sum(axis=-1)
    diagonal = np.diagonal(conf, axis1=-2, axis2=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, diagonal / np.where(support > 0, support, 1), np.nan)


def _f1(conf: np.ndarray) -> np.ndarray:
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    fp = conf.sum(axis=-2) - tp
    fn = conf.sum(axis=-1) - tp
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), np.nan)


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    counts = finite.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.where(finite, values, 0).sum(axis=-1) / np.maximum(counts, 1), np.nan)


def _percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float, int]:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return float("nan"), float("nan"), 0
    alpha = (1 - level) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return float(low), float(high), int(finite.size)


@dataclass
class MulticlassReport:
    """Metrics of one set of predictions; see the module notes for the intervals."""

    classes: tuple[str, ...]
    n: int
    n_lesions: int
    summary: dict[str, dict[str, float]]
    per_class: pd.DataFrame
    confusion: np.ndarray
    level: float = 0.95
    n_resamples: int = 0
    notes: list[str] = field(default_factory=list)

    def flat(self) -> dict[str, float]:
        """``{metric, metric_low, metric_high}`` for accuracy, balanced accuracy and macro AUC, plus n."""
        out: dict[str, float] = {"n": self.n, "n_lesions": self.n_lesions}
        for name, value in self.summary.items():
            out[name] = value["estimate"]
            out[f"{name}_low"] = value["low"]
            out[f"{name}_high"] = value["high"]
        return out


def multiclass_report(
    y_true: ArrayLike, probabilities: ArrayLike, groups: ArrayLike, classes: Sequence[str], *,
    n_resamples: int = 1000, seed: int = 0, level: float = 0.95,
) -> MulticlassReport:
    """Every metric of the module notes for integer labels ``y_true`` and ``(n, K)`` ``probabilities``."""
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(probabilities, dtype=float)
    g = np.asarray(groups)
    k = len(classes)
    if p.ndim != 2 or p.shape != (len(y), k) or len(g) != len(y):
        raise ValueError(f"labels {y.shape}, probabilities {p.shape}, groups {g.shape} and {k} classes disagree")
    if len(y) == 0:
        raise ValueError("no predictions to evaluate")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"labels must lie in 0..{k - 1}; got {sorted(set(y.tolist()))[:10]}")
    pred = p.argmax(axis=1)
    conf = confusion_matrix(y, pred, k)
    weights = np.vstack([np.ones(len(y)), cluster_bootstrap_weights(g, n_resamples, seed)])
    onehot = np.zeros((len(y), k * k))
    onehot[np.arange(len(y)), y * k + pred] = 1.0
    confs = (weights @ onehot).reshape(-1, k, k)  # row 0: the data, rows 1..: resamples
    recalls, f1 = _recalls(confs), _f1(confs)
    balanced = _nanmean_rows(recalls)
    aucs = np.stack([weighted_auc(p[:, c], y == c, weights) for c in range(k)], axis=1)
    macro_auc = _nanmean_rows(aucs)

    correct = int((pred == y).sum())
    accuracy = wilson_ci(correct, len(y), level)
    summary = {"accuracy": {"estimate": accuracy.estimate, "low": accuracy.ci_low, "high": accuracy.ci_high,
                            "method": "Wilson", "k": correct}}
    for name, values in (("balanced_accuracy", balanced), ("macro_auc", macro_auc)):
        low, high, used = _percentile_interval(values[1:], level)
        summary[name] = {"estimate": float(values[0]), "low": low, "high": high, "method": "lesion bootstrap",
                         "resamples": used}
    rows = []
    for c, name in enumerate(classes):
        support, predicted, tp = int(conf[c].sum()), int(conf[:, c].sum()), int(conf[c, c])
        recall, precision = wilson_ci(tp, support, level), wilson_ci(tp, predicted, level)
        f1_low, f1_high, _ = _percentile_interval(f1[1:, c], level)
        auc_low, auc_high, _ = _percentile_interval(aucs[1:, c], level)
        rows.append({"class": name, "n": support, "predicted": predicted, "tp": tp,
                     "recall": recall.estimate, "recall_low": recall.ci_low, "recall_high": recall.ci_high,
                     "precision": precision.estimate, "precision_low": precision.ci_low,
                     "precision_high": precision.ci_high, "f1": float(f1[0, c]), "f1_low": f1_low, "f1_high": f1_high,
                     "auc": float(aucs[0, c]), "auc_low": auc_low, "auc_high": auc_high})
    notes = [f"class {name} has no image in this set" for name, n in zip(classes, conf.sum(axis=1), strict=True)
             if n == 0]
    return MulticlassReport(tuple(classes), len(y), int(pd.Series(g).nunique()), summary, pd.DataFrame(rows), conf,
                            level, n_resamples, notes)


def format_interval(estimate: float, low: float, high: float, digits: int = 3) -> str:
    """``0.812 (0.790-0.833)``; ``n/a`` for an undefined estimate."""
    if not np.isfinite(estimate):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{estimate:.{digits}f}"
    return f"{estimate:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def mean_sd(values: Sequence[float], digits: int = 3) -> str:
    """``mean ± SD (k seeds)``; the SD is the sample SD (ddof 1), left out for a single seed."""
    array = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if array.size == 0:
        return "n/a"
    if array.size == 1:
        return f"{array[0]:.{digits}f} (1 seed)"
    return f"{array.mean():.{digits}f} ± {array.std(ddof=1):.{digits}f} ({array.size} seeds)"
