"""Read tables: the validated read and truth tables of a reader study (``ReaderStudy``).

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
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

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


@dataclass(frozen=True)
class ReadProblem:
    """One broken rule at one place (``where``: ``file:line`` or ``table row <index>``)."""

    rule: str
    where: str
    message: str

    def format(self) -> str:
        """The problem on one line: ``where rule: message``."""
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
        """The names of the rules broken."""
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
        """The reader ids, in order of first appearance."""
        return tuple(pd.unique(self.reads["reader_id"]))

    @property
    def treatments(self) -> tuple[str, ...]:
        """The treatments, in order of first appearance."""
        return tuple(pd.unique(self.reads["treatment"]))

    @property
    def cases(self) -> tuple[str, ...]:
        """Cases read at least once, in truth-table order."""
        read = set(self.reads["case_id"])
        return tuple(c for c in self.truth.index if c in read)

    @property
    def reader_groups(self) -> dict[str, str]:
        """``{reader_id: reader_group}``."""
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
        """True when every reader read every read case in every treatment (:meth:`missing_reads` is empty)."""
        return self.missing_reads().empty

    def summary(self) -> str:
        """One line: reads, readers per group, cases (diseased), treatments, and missing or unread cases."""
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

