"""The pooled analysis of a cross-validation study (``55_cv_pooled``): out-of-fold and per-fold predictions.

Every fold k (``runs/NAME/fold-k/predictions/*.csv``) predicts its internal test images (fold k's patients) and
every external image. From these tables:

* **out-of-fold internal predictions** (:func:`out_of_fold`): each internal image exactly once, from the fold
  where it was a test image (checked against the study's fold column);
* **per-fold external predictions** (:func:`external_per_fold`): each external image once per fold (K times).

A model's score of an image in a fold is the mean over the training seeds of that fold's model (the seed
ensemble; every seed contributes, none is singled out), :func:`seed_mean`; the per-seed pooled AUCs are shown
as well (:func:`seed_table`).

Estimates (patients, not images, are the unit of inference):

* pooled out-of-fold AUC with Obuchowski's (1997) patient-clustered DeLong interval
  (:func:`diffkd_study.metrics.roc.auc_delong` with ``groups = patient_id``), next to the per-fold AUCs'
  mean +- SD (:func:`auc_tables`). Pooling the out-of-fold scores is the usual estimator, but the K fold models
  are different models whose scores are not on one calibrated scale, so the pooled AUC also mixes scales;
  averaging the per-fold AUCs does not, but each rests on one fold's patients (Airola et al. 2011, Comput Stat
  Data Anal 55:1828, compare pooling and averaging). Both are shown.
* external: the per-fold AUCs' mean +- SD, and the AUC of each image's score averaged over the K fold models
  (the cross-validation ensemble) with its clustered interval.
* the planned paired comparisons (:data:`PLANNED_PAIRS`) on the pooled out-of-fold scores with the clustered
  DeLong test (:func:`diffkd_study.metrics.roc.delong_test`), Holm's (1979) adjustment over the pairs
  (:func:`diffkd_study.metrics.clustered.holm_adjust`) and the minimal detectable difference of the design.

A number that cannot be computed (one class only, fewer than 2 patients of a class, a model missing) is
"not estimable" (NaN, with the reason), never a degenerate value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from diffkd_study.data.folds import FOLD_COLUMN, fold_folder
from diffkd_study.data.schema import Manifest, read_manifest
from diffkd_study.methods.diffkd.comparisons import PLANNED_COMPARISONS, paired_scores, paired_test_row
from diffkd_study.methods.diffkd.evaluate import model_descriptions, seed_averaged
from diffkd_study.metrics.clustered import holm_adjust
from diffkd_study.metrics.roc import auc_delong, roc_auc
from diffkd_study.predictions import label_test_sets, read_predictions

__all__ = ["PLANNED_PAIRS", "POOLED_INTERNAL", "auc_tables", "external_per_fold", "external_table", "for_reading",
           "fold_stratified_pairs", "out_of_fold", "stratified_goals",
           "planned_comparisons", "pooled_tests", "read_fold_predictions", "seed_mean", "seed_table",
           "synthetic_summaries"]

#: The planned comparisons (model A, model B), those of the single-split evaluation
#: (:data:`~diffkd_study.methods.diffkd.comparisons.PLANNED_COMPARISONS`).
PLANNED_PAIRS: tuple[tuple[str, str], ...] = tuple((c.model_a, c.model_b) for c in PLANNED_COMPARISONS)
_KEYS = ["fold", "model", "image_id"]


def read_fold_predictions(run_dir: str | Path, folds: int) -> pd.DataFrame:
    """Every prediction table of every fold (``run_dir/fold-k/predictions/*.csv``, validated against the fold's
    study manifest), concatenated with a ``fold`` column. Raises ``FileNotFoundError`` when a fold has none."""
    frames = []
    for fold in range(1, folds + 1):
        folder = Path(run_dir) / fold_folder(fold)
        tables = sorted((folder / "predictions").glob("*.csv"))
        if not tables:
            raise FileNotFoundError(f"fold {fold}: no prediction tables in {folder / 'predictions'}")
        manifest = read_manifest(folder / "data" / "study.csv")
        frames.append(read_predictions(tables, manifest=manifest).assign(fold=fold))
    return pd.concat(frames, ignore_index=True)


def seed_mean(pred: pd.DataFrame) -> pd.DataFrame:
    """One row per (fold, model, image): the mean ``y_score`` over the model's training seeds in that fold, with
    ``n_seeds`` (:func:`~diffkd_study.methods.diffkd.evaluate.seed_averaged` per fold)."""
    return seed_averaged(pred, keys=_KEYS)


def out_of_fold(rows: pd.DataFrame, manifest: Manifest) -> pd.DataFrame:
    """The out-of-fold internal predictions: each fold's ``test`` rows. Asserts that every internal image of the
    cross-validation ``manifest`` appears exactly once per model (and per seed, when ``rows`` has seeds), from
    the fold that holds it in :data:`~diffkd_study.data.folds.FOLD_COLUMN`."""
    study = manifest.df
    internal = study.loc[study["split"] != "external"]
    fold_of = pd.Series(pd.to_numeric(internal[FOLD_COLUMN]).astype(int).to_numpy(),
                        index=internal["image_id"].astype(str))
    oof = rows.loc[rows["split"] == "test"].copy()
    if oof.empty:
        raise ValueError("no out-of-fold (test) predictions in the folds' tables")
    wrong = oof["image_id"].map(fold_of) != oof["fold"]
    assert not wrong.any(), f"{int(wrong.sum())} test prediction(s) come from a fold that does not hold the image"
    per = ["model", "seed"] if "seed" in oof.columns else ["model"]
    for key, part in oof.groupby(per, sort=False):
        ids = part["image_id"]
        assert not ids.duplicated().any(), f"{key}: an internal image is predicted out of fold more than once"
        missing = set(fold_of.index) - set(ids)
        assert not missing, f"{key}: {len(missing)} internal image(s) have no out-of-fold prediction, e.g. {min(missing)}"
    return oof.reset_index(drop=True)


def external_per_fold(rows: pd.DataFrame, folds: int) -> pd.DataFrame:
    """The external predictions of every fold's models. Asserts that each model predicts every external image
    once per fold and in all ``folds`` folds (each external image K times per model and seed)."""
    ext = rows.loc[rows["split"] == "external"].copy()
    per = ["model", "seed"] if "seed" in ext.columns else ["model"]
    for key, part in ext.groupby(per, sort=False):
        counts = part.groupby("image_id")["fold"].agg(["size", "nunique"])
        assert (counts["size"] == folds).all() and (counts["nunique"] == folds).all(), (
            f"{key}: an external image is not predicted exactly once by each of the {folds} folds")
    return ext.reset_index(drop=True)


def _auc(part: pd.DataFrame, level: float) -> dict[str, object]:
    """AUC with the patient-clustered interval, or NaN and the reason (not estimable)."""
    out: dict[str, object] = {"n_images": len(part), "n_patients": part["patient_id"].nunique(),
                              "n_pos": int(part["y_true"].sum())}
    try:
        res = auc_delong(part["y_true"], part["y_score"], level=level, groups=part["patient_id"].astype(str))
    except ValueError as err:
        return {**out, "auc": np.nan, "ci_low": np.nan, "ci_high": np.nan, "note": f"not estimable: {err}"}
    return {**out, "auc": res.auc, "ci_low": res.ci_low, "ci_high": res.ci_high, "note": res.method}


def _fold_aucs(part: pd.DataFrame) -> pd.Series:
    """The plain AUC of each fold (NaN where a fold has one class only)."""
    def one(fold_rows: pd.DataFrame) -> float:
        y = fold_rows["y_true"].to_numpy()
        return float(roc_auc(y, fold_rows["y_score"].to_numpy())) if 0 < y.sum() < y.size else np.nan

    return part.groupby("fold").apply(one, include_groups=False)


def _mean_sd(values: pd.Series) -> dict[str, object]:
    ok = values.dropna()
    return {"folds_estimable": len(ok), "fold_auc_mean": float(ok.mean()) if len(ok) else np.nan,
            "fold_auc_sd": float(ok.std(ddof=1)) if len(ok) > 1 else np.nan,
            "fold_aucs": " ".join(f"{v:.3f}" if np.isfinite(v) else "–" for v in values)}


def auc_tables(oof: pd.DataFrame, models: Sequence[str] | None = None, level: float = 0.95) -> pd.DataFrame:
    """Per model (seed-averaged scores, :func:`seed_mean`): the pooled out-of-fold AUC with its patient-clustered
    interval and the per-fold AUCs' mean +- SD (and each fold's AUC)."""
    chosen = list(models) if models is not None else list(dict.fromkeys(oof["model"]))
    rows = []
    for model in chosen:
        part = oof.loc[oof["model"] == model]
        rows.append({"model": model, **_auc(part, level), **_mean_sd(_fold_aucs(part))})
    return pd.DataFrame(rows)


def external_table(ext: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per model and external test set (seed-averaged scores): the per-fold AUCs' mean +- SD, and the AUC of the
    score averaged over the K fold models per image, with its patient-clustered interval."""
    ext = ext.assign(test_set=label_test_sets(ext))
    rows = []
    for (model, test_set), part in ext.groupby(["model", "test_set"], sort=False):
        averaged = part.groupby("image_id").agg(y_true=("y_true", "first"), patient_id=("patient_id", "first"),
                                                y_score=("y_score", "mean"))
        rows.append({"model": model, "test_set": test_set, **_auc(averaged, level), **_mean_sd(_fold_aucs(part))})
    return pd.DataFrame(rows)


def for_reading(table: pd.DataFrame) -> pd.DataFrame:
    """An AUC table (:func:`auc_tables`, :func:`external_table`) as the report shows it: what each model is,
    in words, beside its name; the note only on rows that are not estimable (the interval's method is named
    in the text above the table, not repeated on every row)."""
    out = table.copy()
    out.insert(out.columns.get_loc("model") + 1, "description",
               out["model"].map(model_descriptions(list(out["model"]))))
    if "note" in out.columns:
        notes = out["note"].where(out["note"].astype(str).str.startswith("not estimable"))
        out = out.drop(columns=["note"]) if notes.isna().all() else out.assign(note=notes.fillna(""))
    return out


def planned_comparisons(oof: pd.DataFrame, pairs: Sequence[tuple[str, str]] = PLANNED_PAIRS, *, level: float = 0.95,
                        alpha: float = 0.05, power: float = 0.8) -> pd.DataFrame:
    """The planned paired comparisons on the pooled out-of-fold scores (seed-averaged): AUC_A - AUC_B with the
    patient-clustered DeLong test and interval (the single-split evaluation's row,
    :func:`~diffkd_study.methods.diffkd.comparisons.paired_test_row`), Holm-adjusted p over the pairs that could
    be tested, whether the adjusted p is below ``alpha``, and the minimal detectable difference at ``alpha`` and
    ``power``. A pair with a model missing, or whose variance is not estimable, gets NaN and the reason."""
    rows = []
    present = set(oof["model"])
    for a, b in pairs:
        row: dict[str, object] = {"comparison": f"{a} vs {b}", "model_a": a, "model_b": b}
        if a not in present or b not in present:
            missing = [m for m in (a, b) if m not in present]
            rows.append({**row, "note": f"not estimable: no predictions of {', '.join(missing)}"})
            continue
        test = paired_test_row(paired_scores(oof, None, a, b), level, alpha, power)
        row.update(n_images=test["n"], n_patients=test["n_patients"])
        if "p_value" not in test:
            rows.append({**row, "note": f"not estimable: {test['note']}"})
            continue
        rows.append({**row, **{k: test[k] for k in ("auc_a", "auc_b", "difference", "ci_low", "ci_high", "p_value",
                                                     "mdd")}, "note": test["method"]})
    table = pd.DataFrame(rows)
    for column in ("auc_a", "auc_b", "difference", "ci_low", "ci_high", "p_value", "mdd"):
        if column not in table:
            table[column] = np.nan
    table["p_holm"] = holm_adjust(table["p_value"].to_numpy(dtype=float))
    table["significant"] = np.where(table["p_holm"].isna(), "not estimable",
                                    np.where(table["p_holm"] < alpha, "yes", "no"))
    return table


def seed_table(oof_by_seed: pd.DataFrame) -> pd.DataFrame:
    """The pooled out-of-fold AUC of each training seed of each model (point estimates), with their mean +- SD
    over seeds: how much the seed alone moves the result."""
    rows = []
    for model, part in oof_by_seed.groupby("model", sort=False):
        per_seed = {}
        for seed, rows_of_seed in part.groupby("seed"):
            y = rows_of_seed["y_true"].to_numpy()
            per_seed[int(seed)] = float(roc_auc(y, rows_of_seed["y_score"].to_numpy())) if 0 < y.sum() < y.size else np.nan
        values = pd.Series(per_seed, dtype=float).dropna()
        rows.append({"model": model, "n_seeds": len(per_seed), "seed_auc_mean": values.mean() if len(values) else np.nan,
                     "seed_auc_sd": values.std(ddof=1) if len(values) > 1 else np.nan,
                     "per_seed": " ".join(f"{s}: {v:.3f}" for s, v in per_seed.items())})
    return pd.DataFrame(rows)


#: the test-set name of the pooled out-of-fold internal predictions in :func:`pooled_tests`
POOLED_INTERNAL = "internal (pooled out of fold)"
_TEST_ROW = ["model", "test_set", "image_id", "y_true", "patient_id", "y_score"]


def pooled_tests(oof: pd.DataFrame, ext: pd.DataFrame) -> pd.DataFrame:
    """The pooled predictions as evaluation rows (``evaluate.evaluation_rows``' columns), so that the single-split
    comparisons (goals, box-geometry reference, BI-RADS) apply unchanged: the out-of-fold internal scores as test
    set :data:`POOLED_INTERNAL`, and each external image's score averaged over the K fold models (the score of
    :func:`external_table`) under its external test-set name. Both seed-averaged (:func:`seed_mean` first)."""
    parts = [oof.assign(test_set=POOLED_INTERNAL)[_TEST_ROW]]
    if len(ext):
        named = ext.assign(test_set=label_test_sets(ext))
        parts.append(named.groupby(["model", "test_set", "image_id"], sort=False).agg(
            y_true=("y_true", "first"), patient_id=("patient_id", "first"), y_score=("y_score", "mean")).reset_index()[
            _TEST_ROW])
    return pd.concat(parts, ignore_index=True)


def synthetic_summaries(run_dir: str | Path, folds: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Every fold's synthetic-set audit (``fold-k/synthetic/quality.json``, written by the synthetic-quality stage):
    the FID-vs-floor goal rows and the two-sample test rows, each with a ``fold`` column, and one line per fold
    that has none (the stage did not run there, or ran before the file existed)."""
    from diffkd_study.methods.diffkd.diffusion.quality import SUMMARY_FILE

    fidelity, two_sample, missing = [], [], []
    for fold in range(1, folds + 1):
        path = Path(run_dir) / fold_folder(fold) / "synthetic" / SUMMARY_FILE
        if not path.is_file():
            missing.append(f"fold {fold}: no {SUMMARY_FILE} (the synthetic-quality stage did not run in this fold)")
            continue
        summary = json.loads(path.read_text(encoding="utf-8"))
        fidelity += [{"fold": fold, **row} for row in summary["fidelity_vs_floor"]]
        two_sample += [{"fold": fold, **row} for row in summary["two_sample"]]
    return pd.DataFrame(fidelity), pd.DataFrame(two_sample), missing


def fold_stratified_pairs(oof: pd.DataFrame, pairs: Sequence[tuple[str, str]], *, level: float = 0.95) -> pd.DataFrame:
    """Paired AUC differences A - B on the out-of-fold internal images, *within* each fold and then combined:
    each fold's patient-clustered DeLong difference and SE (:func:`paired_test_row`), combined by inverse-variance
    weighting (a fixed-effect combination: the folds hold different patients, so their differences are
    independent given the trained models; Fleiss 1993, Stat Methods Med Res 2:121). Unlike the pooled test it
    never ranks one fold model's scores against another's, which are not on one scale: a comparison whose
    pooled and stratified answers differ is a pooling artefact. One row per pair: the per-fold differences, the
    combined difference with its Wald interval and two-sided p (Holm over the pairs that could be tested), and
    a note where a fold or a model is missing."""
    from scipy.stats import norm

    z = norm.ppf(0.5 + level / 2)
    rows = []
    for a, b in pairs:
        row: dict[str, object] = {"comparison": f"{a} vs {b}", "model_a": a, "model_b": b}
        per_fold, notes = [], []
        for fold, part in oof.groupby("fold", sort=True):
            test = paired_test_row(paired_scores(part, None, a, b), level)
            if not np.isfinite(test.get("se", np.nan)) or test.get("se", 0) <= 0:
                notes.append(f"fold {fold}: {test.get('note') or 'no pair'}")
                continue
            per_fold.append((int(fold), float(test["difference"]), float(test["se"])))
        if not per_fold:
            rows.append({**row, "note": "not estimable: " + "; ".join(notes)})
            continue
        weights = np.array([1 / se ** 2 for _, _, se in per_fold])
        diffs = np.array([d for _, d, _ in per_fold])
        combined, se = float((weights * diffs).sum() / weights.sum()), float(1 / np.sqrt(weights.sum()))
        rows.append({**row, "fold_differences": " ".join(f"{d:+.3f}" for _, d, _ in per_fold),
                     "difference": combined, "ci_low": combined - z * se, "ci_high": combined + z * se, "se": se,
                     "p_value": float(2 * norm.sf(abs(combined) / se)), "note": "; ".join(notes)})
    table = pd.DataFrame(rows)
    for column in ("fold_differences", "difference", "ci_low", "ci_high", "se", "p_value"):
        if column not in table:
            table[column] = np.nan
    table["p_holm"] = holm_adjust(table["p_value"].to_numpy(dtype=float))
    return table


def stratified_goals(oof: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
    """The goals of :func:`~diffkd_study.methods.diffkd.comparisons.goal_plan` on the internal out-of-fold images,
    fold-stratified (:func:`fold_stratified_pairs`), each with ``met`` (the combined difference satisfies the goal's
    margin) and ``with_confidence`` (its interval bound does); no multiplicity adjustment (``p_holm`` dropped)."""
    from diffkd_study.methods.diffkd.comparisons import goal_plan

    plan = goal_plan(list(pd.unique(oof["model"])))
    table = fold_stratified_pairs(oof, [(g.model_a, g.model_b) for g in plan], level=level).drop(columns="p_holm")
    table.insert(0, "goal", [g.goal for g in plan])
    table.insert(1, "margin", [g.margin for g in plan])
    finite = table["difference"].notna()
    at_most = np.array([g.at_most for g in plan], dtype=bool)
    d, low, high, margin = (table[c].to_numpy(dtype=float) for c in ("difference", "ci_low", "ci_high", "margin"))
    table["met"] = np.where(finite, np.where(at_most, d <= margin, d >= margin), None)
    table["with_confidence"] = np.where(finite, np.where(at_most, high <= margin, low >= margin), None)
    return table
