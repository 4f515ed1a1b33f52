"""Linear probe: how much of the task a frozen representation already carries (Alain & Bengio 2016; the
standard check of a self-supervised or distilled representation).

:func:`linear_probe` fits an L2 logistic regression on the standardised features of the *training* images,
chooses its inverse regularisation ``C`` among :data:`PROBE_C` by the validation AUC (rule fixed before any
result: the highest validation AUC, the smaller ``C`` on a tie), and reports the AUC of every evaluated split
with its patient-clustered 95% CI (Obuchowski 1997; DeLong when each patient has one image). Multiclass tasks
get the macro one-vs-rest AUC and the balanced accuracy, without an interval.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from diffkd_study.metrics.roc import auc_delong

PROBE_C: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)

__all__ = ["PROBE_C", "linear_probe"]


def _auc(labels: np.ndarray, probabilities: np.ndarray, positive_index: int) -> float:
    if probabilities.shape[1] == 2:
        return float(roc_auc_score(labels == positive_index, probabilities[:, positive_index]))
    return float(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro",
                               labels=np.arange(probabilities.shape[1])))


def linear_probe(features: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                 groups: Mapping[str, np.ndarray], *, positive_index: int = 1,
                 representation: str = "") -> pd.DataFrame:
    """One row per split of ``features`` other than ``train``: the probe's AUC (binary: with its clustered 95%
    CI), balanced accuracy, images, patients and the chosen ``C``.

    ``features``, ``labels`` and ``groups`` (patient or lesion ids) map split names to arrays; ``train`` and
    ``val`` are required (the probe is fitted on ``train`` and ``C`` chosen on ``val``).
    """
    for split in ("train", "val"):
        if split not in features:
            raise ValueError(f"linear probe: the {split!r} split is required; got {sorted(features)}")
    scaler = StandardScaler().fit(features["train"])
    x = {split: scaler.transform(f) for split, f in features.items()}
    best: tuple[float, float, LogisticRegression] | None = None
    for c in PROBE_C:
        model = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(x["train"], labels["train"])
        score = _auc(labels["val"], model.predict_proba(x["val"]), positive_index)
        if best is None or score > best[0]:
            best = (score, c, model)
    assert best is not None
    _, c, model = best
    rows = []
    for split in features:
        if split == "train":
            continue
        y, p = np.asarray(labels[split]), model.predict_proba(x[split])
        row = {"representation": representation, "split": split, "images": len(y),
               "patients": len(set(groups[split])), "C": c,
               "balanced_accuracy": float(balanced_accuracy_score(y, p.argmax(1)))}
        if p.shape[1] == 2 and len(set(y)) == 2:
            result = auc_delong(y == positive_index, p[:, positive_index], groups=np.asarray(groups[split]))
            row.update(auc=result.auc, ci_low=result.ci_low, ci_high=result.ci_high)
        else:
            row.update(auc=_auc(y, p, positive_index) if len(set(y)) > 1 else float("nan"),
                       ci_low=float("nan"), ci_high=float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)

