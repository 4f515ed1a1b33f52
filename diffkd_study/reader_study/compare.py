"""A stand-alone model compared with the readers' mean AUC (1T-RRRC).

A stand-alone model is compared with the readers' mean AUC by the single-treatment ORH analysis of
the differences psi_j = AUC_model - AUC_j (random readers, random cases), the "1T-RRRC" method of
Chakraborty (2017, Observer Performance Methods for Diagnostic Imaging, ch. "Standalone CAD vs.
radiologists"; RJafroc ``StSignificanceTestingCadVsRad``): the model is a fixed reader with no
reader variance, readers are random, and cases are shared, so the model-reader case covariances
enter through Cov2 of the differences. It is exactly the two-treatment ORH analysis in which the
"model" treatment is read identically by every reader (the unit tests check this identity).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from diffkd_study.metrics.roc import require_classes
from diffkd_study.reader_study.operating_points import _model_series, _one_treatment
from diffkd_study.reader_study.orh import Covariance, _p_text, _single_treatment, _t_quantile, auc_covariance
from diffkd_study.reader_study.reads import ReaderStudy


@dataclass(frozen=True)
class ModelVsReaders:
    """Model AUC minus the readers' mean AUC on the same cases (positive = model better).

    RRRC (readers and cases random; the primary analysis): ``se``, ``df``, ``statistic`` (t),
    ``p_value``, ``ci_low``, ``ci_high``. RRFC (readers random, cases fixed): a one-sample t test of
    the per-reader differences on r - 1 df. With a non-inferiority ``margin`` the one-sided RRRC p
    for H0: model - readers <= -margin is ``p_noninferiority``.
    """

    model_auc: float
    reader_auc: np.ndarray
    readers: tuple[str, ...]
    mean_reader_auc: float
    difference: float
    se: float
    df: float
    statistic: float
    p_value: float
    ci_low: float
    ci_high: float
    ms_r: float
    var: float
    cov2: float
    rrfc_se: float
    rrfc_p_value: float
    rrfc_ci_low: float
    rrfc_ci_high: float
    n_pos: int
    n_neg: int
    covariance: str
    level: float
    margin: float | None = None
    p_noninferiority: float | None = None

    def __str__(self) -> str:
        text = (
            f"model AUC {self.model_auc:.3f} vs mean of {len(self.readers)} readers {self.mean_reader_auc:.3f}: "
            f"difference {self.difference:+.3f} ({self.level:.0%} CI {self.ci_low:+.3f} to {self.ci_high:+.3f}), "
            f"t({self.df:.1f}) = {self.statistic:.2f}, p {_p_text(self.p_value, 4)} [1T-RRRC, {self.covariance}]"
        )
        if self.margin is not None:
            text += f"; non-inferiority margin {self.margin}: p {_p_text(self.p_noninferiority, 4)}"
        return text

    def describe(self, who: str = "readers", digits: int = 2) -> str:
        """The comparison in words for a clinical reader (the test statistic stays in ``str()``), e.g. "The
        model's AUC (0.71) was 0.18 lower than the readers' average AUC (0.89); 95% confidence interval of
        the difference: 0.05 to 0.31 lower (p = 0.008). ..." """
        def amount(x: float) -> str:
            return f"{abs(x):.{digits}f} {'higher' if x > 0 else 'lower'}" if round(x, digits) else "no different"

        if round(self.difference, digits) == 0:
            head = f"was the same as the {who}' average AUC ({self.mean_reader_auc:.{digits}f})"
        else:
            head = f"was {amount(self.difference)} than the {who}' average AUC ({self.mean_reader_auc:.{digits}f})"
        low, high = self.ci_low, self.ci_high
        if low > 0 or high < 0:
            ci = f"{amount(low) if low > 0 else amount(high)} to {amount(high) if low > 0 else amount(low)}"
            verdict = (f"the interval does not include zero: on these cases the model was "
                       f"{'better' if low > 0 else 'worse'} than the average reader.")
        else:
            ci = f"{amount(low)} to {amount(high)}"
            verdict = "the interval includes zero (no difference): these cases cannot tell the model and the readers apart."
        return (f"The model's AUC ({self.model_auc:.{digits}f}) {head}; {self.level:.0%} confidence interval of the "
                f"difference: {ci} (p {_p_text(self.p_value)}, {len(self.readers)} {who}, "
                f"{self.n_pos + self.n_neg} cases). {verdict[0].upper()}{verdict[1:]}")


