"""Paired comparisons of the DiffKD study's models: planned and exploratory tests, Holm, power, per-seed tests.

Every comparison is a paired test of two models' AUCs on the images both scored, with the patient as the
unit: DeLong's test with Obuchowski's (1997, Biometrics 53:567) clustered covariance
(``roc.delong_test(groups=patient_id)``), equal to DeLong et al. (1988) when every patient has one image.
Each row carries the difference (first minus second model) with its Wald interval, the two-sided p, and the
minimal detectable difference at 80% power for this design (``mdd``: 2.80 x the clustered SE of the
difference; Obuchowski & McClish 1997, Stat Med 16:1529), so that "no significant difference" is read
against what the study could have detected.

Multiplicity (Holm 1979, Scand J Stat 6:65; ``clustered.holm_adjust``), per test set:

* the **planned comparisons** (:data:`PLANNED_COMPARISONS`), written down before any result: (i) does
  training the teacher on synthetic images help it, (ii) does distillation help the student, (iii) does the
  synthetic-trained teacher help the student; they form the primary family, Holm over the three;
* the **partial combinations** (the full DiffKD student against every other model): Holm over that table;
* **all pairs**: Holm over all of them; exploratory.

The **students' goals** (:func:`student_goals`, issue 24; secondary, no multiplicity adjustment, each read on its
own rule) were written down before the run: a student is *within 0.03 AUC of its teacher* when teacher minus
student is at most 0.03 (``met``; ``with confidence`` when the upper 95% bound is too); *distillation helps by at
least 0.02* when the KD student minus the student alone (same initialisation) is at least 0.02 (``with
confidence`` when the lower bound is); *the initialisation helps* a variant when the student minus its
from-scratch twin is at least 0 (``with confidence`` when the lower bound is). The **standalone-reader goal** (issue
25, same rules): a model trained and tested on an input without the expert outline (``-jittered``, ``-whole``) is
*within 0.05 AUC of the outline mode* when the outline model minus it is at most 0.05, for the real-only teacher
and, where run, the students alone and distilled. :func:`outline_free_vs_birads` draws the comparison with the
radiologists' BI-RADS in those modes only: BI-RADS was read without an expert outline, so the models are too.

The primary analysis uses the seed-averaged scores (``evaluate.evaluation_rows``); :func:`per_seed_tests`
repeats the comparisons with each training seed the two models share (seeds paired by number).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from diffkd_study.methods.diffkd.evaluate import PATIENT, evaluation_rows
from diffkd_study.methods.diffkd.stage import OUTLINE_FREE_CROPS, crop_suffix
from diffkd_study.metrics.clustered import holm_adjust, minimal_detectable_difference
from diffkd_study.metrics.roc import delong_test
from diffkd_study.metrics.tables import too_few_for_auc
from diffkd_study.predictions import INTERNAL_TEST

__all__ = ["FULL_MODEL", "MDD_SENTENCE", "PLANNED_COMPARISONS", "TEST_COLUMNS", "GoalComparison", "OUTLINE_FREE_SUFFIXES",
           "PlannedComparison", "goal_plan", "outline_free_vs_birads", "paired_delong_tests", "student_goals", "paired_scores", "paired_test_row", "per_seed_tests", "planned_comparisons", "tested_pairs"]

#: the full three-stage method's student: the reference of the partial-combinations table
FULL_MODEL = "student_diffkd"
NOT_IN_RUN = "not in this run"
CLUSTERED_METHOD = "DeLong paired test, clustered by patient (Obuchowski 1997)"
MDD_SENTENCE = (
    "Detectable difference (80% power): the smallest true difference in AUC that this comparison, with this many "
    "patients, finds significant (two-sided p < 0.05) in 8 of 10 studies like this one; differences smaller than "
    "this would usually be missed with this many patients, so 'no significant difference' does not show that "
    "the two models are equally good."
)
TEST_COLUMNS = ["test_set", "model_a", "model_b", "n", "n_patients", "n_pos", "auc_a", "auc_b", "difference",
                "ci_low", "ci_high", "se", "z", "p_value", "mdd", "correlation", "method", "note"]


@dataclass(frozen=True)
class PlannedComparison:
    """One comparison of the primary family: ``model_a`` against ``model_b`` (difference a - b), the question it
    answers and the two models it contrasts, in words."""

    model_a: str
    model_b: str
    question: str
    contrast: str


#: the primary family, fixed before the results (Holm over these three per test set); everything else is secondary
PLANNED_COMPARISONS: tuple[PlannedComparison, ...] = (
    PlannedComparison("teacher_real+syn", "teacher_real", "(i) Do synthetic images help the teacher?",
                      "Teacher trained on real + synthetic images vs teacher trained on real images"),
    PlannedComparison("student_kd_real", "student_alone", "(ii) Does distillation help the student?",
                      "Student distilled from the real-image teacher vs student trained alone"),
    PlannedComparison("student_diffkd", "student_kd_real", "(iii) Does the synthetic-trained teacher help the student?",
                      "Full DiffKD student vs student distilled from the real-image teacher"),
)


def paired_scores(tests: pd.DataFrame, test_set: str | None, a: str, b: str) -> pd.DataFrame:
    """The images of ``test_set`` (``None``: every row of ``tests``, e.g. the pooled out-of-fold predictions)
    scored by both ``a`` and ``b``: label, patient and the two scores (``y_score``, ``y_score_b``)."""
    part = tests if test_set is None else tests[tests["test_set"] == test_set]
    left = part[part["model"] == a].set_index("image_id")[["y_true", PATIENT, "y_score"]]
    right = part[part["model"] == b].set_index("image_id")[["y_score"]].rename(columns={"y_score": "y_score_b"})
    return left.join(right, how="inner")


def paired_test_row(both: pd.DataFrame, level: float = 0.95, alpha: float = 0.05, power: float = 0.8) -> dict:
    """The clustered paired test of the two scores of :func:`paired_scores` as one table row (counts always; the
    statistics, or a ``note`` when there are too few patients of a class); ``mdd`` is the minimal detectable
    difference at two-sided ``alpha`` and ``power``."""
    y = both["y_true"].to_numpy().astype(bool)
    clusters = both[PATIENT].to_numpy()
    row = {"n": len(both), "n_patients": int(pd.unique(clusters).size), "n_pos": int(y.sum())}
    too_few = too_few_for_auc(y, clusters)
    if too_few:
        return {**row, "note": too_few}
    t = delong_test(y, both["y_score"].to_numpy(), both["y_score_b"].to_numpy(), level=level, groups=clusters)
    # with no sampling variability (identical rankings) a detectable difference of 0 would be degenerate
    mdd = minimal_detectable_difference(t.se, alpha, power) if t.se > 0 else np.nan
    return {**row, "auc_a": t.auc_a, "auc_b": t.auc_b, "difference": t.difference, "ci_low": t.ci_low,
            "ci_high": t.ci_high, "se": t.se, "z": t.z, "p_value": t.p_value, "mdd": mdd,
            "correlation": t.correlation, "method": CLUSTERED_METHOD,
            "note": "" if t.se > 0 else "identical rankings: the difference has no sampling variability"}


def _with_holm(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``p_holm``: Holm's adjusted p over the rows of each test set (NaN p not counted)."""
    holm = pd.Series(np.nan, index=table.index)
    for _, part in table.groupby("test_set", sort=False):
        holm[part.index] = holm_adjust(part["p_value"].to_numpy(dtype=float))
    out = table.assign(p_holm=holm.to_numpy())
    columns = list(table.columns)
    return out[columns[:columns.index("p_value") + 1] + ["p_holm"] + columns[columns.index("p_value") + 1:]]


