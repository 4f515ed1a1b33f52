"""Reader studies: validated read tables, reader operating points, model vs readers, ORH MRMC, a simulator.

Read table (one row per read; CSV or DataFrame)
-----------------------------------------------
Required columns ``reader_id, reader_group, case_id, score, call``:

* ``reader_group``: e.g. ``junior`` / ``senior``; constant for a reader;
* ``score``: the reader's confidence rating (any finite number, e.g. BI-RADS-like 1-5 or 0-100);
  the reader AUC is the empirical AUC of these scores;
* ``call``: the reader's binary decision (1 = recall/biopsy/positive), used for sensitivity and
  specificity; it is not derived from the score.

Optional: ``treatment`` (the reading condition, e.g. ``unaided`` / ``aided``) or, when it is absent,
``modality`` plays that role; without either, every read belongs to one condition called
``reading``. Other columns are carried along. IDs are compared as text (``1`` and ``"1"`` are the
same case). The truth table has columns ``case_id, truth`` (1 = diseased).

Validation collects every problem, each naming the file and line (or DataFrame row) and the rule,
and raises one ``ReaderStudyError`` listing them (rules in ``RULES``). Reads missing from the fully
crossed design (a reader who did not read a case) are not errors: they are reported by
``ReaderStudy.missing_reads()`` / ``completeness()``, and only the MRMC analysis, which needs a
fully crossed design, refuses them.

MRMC analysis: Obuchowski-Rockette with Hillis' improvements (ORH)
------------------------------------------------------------------
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

Model vs readers
----------------
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
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from diffkd_study.metrics.operating_points import choose_threshold, mcnemar_test, wilson_ci
from diffkd_study.metrics.roc import delong_placements, require_classes, z_quantile
from diffkd_study.nbutil import format_p

Covariance = Literal["jackknife", "delong"]

READ_COLUMNS: tuple[str, ...] = ("reader_id", "reader_group", "case_id", "score", "call")
CONDITION_COLUMNS: tuple[str, ...] = ("treatment", "modality")
DEFAULT_CONDITION = "reading"

RULES: dict[str, str] = {
    "missing-column": "the read table needs the columns " + ", ".join(READ_COLUMNS),
    "empty-value": "reader_id, reader_group, case_id, score, call (and the condition column) must not be empty",
    "score-not-numeric": "score must be a finite number",
    "call-not-binary": "call must be 0 or 1",
    "unknown-case": "every case_id must appear in the truth table",
    "duplicate-read": "a reader reads each case once per reading condition",
    "reader-group-conflict": "a reader belongs to a single reader_group",
    "truth-conflict": "a truth column in the read table must agree with the truth table",
    "truth-missing-column": "the truth table needs the columns case_id, truth",
    "truth-not-binary": "truth must be 0 or 1",
    "truth-duplicate-case": "each case_id appears once in the truth table",
}

_MAX_LISTED_PROBLEMS = 25


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadProblem:
    """One broken rule at one place (``where``: ``file:line`` or ``table row <index>``)."""

    rule: str
    where: str
    message: str

    def format(self) -> str:
        return f"{self.where} {self.rule}: {self.message}"


class ReaderStudyError(ValueError):
    """The read or truth table breaks one or more rules; ``problems`` lists every one."""

    def __init__(self, source: str, problems: Sequence[ReadProblem]) -> None:
        self.source = source
        self.problems = list(problems)
        listed = [p.format() for p in self.problems[:_MAX_LISTED_PROBLEMS]]
        more = len(self.problems) - len(listed)
        if more:
            listed.append(f"... and {more} more")
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n  " + "\n  ".join(listed))

    @property
    def rules_broken(self) -> set[str]:
        return {p.rule for p in self.problems}


def _as_id(value: Any) -> str | None:
    """Text form of an ID; None when empty. Integral floats lose their '.0' (CSV round trips)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _locator(df: pd.DataFrame, source: str, from_file: bool) -> Callable[[Any], str]:
    if from_file:
        positions = {label: i for i, label in enumerate(df.index)}
        return lambda label: f"{source}:{positions[label] + 2}"  # line 1 is the header
    return lambda label: f"{source} row {label!r}"


def _binary_values(column: pd.Series) -> pd.Series:
    """0/1 as float, NaN where the value is not 0 or 1 (accepts 0, 1, 0.0, '1', True...)."""
    numeric = pd.to_numeric(
        column.map(lambda v: int(v) if isinstance(v, bool | np.bool_) else v), errors="coerce"
    )
    return numeric.where(numeric.isin([0, 1]))


