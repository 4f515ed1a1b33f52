"""Study-level evaluation of prediction tables: the tables of the evaluation report, one function each.

Every function takes a validated prediction table (``predictions.read_predictions``) and composes the
statistics of ``roc``, ``operating_points``, ``calibration`` and ``tables``; nothing is re-derived
here. Test sets are the internal test split (``internal test``) and each external center
(``external: <center>``); the validation split is used only to choose thresholds. The paired tests,
Holm's adjustment and the planned comparisons are in :mod:`~diffkd_study.methods.diffkd.comparisons`.

Patients, not images, are the unit of inference: every AUC interval is Obuchowski's (1997, Biometrics
53:567) patient-clustered DeLong interval (``PATIENT``, the predictions' ``patient_id``), the bootstrap
beside it resamples whole patients, and the operating-point intervals are cluster-robust (Rao-Scott
adjusted Wilson); with one image per patient each equals its per-image form.

A model trained with several seeds enters the analysis with its seed-averaged score (:func:`seed_averaged`:
per image, the mean predicted probability over the model's seeds), for the tables, curves, tests and the
validation thresholds alike; the per-seed results are kept beside (:func:`seed_variability_table`).

A model with no predictions on a test set (a baseline whose inputs that set does not record) is *not
applicable* there: :func:`not_applicable_pairs` lists such pairs with their reason, the tables that take
``not_applicable`` show each as a row with n = 0 and the note ``not applicable: <reason>``, and
:func:`not_applicable_note` says which models a test set's figures leave out.

Every model's AUC is also shown beside the box-geometry baseline's on the same images (the lesion box's
shape, size and crop position alone; a shortcut audit), with the paired clustered difference:
:func:`~diffkd_study.methods.diffkd.box_geometry.box_geometry_reference` (it lives there because it uses the
paired tests of :mod:`~diffkd_study.methods.diffkd.comparisons`, which build on this module).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from diffkd_study.data.schema import Manifest
from diffkd_study.metrics.calibration import brier_score, calibration_intercept_slope
from diffkd_study.metrics.operating_points import Threshold, choose_threshold, operating_point
from diffkd_study.metrics.roc import auc_bootstrap
from diffkd_study.metrics.tables import aggregate_seeds, metrics_by_group
from diffkd_study.predictions import INTERNAL_TEST, label_test_sets, ordered_test_sets

AGE_BANDS: tuple[tuple[float, float, str], ...] = (
    (0, 40, "<40"), (40, 50, "40-49"), (50, 60, "50-59"), (60, 70, "60-69"), (70, 200, ">=70"),
)
MISSING = "missing"
NOT_APPLICABLE = "not applicable"
NO_PREDICTIONS = "no predictions on this test set"
#: the column of the prediction tables that names each image's patient: the cluster of every interval
PATIENT = "patient_id"
#: how the clinical baseline is named wherever the evaluation shows it while BI-RADS is among its inputs
BIRADS_READING = "radiologists' BI-RADS (reading the same images)"
BIRADS_FOOTNOTE = (
    "clinical = " + BIRADS_READING + ": the BI-RADS category is the radiologists' own reading of the images the "
    "models see (a logistic regression on it, with any other conditions the baselines stage was given; see "
    "45_baselines), not an independent clinical covariate. Comparing a model with it compares the model with "
    "the radiologists' reading, and it cannot be added to a model as extra information."
)
MODEL_DESCRIPTIONS: dict[str, str] = {
    "teacher_real": "teacher network trained on real images",
    "teacher_real+syn": "teacher network trained on real + synthetic images",
    "student_alone": "student network trained alone (no distillation)",
    # every student starts from the general-distillation initialisation unless its name ends in -scratch
    "student_kd_real": "student distilled from the real-image teacher",
    "student_diffkd": "full DiffKD student (distilled from the real + synthetic teacher)",
    "student_diffkd+syn": "full DiffKD student that also trains on synthetic images",
    "image_features": "logistic regression on hand-crafted lesion features",
    "clinical": "logistic regression on the recorded clinical conditions",
    "box_geometry": "logistic regression on the lesion box's shape, size and crop position alone (no pixels)",
}
# ordered so that tables and figures list the bands by age (<40 first), not alphabetically; missing last
AGE_BAND_DTYPE = pd.CategoricalDtype([label for *_, label in AGE_BANDS] + [MISSING], ordered=True)


def age_band(age: pd.Series) -> pd.Series:
    """Age in years -> band label (``AGE_BANDS``), an ordered categorical (``AGE_BAND_DTYPE``: ``<40`` first,
    ``missing`` where not recorded, last)."""
    years = pd.to_numeric(age, errors="coerce")
    out = pd.Series(MISSING, index=age.index, dtype=object)
    for low, high, label in AGE_BANDS:
        out[(years >= low) & (years < high)] = label
    return out.astype(AGE_BAND_DTYPE)


def seed_counts(pred: pd.DataFrame) -> dict[str, int]:
    """The number of training seeds of each model (in order of first appearance): how many seeds its
    seed-averaged score (:func:`seed_averaged`) averages."""
    return {str(m): int(s.nunique()) for m, s in pred.groupby("model", sort=False)["seed"]}


def seed_averaged(pred: pd.DataFrame, keys: Sequence[str] = ("model", "image_id")) -> pd.DataFrame:
    """One row per (model, image): the mean predicted probability over the model's training seeds.

    The score of a model trained with several seeds is the average of its seeds' probabilities for the
    image (an equally weighted ensemble of the seeds, itself a probability, so calibration is assessed on
    it as on any prediction); a model with one seed is itself. The columns are the prediction table's
    without ``seed``, plus ``n_seeds`` (the seeds that scored the image), rows in the order of each
    (model, image)'s first row. ``keys`` names what identifies a prediction besides the seed (the
    cross-validation adds ``fold``: one fold model's seeds are averaged, never two folds')."""
    keys = list(keys)
    first = pred.drop_duplicates(keys).drop(columns=["seed", "y_score"])
    scores = pred.groupby(keys, sort=False)["y_score"].agg(y_score="mean", n_seeds="size").reset_index()
    out = first.merge(scores, on=keys, how="left", validate="one_to_one")
    return out[[c for c in pred.columns if c != "seed"] + ["n_seeds"]].reset_index(drop=True)


def evaluation_rows(pred: pd.DataFrame, models: Sequence[str] | None = None) -> pd.DataFrame:
    """The seed-averaged test-set rows (internal test and external; :func:`seed_averaged`) with a ``test_set``
    column, models in the given order. Restrict ``pred`` to one seed first for that seed's rows."""
    chosen = list(models) if models else list(pd.unique(pred["model"]))
    unknown = [m for m in chosen if m not in set(pred["model"])]
    if unknown:
        raise ValueError(f"no predictions for model(s) {unknown}; the tables hold {sorted(set(pred['model']))}")
    averaged = seed_averaged(pred[pred["model"].isin(chosen)])
    out = averaged.assign(test_set=label_test_sets(averaged)).dropna(subset=["test_set"])
    order = {name: k for k, name in enumerate(ordered_test_sets(out))}
    rank = {m: k for k, m in enumerate(chosen)}
    return out.sort_values(["test_set", "model"], key=lambda c: c.map(order if c.name == "test_set" else rank),
                           kind="stable").reset_index(drop=True)


