"""Simulated readers for the phantom cohort: correlated binormal ratings, labelled as simulated.

Reader groups (``ReaderGroupSpec``) differ in skill and in how liberally they recall; the shares of
the latent variance (``LatentCorrelation``) make readers agree on hard cases. ``simulate_reader_study``
describes the model and returns a read table that ``reads.validate_reads`` accepts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from diffkd_study.reader_study.reads import DEFAULT_CONDITION, read_truth


@dataclass(frozen=True)
class ReaderGroupSpec:
    """A simulated experience group.

    ``separation``: mean latent value of diseased cases (non-diseased have mean 0, both SD 1), so a
    typical reader's latent AUC is Phi(separation / sqrt(2)); ``skill_sd``: between-reader SD of the
    separation; ``threshold_shift``: added to the rating cut-points (negative = more liberal, i.e.
    more recalls, higher sensitivity and lower specificity).
    """

    name: str
    n_readers: int
    separation: float
    skill_sd: float = 0.15
    threshold_shift: float = 0.0


@dataclass(frozen=True)
class LatentCorrelation:
    """Shares of the unit latent variance within a class (the remainder is independent noise).

    ``case``: case difficulty shared by every reader and treatment (what makes readers agree);
    ``treatment_case``: shared by readers within a treatment; ``reader_case``: a reader's own view
    of a case, shared across treatments. ``reader_bias_sd``: SD of a reader's shift of all cut-points.
    """

    case: float = 0.3
    treatment_case: float = 0.1
    reader_case: float = 0.2
    reader_bias_sd: float = 0.15

    @property
    def noise(self) -> float:
        """The share of the latent variance left as independent noise: 1 - case - treatment_case - reader_case."""
        return 1.0 - self.case - self.treatment_case - self.reader_case


DEFAULT_READER_GROUPS: tuple[ReaderGroupSpec, ...] = (
    ReaderGroupSpec("junior", 4, separation=1.4, threshold_shift=-0.15),
    ReaderGroupSpec("senior", 4, separation=2.0),
)
# Latent cut-points between ratings 1|2, 2|3, 3|4 and 4|5; a call is a rating >= CALL_FROM_RATING.
DEFAULT_CUTPOINTS: tuple[float, ...] = (0.0, 0.6, 1.05, 2.0)
CALL_FROM_RATING = 4


def simulate_ratings(
    truth: np.ndarray,
    groups: Sequence[ReaderGroupSpec] = DEFAULT_READER_GROUPS,
    n_treatments: int = 1,
    treatment_effects: Sequence[float] | None = None,
    correlation: LatentCorrelation = LatentCorrelation(),
    cutpoints: Sequence[float] = DEFAULT_CUTPOINTS,
    case_difficulty: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Ordinal ratings [treatment, reader, case] from the correlated binormal model (see ``simulate_reader_study``)."""
    truth = np.asarray(truth)
    if truth.ndim != 1 or not np.isin(truth, (0, 1)).all():
        raise ValueError("truth must be a 1-D array of 0/1")
    if (
        correlation.noise < 0
        or min(correlation.case, correlation.treatment_case, correlation.reader_case) < 0
    ):
        raise ValueError("the correlation shares must be >= 0 and sum to at most 1")
    effects = (
        np.zeros(n_treatments) if treatment_effects is None else np.asarray(treatment_effects, dtype=float)
    )
    if effects.shape != (n_treatments,):
        raise ValueError(f"treatment_effects needs {n_treatments} value(s); got {effects.size}")
    cuts = np.asarray(cutpoints, dtype=float)
    if np.any(np.diff(cuts) <= 0):
        raise ValueError("cutpoints must increase")
    gen = rng if rng is not None else np.random.default_rng()
    c, t = truth.size, n_treatments
    n_readers = sum(g.n_readers for g in groups)
    separation = np.concatenate(
        [g.separation + g.skill_sd * gen.standard_normal(g.n_readers) for g in groups]
    )
    shift = np.concatenate([np.full(g.n_readers, g.threshold_shift) for g in groups])
    shift = shift + correlation.reader_bias_sd * gen.standard_normal(n_readers)
    if case_difficulty is None:
        difficulty = gen.standard_normal(c)
    else:
        difficulty = np.asarray(case_difficulty, dtype=float)
        if difficulty.shape != (c,):
            raise ValueError(f"case_difficulty needs one value per case ({c}); got shape {difficulty.shape}")
    mean = truth[None, None, :] * (separation[None, :, None] + effects[:, None, None])
    latent = (
        mean
        + math.sqrt(correlation.case) * difficulty[None, None, :]
        + math.sqrt(correlation.treatment_case) * gen.standard_normal((t, 1, c))
        + math.sqrt(correlation.reader_case) * gen.standard_normal((1, n_readers, c))
        + math.sqrt(correlation.noise) * gen.standard_normal((t, n_readers, c))
    )
    thresholds = cuts[None, None, None, :] + shift[None, :, None, None]
    return 1 + np.sum(latent[..., None] > thresholds, axis=-1)