def paired_delong_tests(tests: pd.DataFrame, *, level: float = 0.95, reference: str | None = None) -> pd.DataFrame:
    """The patient-clustered DeLong test of every pair of models on each test set (on the images both scored),
    with ``p_holm`` (Holm over the pairs of each test set) and ``mdd`` (detectable difference at 80% power);
    with ``reference``, only of the reference (``model_a``) against each other model (``model_b``), Holm then
    over those comparisons. Columns :data:`TEST_COLUMNS` plus ``p_holm`` after ``p_value``."""
    rows = []
    for test_set in pd.unique(tests["test_set"]):
        models = list(pd.unique(tests.loc[tests["test_set"] == test_set, "model"]))
        if reference is not None and reference not in models:
            raise ValueError(f"reference model {reference!r} has no predictions on {test_set}")
        pairs = ([(reference, m) for m in models if m != reference] if reference is not None
                 else list(combinations(models, 2)))
        for a, b in pairs:
            rows.append({"test_set": test_set, "model_a": a, "model_b": b,
                         **paired_test_row(paired_scores(tests, test_set, a, b), level)})
    return _with_holm(pd.DataFrame(rows, columns=TEST_COLUMNS))


def planned_comparisons(tests: pd.DataFrame, *, level: float = 0.95,
                        planned: Sequence[PlannedComparison] = PLANNED_COMPARISONS) -> pd.DataFrame:
    """The primary family (:data:`PLANNED_COMPARISONS`) on each test set: ``comparison`` (the question) and
    ``contrast`` (the two models in words), the clustered paired test, ``p_holm`` (Holm over the family's comparisons that could be made on that set) and
    ``mdd``. A comparison whose models are not both in the run, or not both scored on the set, keeps its row
    with the reason in ``note`` and no p (it does not count in Holm's family)."""
    present = set(tests["model"])
    rows = []
    for test_set in pd.unique(tests["test_set"]):
        scored = set(tests.loc[tests["test_set"] == test_set, "model"])
        for plan in planned:
            row = {"comparison": plan.question, "contrast": plan.contrast, "test_set": test_set,
                   "model_a": plan.model_a, "model_b": plan.model_b}
            absent = [m for m in (plan.model_a, plan.model_b) if m not in scored]
            if absent:
                why = NOT_IN_RUN if any(m not in present for m in absent) else "no predictions on this test set"
                rows.append({**row, "note": f"{', '.join(absent)}: {why}"})
                continue
            rows.append({**row, **paired_test_row(paired_scores(tests, test_set, plan.model_a, plan.model_b), level)})
    return _with_holm(pd.DataFrame(rows, columns=["comparison", "contrast", *TEST_COLUMNS]))