def manifest_test_sets(manifest: Manifest) -> list[str]:
    """The test sets of the split study manifest in report order: ``internal test``, then each external center."""
    if "split" not in manifest.df.columns:
        raise ValueError(f"{manifest.path}: the manifest has no split column (use the study manifest)")
    return ordered_test_sets(manifest.df)


def not_applicable_pairs(
    tests: pd.DataFrame, models: Sequence[str], test_sets: Sequence[str],
    reasons: Mapping[str, Mapping[str, str]] | None = None,
) -> pd.DataFrame:
    """Every (model, test set) of ``models`` x ``test_sets`` with no row in ``tests``, and why:
    ``reasons[model][test_set]`` (e.g. the baselines stage's record), else "no predictions on this test set".
    Columns ``model, test_set, reason``, test sets in the order given, models within them too."""
    present = set(zip(tests["model"], tests["test_set"], strict=True))
    reasons = reasons or {}
    rows = [{"model": m, "test_set": t, "reason": reasons.get(m, {}).get(t, NO_PREDICTIONS)}
            for t in test_sets for m in models if (m, t) not in present]
    return pd.DataFrame(rows, columns=["model", "test_set", "reason"])


def not_applicable_note(not_applicable: pd.DataFrame | None, test_set: str) -> str:
    """The sentence a test set's figures carry about the models they leave out; empty when none."""
    if not_applicable is None:
        return ""
    part = not_applicable[not_applicable["test_set"] == test_set]
    if part.empty:
        return ""
    return "Not shown (not applicable on this test set): " + "; ".join(
        f"{r.model} ({r.reason})" for r in part.itertuples()) + "."