def model_vs_readers_analysis(
    reader_scores: np.ndarray,
    model_score: np.ndarray,
    truth: np.ndarray,
    covariance: Covariance = "jackknife",
    level: float = 0.95,
    margin: float | None = None,
    readers: Sequence[str] | None = None,
) -> ModelVsReaders:
    """1T-RRRC comparison of a model with readers, from arrays ``reader_scores[reader, case]`` and ``model_score[case]``."""
    reader_scores = np.asarray(reader_scores, dtype=float)
    r, c = reader_scores.shape
    if r < 2:
        raise ValueError("comparing a model with random readers needs at least 2 readers")
    model_score = np.asarray(model_score, dtype=float)
    if model_score.shape != (c,):
        raise ValueError(f"model_score must have one value per case ({c}); got shape {model_score.shape}")
    y = np.asarray(truth) == 1
    n_pos, n_neg = require_classes(y, minimum=2)
    auc, cov = auc_covariance(np.vstack([reader_scores, model_score]), y, covariance)
    # psi_j = AUC_model - AUC_j; its covariance is A cov A^T with A = [-I | 1].
    contrast = np.hstack([-np.eye(r), np.ones((r, 1))])
    psi = contrast @ auc
    st = _single_treatment(psi, contrast @ cov @ contrast.T, level)
    stat = st.mean_auc / st.se if st.se > 0 else math.copysign(math.inf, st.mean_auc) if st.mean_auc else 0.0
    p = float(2 * (stats.t.sf(abs(stat), st.df) if math.isfinite(st.df) else stats.norm.sf(abs(stat))))
    rrfc_se = math.sqrt(st.ms_r / r)
    rrfc_stat = (
        st.mean_auc / rrfc_se if rrfc_se > 0 else math.copysign(math.inf, st.mean_auc) if st.mean_auc else 0.0
    )
    rrfc_half = _t_quantile(level, r - 1) * rrfc_se
    p_ni = None
    if margin is not None:
        if margin < 0:
            raise ValueError(f"the non-inferiority margin must be >= 0; got {margin}")
        t_ni = (st.mean_auc + margin) / st.se if st.se > 0 else math.inf
        p_ni = float(stats.t.sf(t_ni, st.df) if math.isfinite(st.df) else stats.norm.sf(t_ni))
    return ModelVsReaders(
        model_auc=float(auc[-1]),
        reader_auc=auc[:-1],
        readers=tuple(str(x) for x in (readers if readers is not None else range(1, r + 1))),
        mean_reader_auc=float(auc[:-1].mean()),
        difference=st.mean_auc,
        se=st.se,
        df=st.df,
        statistic=stat,
        p_value=p,
        ci_low=st.ci_low,
        ci_high=st.ci_high,
        ms_r=st.ms_r,
        var=st.var,
        cov2=st.cov2,
        rrfc_se=rrfc_se,
        rrfc_p_value=float(2 * stats.t.sf(abs(rrfc_stat), r - 1)),
        rrfc_ci_low=st.mean_auc - rrfc_half,
        rrfc_ci_high=st.mean_auc + rrfc_half,
        n_pos=n_pos,
        n_neg=n_neg,
        covariance=covariance,
        level=level,
        margin=margin,
        p_noninferiority=p_ni,
    )


def model_vs_readers(
    study: ReaderStudy,
    model_scores: pd.Series | pd.DataFrame | Mapping[Any, float],
    *,
    treatment: str | None = None,
    reader_group: str | None = None,
    covariance: Covariance = "jackknife",
    level: float = 0.95,
    margin: float | None = None,
) -> ModelVsReaders:
    """Model vs the readers (optionally one ``reader_group``) in one treatment, 1T-RRRC (see module docstring)."""
    trt = _one_treatment(study, treatment)
    readers = [r for r in study.readers if reader_group is None or study.reader_groups[r] == reader_group]
    if not readers:
        raise ValueError(
            f"no readers in group {reader_group!r}; groups are {sorted(set(study.reader_groups.values()))}"
        )
    scores, truth, _, rdrs, cases = study.score_array([trt], readers)
    model = _model_series(model_scores, cases)
    return model_vs_readers_analysis(scores[0], model, truth, covariance, level, margin, rdrs)

