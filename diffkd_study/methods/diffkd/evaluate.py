"""Study-level evaluation of prediction tables: the tables of the evaluation report, one function each.

Every function takes a validated prediction table (``predictions.read_predictions``) and composes the
statistics of ``roc``, ``operating_points``, ``calibration`` and ``tables``; nothing is re-derived
here. Test sets are the internal test split (``internal test``) and each external center
(``external: <center>``); the validation split is used only to choose thresholds.

A model with no predictions on a test set (a baseline whose inputs that set does not record) is *not
applicable* there: :func:`not_applicable_pairs` lists such pairs with their reason, the tables that take
``not_applicable`` show each as a row with n = 0 and the note ``not applicable: <reason>``, and
:func:`not_applicable_note` says which models a test set's figures leave out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
import pandas as pd

from diffkd_study.data.schema import Manifest
from diffkd_study.metrics.calibration import brier_score, calibration_intercept_slope
from diffkd_study.metrics.operating_points import Threshold, choose_threshold, operating_point
from diffkd_study.metrics.roc import auc_bootstrap, delong_test
from diffkd_study.metrics.tables import aggregate_seeds, metrics_by_group
from diffkd_study.predictions import INTERNAL_TEST, label_test_sets, ordered_test_sets

AGE_BANDS: tuple[tuple[float, float, str], ...] = (
    (0, 40, "<40"), (40, 50, "40-49"), (50, 60, "50-59"), (60, 70, "60-69"), (70, 200, ">=70"),
)
MISSING = "missing"
NOT_APPLICABLE = "not applicable"
NO_PREDICTIONS = "no predictions on this test set"
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


def primary_seeds(pred: pd.DataFrame, seed: int | None = None) -> dict[str, int]:
    """The training seed whose predictions stand for each model in the main analysis: ``seed`` (the
    study seed) when the model has it, else the model's lowest seed. The other seeds enter the
    seed-variability table (:func:`seed_variability_table`), not the tests."""
    out = {}
    for model, seeds in pred.groupby("model", sort=False)["seed"]:
        values = sorted(int(s) for s in seeds.unique())
        out[str(model)] = seed if seed is not None and seed in values else values[0]
    return out


def evaluation_rows(pred: pd.DataFrame, models: Sequence[str] | None = None, *, seed: int | None = None) -> pd.DataFrame:
    """The test-set rows (internal test and external) of each model's primary seed (:func:`primary_seeds`)
    with a ``test_set`` column, models in the given order."""
    chosen = list(models) if models else list(pd.unique(pred["model"]))
    unknown = [m for m in chosen if m not in set(pred["model"])]
    if unknown:
        raise ValueError(f"no predictions for model(s) {unknown}; the tables hold {sorted(set(pred['model']))}")
    seeds = primary_seeds(pred, seed)
    keep = pred["model"].isin(chosen) & (pred["seed"] == pred["model"].map(seeds))
    out = pred[keep].assign(test_set=label_test_sets(pred)).dropna(subset=["test_set"])
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
        **{c: 0 for c in ("n", "n_pos", "n_neg") if c in table.columns},
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
    seed's own DeLong interval (``tables.aggregate_seeds``). Models with fewer than ``min_seeds`` seeds
    are left out; ``validation=True`` adds the validation split as a set named ``validation``."""
    chosen = list(models) if models else list(pd.unique(pred["model"]))
    several = [m for m in chosen if pred.loc[pred["model"] == m, "seed"].nunique() >= min_seeds]
    columns = ["model", "test_set", "n", "n_pos", "n_seeds", "mean", "sd", "summary", "per_seed"]
    if not several:
        return pd.DataFrame(columns=columns)
    sets = label_test_sets(pred)
    if validation:
        sets = sets.where(pred["split"] != "val", "validation")
    part = pred[pred["model"].isin(several)].assign(test_set=sets).dropna(subset=["test_set"])
    per_seed = metrics_by_group(part, ["model", "test_set", "seed"])
    summary = aggregate_seeds(per_seed, by=["model", "test_set"])
    sizes = per_seed.groupby(["model", "test_set"])[["n", "n_pos"]].first().reset_index()
    table = summary.merge(sizes, on=["model", "test_set"])
    order = {name: k for k, name in enumerate(["validation", *ordered_test_sets(part)])}
    rank = {m: k for k, m in enumerate(chosen)}
    table = table.sort_values(["test_set", "model"], key=lambda c: c.map(order if c.name == "test_set" else rank))
    return table[columns].reset_index(drop=True)


