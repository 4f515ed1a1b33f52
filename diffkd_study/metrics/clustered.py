"""Inference when images are not independent: patient-clustered AUC variance, cluster bootstrap, Holm, power.

A patient (or a lesion) may contribute several images; their scores are correlated, so per-image
formulas understate the uncertainty. Here the patient is the unit of resampling and of variance:

* :func:`obuchowski_covariance`: the clustered covariance of k AUCs on the same images (Obuchowski
  1997, Biometrics 53:567, "Nonparametric analysis of clustered ROC curve data"). With every cluster a
  single image it equals DeLong et al. (1988) exactly (the cross term vanishes and the cluster sums
  are the placements themselves).
* :func:`cluster_bootstrap_weights` / :func:`cluster_bootstrap_indices`: resamples that draw whole
  clusters with replacement (Field & Welsh 2007, JRSS-B 69:369; the "cluster bootstrap").
* :func:`holm_adjust`: Holm's (1979, Scand J Stat 6:65) step-down adjusted p-values (family-wise error).
* :func:`minimal_detectable_difference`: the smallest true difference a two-sided Wald test at
  ``alpha`` detects with probability ``power`` given the standard error of the design,
  (z_{1-alpha/2} + z_{power}) * se (e.g. Obuchowski & McClish 1997, Stat Med 16:1529, eq. 2).

``groups`` is any array of cluster labels (patient ids), one per image; ``None`` means every image
is its own cluster.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

__all__ = ["check_groups", "cluster_bootstrap_indices", "cluster_bootstrap_weights", "holm_adjust",
           "minimal_detectable_difference", "obuchowski_covariance"]


def check_groups(groups: ArrayLike | None, n: int) -> np.ndarray:
    """Cluster labels -> integer codes 0..I-1 (one per image); ``None`` -> every image its own cluster.

    Raises ``ValueError`` when the length differs from ``n`` or a label is missing (NaN / None): an image
    whose patient is unknown cannot be placed in a cluster, and guessing would hide a data problem.
    """
    if groups is None:
        return np.arange(n)
    values = np.asarray(groups, dtype=object).ravel()
    if values.size != n:
        raise ValueError(f"groups has {values.size} labels for {n} images; give one patient id per image")
    missing = [k for k, v in enumerate(values) if v is None or (isinstance(v, float) and math.isnan(v))]
    if missing:
        raise ValueError(f"groups: image {missing[0]} (0-based) has no patient id; every image needs one")
    _, codes = np.unique(values.astype(str), return_inverse=True)
    return codes.astype(np.int64)


def obuchowski_covariance(
    y: np.ndarray, positive_placements: np.ndarray, negative_placements: np.ndarray, auc: np.ndarray,
    groups: ArrayLike | None,
) -> tuple[np.ndarray, int]:
    """Obuchowski's (1997) clustered covariance matrix of k AUCs on the same images, and the number of clusters.

    ``positive_placements`` (k, n_pos) and ``negative_placements`` (k, n_neg) are DeLong's placement values
    (V10: the share of all negatives below a positive, ties 1/2; V01: the share of all positives above a
    negative), in the order of ``y``'s positives and negatives; ``auc`` the k AUCs. With m_i positives and
    n_i negatives in cluster i, V10_i = sum of its positives' placements, V01_i likewise, N10 / N01 the
    positive / negative image counts and I10 / I01 / I the clusters with a positive / a negative / any:

        S10 = I10 / ((I10 - 1) N10) sum_i (V10_i - m_i A)(V10_i - m_i A)'
        S01 = I01 / ((I01 - 1) N01) sum_i (V01_i - n_i A)(V01_i - n_i A)'
        S11 = I / (I - 1) sum_i (V10_i - m_i A)(V01_i - n_i A)'
        cov = S10 / N10 + S01 / N01 + (S11 + S11') / (N10 N01)

    Raises ``ValueError`` (not estimable) unless at least 2 clusters hold a positive and 2 a negative.
    """
    y = np.asarray(y, dtype=bool)
    codes = check_groups(groups, y.size)
    n_clusters = int(codes.max()) + 1 if codes.size else 0
    auc = np.asarray(auc, dtype=float).reshape(-1, 1)
    pos_codes, neg_codes = codes[y], codes[~y]
    k = auc.shape[0]
    m = np.bincount(pos_codes, minlength=n_clusters).astype(float)
    n = np.bincount(neg_codes, minlength=n_clusters).astype(float)
    i10, i01 = int((m > 0).sum()), int((n > 0).sum())
    if i10 < 2 or i01 < 2:
        raise ValueError(f"the clustered AUC variance needs at least 2 patients with a positive and 2 with a "
                         f"negative image; got {i10} and {i01} (not estimable)")
    v10 = np.vstack([np.bincount(pos_codes, weights=positive_placements[r], minlength=n_clusters) for r in range(k)])
    v01 = np.vstack([np.bincount(neg_codes, weights=negative_placements[r], minlength=n_clusters) for r in range(k)])
    d10 = v10 - auc * m  # (k, I): zero for clusters without positives
    d01 = v01 - auc * n
    n10, n01 = float(m.sum()), float(n.sum())
    s10 = i10 / ((i10 - 1) * n10) * (d10 @ d10.T)
    s01 = i01 / ((i01 - 1) * n01) * (d01 @ d01.T)
    s11 = n_clusters / (n_clusters - 1) * (d10 @ d01.T)
    return s10 / n10 + s01 / n01 + (s11 + s11.T) / (n10 * n01), n_clusters


def cluster_bootstrap_weights(groups: ArrayLike | None, n: int, n_resamples: int,
                              gen: np.random.Generator) -> np.ndarray:
    """Image multiplicities of ``n_resamples`` cluster-bootstrap resamples, shape (n_resamples, n).

    Each resample draws I clusters with replacement from the I clusters; an image appears as often as
    its cluster was drawn. With every image its own cluster this is the ordinary (multinomial) bootstrap.
    """
    codes = check_groups(groups, n)
    n_clusters = int(codes.max()) + 1 if codes.size else 0
    drawn = gen.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_resamples)
    return drawn[:, codes]


def cluster_bootstrap_indices(groups: ArrayLike, n_resamples: int, seed: int | np.random.Generator = 0,
                              strata: ArrayLike | None = None) -> Iterator[np.ndarray]:
    """Index arrays of ``n_resamples`` cluster-bootstrap resamples (whole clusters drawn with replacement).

    Each yield lists the row indices of one resample: the rows of every drawn cluster, a cluster drawn
    twice listed twice. ``strata`` (one label per row, constant within a cluster, e.g. the lesion's class)
    resamples the clusters of each stratum separately, so every resample keeps the number of clusters per
    stratum. ``seed`` is an int (``numpy.random.default_rng(seed)``) or a Generator.
    """
    gen = np.random.default_rng(seed) if isinstance(seed, int | np.integer) else seed
    codes = check_groups(groups, len(np.asarray(groups, dtype=object)))
    rows_of = [np.flatnonzero(codes == c) for c in range(int(codes.max()) + 1)]
    if strata is None:
        pools = [np.arange(len(rows_of))]
    else:
        labels = np.asarray(strata, dtype=object).astype(str)
        cluster_stratum = np.array([labels[rows[0]] for rows in rows_of])
        for c, rows in enumerate(rows_of):
            if (labels[rows] != cluster_stratum[c]).any():
                raise ValueError(f"strata: cluster {c} mixes strata; a stratum label must be constant within a cluster")
        pools = [np.flatnonzero(cluster_stratum == s) for s in np.unique(cluster_stratum)]
    for _ in range(n_resamples):
        chosen = np.concatenate([gen.choice(pool, size=pool.size, replace=True) for pool in pools])
        yield np.concatenate([rows_of[c] for c in chosen])


def holm_adjust(p_values: ArrayLike) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values, in the input order; NaN stays NaN and is not counted.

    Sorted ascending, p_(j) becomes max_{l <= j} min(1, (m - l + 1) p_(l)) with m the number of
    non-missing p-values; rejecting where the adjusted p < alpha controls the family-wise error at alpha.
    """
    p = np.asarray(p_values, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def minimal_detectable_difference(se_difference: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference a two-sided level-``alpha`` Wald test detects with probability ``power``.

    (z_{1 - alpha/2} + z_{power}) * se, with ``se`` the standard error of the estimated difference under
    the study's design (here the clustered DeLong SE of a paired AUC difference); NaN when ``se`` is.
    At alpha 0.05 and 80% power the factor is 2.80.
    """
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must lie in (0, 1); got {alpha}, {power}")
    if se_difference is None or not np.isfinite(se_difference):
        return math.nan
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * se_difference)