def read_truth(
    truth: str | os.PathLike[str] | pd.DataFrame | pd.Series | Mapping[Any, Any], source: str | None = None
) -> pd.Series:
    """The truth table as a Series case_id (text) -> 0/1, validated (rules ``truth-*``).

    Accepts a CSV path or DataFrame with columns ``case_id, truth``, a Series indexed by case_id,
    or a mapping case_id -> truth.
    """
    from_file = isinstance(truth, str | os.PathLike)
    if from_file:
        source = source or str(truth)
        frame = pd.read_csv(truth, dtype=str, keep_default_na=False, na_values=[""])
    elif isinstance(truth, pd.DataFrame):
        frame = truth
    elif isinstance(truth, pd.Series):
        frame = pd.DataFrame({"case_id": truth.index, "truth": truth.to_numpy()})
    elif isinstance(truth, Mapping):
        frame = pd.DataFrame({"case_id": list(truth.keys()), "truth": list(truth.values())})
    else:
        raise TypeError(f"truth must be a path, DataFrame, Series or mapping; got {type(truth).__name__}")
    source = source or "truth table"
    missing = [c for c in ("case_id", "truth") if c not in frame.columns]
    if missing:
        raise ReaderStudyError(
            source,
            [
                ReadProblem(
                    "truth-missing-column",
                    source,
                    f"missing column(s) {missing}; found {list(frame.columns)}",
                )
            ],
        )
    where = _locator(frame, source, from_file)
    problems = []
    ids = frame["case_id"].map(_as_id)
    values = _binary_values(frame["truth"])
    for label in frame.index[ids.isna()]:
        problems.append(ReadProblem("empty-value", where(label), "case_id is empty"))
    for label in frame.index[values.isna()]:
        problems.append(
            ReadProblem(
                "truth-not-binary", where(label), f"truth must be 0 or 1; got {frame.at[label, 'truth']!r}"
            )
        )
    dup = ids.notna() & ids.duplicated(keep="first")
    for label in frame.index[dup]:
        problems.append(
            ReadProblem("truth-duplicate-case", where(label), f"case_id {ids[label]!r} appears again")
        )
    if problems:
        raise ReaderStudyError(source, problems)
    return pd.Series(
        values.astype(int).to_numpy(), index=pd.Index(ids.to_numpy(), name="case_id"), name="truth"
    )


