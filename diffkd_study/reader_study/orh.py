"""MRMC analysis: Obuchowski-Rockette with Hillis' improvements (ORH), and the AUC case covariance.

The figure of merit is the empirical AUC of each reader in each treatment. Its case-sampling
covariance matrix is estimated by the jackknife (leave one case out; the Iowa OR-DBM MRMC and
RJafroc default) or by DeLong's method (MRMCaov's ``cov = DeLong``). From the averages Var, Cov1
(same reader, different treatments), Cov2 (different readers, same treatment) and Cov3 (different
readers and treatments) and the treatment x reader ANOVA mean squares of the AUCs:

* random readers and random cases (RRRC): F = MS(T) / [MS(TR) + r max(Cov2 - Cov3, 0)] on
  (t - 1, ddf_H) degrees of freedom with Hillis' ddf_H = [MS(TR) + r max(Cov2 - Cov3, 0)]^2 /
  [MS(TR)^2 / ((t - 1)(r - 1))] (Hillis 2007, Stat Med 26:596); the difference of two treatment
  means has SE sqrt(2/r [MS(TR) + r max(Cov2 - Cov3, 0)]);
* fixed readers, random cases (FRRC): chi2 = (t - 1) MS(T) / [Var - Cov1 + (r - 1) max(Cov2 - Cov3,
  0)] on t - 1 df, plus each reader's own test;
* random readers, fixed cases (RRFC): F = MS(T) / MS(TR) on (t - 1, (t - 1)(r - 1)) df;
* each treatment alone (random readers and cases): mean AUC +- t_df SE with SE^2 = [MS_R +
  r max(Cov2, 0)] / r and df = [MS_R + r max(Cov2, 0)]^2 / [MS_R^2 / (r - 1)].

References: Obuchowski & Rockette (1995) Commun Stat Simul Comput 24:285; Hillis, Obuchowski,
Schartz & Berbaum (2005) Stat Med 24:1579; Hillis (2007); Hillis, Berbaum & Metz (2008) Acad Radiol
15:647. Validated against the Van Dyke et al. (1993) data: OR-DBM MRMC 2.51 / RJafroc (jackknife)
and MRMCaov (DeLong) outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from diffkd_study.metrics.roc import delong_placements, require_classes, z_quantile
from diffkd_study.nbutil import format_p
from diffkd_study.reader_study.reads import ReaderStudy

Covariance = Literal["jackknife", "delong"]


# ----------------------------------------------------------------------------------------------
# AUC covariance over cases (jackknife or DeLong)
# ----------------------------------------------------------------------------------------------


def auc_covariance(
    scores: np.ndarray, truth: np.ndarray, covariance: Covariance = "jackknife"
) -> tuple[np.ndarray, np.ndarray]:
    """Empirical AUCs of K score rows on the same cases and their case-sampling covariance (K x K).

    ``jackknife``: (c - 1)/c sum_k (A_(k) - mean)(A_(k) - mean)^T over the c leave-one-case-out
    AUCs, computed in closed form from the placements (removing positive a gives
    (m AUC - V10_a)/(m - 1), removing negative b gives (n AUC - V01_b)/(n - 1)).
    ``delong``: cov(V10)/m + cov(V01)/n.
    """
    y = np.asarray(truth) == 1
    m, n = require_classes(y, minimum=2)
    v10, v01 = delong_placements(y, np.atleast_2d(np.asarray(scores, dtype=float)))
    auc = v10.mean(axis=1)
    if covariance == "delong":
        cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    elif covariance == "jackknife":
        loo = np.hstack([(m * auc[:, None] - v10) / (m - 1), (n * auc[:, None] - v01) / (n - 1)])
        dev = loo - loo.mean(axis=1, keepdims=True)
        c = m + n
        cov = (c - 1) / c * (dev @ dev.T)
    else:
        raise ValueError(f"covariance must be 'jackknife' or 'delong'; got {covariance!r}")
    return auc, cov


# ----------------------------------------------------------------------------------------------
# ORH analysis
# ----------------------------------------------------------------------------------------------


def _t_quantile(level: float, df: float) -> float:
    z_quantile(level)  # validates level
    return (
        float(stats.t.ppf(0.5 + level / 2, df))
        if math.isfinite(df)
        else float(stats.norm.ppf(0.5 + level / 2))
    )


def _hillis_df(numerator_ms: float, ms: float, ms_df: float) -> float:
    """Satterthwaite-type df (numerator_ms)^2 / (ms^2 / ms_df); infinite when ms = 0."""
    return math.inf if ms == 0 else numerator_ms**2 / (ms**2 / ms_df)


def _p_text(p: float | None, digits: int = 3) -> str:
    """``= 0.042`` or ``< 0.001``: a p-value after "p" in a sentence."""
    text = format_p(p, digits)
    return text if text.startswith("<") else f"= {text}"


@dataclass(frozen=True)
class SingleTreatmentORH:
    """Mean AUC of r readers in one treatment with the ORH random-reader, random-case interval."""

    mean_auc: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    ms_r: float
    var: float
    cov2: float
    reader_auc: np.ndarray
    level: float


def _single_treatment(auc: np.ndarray, cov: np.ndarray, level: float) -> SingleTreatmentORH:
    r = auc.size
    if r < 2:
        raise ValueError("a random-reader analysis needs at least 2 readers")
    ms_r = float(np.var(auc, ddof=1))
    cov2 = float(cov[~np.eye(r, dtype=bool)].mean())
    den = ms_r + r * max(cov2, 0.0)
    se = math.sqrt(den / r)
    df = _hillis_df(den, ms_r, r - 1)
    half = _t_quantile(level, df) * se
    mean = float(auc.mean())
    return SingleTreatmentORH(
        mean, se, df, mean - half, mean + half, ms_r, float(np.diag(cov).mean()), cov2, auc, level
    )


def single_treatment_orh(
    scores: np.ndarray, truth: np.ndarray, covariance: Covariance = "jackknife", level: float = 0.95
) -> SingleTreatmentORH:
    """ORH interval for the mean AUC of readers (rows of ``scores[reader, case]``) in one treatment."""
    auc, cov = auc_covariance(scores, truth, covariance)
    return _single_treatment(auc, cov, level)


@dataclass(frozen=True)
class ORHTest:
    """One ORH analysis (RRRC, FRRC or RRFC): the global test and the pairwise treatment contrasts.

    ``contrasts``: treatment_a, treatment_b, difference (a - b), se, df, statistic (t or z),
    p_value (two-sided), ci_low, ci_high.
    """

    analysis: str
    statistic: float
    distribution: str
    df1: float
    df2: float
    p_value: float
    contrasts: pd.DataFrame


@dataclass(frozen=True)
class ORHResult:
    """Obuchowski-Rockette-Hillis MRMC analysis of empirical AUCs (see the module docstring)."""

    treatments: tuple[str, ...]
    readers: tuple[str, ...]
    n_pos: int
    n_neg: int
    covariance: str
    level: float
    auc: np.ndarray  # [treatment, reader]
    auc_covariance: np.ndarray  # [(t, r), (t, r)] flattened treatment-major
    var: float
    cov1: float
    cov2: float
    cov3: float
    ms_t: float
    ms_r: float
    ms_tr: float
    var_r: float
    var_tr: float
    rrrc: ORHTest
    frrc: ORHTest
    rrfc: ORHTest
    single_treatment: pd.DataFrame
    per_reader: pd.DataFrame = field(repr=False)

    @property
    def treatment_auc(self) -> np.ndarray:
        """The mean AUC over readers of each treatment, in ``treatments`` order."""
        return self.auc.mean(axis=1)

    def auc_frame(self) -> pd.DataFrame:
        """The reader AUCs as a table: one row per treatment, one column per reader."""
        return pd.DataFrame(
            self.auc,
            index=pd.Index(self.treatments, name="treatment"),
            columns=pd.Index(self.readers, name="reader_id"),
        )

    def reader_auc_table(self, level: float) -> pd.DataFrame:
        """Per-reader AUCs with ``level`` Wald intervals from this analysis's AUC covariance (clipped to [0, 1]).

        Columns ``treatment, reader_id, auc, ci_low, ci_high``, one row per (treatment, reader), treatment-major.
        """
        t, r = self.auc.shape
        se = np.sqrt(np.clip(np.diag(self.auc_covariance), 0, None)).reshape(t, r)
        z = z_quantile(level)
        return pd.DataFrame(
            {
                "treatment": np.repeat(self.treatments, r),
                "reader_id": np.tile(self.readers, t),
                "auc": self.auc.ravel(),
                "ci_low": np.clip(self.auc.ravel() - z * se.ravel(), 0, 1),
                "ci_high": np.clip(self.auc.ravel() + z * se.ravel(), 0, 1),
            }
        )

    def summary(self) -> str:
        """The analysis in a few lines: design, mean AUCs, variance components and the RRRC, FRRC and RRFC tests."""
        lines = [
            f"ORH MRMC ({self.covariance} covariance): {len(self.readers)} readers, {self.n_pos} diseased + {self.n_neg} non-diseased cases",
            "mean AUC: "
            + ", ".join(f"{t} {a:.4f}" for t, a in zip(self.treatments, self.treatment_auc, strict=True)),
            f"Var {self.var:.6g}  Cov1 {self.cov1:.6g}  Cov2 {self.cov2:.6g}  Cov3 {self.cov3:.6g}  "
            f"MS(T) {self.ms_t:.6g}  MS(TR) {self.ms_tr:.6g}",
        ]
        for test in (self.rrrc, self.frrc, self.rrfc):
            dist = "F" if test.distribution == "F" else "chi2"
            lines.append(
                f"{test.analysis}: {dist}({test.df1:g}, {test.df2:.4g}) = {test.statistic:.4f}, "
                f"p {_p_text(test.p_value, 4)}"
            )
            for row in test.contrasts.itertuples():
                lines.append(
                    f"  {row.treatment_a} - {row.treatment_b}: {row.difference:+.4f} "
                    f"({self.level:.0%} CI {row.ci_low:+.4f} to {row.ci_high:+.4f}), p {_p_text(row.p_value, 4)}"
                )
        return "\n".join(lines)


def _contrasts(
    treatments: Sequence[str], means: np.ndarray, se: float, df: float, level: float
) -> pd.DataFrame:
    rows = []
    q = _t_quantile(level, df)
    for a, b in combinations(range(len(treatments)), 2):
        diff = float(means[a] - means[b])
        stat = diff / se if se > 0 else math.copysign(math.inf, diff) if diff else 0.0
        p = float(2 * (stats.t.sf(abs(stat), df) if math.isfinite(df) else stats.norm.sf(abs(stat))))
        rows.append(
            {
                "treatment_a": treatments[a],
                "treatment_b": treatments[b],
                "difference": diff,
                "se": se,
                "df": df,
                "statistic": stat,
                "p_value": p,
                "ci_low": diff - q * se,
                "ci_high": diff + q * se,
            }
        )
    return pd.DataFrame(rows)


def orh_analysis(
    scores: np.ndarray,
    truth: np.ndarray,
    covariance: Covariance = "jackknife",
    level: float = 0.95,
    treatments: Sequence[str] | None = None,
    readers: Sequence[str] | None = None,
) -> ORHResult:
    """ORH analysis of a fully crossed score array ``scores[treatment, reader, case]`` (t >= 2, r >= 2)."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 3:
        raise ValueError(f"scores must be an array [treatment, reader, case]; got shape {scores.shape}")
    t, r, c = scores.shape
    if t < 2 or r < 2:
        raise ValueError(f"the ORH analysis needs >= 2 treatments and >= 2 readers; got {t} and {r}")
    truth = np.asarray(truth)
    if truth.shape != (c,):
        raise ValueError(f"truth must have one value per case ({c}); got shape {truth.shape}")
    trts = tuple(str(x) for x in (treatments if treatments is not None else range(1, t + 1)))
    rdrs = tuple(str(x) for x in (readers if readers is not None else range(1, r + 1)))
    y = truth == 1
    n_pos, n_neg = require_classes(y, minimum=2)

    auc_flat, cov = auc_covariance(scores.reshape(t * r, c), y, covariance)
    auc = auc_flat.reshape(t, r)
    trt_idx, rdr_idx = np.divmod(np.arange(t * r), r)
    same_t = trt_idx[:, None] == trt_idx[None, :]
    same_r = rdr_idx[:, None] == rdr_idx[None, :]
    var = float(np.diag(cov).mean())
    cov1 = float(cov[~same_t & same_r].mean())
    cov2 = float(cov[same_t & ~same_r].mean())
    cov3 = float(cov[~same_t & ~same_r].mean())

    grand = auc.mean()
    trt_means, rdr_means = auc.mean(axis=1), auc.mean(axis=0)
    ms_t = float(r * np.sum((trt_means - grand) ** 2) / (t - 1))
    ms_r = float(t * np.sum((rdr_means - grand) ** 2) / (r - 1))
    ms_tr = float(np.sum((auc - trt_means[:, None] - rdr_means[None, :] + grand) ** 2) / ((t - 1) * (r - 1)))

    # Random readers, random cases.
    den_rrrc = ms_tr + r * max(cov2 - cov3, 0.0)
    ddf = _hillis_df(den_rrrc, ms_tr, (t - 1) * (r - 1))
    f_rrrc = ms_t / den_rrrc
    rrrc = ORHTest(
        "RRRC",
        f_rrrc,
        "F",
        t - 1,
        ddf,
        float(stats.f.sf(f_rrrc, t - 1, ddf)),
        _contrasts(trts, trt_means, math.sqrt(2 / r * den_rrrc), ddf, level),
    )
    # Fixed readers, random cases.
    den_frrc = var - cov1 + (r - 1) * max(cov2 - cov3, 0.0)
    chi2 = (t - 1) * ms_t / den_frrc
    frrc = ORHTest(
        "FRRC",
        chi2,
        "chi2",
        t - 1,
        math.inf,
        float(stats.chi2.sf(chi2, t - 1)),
        _contrasts(trts, trt_means, math.sqrt(2 / r * den_frrc), math.inf, level),
    )
    # Random readers, fixed cases.
    f_rrfc = ms_t / ms_tr if ms_tr > 0 else math.inf
    df_rrfc = (t - 1) * (r - 1)
    rrfc = ORHTest(
        "RRFC",
        f_rrfc,
        "F",
        t - 1,
        df_rrfc,
        float(stats.f.sf(f_rrfc, t - 1, df_rrfc)),
        _contrasts(trts, trt_means, math.sqrt(2 * ms_tr / r), df_rrfc, level),
    )

    single_rows = []
    for i, name in enumerate(trts):
        block = slice(i * r, (i + 1) * r)
        st = _single_treatment(auc[i], cov[block, block], level)
        single_rows.append(
            {
                "treatment": name,
                "mean_auc": st.mean_auc,
                "se": st.se,
                "df": st.df,
                "ci_low": st.ci_low,
                "ci_high": st.ci_high,
                "ms_r": st.ms_r,
                "var": st.var,
                "cov2": st.cov2,
            }
        )

    z = z_quantile(level)
    reader_rows = []
    for j, reader in enumerate(rdrs):
        idx = np.arange(t) * r + j
        sub = cov[np.ix_(idx, idx)]
        var_j = float(np.diag(sub).mean())
        cov1_j = float(sub[~np.eye(t, dtype=bool)].mean())
        for a, b in combinations(range(t), 2):
            diff = float(auc[a, j] - auc[b, j])
            se = math.sqrt(max(sub[a, a] + sub[b, b] - 2 * sub[a, b], 0.0))
            stat = diff / se if se > 0 else math.copysign(math.inf, diff) if diff else 0.0
            reader_rows.append(
                {
                    "reader_id": reader,
                    "treatment_a": trts[a],
                    "treatment_b": trts[b],
                    "auc_a": float(auc[a, j]),
                    "auc_b": float(auc[b, j]),
                    "difference": diff,
                    "var": var_j,
                    "cov1": cov1_j,
                    "se": se,
                    "statistic": stat,
                    "p_value": float(2 * stats.norm.sf(abs(stat))),
                    "ci_low": diff - z * se,
                    "ci_high": diff + z * se,
                }
            )

    return ORHResult(
        treatments=trts,
        readers=rdrs,
        n_pos=n_pos,
        n_neg=n_neg,
        covariance=covariance,
        level=level,
        auc=auc,
        auc_covariance=cov,
        var=var,
        cov1=cov1,
        cov2=cov2,
        cov3=cov3,
        ms_t=ms_t,
        ms_r=ms_r,
        ms_tr=ms_tr,
        var_r=(ms_r - ms_tr) / t - cov1 + cov3,
        var_tr=ms_tr - var + cov1 + cov2 - cov3,
        rrrc=rrrc,
        frrc=frrc,
        rrfc=rrfc,
        single_treatment=pd.DataFrame(single_rows),
        per_reader=pd.DataFrame(reader_rows),
    )


def orh_mrmc(
    study: ReaderStudy,
    covariance: Covariance = "jackknife",
    level: float = 0.95,
    treatments: Sequence[str] | None = None,
    readers: Sequence[str] | None = None,
) -> ORHResult:
    """ORH MRMC comparison of the study's reading conditions (random readers, random cases first).

    ``var_r`` and ``var_tr`` in the result are the method-of-moments reader and treatment x reader
    variance components, (MS_R - MS_TR)/t - Cov1 + Cov3 and MS_TR - Var + Cov1 + Cov2 - Cov3
    (they may come out negative).
    """
    scores, truth, trts, rdrs, _ = study.score_array(treatments, readers)
    return orh_analysis(scores, truth, covariance, level, trts, rdrs)
