"""Figure words: the AUC legend says patients when the interval is clustered by patient."""

from __future__ import annotations

import numpy as np

from diffkd_study.metrics.roc import auc_delong
from diffkd_study.viz.captions import auc_label, caption

Y = np.array([1, 0, 1, 0, 0, 1, 0, 1])
S = np.array([0.9, 0.2, 0.4, 0.5, 0.1, 0.6, 0.3, 0.45])


def test_the_auc_legend_counts_images_and_patients_of_a_clustered_interval():
    per_image = auc_delong(Y, S)
    clustered = auc_delong(Y, S, groups=["a", "a", "b", "b", "c", "c", "d", "d"])
    assert auc_label("m", per_image).endswith("; n=8 (4 positive)")
    assert auc_label("m", clustered).endswith("; n=8 images of 4 patients (4 positive)")
    assert "clustered by patient" in caption("auc_forest", condition="malignancy")
