"""Reader operating points, the model at the readers' operating points, and reader-group summaries.

Each reader's sensitivity and specificity come from the calls (the reader's binary decisions, not
derived from the score) and the reader AUC is the empirical AUC of the scores. The model is
compared with each reader at that reader's operating point by McNemar's test on the same cases.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from diffkd_study.metrics.operating_points import choose_threshold, mcnemar_test, wilson_ci
from diffkd_study.metrics.roc import auc_delong, delong_placements, require_classes
from diffkd_study.reader_study.orh import Covariance, single_treatment_orh
from diffkd_study.reader_study.reads import ReaderStudy, _as_id

# ----------------------------------------------------------------------------------------------
# Reader operating points and the model at the readers' operating points
# ----------------------------------------------------------------------------------------------


def _empirical_auc(y: np.ndarray, s: np.ndarray) -> float:
    if y.all() or not y.any():
        return math.nan
    v10, _ = delong_placements(y, s[None, :])
    return float(v10.mean())


def _simulated_flag(reads: pd.DataFrame) -> int | None:
    """1 when the read table marks its reads as simulated, 0 when it marks them real, None without the column."""
    if "simulated" not in reads.columns:
        return None
    return int(pd.to_numeric(reads["simulated"], errors="coerce").fillna(0).astype(bool).any())


def reader_operating_points(
    study: ReaderStudy, level: float = 0.95, auc_ci: bool = False
) -> pd.DataFrame:
    """Each reader's sensitivity and specificity (and FPR = 1 - specificity) from the calls, with
    Wilson intervals and counts, plus the empirical AUC of the scores; one row per treatment x reader.

    ``auc_ci=True`` adds ``auc_ci_low``/``auc_ci_high``: the DeLong interval (logit scale) of each
    reader's AUC. When the read table has a ``simulated`` column it is carried over (1 when any of the
    reader's reads is simulated), so figures and tables can label simulated readers.
    """
    rows = []
    for (trt, reader), part in study.reads.groupby(["treatment", "reader_id"], sort=False):
        y = part["truth"].to_numpy() == 1
        c = part["call"].to_numpy() == 1
        sens = wilson_ci(int(np.sum(c & y)), int(y.sum()), level)
        spec = wilson_ci(int(np.sum(~c & ~y)), int((~y).sum()), level)
        fpr = wilson_ci(int(np.sum(c & ~y)), int((~y).sum()), level)
        rows.append(
            {
                "treatment": trt,
                "reader_id": reader,
                "reader_group": part["reader_group"].iat[0],
                "n_cases": len(part),
                "n_pos": sens.denominator,
                "n_neg": spec.denominator,
                "tp": sens.numerator,
                "fp": fpr.numerator,
                "sensitivity": sens.estimate,
                "sensitivity_ci_low": sens.ci_low,
                "sensitivity_ci_high": sens.ci_high,
                "specificity": spec.estimate,
                "specificity_ci_low": spec.ci_low,
                "specificity_ci_high": spec.ci_high,
                "fpr": fpr.estimate,
                "fpr_ci_low": fpr.ci_low,
                "fpr_ci_high": fpr.ci_high,
                "auc": _empirical_auc(y, part["score"].to_numpy(dtype=float)),
            }
        )
        if auc_ci:
            ci = (
                auc_delong(y, part["score"].to_numpy(dtype=float), level)
                if min(y.sum(), (~y).sum()) >= 2 else None
            )
            rows[-1]["auc_ci_low"] = ci.ci_low if ci else math.nan
            rows[-1]["auc_ci_high"] = ci.ci_high if ci else math.nan
        flag = _simulated_flag(part)
        if flag is not None:
            rows[-1]["simulated"] = flag
    return pd.DataFrame(rows)


def _model_series(
    model_scores: pd.Series | pd.DataFrame | Mapping[Any, float], cases: Sequence[str]
) -> np.ndarray:
    if isinstance(model_scores, pd.DataFrame):
        if not {"case_id", "score"} <= set(model_scores.columns):
            raise ValueError(
                f"model_scores needs the columns case_id, score; found {list(model_scores.columns)}"
            )
        series = pd.Series(model_scores["score"].to_numpy(), index=model_scores["case_id"].map(_as_id))
    elif isinstance(model_scores, pd.Series):
        series = pd.Series(model_scores.to_numpy(), index=model_scores.index.map(_as_id))
    else:
        series = pd.Series({_as_id(k): v for k, v in model_scores.items()})
    if series.index.duplicated().any():
        raise ValueError(
            f"model_scores has duplicate case_id(s) {sorted(set(series.index[series.index.duplicated()]))[:5]}"
        )
    absent = [c for c in cases if c not in series.index]
    if absent:
        raise ValueError(f"model_scores lacks {len(absent)} case(s) read by the readers, e.g. {absent[:5]}")
    values = pd.to_numeric(series.reindex(list(cases)), errors="coerce").to_numpy(dtype=float)
    if not np.all(np.isfinite(values)):
        bad = [c for c, v in zip(cases, values, strict=True) if not np.isfinite(v)]
        raise ValueError(f"model_scores must be finite numbers; not for case(s) {bad[:5]}")
    return values


def _one_treatment(study: ReaderStudy, treatment: str | None) -> str:
    if treatment is None:
        if len(study.treatments) > 1:
            raise ValueError(
                f"the study has several treatments {list(study.treatments)}; choose one with treatment="
            )
        return study.treatments[0]
    if treatment not in study.treatments:
        raise ValueError(f"unknown treatment {treatment!r}; the study has {list(study.treatments)}")
    return treatment


def model_at_reader_operating_points(
    study: ReaderStudy,
    model_scores: pd.Series | pd.DataFrame | Mapping[Any, float],
    treatment: str | None = None,
    level: float = 0.95,
) -> pd.DataFrame:
    """The model's sensitivity at each reader's specificity, and its specificity at each reader's sensitivity.

    For each reader, on the cases that reader read: the model threshold is the lowest one whose
    specificity is >= the reader's (row ``sensitivity at reader specificity``), resp. the highest
    one whose sensitivity is >= the reader's (``specificity at reader sensitivity``); candidate
    thresholds are midpoints between the model's distinct scores. The model's calls are then
    compared with the reader's calls on the same cases by McNemar's test (positives for
    sensitivity, negatives for specificity; ``mcnemar_b`` counts cases only the model got right,
    ``mcnemar_c`` cases only the reader got right).

    The matching threshold is tuned on the reader-study cases, which makes this a descriptive
    comparison at matched operating points; a claim about a deployable model uses the threshold
    fixed on validation data (``operating_points.choose_threshold``).
    """
    trt = _one_treatment(study, treatment)
    reads = study.reads[study.reads["treatment"] == trt]
    model = pd.Series(_model_series(model_scores, study.cases), index=list(study.cases))
    rows = []
    for reader, part in reads.groupby("reader_id", sort=False):
        y = part["truth"].to_numpy() == 1
        reader_calls = part["call"].to_numpy() == 1
        s = model[part["case_id"]].to_numpy()
        require_classes(y)
        reader_sens = float(np.mean(reader_calls[y]))
        reader_spec = float(np.mean(~reader_calls[~y]))
        for metric, matched, rule, target, subset, correct in (
            ("sensitivity", "specificity", "specificity", reader_spec, y, lambda calls: calls),
            ("specificity", "sensitivity", "sensitivity", reader_sens, ~y, lambda calls: ~calls),
        ):
            thr = choose_threshold(y, s, rule=rule, target=target)
            model_calls = s >= thr.value
            model_ok, reader_ok = correct(model_calls[subset]), correct(reader_calls[subset])
            model_p = wilson_ci(int(model_ok.sum()), int(subset.sum()), level)
            reader_p = wilson_ci(int(reader_ok.sum()), int(subset.sum()), level)
            test = mcnemar_test(model_ok, reader_ok)
            rows.append(
                {
                    "treatment": trt,
                    "reader_id": reader,
                    "reader_group": part["reader_group"].iat[0],
                    "comparison": f"{metric} at reader {matched}",
                    "matched_on": matched,
                    "reader_matched_value": target,
                    "model_matched_value": thr.validation_specificity
                    if matched == "specificity"
                    else thr.validation_sensitivity,
                    "model_threshold": thr.value,
                    "metric": metric,
                    "n": model_p.denominator,
                    "reader_estimate": reader_p.estimate,
                    "reader_ci_low": reader_p.ci_low,
                    "reader_ci_high": reader_p.ci_high,
                    "model_estimate": model_p.estimate,
                    "model_ci_low": model_p.ci_low,
                    "model_ci_high": model_p.ci_high,
                    "difference": model_p.estimate - reader_p.estimate,
                    "mcnemar_b": test.b,
                    "mcnemar_c": test.c,
                    "mcnemar_statistic": test.statistic,
                    "mcnemar_p": test.p_value,
                    "mcnemar_method": test.method,
                }
            )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# Group summaries
# ----------------------------------------------------------------------------------------------


def reader_group_summary(
    study: ReaderStudy, level: float = 0.95, covariance: Covariance = "jackknife"
) -> pd.DataFrame:
    """Per treatment and reader group (and ``all`` readers): readers' mean +- SD sensitivity,
    specificity and AUC, and the ORH random-reader, random-case CI of the mean AUC (when the group
    has >= 2 readers and reads every case; NaN otherwise)."""
    ops = reader_operating_points(study, level)
    rows = []
    for trt in study.treatments:
        ops_t = ops[ops["treatment"] == trt]
        for group in [*sorted(ops_t["reader_group"].unique()), "all"]:
            part = ops_t if group == "all" else ops_t[ops_t["reader_group"] == group]
            row: dict[str, Any] = {"treatment": trt, "reader_group": group, "n_readers": len(part)}
            if "simulated" in part.columns:
                row["simulated"] = int(part["simulated"].any())
            for metric in ("sensitivity", "specificity", "auc"):
                values = part[metric].to_numpy(dtype=float)
                row[f"mean_{metric}"] = float(values.mean())
                row[f"sd_{metric}"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
                row[f"min_{metric}"] = float(values.min())
                row[f"max_{metric}"] = float(values.max())
            row.update(auc_ci_low=math.nan, auc_ci_high=math.nan, auc_se=math.nan, auc_df=math.nan)
            if len(part) >= 2:
                try:
                    scores, truth, *_ = study.score_array([trt], list(part["reader_id"]))
                except ValueError:
                    scores = None  # not fully crossed within the group: no random-reader interval
                if scores is not None:
                    st = single_treatment_orh(scores[0], truth, covariance, level)
                    row.update(auc_ci_low=st.ci_low, auc_ci_high=st.ci_high, auc_se=st.se, auc_df=st.df)
            rows.append(row)
    return pd.DataFrame(rows)