def auc_table(tests: pd.DataFrame, *, bootstrap: int = 2000, seed: int = 0,
              not_applicable: pd.DataFrame | None = None) -> pd.DataFrame:
    """AUC with DeLong CI (logit scale) per model and test set, with n, n_pos and a bootstrap CI beside it;
    a row per pair of ``not_applicable`` (:func:`not_applicable_pairs`) with n = 0 and the reason."""
    table = metrics_by_group(tests, ["test_set", "model"])
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
        res = auc_bootstrap(part["y_true"], part["y_score"], n_resamples=bootstrap, seed=seed)
        boot_low.append(res.ci_low)
        boot_high.append(res.ci_high)
    table["bootstrap_ci_low"], table["bootstrap_ci_high"] = boot_low, boot_high
    table = table[["model", "test_set", "n", "n_pos", "n_neg", "auc", "ci_low", "ci_high",
                   "bootstrap_ci_low", "bootstrap_ci_high", "se", "note"]].reset_index(drop=True)
    return _with_not_applicable(table, not_applicable)


def _paired(tests: pd.DataFrame, test_set: str, a: str, b: str) -> pd.DataFrame:
    part = tests[tests["test_set"] == test_set]
    left = part[part["model"] == a].set_index("image_id")
    right = part[part["model"] == b].set_index("image_id")
    return left[["y_true", "y_score"]].join(right[["y_score"]].rename(columns={"y_score": "y_score_b"}), how="inner")


def paired_delong_tests(tests: pd.DataFrame, *, level: float = 0.95, reference: str | None = None) -> pd.DataFrame:
    """DeLong paired test of every pair of models on each test set (on the images both models scored);
    with ``reference``, only of the reference (``model_a``) against each other model (``model_b``)."""
    rows = []
    for test_set in pd.unique(tests["test_set"]):
        models = list(pd.unique(tests.loc[tests["test_set"] == test_set, "model"]))
        if reference is not None and reference not in models:
            raise ValueError(f"reference model {reference!r} has no predictions on {test_set}")
        pairs = ([(reference, m) for m in models if m != reference] if reference is not None
                 else list(combinations(models, 2)))
        for a, b in pairs:
            both = _paired(tests, test_set, a, b)
            row = {"test_set": test_set, "model_a": a, "model_b": b, "n": len(both), "n_pos": int(both["y_true"].sum())}
            if min(row["n_pos"], row["n"] - row["n_pos"]) < 2:
                rows.append({**row, "note": "fewer than 2 cases of a class"})
                continue
            t = delong_test(both["y_true"], both["y_score"], both["y_score_b"], level=level)
            rows.append({**row, "auc_a": t.auc_a, "auc_b": t.auc_b, "difference": t.difference,
                         "ci_low": t.ci_low, "ci_high": t.ci_high, "z": t.z, "p_value": t.p_value,
                         "correlation": t.correlation, "note": ""})
    columns = ["test_set", "model_a", "model_b", "n", "n_pos", "auc_a", "auc_b", "difference", "ci_low", "ci_high",
               "z", "p_value", "correlation", "note"]
    return pd.DataFrame(rows, columns=columns)