def tested_pairs(*tables: pd.DataFrame) -> list[tuple[str, str]]:
    """The (model_a, model_b) pairs of the given test tables that were tested (have a p-value), each once, in
    order of first appearance: the pairs :func:`per_seed_tests` repeats seed by seed."""
    pairs: dict[tuple[str, str], None] = {}
    for table in tables:
        if len(table) and "p_value" in table.columns:
            tested = table[table["p_value"].notna()]
            pairs.update(dict.fromkeys(zip(tested["model_a"], tested["model_b"], strict=True)))
    return list(pairs)


def per_seed_tests(pred: pd.DataFrame, pairs: Sequence[tuple[str, str]], *, level: float = 0.95) -> pd.DataFrame:
    """The clustered paired tests of ``pairs`` repeated with single training seeds: for each pair and each seed
    both models have (seeds paired by number), the test on each test set of that seed's predictions alone.
    One row per (test set, pair, seed): counts, AUCs, difference with CI, p and ``mdd``; no multiplicity
    adjustment (the seed-averaged tests are the analysis, these show how much it depends on the seed)."""
    rows = []
    for a, b in pairs:
        seeds = sorted(set(pred.loc[pred["model"] == a, "seed"]) & set(pred.loc[pred["model"] == b, "seed"]))
        for seed in seeds:
            tests = evaluation_rows(pred[pred["seed"] == seed], [a, b])
            for test_set in pd.unique(tests["test_set"]):
                both = paired_scores(tests, test_set, a, b)
                if both.empty:
                    continue
                rows.append({"test_set": test_set, "model_a": a, "model_b": b, "seed": int(seed),
                             **paired_test_row(both, level)})
    table = pd.DataFrame(rows, columns=["test_set", "model_a", "model_b", "seed", *TEST_COLUMNS[3:]])
    order = {name: k for k, name in enumerate(sorted(pd.unique(table["test_set"]), key=lambda n: (n != INTERNAL_TEST, n)))}
    return table.sort_values("test_set", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)


#: model-name suffixes of the standalone-reader crops (diffkd_study.methods.diffkd.stage.OUTLINE_FREE_CROPS)
OUTLINE_FREE_SUFFIXES: tuple[str, ...] = tuple(crop_suffix(crop) for crop in OUTLINE_FREE_CROPS)


