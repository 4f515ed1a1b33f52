"""Data helpers of the SSD-KD stage: a stratified subsample of the training lesions.

HAM10000 holds several images of many lesions (``patient_id`` = ``lesion_id``), and every image of a
lesion carries the lesion's diagnosis. :func:`lesion_subsample` keeps ``round(fraction x n_c)`` (at
least 1) of the ``n_c`` training lesions of every class ``c``, chosen by a seeded permutation of the
sorted lesion ids, with all their images; so the class mix of the lesions is kept and the subset does
not depend on the row order of the manifest. It is applied to the training split only: validation and
test are never subsampled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from diffkd_study.repro import derive_seed

__all__ = ["lesion_subsample"]


def lesion_subsample(labels: Sequence[object], lesions: Sequence[object], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over rows: the images of the kept lesions (see the module notes).

    A lesion whose images carry different labels is an error naming the lesion (the manifest breaks
    HAM10000's one-diagnosis-per-lesion rule).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    frame = pd.DataFrame({"label": list(labels), "lesion": list(lesions)})
    if len(frame) == 0:
        raise ValueError("no rows to subsample")
    if frame["lesion"].isna().any():
        raise ValueError(f"row(s) {frame.index[frame['lesion'].isna()].tolist()[:5]} have no lesion id")
    per_lesion = frame.groupby("lesion", sort=True)["label"].agg(lambda s: sorted({str(v) for v in s}))
    mixed = per_lesion[per_lesion.map(len) > 1]
    if len(mixed):
        raise ValueError(f"lesion {mixed.index[0]!r} has images with different labels {mixed.iloc[0]}; every image "
                         "of a lesion must carry its diagnosis")
    if fraction == 1.0:
        return np.ones(len(frame), dtype=bool)
    lesion_label = per_lesion.map(lambda v: v[0])
    kept: set[object] = set()
    for label in sorted(lesion_label.unique()):
        ids = sorted(lesion_label.index[lesion_label == label], key=str)
        order = np.random.default_rng(derive_seed(seed, "lesion-subsample", label)).permutation(len(ids))
        n_keep = max(1, int(round(fraction * len(ids))))
        kept.update(ids[i] for i in order[:n_keep])
    return frame["lesion"].isin(kept).to_numpy()