@dataclass(frozen=True)
class ReaderStudy:
    """A validated reader study: reads (with ``truth`` merged) and the truth table.

    ``reads`` has the columns ``reader_id, reader_group, treatment, case_id, score, call, truth``
    (IDs as text, score float, call/truth int) plus any extra input columns; ``treatment`` holds
    the reading condition whatever its input column (``condition_source``).
    """

    reads: pd.DataFrame
    truth: pd.Series
    source: str
    condition_source: str | None = None

    @property
    def readers(self) -> tuple[str, ...]:
        return tuple(pd.unique(self.reads["reader_id"]))

    @property
    def treatments(self) -> tuple[str, ...]:
        return tuple(pd.unique(self.reads["treatment"]))

    @property
    def cases(self) -> tuple[str, ...]:
        """Cases read at least once, in truth-table order."""
        read = set(self.reads["case_id"])
        return tuple(c for c in self.truth.index if c in read)

    @property
    def reader_groups(self) -> dict[str, str]:
        return dict(zip(self.reads["reader_id"], self.reads["reader_group"], strict=True))

    def unread_cases(self) -> tuple[str, ...]:
        """Cases of the truth table that nobody read (they take no part in any analysis)."""
        read = set(self.reads["case_id"])
        return tuple(c for c in self.truth.index if c not in read)

    def missing_reads(self) -> pd.DataFrame:
        """(treatment, reader_id, case_id) cells of the fully crossed design that have no read."""
        full = pd.MultiIndex.from_product(
            [self.treatments, self.readers, self.cases], names=["treatment", "reader_id", "case_id"]
        )
        present = pd.MultiIndex.from_frame(self.reads[["treatment", "reader_id", "case_id"]])
        return full.difference(present).to_frame(index=False)

    def completeness(self) -> pd.DataFrame:
        """Per treatment and case with missing reads: how many readers read it and which did not."""
        missing = self.missing_reads()
        if missing.empty:
            return pd.DataFrame(columns=["treatment", "case_id", "n_readers", "n_missing", "missing_readers"])
        out = (
            missing.groupby(["treatment", "case_id"], sort=False)["reader_id"]
            .agg(n_missing="size", missing_readers=lambda s: ", ".join(s))
            .reset_index()
        )
        out.insert(2, "n_readers", len(self.readers) - out["n_missing"])
        return out

    @property
    def fully_crossed(self) -> bool:
        return self.missing_reads().empty

    def summary(self) -> str:
        n_missing = len(self.missing_reads())
        groups = pd.Series(self.reader_groups).value_counts().sort_index()
        text = (
            f"{self.source}: {len(self.reads)} reads, {len(self.readers)} readers "
            f"({', '.join(f'{n} {g}' for g, n in groups.items())}), {len(self.cases)} cases "
            f"({int(self.truth[list(self.cases)].sum())} diseased), treatments {list(self.treatments)}"
        )
        if n_missing:
            text += f"; {n_missing} read(s) missing from the fully crossed design (see completeness())"
        if self.unread_cases():
            text += f"; {len(self.unread_cases())} truth-table case(s) never read"
        return text

    def describe(self, who: str = "readers", condition: str = "diseased") -> str:
        """The study in a sentence for a report (no file names): readers by group, cases, missing reads."""
        groups = pd.Series(self.reader_groups).value_counts().sort_index()
        text = (
            f"{len(self.readers)} {who} ({', '.join(f'{n} {g}' for g, n in groups.items())}) read "
            f"{len(self.cases)} cases ({int(self.truth[list(self.cases)].sum())} with {condition})"
        )
        if len(self.treatments) > 1:
            text += f" under {len(self.treatments)} reading conditions ({', '.join(self.treatments)})"
        n_missing = len(self.missing_reads())
        if n_missing:
            text += f"; {n_missing} read(s) are missing"
        return text + "."

    def score_array(
        self, treatments: Sequence[str] | None = None, readers: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """Scores as an array [treatment, reader, case] with the truth vector; needs a fully crossed design.

        Returns ``(scores, truth, treatments, readers, cases)``; the cases are those any of the
        chosen readers read under the chosen treatments.
        """
        trts = tuple(treatments) if treatments is not None else self.treatments
        rdrs = tuple(readers) if readers is not None else self.readers
        for name, chosen, known in (("treatment", trts, self.treatments), ("reader", rdrs, self.readers)):
            unknown = [x for x in chosen if x not in known]
            if unknown:
                raise ValueError(f"unknown {name}(s) {unknown}; the study has {list(known)}")
        sub = self.reads[self.reads["treatment"].isin(trts) & self.reads["reader_id"].isin(rdrs)]
        read = set(sub["case_id"])
        cases = tuple(c for c in self.truth.index if c in read)
        full = pd.MultiIndex.from_product([trts, rdrs, cases], names=["treatment", "reader_id", "case_id"])
        values = sub.set_index(["treatment", "reader_id", "case_id"])["score"].reindex(full)
        if values.isna().any():
            gaps = values.index[values.isna().to_numpy()]
            example = ", ".join(f"reader {r!r} case {c!r} under {t!r}" for t, r, c in gaps[:3])
            raise ValueError(
                f"the MRMC analysis needs a fully crossed design; {len(gaps)} read(s) are missing, e.g. {example} "
                "(see ReaderStudy.completeness(), or restrict the readers/treatments)"
            )
        scores = values.to_numpy(dtype=float).reshape(len(trts), len(rdrs), len(cases))
        return scores, self.truth[list(cases)].to_numpy(dtype=int), trts, rdrs, cases


def validate_reads(
    reads: pd.DataFrame,
    truth: str | os.PathLike[str] | pd.DataFrame | pd.Series | Mapping[Any, Any],
    *,
    source: str = "read table",
    condition_col: str | None = None,
) -> ReaderStudy:
    """Validate a read table against the truth table and return a ``ReaderStudy``.

    ``condition_col`` names the reading-condition column; by default ``treatment``, else
    ``modality``, else none. Raises ``ReaderStudyError`` listing every problem with its place
    (``<source> row <index label>``) and rule.
    """
    return _validate(reads, truth, source, condition_col, from_file=False)


def read_reader_study(
    reads_path: str | os.PathLike[str],
    truth: str | os.PathLike[str] | pd.DataFrame | pd.Series | Mapping[Any, Any],
    *,
    condition_col: str | None = None,
) -> ReaderStudy:
    """Read and validate a read-table CSV against a truth table; problems name ``<file>:<line>``."""
    reads = pd.read_csv(reads_path, dtype=str, keep_default_na=False, na_values=[""])
    return _validate(reads, truth, str(reads_path), condition_col, from_file=True)


def _validate(
    reads: pd.DataFrame,
    truth: str | os.PathLike[str] | pd.DataFrame | pd.Series | Mapping[Any, Any],
    source: str,
    condition_col: str | None,
    from_file: bool,
) -> ReaderStudy:
    truth_series = read_truth(truth)
    missing = [c for c in READ_COLUMNS if c not in reads.columns]
    if condition_col is not None and condition_col not in reads.columns:
        missing.append(condition_col)
    if missing:
        raise ReaderStudyError(
            source,
            [
                ReadProblem(
                    "missing-column", source, f"missing column(s) {missing}; found {list(reads.columns)}"
                )
            ],
        )
    if condition_col is None:
        condition_col = next((c for c in CONDITION_COLUMNS if c in reads.columns), None)
    where = _locator(reads, source, from_file)

    out = reads.copy()
    for col in ("reader_id", "reader_group", "case_id"):
        out[col] = reads[col].map(_as_id)
    out["treatment"] = reads[condition_col].map(_as_id) if condition_col else DEFAULT_CONDITION
    score = pd.to_numeric(reads["score"], errors="coerce")
    call = _binary_values(reads["call"])

    problems: list[ReadProblem] = []
    id_cols = ["reader_id", "reader_group", "case_id"] + (["treatment"] if condition_col else [])
    raw_empty = {c: reads[c].map(_as_id).isna() for c in ("score", "call")}
    has_truth = "truth" in reads.columns
    read_truth_values = _binary_values(reads["truth"]) if has_truth else None
    for label in reads.index:
        empty = [c for c in id_cols if pd.isna(out.at[label, c])] + [
            c for c in ("score", "call") if raw_empty[c][label]
        ]
        if empty:
            problems.append(ReadProblem("empty-value", where(label), f"empty {', '.join(empty)}"))
            continue
        who = f"(reader {out.at[label, 'reader_id']!r}, case {out.at[label, 'case_id']!r})"
        if not np.isfinite(score[label]):
            problems.append(
                ReadProblem(
                    "score-not-numeric",
                    where(label),
                    f"score {reads.at[label, 'score']!r} is not a finite number {who}",
                )
            )
        if np.isnan(call[label]):
            problems.append(
                ReadProblem(
                    "call-not-binary",
                    where(label),
                    f"call must be 0 or 1; got {reads.at[label, 'call']!r} {who}",
                )
            )
        case = out.at[label, "case_id"]
        if case not in truth_series.index:
            problems.append(
                ReadProblem("unknown-case", where(label), f"case {case!r} is not in the truth table {who}")
            )
        elif has_truth and read_truth_values[label] != truth_series[case]:
            problems.append(
                ReadProblem(
                    "truth-conflict",
                    where(label),
                    f"truth {reads.at[label, 'truth']} here but {truth_series[case]} in the truth table {who}",
                )
            )

    complete = out[id_cols].notna().all(axis=1)
    keys = out.loc[complete, ["reader_id", "treatment", "case_id"]]
    dup = keys.duplicated(keep=False)
    for (reader, trt, case), block in keys[dup].groupby(["reader_id", "treatment", "case_id"], sort=False):
        places = ", ".join(where(label) for label in block.index)
        problems.append(
            ReadProblem(
                "duplicate-read",
                where(block.index[1]),
                f"reader {reader!r} read case {case!r} under {trt!r} {len(block)} times ({places})",
            )
        )
    groups = out.loc[complete].groupby("reader_id", sort=False)["reader_group"].unique()
    for reader, levels in groups.items():
        if len(levels) > 1:
            first_conflict = out.index[
                complete & (out["reader_id"] == reader) & (out["reader_group"] != levels[0])
            ][0]
            problems.append(
                ReadProblem(
                    "reader-group-conflict",
                    where(first_conflict),
                    f"reader {reader!r} is in groups {sorted(levels)}",
                )
            )
    if problems:
        raise ReaderStudyError(source, problems)

    out["score"] = score.astype(float)
    out["call"] = call.astype(int)
    out["truth"] = truth_series.reindex(out["case_id"]).to_numpy()
    front = ["reader_id", "reader_group", "treatment", "case_id", "score", "call", "truth"]
    rest = [c for c in out.columns if c not in front and c != condition_col]
    return ReaderStudy(out[front + rest].reset_index(drop=True), truth_series, source, condition_col)


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
    from diffkd_study.metrics.roc import auc_delong

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
        return self.auc.mean(axis=1)

    def auc_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            self.auc,
            index=pd.Index(self.treatments, name="treatment"),
            columns=pd.Index(self.readers, name="reader_id"),
        )

    def summary(self) -> str:
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


# ----------------------------------------------------------------------------------------------
# Model vs readers (1T-RRRC)
# ----------------------------------------------------------------------------------------------


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


def _p_text(p: float | None, digits: int = 3) -> str:
    """``= 0.042`` or ``< 0.001``: a p-value after "p" in a sentence."""
    text = format_p(p, digits)
    return text if text.startswith("<") else f"= {text}"


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


# ----------------------------------------------------------------------------------------------
# Simulated readers for the phantom cohort
# ----------------------------------------------------------------------------------------------


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