def _with_not_applicable(table: pd.DataFrame, not_applicable: pd.DataFrame | None) -> pd.DataFrame:
    """``table`` plus one row per not-applicable pair (n = 0, ``note`` "not applicable: <reason>"), sorted
    by test set (report order) and model (order of first appearance), stable within a pair."""
    if not_applicable is None or not_applicable.empty:
        return table
    extra = pd.DataFrame({
        "model": not_applicable["model"].to_numpy(), "test_set": not_applicable["test_set"].to_numpy(),
        **{c: 0 for c in ("n", "n_patients", "n_pos", "n_neg") if c in table.columns},
        "note": (NOT_APPLICABLE + ": " + not_applicable["reason"]).to_numpy(),
    })
    combined = pd.concat([table.astype({"note": object}), extra], ignore_index=True)
    combined["note"] = combined["note"].fillna("")
    order = {name: k for k, name in enumerate(sorted(pd.unique(combined["test_set"]),
                                                       key=lambda n: (n != INTERNAL_TEST, n)))}
    rank = {m: k for k, m in enumerate(pd.unique(pd.concat([table["model"], extra["model"]])))}
    combined = combined.sort_values(["test_set", "model"], kind="stable",
                                    key=lambda c: c.map(order if c.name == "test_set" else rank))
    return combined[list(table.columns)].reset_index(drop=True)