@dataclass(frozen=True)
class GoalComparison:
    """One student goal: ``model_a`` minus ``model_b`` against ``margin``; ``at_most`` (the difference must not
    exceed the margin, e.g. teacher minus student <= 0.03) or not (it must reach the margin)."""

    model_a: str
    model_b: str
    goal: str
    margin: float
    at_most: bool


def goal_plan(models: Sequence[str]) -> list[GoalComparison]:
    """The goals (module docstring) that the models present allow, in order: students vs teachers, KD vs alone,
    initialised vs scratch, outline-free crops vs the outline crop."""
    present, plan = set(models), []
    for student, teacher in (("student_kd_real", "teacher_real"), ("student_diffkd", "teacher_real+syn")):
        for suffix in ("", "-scratch"):
            if student + suffix in present and teacher in present:
                plan.append(GoalComparison(teacher, student + suffix, "student within 0.03 AUC of its teacher",
                                           0.03, True))
    for suffix in ("", "-scratch"):
        for student in ("student_kd_real", "student_diffkd"):
            if student + suffix in present and "student_alone" + suffix in present:
                plan.append(GoalComparison(student + suffix, "student_alone" + suffix,
                                           "distillation adds at least 0.02 AUC (same initialisation)", 0.02, False))
    for model in models:
        if model.endswith("-scratch") and model.removesuffix("-scratch") in present:
            plan.append(GoalComparison(model.removesuffix("-scratch"), model,
                                       "the general-distillation initialisation helps", 0.0, False))
    for model in models:
        for suffix in OUTLINE_FREE_SUFFIXES:
            if model.endswith(suffix) and model.removesuffix(suffix) in present:
                plan.append(GoalComparison(model.removesuffix(suffix), model,
                                           f"without the expert outline ({suffix[1:]}) within 0.05 AUC of the "
                                           "outline crop", 0.05, True))
    return plan


def outline_free_vs_birads(tests: pd.DataFrame, *, level: float = 0.95, reference: str = "clinical") -> pd.DataFrame:
    """Every model whose input needs no expert outline (names ending in :data:`OUTLINE_FREE_SUFFIXES`) against the
    radiologists' BI-RADS (the ``clinical`` baseline on BI-RADS alone) on each test set: the clustered paired
    DeLong row (model minus BI-RADS); exploratory, no multiplicity adjustment. Empty when either is absent."""
    models = [m for m in pd.unique(tests["model"]) if m.endswith(OUTLINE_FREE_SUFFIXES)]
    rows = []
    for test_set in pd.unique(tests["test_set"]):
        for model in models:
            both = paired_scores(tests, test_set, model, reference)
            if not both.empty:
                rows.append({"test_set": test_set, "model_a": model, "model_b": reference,
                             **paired_test_row(both, level)})
    return pd.DataFrame(rows, columns=["test_set", "model_a", "model_b", *TEST_COLUMNS[3:]])


def student_goals(tests: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
    """The students' goals (module docstring) on each test set: the clustered paired test of each pair the run
    has, with ``met`` (the point estimate satisfies the goal) and ``with_confidence`` (the CI bound does)."""
    plan = goal_plan(list(pd.unique(tests["model"])))
    rows = []
    for test_set in pd.unique(tests["test_set"]):
        for goal in plan:
            both = paired_scores(tests, test_set, goal.model_a, goal.model_b)
            if both.empty:
                continue
            row = {"goal": goal.goal, "test_set": test_set, "model_a": goal.model_a, "model_b": goal.model_b,
                   "margin": goal.margin, **paired_test_row(both, level)}
            if pd.notna(row.get("difference")):
                d, low, high = row["difference"], row["ci_low"], row["ci_high"]
                row["met"] = bool(d <= goal.margin if goal.at_most else d >= goal.margin)
                row["with_confidence"] = bool(high <= goal.margin if goal.at_most else low >= goal.margin)
            rows.append(row)
    columns = ["goal", "test_set", "model_a", "model_b", "margin", "n", "n_patients", "auc_a", "auc_b",
               "difference", "ci_low", "ci_high", "p_value", "met", "with_confidence", "note"]
    table = pd.DataFrame(rows)
    return table.reindex(columns=columns) if len(table) else pd.DataFrame(columns=columns)
