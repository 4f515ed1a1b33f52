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

Paired differences between models (:func:`paired_bootstrap_differences`)
    Every model scores the same images, so a difference of a metric between two models is resampled
    *paired*: each of ``n_resamples`` (2000 by default) lesion-clustered resamples
    (:func:`diffkd_study.metrics.clustered.cluster_bootstrap_indices`, whole lesions drawn with replacement;
    Field & Welsh 2007) evaluates both models on the same images, and the difference of the two values is
    one bootstrap replicate. A model trained with several seeds enters as the mean of its seeds' values on
    the resample, so the estimate is the difference of the means over seeds. Reported: the estimate on the
    data, the 95% percentile interval of the replicates, and a two-sided bootstrap p for no difference,
    ``min(1, 2 min(1 + #{d* <= 0}, 1 + #{d* >= 0}) / (B + 1))`` (the percentile interval inverted, with
    the Monte Carlo correction of Davison & Hinkley 1997, *Bootstrap Methods and their Application*, §4.2).
    The caller adjusts for multiplicity (the stage: Holm 1979 over its secondary comparisons). The resamples
    vary the test lesions only: the networks are fixed, so variation between training runs (seeds) is not in the
    interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from diffkd_study.metrics.clustered import cluster_bootstrap_indices, cluster_bootstrap_weights
from diffkd_study.metrics.operating_points import wilson_ci

__all__ = [
    "PAIRED_METRICS",
    "PAIRED_RESAMPLES",
    "MulticlassReport",
    "confusion_matrix",
    "format_interval",
    "mean_sd",
    "multiclass_report",
    "paired_bootstrap_differences",
    "weighted_auc",
]

PAIRED_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_auc")
"""The metrics :func:`paired_bootstrap_differences` compares by default."""
PAIRED_RESAMPLES = 2000
"""Lesion-clustered resamples of a paired difference, by default."""


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


def _weighted_confusions(y: np.ndarray, pred: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """(R, n) image weights -> (R, K, K) confusion matrices of the weighted sets."""
    onehot = np.zeros((len(y), k * k))
    onehot[np.arange(len(y)), y * k + pred] = 1.0
    return (weights @ onehot).reshape(-1, k, k)


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
    resampled = cluster_bootstrap_weights(g, len(y), n_resamples, np.random.default_rng(seed))
    weights = np.vstack([np.ones(len(y)), resampled])
    confs = _weighted_confusions(y, pred, weights, k)  # row 0: the data, rows 1..: resamples
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


def _weighted_metrics(y: np.ndarray, probabilities: np.ndarray, weights: np.ndarray,
                      metrics: Sequence[str]) -> dict[str, np.ndarray]:
    """Each of ``metrics`` on each row of the (R, n) image ``weights``: accuracy, balanced accuracy, macro AUC."""
    k = probabilities.shape[1]
    confs = _weighted_confusions(y, probabilities.argmax(axis=1), weights, k)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        if "accuracy" in metrics:
            out["accuracy"] = np.trace(confs, axis1=1, axis2=2) / confs.sum(axis=(1, 2))
    if "balanced_accuracy" in metrics:
        out["balanced_accuracy"] = _nanmean_rows(_recalls(confs))
    if "macro_auc" in metrics:
        out["macro_auc"] = _nanmean_rows(np.stack([weighted_auc(probabilities[:, c], y == c, weights)
                                                   for c in range(k)], axis=1))
    unknown = set(metrics) - set(out)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}; choose from {list(PAIRED_METRICS)}")
    return out


def _bootstrap_p(replicates: np.ndarray) -> float:
    """Two-sided bootstrap p of no difference (module notes); NaN without a finite replicate."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return float("nan")
    tail = min(int((finite <= 0).sum()), int((finite >= 0).sum()))
    return float(min(1.0, 2 * (1 + tail) / (finite.size + 1)))


def paired_bootstrap_differences(
    y_true: ArrayLike, probabilities: Mapping[str, Sequence[ArrayLike]], groups: ArrayLike,
    pairs: Sequence[tuple[str, str]], *, metrics: Sequence[str] = PAIRED_METRICS,
    n_resamples: int = PAIRED_RESAMPLES, seed: int = 0, level: float = 0.95, chunk: int = 250,
) -> pd.DataFrame:
    """Lesion-clustered paired bootstrap of ``model - reference`` for each pair and metric (module notes).

    ``probabilities`` maps a model to its ``(n, K)`` class probabilities, one array per training seed, every
    row the image of the same row of ``y_true`` and ``groups`` (its lesion). One row per (pair, metric):
    ``model``, ``reference``, ``metric``, ``estimate`` (on the data; the difference of the means over seeds),
    ``low``/``high`` (percentile interval at ``level``), ``p`` (two-sided, no difference), ``resamples`` (those
    where the difference is defined) and ``level``.
    """
    y = np.asarray(y_true, dtype=int)
    arrays = {model: [np.asarray(p, dtype=float) for p in seeds] for model, seeds in probabilities.items()}
    models = list(dict.fromkeys(m for pair in pairs for m in pair))
    for model in models:
        if not arrays.get(model):
            raise ValueError(f"no predictions for model {model!r}")
        for p in arrays[model]:
            if p.ndim != 2 or p.shape[0] != len(y):
                raise ValueError(f"{model}: probabilities {p.shape} do not match {len(y)} labels")

    def evaluate(weights: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        out = {}
        for model in models:
            per_seed = [_weighted_metrics(y, p, weights, metrics) for p in arrays[model]]
            out[model] = {m: np.mean([values[m] for values in per_seed], axis=0) for m in metrics}
        return out

    parts = [evaluate(np.ones((1, len(y))))]  # row 0: the data
    batch: list[np.ndarray] = []
    for index in cluster_bootstrap_indices(np.asarray(groups), n_resamples, seed):
        batch.append(np.bincount(index, minlength=len(y)))
        if len(batch) == chunk:
            parts.append(evaluate(np.vstack(batch)))
            batch = []
    if batch:
        parts.append(evaluate(np.vstack(batch)))
    values = {model: {m: np.concatenate([part[model][m] for part in parts]) for m in metrics} for model in models}
    rows = []
    for metric in metrics:
        for model, reference in pairs:
            d = values[model][metric] - values[reference][metric]
            low, high, used = _percentile_interval(d[1:], level)
            estimable = bool(np.isfinite(d[0]))
            rows.append({"model": model, "reference": reference, "metric": metric, "estimate": float(d[0]),
                         "low": low, "high": high, "p": _bootstrap_p(d[1:]) if estimable else float("nan"),
                         "resamples": used, "level": level})
    return pd.DataFrame(rows)
