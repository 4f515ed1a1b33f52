"""Result tables: AUC with DeLong CI (clustered by patient on request) per test set / subgroup, and aggregation
over training seeds.

Typical use, with one prediction row per (seed, case)::

    per_seed = metrics_by_group(preds, ["seed", "center"])      # n, n_pos, AUC + CI per seed and center
    clustered = metrics_by_group(preds, "center", groups_col="patient_id")  # patients as the unit
    summary = aggregate_seeds(per_seed, by=["center"])           # mean +- SD over seeds, per-seed CIs
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from diffkd_study.metrics.roc import Scale, auc_delong

CONSTANT_SCORE_NOTE = "every score is the same: AUC 0.5 by construction (no discrimination)"
GROUP_TABLE_COLUMNS = (
    "n",
    "n_pos",
    "n_neg",
    "prevalence",
    "auc",
    "ci_low",
    "ci_high",
    "se",
    "method",
    "note",
)


def metrics_by_group(
    pred_df: pd.DataFrame,
    group_cols: str | Sequence[str],
    *,
    label_col: str = "y_true",
    score_col: str = "y_score",
    positive_label: object = 1,
    level: float = 0.95,
    scale: Scale = "logit",
    groups_col: str | None = None,
) -> pd.DataFrame:
    """One row per group: n, n_pos, n_neg, prevalence, AUC with DeLong CI and SE.

    ``label_col`` is compared with ``positive_label`` (so string labels such as "malignant" work).
    A group with fewer than 2 cases of either class gets NaN AUC and a ``note`` saying why, so that
    a table over many centres is never interrupted by one small centre. A group whose scores are all
    equal (a constant-score model) has AUC 0.5 by construction, with no sampling variability (DeLong
    variance 0, so the interval is [0.5, 0.5]); its ``note`` says so. Rows with missing group values
    form their own group.

    ``groups_col`` (e.g. ``"patient_id"``) names the cluster of each row: the variance is then Obuchowski's
    (1997, Biometrics 53:567) clustered one, so a patient with several images counts as one unit of
    inference, and the table gains ``n_patients`` after ``n``; a group needs 2 patients with a positive and
    2 with a negative image (else "fewer than 2 patients of a class"). With one image per patient the
    numbers equal the per-image DeLong ones.
    """
    cols = [group_cols] if isinstance(group_cols, str) else list(group_cols)
    missing = [c for c in [*cols, label_col, score_col, *([groups_col] if groups_col else [])]
               if c not in pred_df.columns]
    if missing:
        raise ValueError(f"pred_df lacks the column(s) {missing}; it has {list(pred_df.columns)}")
    rows = []
    for key, part in pred_df.groupby(cols, dropna=False, sort=True):
        keys = key if isinstance(key, tuple) else (key,)
        y = (part[label_col] == positive_label).to_numpy()
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        row = dict(zip(cols, keys, strict=True))
        row.update(n=len(part), n_pos=n_pos, n_neg=n_neg, prevalence=n_pos / len(part))
        clusters = None if groups_col is None else part[groups_col].to_numpy()
        if clusters is not None:
            row["n_patients"] = int(pd.unique(clusters).size)
        too_few = too_few_for_auc(y, clusters)
        if too_few:
            row.update(auc=np.nan, ci_low=np.nan, ci_high=np.nan, se=np.nan, method="", note=too_few)
        else:
            scores = part[score_col].to_numpy(dtype=float)
            res = auc_delong(y, scores, level=level, scale=scale, groups=clusters)
            row.update(
                auc=res.auc, ci_low=res.ci_low, ci_high=res.ci_high, se=res.se, method=res.method,
                note=CONSTANT_SCORE_NOTE if np.ptp(scores) == 0 else "",
            )
        rows.append(row)
    counts = ["n", "n_patients"] if groups_col else ["n"]
    return pd.DataFrame(rows, columns=[*cols, *counts, *GROUP_TABLE_COLUMNS[1:]])


def too_few_for_auc(y: np.ndarray, clusters: np.ndarray | None) -> str:
    """Why no AUC interval can be estimated on labels ``y`` (bool) with patients ``clusters`` (``None``: every image
    its own): fewer than 2 cases, or 2 patients, of a class; ``""`` when it can."""
    if min(int(y.sum()), int((~y).sum())) < 2:
        return "fewer than 2 cases of a class"
    if clusters is not None and min(pd.unique(clusters[y]).size, pd.unique(clusters[~y]).size) < 2:
        return "fewer than 2 patients of a class"
    return ""


def aggregate_seeds(
    per_seed: pd.DataFrame,
    *,
    by: str | Sequence[str] | None = None,
    seed_col: str = "seed",
    value_col: str = "auc",
    ci_cols: tuple[str, str] = ("ci_low", "ci_high"),
    digits: int = 3,
) -> pd.DataFrame:
    """Mean +- SD of ``value_col`` over seeds, next to each seed's own estimate and CI.

    Returns one row per ``by`` group with ``n_seeds, mean, sd`` (n - 1 denominator; NaN for one
    seed), ``min, max``, ``summary`` ("0.871 +- 0.012 (3 seeds)"; "0.871 (1 seed)") and ``per_seed`` ("seed 0: 0.862
    [0.80, 0.91]; ..."). The SD describes training variability; each per-seed CI describes
    sampling variability of the test cases. They answer different questions and are shown side by
    side rather than combined.
    """
    by_cols = [] if by is None else [by] if isinstance(by, str) else list(by)
    needed = [*by_cols, seed_col, value_col, *ci_cols]
    missing = [c for c in needed if c not in per_seed.columns]
    if missing:
        raise ValueError(f"per_seed lacks the column(s) {missing}; it has {list(per_seed.columns)}")
    duplicated = per_seed.duplicated([*by_cols, seed_col])
    if duplicated.any():
        first = per_seed[duplicated].iloc[0]
        raise ValueError(f"seed {first[seed_col]!r} appears more than once in one group (row {first.name!r})")
    groups = per_seed.groupby(by_cols, dropna=False, sort=True) if by_cols else [((), per_seed)]
    rows = []
    for key, part in groups:
        keys = key if isinstance(key, tuple) else (key,)
        part = part.sort_values(seed_col)
        values = part[value_col].to_numpy(dtype=float)
        sd = float(np.std(values, ddof=1)) if values.size > 1 else np.nan
        mean = float(np.mean(values))
        per = "; ".join(
            f"seed {s}: {v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
            for s, v, lo, hi in zip(part[seed_col], values, part[ci_cols[0]], part[ci_cols[1]], strict=True)
        )
        row = dict(zip(by_cols, keys, strict=True))
        row.update(
            n_seeds=int(values.size),
            mean=mean,
            sd=sd,
            min=float(values.min()),
            max=float(values.max()),
            summary=(f"{mean:.{digits}f} +- {sd:.{digits}f} ({values.size} seeds)" if values.size > 1
                     else f"{mean:.{digits}f} (1 seed)"),
            per_seed=per,
        )
        rows.append(row)
    return pd.DataFrame(
        rows, columns=[*by_cols, "n_seeds", "mean", "sd", "min", "max", "summary", "per_seed"]
    )