def calibration_table(tests: pd.DataFrame, *, level: float = 0.95,
                      not_applicable: pd.DataFrame | None = None) -> pd.DataFrame:
    """Calibration intercept and slope (Wald CIs), Brier and scaled Brier per model and test set; a row per
    pair of ``not_applicable`` with n = 0 and the reason."""
    rows = []
    for (test_set, model), part in tests.groupby(["test_set", "model"], sort=False):
        y, p = part["y_true"].to_numpy(), part["y_score"].to_numpy()
        row = {"model": model, "test_set": test_set, "n": len(part), "n_pos": int(y.sum())}
        if min(row["n_pos"], row["n"] - row["n_pos"]) < 1:
            rows.append({**row, "note": "only one class"})
            continue
        cal = calibration_intercept_slope(y, p, level=level)
        brier = brier_score(y, p)
        rows.append({**row, "intercept": cal.intercept, "intercept_ci_low": cal.intercept_ci[0],
                     "intercept_ci_high": cal.intercept_ci[1], "slope": cal.slope, "slope_ci_low": cal.slope_ci[0],
                     "slope_ci_high": cal.slope_ci[1], "brier": brier.brier, "scaled_brier": brier.scaled_brier,
                     "note": cal.note})
    columns = ["model", "test_set", "n", "n_pos", "intercept", "intercept_ci_low", "intercept_ci_high", "slope",
               "slope_ci_low", "slope_ci_high", "brier", "scaled_brier", "note"]
    return _with_not_applicable(pd.DataFrame(rows, columns=columns), not_applicable)


def validation_thresholds(
    pred: pd.DataFrame, models: Sequence[str], *, sensitivity_target: float = 0.9, specificity_target: float = 0.9
) -> dict[str, dict[str, Threshold]]:
    """Per model, thresholds chosen on the validation split only: Youden, sensitivity >= target, specificity >= target."""
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
    """Sensitivity, specificity, PPV and NPV (Wilson CIs, numerator/denominator) at each validation threshold;
    a row per pair of ``not_applicable`` with n = 0 and the reason in ``note``."""
    rows = []
    for (test_set, model), part in tests.groupby(["test_set", "model"], sort=False):
        for rule, thr in thresholds[model].items():
            op = operating_point(part["y_true"].to_numpy(), part["y_score"].to_numpy(), thr.value, level)
            row = {"model": model, "test_set": test_set, "rule": rule, "threshold": thr.value, "n": op.n}
            for metric in ("sensitivity", "specificity", "ppv", "npv"):
                p = getattr(op, metric)
                row[metric] = p.estimate
                row[f"{metric}_ci"] = f"{p.ci_low:.2f}-{p.ci_high:.2f}" if p.denominator else "n/a"
                row[f"{metric}_n"] = f"{p.numerator}/{p.denominator}"
            rows.append({**row, "note": ""})
    columns = ["model", "test_set", "rule", "threshold", "n"] + [
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
    """AUC with DeLong CI and counts per model, test set and level of each subgroup column (long format)."""
    frames = []
    for col in columns:
        table = metrics_by_group(tests, ["test_set", "model", col]).rename(columns={col: "level"})
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
        ["model", "test_set", "subgroup", "level", "n", "n_pos", "n_neg", "auc", "ci_low", "ci_high", "note"]]


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
    once), with its DeLong interval (``roc.auc_delong``, logit scale): the ceiling any model can reach on those
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
    table = metrics_by_group(cases.assign(model=ORACLE), ["test_set", "model"], score_col=risk_column, level=level)
    order = {name: k for k, name in enumerate(pd.unique(cases["test_set"]))}
    table = table.sort_values("test_set", key=lambda c: c.map(order), kind="stable")
    return table[["model", "test_set", "n", "n_pos", "n_neg", "auc", "ci_low", "ci_high", "se", "note"]].reset_index(
        drop=True)


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
    "AGE_BANDS", "NOT_APPLICABLE", "ORACLE", "TRUE_RISK", "add_subgroups", "age_band", "auc_table", "calibration_table", "describe_test_set",
    "display_table", "format_auc", "manifest_test_sets", "not_applicable_note", "not_applicable_pairs", "operating_point_table",
    "oracle_auc_table", "scores_by_model", "slug", "test_set_sizes",
    "paired_delong_tests", "subgroup_table", "evaluation_rows", "threshold_table", "validation_thresholds",
]
