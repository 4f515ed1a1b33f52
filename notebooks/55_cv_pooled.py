# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 55 · Cross-validation: pooled results
#
# The study was run once per fold. In fold *k* the internal test set is the *k*-th fold of the internal
# patients, and every model (diffusion model, teachers, students, baselines) was trained on the other folds'
# patients only. So every internal image was predicted exactly once by models that never saw its patient
# (its **out-of-fold** prediction), and every external image was predicted by all *K* folds' models.
#
# * **Pooled out-of-fold AUC**: one AUC over all internal images, with a 95% interval that treats the patient
#   (not the image) as the unit: images of the same patient are correlated (Obuchowski 1997).
# * **Per-fold AUC, mean ± SD**: the AUC within each fold's test patients, averaged over folds. The fold models
#   are different models whose scores are not on one calibrated scale, which the pooled AUC mixes; the
#   average does not, but each fold rests on fewer patients (Airola et al. 2011 compare the two). Both are shown.
# * **External**: the per-fold AUCs' mean ± SD, and the AUC of each image's score averaged over the *K* fold
#   models, with its patient-clustered interval.
# * **Planned comparisons** on the pooled out-of-fold scores: paired, patient-clustered DeLong tests,
#   Holm-adjusted over the comparisons, with the smallest difference the design detects.
#
# A model's score of an image in a fold is the mean over the model's training seeds (the seed ensemble).

# %% tags=["parameters"]
manifest_path = ""
run_dir = ""
figures_dir = "figures"
metrics_path = "55_cv_pooled.metrics.json"
provenance_path = ""
seed = 0
cv_folds = {}
level = 0.95
alpha = 0.05
power = 0.8

# %% tags=["reviewer-only"]
from pathlib import Path

from IPython.display import Markdown, display

from diffkd_study.data.folds import FOLD_COLUMN
from diffkd_study.data.schema import read_manifest
from diffkd_study.io import atomic_path
from diffkd_study.methods.diffkd import cv
from diffkd_study.nbutil import (
    NotebookParameterError,
    provenance_markdown,
    records,
    require_paths,
    show_table,
    write_metrics,
)
from diffkd_study.sections import section_from_parameters
from diffkd_study.stage_output import IndexSection, IndexTable
from diffkd_study.stages import CVPooledConfig

paths = require_paths(manifest_path=manifest_path, run_dir=run_dir)
section = section_from_parameters(CVPooledConfig, {"level": level, "alpha": alpha, "power": power}, "55_cv_pooled")
manifest = read_manifest(paths["manifest_path"])
if FOLD_COLUMN not in manifest.df.columns:
    raise NotebookParameterError(f"{manifest_path} has no {FOLD_COLUMN} column: not a cross-validation study")
folds = int(manifest.df[FOLD_COLUMN].max())
if len(cv_folds) != folds:
    raise NotebookParameterError(f"{folds} folds in the manifest but {len(cv_folds)} fold ledgers ({sorted(cv_folds)})")
out_dir = Path(run_dir) / "cv"
out_dir.mkdir(exist_ok=True)

# %%
display(Markdown(provenance_markdown(provenance_path)))

# %% [markdown]
# ## The folds
# Images and patients per fold (internal) and the external images every fold's models predict.

# %%
internal = manifest.df.loc[manifest.df["split"] != "external"]
fold_sizes = internal.groupby(FOLD_COLUMN).agg(images=("image_id", "size"), patients=("patient_id", "nunique"),
                                               malignant=("label", lambda s: int((s == manifest.schema.positive_class).sum())))
display(show_table(fold_sizes.reset_index().rename(columns={FOLD_COLUMN: "fold"})))
n_external = int((manifest.df["split"] == "external").sum())
display(Markdown(f"{len(internal)} internal images of {internal['patient_id'].nunique()} patients in {folds} folds; "
                 f"{n_external} external images."))