def simulate_reader_study(
    truth: pd.Series | pd.DataFrame | Mapping[Any, Any],
    groups: Sequence[ReaderGroupSpec] = DEFAULT_READER_GROUPS,
    treatments: Sequence[str] = (DEFAULT_CONDITION,),
    treatment_effects: Sequence[float] | None = None,
    correlation: LatentCorrelation = LatentCorrelation(),
    cutpoints: Sequence[float] = DEFAULT_CUTPOINTS,
    case_difficulty: np.ndarray | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Simulated reads (clearly labelled ``simulated = 1``) for the phantom cohort's reader study.

    Correlated binormal model: reader j of group g rates case k under treatment i from the latent

        Z_ijk = D_k (d_j + e_i) + sqrt(s_C) C_k + sqrt(s_TC) TC_ik + sqrt(s_RC) RC_jk + sqrt(s_E) E_ijk,

    D_k = truth, d_j ~ N(separation_g, skill_sd_g^2) the reader's skill, e_i the treatment effect,
    C_k the case difficulty shared by all readers (standard normal, or ``case_difficulty`` e.g.
    the phantom's lesion conspicuity so that model and readers find the same cases hard), TC, RC,
    E independent standard normals, and the shares s (``LatentCorrelation``) summing to 1, so that
    within each class Z has unit variance (binormal with equal variances) and two readers'
    latents for one case correlate s_C + s_TC. The 1-5 rating counts the cut-points (shifted by the
    group's ``threshold_shift`` and a reader bias ~ N(0, reader_bias_sd^2)) that Z exceeds; the
    call is rating >= 4. With the defaults (1-5 ratings), seniors have AUC about 0.91, sensitivity
    about 0.84 and specificity about 0.84; juniors AUC about 0.83, sensitivity about 0.69 and
    specificity about 0.81.

    Returns the read-table columns plus ``treatment``, ``simulated`` (1) and ``simulation`` (the
    model and seed); reader IDs read ``sim-<group>-<k>``.
    """
    truth_series = read_truth(truth if not isinstance(truth, pd.DataFrame) else truth[["case_id", "truth"]])
    gen = np.random.default_rng(seed)
    ratings = simulate_ratings(
        truth_series.to_numpy(),
        groups,
        len(treatments),
        treatment_effects,
        correlation,
        cutpoints,
        case_difficulty,
        gen,
    )
    reader_ids = [f"sim-{g.name}-{k + 1:02d}" for g in groups for k in range(g.n_readers)]
    reader_groups = [g.name for g in groups for _ in range(g.n_readers)]
    t, r, c = ratings.shape
    ti, ri, ci = (a.ravel() for a in np.meshgrid(np.arange(t), np.arange(r), np.arange(c), indexing="ij"))
    score = ratings.ravel()
    return pd.DataFrame(
        {
            "reader_id": np.asarray(reader_ids)[ri],
            "reader_group": np.asarray(reader_groups)[ri],
            "case_id": truth_series.index.to_numpy()[ci],
            "treatment": np.asarray(list(treatments))[ti],
            "score": score,
            "call": (score >= CALL_FROM_RATING).astype(int),
            "simulated": 1,
            "simulation": f"correlated binormal reader model (diffkd_study.reader_study), seed={seed}",
        }
    )