def scores_by_model(tests: pd.DataFrame, test_set: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Labels and each model's scores on one test set, on the images every model there scored, in one order
    (what the calibration and decision-curve figures compare). Raises when no model has predictions there."""
    part = tests[tests["test_set"] == test_set]
    if part.empty:
        raise ValueError(f"no model has predictions on {test_set!r}")
    wide = part.pivot(index="image_id", columns="model", values="y_score").dropna()
    truth = part.drop_duplicates("image_id").set_index("image_id")["y_true"]
    models = list(pd.unique(part["model"]))
    return truth.loc[wide.index].to_numpy(), {m: wide[m].to_numpy() for m in models}


def seed_variability_table(pred: pd.DataFrame, models: Sequence[str] | None = None, *, min_seeds: int = 2,
                           validation: bool = False) -> pd.DataFrame:
    """AUC of every seed of every model on each test set, summarised as mean +- SD over seeds next to each
    seed's own interval (clustered by patient; ``tables.aggregate_seeds``). Models with fewer than
    ``min_seeds`` seeds are left out; ``validation=True`` adds the validation split as a set named
    ``validation``."""
    chosen = list(models) if models else list(pd.unique(pred["model"]))
    several = [m for m in chosen if pred.loc[pred["model"] == m, "seed"].nunique() >= min_seeds]
    columns = ["model", "test_set", "n", "n_patients", "n_pos", "n_seeds", "mean", "sd", "summary", "per_seed"]
    if not several:
        return pd.DataFrame(columns=columns)
    sets = label_test_sets(pred)
    if validation:
        sets = sets.where(pred["split"] != "val", "validation")
    part = pred[pred["model"].isin(several)].assign(test_set=sets).dropna(subset=["test_set"])
    per_seed = metrics_by_group(part, ["model", "test_set", "seed"], groups_col=PATIENT)
    summary = aggregate_seeds(per_seed, by=["model", "test_set"])
    sizes = per_seed.groupby(["model", "test_set"])[["n", "n_patients", "n_pos"]].first().reset_index()
    table = summary.merge(sizes, on=["model", "test_set"])
    order = {name: k for k, name in enumerate(["validation", *ordered_test_sets(part)])}
    rank = {m: k for k, m in enumerate(chosen)}
    table = table.sort_values(["test_set", "model"], key=lambda c: c.map(order if c.name == "test_set" else rank))
    return table[columns].reset_index(drop=True)


def auc_table(tests: pd.DataFrame, *, bootstrap: int = 2000, seed: int = 0,
              not_applicable: pd.DataFrame | None = None) -> pd.DataFrame:
    """AUC per model and test set with its patient-clustered DeLong CI (Obuchowski 1997, logit scale), images
    (``n``) and patients (``n_patients``), the patient-cluster bootstrap CI beside it (Field & Welsh 2007; where
    every patient has one image, the class-stratified bootstrap of the images, which then resamples patients) and,
    for the reviewer, the per-image DeLong CI (``ci_low_per_image``/``ci_high_per_image``: how much treating
    the images as independent would narrow it); ``n_seeds``: the training seeds averaged (most over the
    images). A row per pair of ``not_applicable`` (:func:`not_applicable_pairs`) with n = 0 and the reason."""
    table = metrics_by_group(tests, ["test_set", "model"], groups_col=PATIENT)
    per_image = metrics_by_group(tests, ["test_set", "model"])[["test_set", "model", "ci_low", "ci_high"]]
    table = table.merge(per_image, on=["test_set", "model"], suffixes=("", "_per_image"), validate="one_to_one")
    seeds = (tests.groupby(["test_set", "model"])["n_seeds"].max() if "n_seeds" in tests.columns
             else pd.Series(1, index=pd.MultiIndex.from_frame(table[["test_set", "model"]])))
    table["n_seeds"] = [int(seeds.loc[(t, m)]) for t, m in zip(table["test_set"], table["model"], strict=True)]
    order = {name: k for k, name in enumerate(pd.unique(tests["test_set"]))}
    rank = {m: k for k, m in enumerate(pd.unique(tests["model"]))}
    table = table.sort_values(["test_set", "model"], key=lambda c: c.map(order if c.name == "test_set" else rank))
    boot_low, boot_high = [], []
    for _, row in table.iterrows():
        part = tests[(tests["test_set"] == row["test_set"]) & (tests["model"] == row["model"])]
        if np.isnan(row["auc"]):
            boot_low.append(np.nan)
            boot_high.append(np.nan)
            continue
        # one image per patient: the class-stratified bootstrap already resamples patients (and keeps today's numbers)
        clustered = part[PATIENT] if part[PATIENT].duplicated().any() else None
        res = auc_bootstrap(part["y_true"], part["y_score"], n_resamples=bootstrap, seed=seed, groups=clustered)
        boot_low.append(res.ci_low)
        boot_high.append(res.ci_high)
    table["bootstrap_ci_low"], table["bootstrap_ci_high"] = boot_low, boot_high
    table = table[["model", "test_set", "n", "n_patients", "n_pos", "n_neg", "n_seeds", "auc", "ci_low", "ci_high",
                   "bootstrap_ci_low", "bootstrap_ci_high", "ci_low_per_image", "ci_high_per_image", "se",
                   "note"]].reset_index(drop=True)
    return _with_not_applicable(table, not_applicable)


def calibration_table(tests: pd.DataFrame, *, level: float = 0.95,
                      not_applicable: pd.DataFrame | None = None) -> pd.DataFrame:
    """Calibration intercept and slope (Wald CIs, cluster-robust by patient), Brier and scaled Brier per model and
    test set, with images and patients; a row per pair of ``not_applicable`` with n = 0 and the reason."""
    rows = []
    for (test_set, model), part in tests.groupby(["test_set", "model"], sort=False):
        y, p = part["y_true"].to_numpy(), part["y_score"].to_numpy()
        row = {"model": model, "test_set": test_set, "n": len(part), "n_patients": part[PATIENT].nunique(),
               "n_pos": int(y.sum())}
        if min(row["n_pos"], row["n"] - row["n_pos"]) < 1:
            rows.append({**row, "note": "only one class"})
            continue
        cal = calibration_intercept_slope(y, p, level=level, groups=part[PATIENT].to_numpy())
        brier = brier_score(y, p)
        rows.append({**row, "intercept": cal.intercept, "intercept_ci_low": cal.intercept_ci[0],
                     "intercept_ci_high": cal.intercept_ci[1], "slope": cal.slope, "slope_ci_low": cal.slope_ci[0],
                     "slope_ci_high": cal.slope_ci[1], "brier": brier.brier, "scaled_brier": brier.scaled_brier,
                     "note": cal.note})
    columns = ["model", "test_set", "n", "n_patients", "n_pos", "intercept", "intercept_ci_low", "intercept_ci_high",
               "slope",
               "slope_ci_low", "slope_ci_high", "brier", "scaled_brier", "note"]
    return _with_not_applicable(pd.DataFrame(rows, columns=columns), not_applicable)


def validation_thresholds(
    pred: pd.DataFrame, models: Sequence[str], *, sensitivity_target: float = 0.9, specificity_target: float = 0.9
) -> dict[str, dict[str, Threshold]]:
    """Per model, thresholds chosen on the validation split only: Youden, sensitivity >= target, specificity >= target.
    ``pred`` holds the scores the test sets are evaluated on: the seed-averaged ones (:func:`seed_averaged`)."""
    out: dict[str, dict[str, Threshold]] = {}
    for model in models:
        val = pred[(pred["model"] == model) & (pred["split"] == "val")]
        if val.empty:
            raise ValueError(f"model {model!r} has no validation predictions: thresholds come from validation data only")
        y, s = val["y_true"].to_numpy(), val["y_score"].to_numpy()
        out[model] = {
            "Youden (validation)": choose_threshold(y, s, "youden"),
            f"sensitivity >= {sensitivity_target:.0%} (validation)": choose_threshold(y, s, "sensitivity", sensitivity_target),
            f"specificity >= {specificity_target:.0%} (validation)": choose_threshold(y, s, "specificity", specificity_target),
        }
    return out


def threshold_table(thresholds: dict[str, dict[str, Threshold]]) -> pd.DataFrame:
    """One row per (model, rule) of :func:`validation_thresholds`: threshold and its validation sensitivity,
    specificity and n."""
    return pd.DataFrame([
        {"model": model, "rule": rule, "threshold": t.value, "validation_sensitivity": t.validation_sensitivity,
         "validation_specificity": t.validation_specificity, "validation_n": t.n_pos + t.n_neg, "validation_n_pos": t.n_pos}
        for model, rules in thresholds.items() for rule, t in rules.items()
    ])


def operating_point_table(tests: pd.DataFrame, thresholds: dict[str, dict[str, Threshold]],
                          *, level: float = 0.95, not_applicable: pd.DataFrame | None = None) -> pd.DataFrame:
    """Sensitivity, specificity, PPV and NPV at each validation threshold, each with its numerator/denominator
    and a patient-clustered interval (Wilson's, widened by the Rao-Scott design effect; equal to the plain
    Wilson interval when every patient has one image); images (``n``) and patients (``n_patients``) per row;
    a row per pair of ``not_applicable`` with n = 0 and the reason in ``note``."""
    rows = []
    for (test_set, model), part in tests.groupby(["test_set", "model"], sort=False):
        for rule, thr in thresholds[model].items():
            op = operating_point(part["y_true"].to_numpy(), part["y_score"].to_numpy(), thr.value, level,
                                 groups=part[PATIENT].to_numpy())
            row = {"model": model, "test_set": test_set, "rule": rule, "threshold": thr.value, "n": op.n,
                   "n_patients": part[PATIENT].nunique()}
            for metric in ("sensitivity", "specificity", "ppv", "npv"):
                p = getattr(op, metric)
                row[metric] = p.estimate
                row[f"{metric}_ci"] = f"{p.ci_low:.2f}-{p.ci_high:.2f}" if p.denominator else "n/a"
                row[f"{metric}_n"] = f"{p.numerator}/{p.denominator}"
            rows.append({**row, "note": ""})
    columns = ["model", "test_set", "rule", "threshold", "n", "n_patients"] + [
        f"{metric}{suffix}" for metric in ("sensitivity", "specificity", "ppv", "npv") for suffix in ("", "_ci", "_n")]
    return _with_not_applicable(pd.DataFrame(rows, columns=[*columns, "note"]), not_applicable)


def add_subgroups(tests: pd.DataFrame, manifest: Manifest, columns: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """Join the subgroup columns the manifest has (``age_band`` from ``cond_age``); return (table, columns used)."""
    ref = manifest.df.assign(image_id=manifest.df["image_id"].astype(str)).set_index("image_id")
    if "cond_age" in ref.columns:
        ref = ref.assign(age_band=age_band(ref["cond_age"]))
    used = [c for c in columns if c in ref.columns and c not in ("center",) and ref[c].notna().any()]
    out = tests.copy()
    for col in used:
        values = ref[col].reindex(out["image_id"]).fillna(MISSING)
        # an ordered categorical (the age bands) keeps its order through the subgroup table's grouping
        out[col] = values.array if isinstance(values.dtype, pd.CategoricalDtype) else values.astype(str).to_numpy()
    return out, (["center"] if "center" in columns else []) + used


def subgroup_table(tests: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """AUC with its patient-clustered DeLong CI and counts (images, patients) per model, test set and level of
    each subgroup column (long format)."""
    frames = []
    for col in columns:
        table = metrics_by_group(tests, ["test_set", "model", col], groups_col=PATIENT).rename(columns={col: "level"})
        table.insert(2, "subgroup", col.removeprefix("cond_"))
        table["level"] = table["level"].astype(str)
        frames.append(table)
    if not frames:
        return pd.DataFrame()
    order = {name: k for k, name in enumerate(pd.unique(tests["test_set"]))}
    rank = {m: k for k, m in enumerate(pd.unique(tests["model"]))}
    table = pd.concat(frames, ignore_index=True)
    table = table.assign(_t=table["test_set"].map(order), _m=table["model"].map(rank), _s=table["subgroup"])
    table = table.sort_values(["_t", "_s", "_m"], kind="stable")
    return table.reset_index(drop=True)[
        ["model", "test_set", "subgroup", "level", "n", "n_patients", "n_pos", "n_neg", "auc", "ci_low", "ci_high",
         "note"]]


ORACLE = "oracle (true risk)"
TRUE_RISK = "true_risk"


def test_set_sizes(tests: pd.DataFrame) -> pd.DataFrame:
    """Per test set (in the order of ``tests``, :func:`evaluation_rows`), the distinct images, patients
    (``patient_id``) and positive images among its rows (an image scored by several models counts once)."""
    cases = tests.drop_duplicates(["test_set", "image_id"])
    table = cases.groupby("test_set", sort=False).agg(
        n_images=("image_id", "size"), n_patients=("patient_id", "nunique"), n_pos=("y_true", "sum"))
    return table.reset_index().astype({"n_images": int, "n_patients": int, "n_pos": int})


def oracle_auc_table(tests: pd.DataFrame, manifest: Manifest, *, risk_column: str = TRUE_RISK,
                     level: float = 0.95) -> pd.DataFrame:
    """The AUC of the simulated cohort's true risk (the probability of malignancy each phantom case's label was
    drawn from, manifest column ``true_risk``) per test set, on the cases of ``tests`` in that set (each image
    once), with its patient-clustered DeLong interval (``roc.auc_delong``, logit scale): the ceiling any model can reach on those
    cases, since no score separates the labels better than the risk they were drawn from (in expectation).
    Test sets in the order of ``tests``; columns as :func:`auc_table`'s DeLong part, ``model`` = :data:`ORACLE`; a set with fewer than 2 cases of a
    class has no AUC and a ``note``. Raises when the manifest has no such column (real data) or lacks a case."""
    if risk_column not in manifest.df.columns:
        raise ValueError(f"{manifest.path}: no {risk_column!r} column; only the simulated (phantom) cohort records "
                         "each case's true risk, so the oracle AUC exists only there")
    risk = pd.to_numeric(manifest.df[risk_column], errors="coerce")
    risk.index = manifest.df["image_id"].astype(str)
    cases = tests.drop_duplicates(["test_set", "image_id"])
    cases = cases.assign(**{risk_column: risk.reindex(cases["image_id"].astype(str)).to_numpy()})
    missing = cases.loc[cases[risk_column].isna(), "image_id"]
    if len(missing):
        raise ValueError(f"{manifest.path}: no {risk_column} for image(s) {', '.join(map(str, missing[:5]))}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    table = metrics_by_group(cases.assign(model=ORACLE), ["test_set", "model"], score_col=risk_column, level=level,
                             groups_col=PATIENT)
    order = {name: k for k, name in enumerate(pd.unique(cases["test_set"]))}
    table = table.sort_values("test_set", key=lambda c: c.map(order), kind="stable")
    return table[["model", "test_set", "n", "n_patients", "n_pos", "n_neg", "auc", "ci_low", "ci_high", "se",
                  "note"]].reset_index(drop=True)


def verified_subset(tests: pd.DataFrame, manifest: Manifest, column: str = "cond_verification",
                    value: str = "biopsy") -> tuple[pd.DataFrame | None, str]:
    """The rows of ``tests`` on the external test sets whose diagnosis was verified by ``value`` (manifest
    column ``column``), and one sentence saying what the subset is and why it is reported.

    Where benign lesions of low suspicion are confirmed by follow-up imaging while every malignant one is
    biopsied, the reference standard differs with the suspicion the images raise (partial verification:
    Begg & Greenes 1983, Biometrics 39:207), which flatters a score that tracks that suspicion (the
    radiologists' BI-RADS most of all); the AUCs on the biopsy-verified cases alone show how much of a
    result rests on it. Only external sets that record ``column`` for some image enter; images with no
    record there are left out of the subset. Returns (None, sentence) when the manifest has no such column
    or no external set records it."""
    if column not in manifest.df.columns:
        return None, (f"The manifest records no verification of the diagnosis ({column}), so there is no "
                      f"{value}-verified subset to report.")
    how = manifest.df.assign(image_id=manifest.df["image_id"].astype(str)).set_index("image_id")[column]
    external = tests[tests["test_set"].ne(INTERNAL_TEST)]
    status = how.reindex(external["image_id"].astype(str)).to_numpy()
    recording = set(external.loc[pd.notna(status), "test_set"])
    if not recording:
        return None, (f"No external test set records the verification of the diagnosis ({column}), so there is no "
                      f"{value}-verified subset to report.")
    keep = external["test_set"].isin(recording).to_numpy()
    external, status = external[keep], status[keep]
    chosen = external[pd.Series(status).astype(str).str.casefold().eq(value.casefold()).to_numpy()]
    cases = external.drop_duplicates(["test_set", "image_id"])
    kept = chosen.drop_duplicates(["test_set", "image_id"])
    counts = "; ".join(f"{name}, {int((kept['test_set'] == name).sum())} of {int((cases['test_set'] == name).sum())} "
                       f"images, {int(kept.loc[kept['test_set'] == name, 'y_true'].sum())} of "
                       f"{int(cases.loc[cases['test_set'] == name, 'y_true'].sum())} positive"
                       for name in pd.unique(cases["test_set"]))
    sentence = (f"Not every diagnosis was established the same way: some lesions were verified by {value}, others "
                f"otherwise (for example benign lesions of low suspicion by follow-up imaging, while the suspicious "
                f"ones were biopsied). A score that follows the suspicion the images raise then looks better than it "
                f"is (partial verification bias, Begg & Greenes 1983), so every model is shown again on the "
                f"{value}-verified images alone: {counts}.")
    return chosen.reset_index(drop=True), sentence


#: what a model-name suffix adds to the base model's description (the from-scratch ablation, the other crops)
CROP_AND_START_WORDS: dict[str, str] = {
    "-scratch": ", from random weights (ablation)",
    "-jittered": ", on a rough box around the lesion instead of the expert outline",
    "-whole": ", on the whole image (no outline of the lesion needed)",
}


def model_descriptions(models: Sequence[str], clinical_inputs: Sequence[str] | None = None) -> dict[str, str]:
    """What each model is, in words (``MODEL_DESCRIPTIONS``; the model's own name when unknown). The clinical
    baseline whose only input is BI-RADS (``clinical_inputs``, the condition columns the baselines stage
    recorded for it) is :data:`BIRADS_READING`: the radiologists' reading of the same images, not a clinical
    covariate; with other inputs besides BI-RADS it says that BI-RADS is among them."""
    out = {m: MODEL_DESCRIPTIONS.get(m, m) for m in models}
    for m in models:  # the from-scratch ablation (stage.SCRATCH_SUFFIX) and the other crops (stage.extra_crops)
        for suffix, words in CROP_AND_START_WORDS.items():
            base = m.removesuffix(suffix)
            if m != base and base in MODEL_DESCRIPTIONS:
                out[m] = MODEL_DESCRIPTIONS[base] + words
    inputs = list(clinical_inputs or [])
    if "clinical" in out and inputs == ["cond_birads"]:
        out["clinical"] = BIRADS_READING
    elif "clinical" in out and "cond_birads" in inputs:
        others = ", ".join(c.removeprefix("cond_") for c in inputs if c != "cond_birads")
        out["clinical"] = (f"logistic regression on the recorded conditions ({others}) and BI-RADS, the "
                           "radiologists' reading of the same images")
    return out


def reading_footnote(models: Sequence[str], descriptions: Mapping[str, str]) -> str:
    """The footnote a table that lists the BI-RADS reading (:func:`model_descriptions`) carries
    (:data:`BIRADS_FOOTNOTE`); empty when ``models`` does not include it."""
    return BIRADS_FOOTNOTE if any(descriptions.get(m) == BIRADS_READING for m in models) else ""


def format_auc(row: pd.Series | dict) -> str:
    """'0.873 (0.821-0.912)', 'not applicable' for a model without predictions on the set, 'n/a' when not estimable."""
    if str(row.get("note") or "").startswith(NOT_APPLICABLE):
        return NOT_APPLICABLE
    if row["auc"] is None or np.isnan(row["auc"]):
        return "n/a"
    return f"{row['auc']:.3f} ({row['ci_low']:.3f}-{row['ci_high']:.3f})"


def display_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``table`` for the report: numbers rounded to ``digits``, empty cells (those of a not-applicable row,
    or a statistic that is not estimable) shown as a dash rather than NaN."""
    return table.round(digits).astype(object).where(table.notna(), "\u2013")


def slug(name: str) -> str:
    """A file-name-safe form of a test-set or model name: 'external: center_C' -> 'external_center_C'."""
    import re

    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def describe_test_set(name: str) -> str:
    """Plain-language name of a test set for captions."""
    if name == INTERNAL_TEST:
        return "the internal test set (new patients from the training centres)"
    return f"the external test set of {name.removeprefix('external: ')} (a centre never used for training)"


__all__ = [
    "AGE_BANDS", "BIRADS_FOOTNOTE", "BIRADS_READING", "CROP_AND_START_WORDS", "MODEL_DESCRIPTIONS", "NOT_APPLICABLE", "ORACLE", "PATIENT",
    "TRUE_RISK", "add_subgroups", "age_band", "auc_table", "calibration_table", "describe_test_set", "display_table",
    "evaluation_rows", "format_auc", "manifest_test_sets", "model_descriptions", "not_applicable_note",
    "not_applicable_pairs", "operating_point_table", "oracle_auc_table", "reading_footnote",
    "scores_by_model", "seed_averaged", "seed_counts", "seed_variability_table", "slug", "subgroup_table",
    "test_set_sizes", "threshold_table", "validation_thresholds", "verified_subset",
]