# %% tags=["reviewer-only"]
pred = cv.read_fold_predictions(run_dir, folds)
oof_by_seed = cv.out_of_fold(pred, manifest)
cv.external_per_fold(pred, folds)
rows = cv.seed_mean(pred)
oof = cv.out_of_fold(rows, manifest)
ext = cv.external_per_fold(rows, folds)
for name, table in (("oof_predictions", oof), ("external_predictions", ext)):
    with atomic_path(out_dir / f"{name}.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.8g")

# %% [markdown]
# ## Internal: pooled out-of-fold AUC and per-fold AUC
# The pooled AUC's interval is Obuchowski's patient-clustered DeLong interval; *folds estimable* counts the
# folds whose test patients hold both classes.

# %%
internal_table = cv.auc_tables(oof, level=section.level)
with atomic_path(out_dir / "pooled_auc.csv") as tmp:
    internal_table.to_csv(tmp, index=False)
CI = {f"{section.level:.0%} CI": ("ci_low", "ci_high")}
display(show_table(internal_table, intervals=CI))

# %% [markdown]
# ## External: per-fold AUC and the AUC of the fold-averaged score

# %%
external = cv.external_table(ext, level=section.level) if len(ext) else None
if external is not None:
    with atomic_path(out_dir / "external_auc.csv") as tmp:
        external.to_csv(tmp, index=False)
    display(show_table(external, intervals=CI))
else:
    display(Markdown("This study has no external test set."))

# %% [markdown]
# ## Planned comparisons
# Teacher real + synthetic vs real only; student distilled from the real-only teacher vs the student alone; DiffKD
# student vs the one distilled from the real-only teacher. Paired on the same out-of-fold images, with the
# patient-clustered covariance; *p (Holm)* is adjusted over the comparisons that could be made, and *MDD* is the
# smallest true AUC difference this design would detect with the stated power.

# %%
comparisons = cv.planned_comparisons(oof, level=section.level, alpha=section.alpha, power=section.power)
with atomic_path(out_dir / "comparisons.csv") as tmp:
    comparisons.to_csv(tmp, index=False)
display(show_table(comparisons.drop(columns=["model_a", "model_b"]), intervals=CI, p_values=["p_value", "p_holm"]))
for row in comparisons.itertuples():
    if row.note.startswith("not estimable"):
        display(Markdown(f"**{row.comparison}**: {row.note}"))

# %% [markdown]
# ## Seeds
# The pooled out-of-fold AUC of each training seed on its own: how much the seed alone moves the result.

# %%
seeds = cv.seed_table(oof_by_seed)
display(show_table(seeds))

# %% tags=["reviewer-only"]
limitations = [
    "The pooled out-of-fold AUC combines scores of K different fold models, which are not calibrated to one "
    "scale; the per-fold mean ± SD is shown beside it.",
    "The per-fold SD describes the spread over folds; the folds share training patients, so it is not a standard "
    "error of the cross-validated estimate (Bengio & Grandvalet 2004).",
]
write_metrics(metrics_path, {
    "folds": folds,
    "pooled_auc": records(internal_table),
    "external_auc": records(external) if external is not None else [],
    "comparisons": records(comparisons),
    "seeds": records(seeds),
    "index_section": IndexSection(
        title="Cross-validation: pooled results",
        text=[f"{folds}-fold patient-grouped cross-validation: {len(internal)} internal images of "
              f"{internal['patient_id'].nunique()} patients, each predicted once out of fold; {n_external} external "
              "images predicted by every fold's models. Intervals are patient-clustered (Obuchowski 1997); the "
              "planned comparisons are Holm-adjusted."],
        tables=[
            IndexTable(title="Internal: pooled out-of-fold AUC and per-fold AUC", records=records(internal_table.drop(
                columns=["fold_aucs"]).round(3))),
            *([IndexTable(title="External: fold-averaged score AUC and per-fold AUC",
                          records=records(external.drop(columns=["fold_aucs"]).round(3)))] if external is not None else []),
            IndexTable(title="Planned comparisons (pooled out-of-fold, Holm-adjusted)",
                       records=records(comparisons.drop(columns=["model_a", "model_b"]).round(4))),
        ],
        limitations=limitations,
    ).to_dict(),
})
