"""Coverage of AUC intervals when patients contribute several images: a simulation of the study's design.

Each simulated patient has a label (the patient's lesion is benign or malignant; all its images share
it) and ``images_per_patient`` images whose scores are binormal, correlated within the patient::

    score = mu * label + sqrt(rho) * patient_effect + sqrt(1 - rho) * image_noise     (all N(0, 1))

so the true (between-patient) AUC is Phi(mu / sqrt(2)). A second score (for paired comparisons) has its
own patient effect and image noise, each correlated ``model_correlation`` with the first's, and the same
mu, so the true AUC difference is 0 while the two models' errors still cluster by patient. :func:`interval_coverage` counts how often the per-image DeLong
interval and the patient-clustered one (Obuchowski 1997) cover the truth; it is the check behind the
claim that the clustered intervals hold their nominal level (``benchmarks/clustered_auc_coverage.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from diffkd_study.metrics.roc import auc_delong, delong_test

__all__ = ["CoverageResult", "interval_coverage", "simulate_clustered_scores"]


def simulate_clustered_scores(gen: np.random.Generator, n_patients: int, images_per_patient: int, rho: float,
                              mu: float = 1.0, prevalence: float = 0.4,
                              model_correlation: float = 0.7) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One simulated test set: (labels, score A, score B, patient ids), one entry per image (module docstring)."""
    labels = gen.random(n_patients) < prevalence
    labels[:2], labels[2:4] = True, False  # both classes present
    patient = np.repeat(np.arange(n_patients), images_per_patient)
    y = labels[patient]
    other = np.sqrt(1 - model_correlation ** 2)
    effect = gen.standard_normal(n_patients)[patient]
    effect_b = model_correlation * effect + other * gen.standard_normal(n_patients)[patient]
    noise = gen.standard_normal(patient.size)
    noise_b = model_correlation * noise + other * gen.standard_normal(patient.size)
    a = mu * y + np.sqrt(rho) * effect + np.sqrt(1 - rho) * noise
    b = mu * y + np.sqrt(rho) * effect_b + np.sqrt(1 - rho) * noise_b
    return y, a, b, patient


@dataclass(frozen=True)
class CoverageResult:
    """Shares of simulated test sets whose 95% interval covered the truth, per image and clustered."""

    n_replicates: int
    true_auc: float
    single_per_image: float
    single_clustered: float
    paired_per_image: float
    paired_clustered: float


def interval_coverage(n_patients: int = 100, images_per_patient: int = 2, rho: float = 0.5, *,
                      n_replicates: int = 1000, seed: int = 0, mu: float = 1.0, level: float = 0.95) -> CoverageResult:
    """Coverage of the single-AUC interval (of the true AUC) and of the paired-difference interval (of 0),
    per image (DeLong) and patient-clustered (Obuchowski), over ``n_replicates`` simulated test sets."""
    gen = np.random.default_rng(seed)
    truth = float(stats.norm.cdf(mu / np.sqrt(2)))
    hits = np.zeros(4)
    for _ in range(n_replicates):
        y, a, b, patient = simulate_clustered_scores(gen, n_patients, images_per_patient, rho, mu)
        for k, groups in enumerate((None, patient)):
            single = auc_delong(y, a, level=level, groups=groups)
            paired = delong_test(y, a, b, level=level, groups=groups)
            hits[k] += single.ci_low <= truth <= single.ci_high
            hits[2 + k] += paired.ci_low <= 0.0 <= paired.ci_high
    share = hits / n_replicates
    return CoverageResult(n_replicates, truth, *map(float, share))
