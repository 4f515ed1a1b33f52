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

import pandas as pd
from IPython.display import Markdown, display

from diffkd_study.data.folds import FOLD_COLUMN
from diffkd_study.data.schema import read_manifest
from diffkd_study.io import atomic_path
from diffkd_study.methods.diffkd import cv, cv_reading
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
display(show_table(fold_sizes.reset_index().rename(columns={FOLD_COLUMN: "fold"}), human=True))
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
# The pooled AUC's interval is Obuchowski's patient-clustered DeLong interval (on the logit scale); *folds with
# both classes* counts the folds whose test patients hold both classes.

# %%
internal_table = cv.auc_tables(oof, level=section.level)
with atomic_path(out_dir / "pooled_auc.csv") as tmp:
    internal_table.to_csv(tmp, index=False)
CI = {f"{section.level:.0%} CI": ("ci_low", "ci_high")}
internal_shown = cv.for_reading(internal_table)  # shown here and in the index
display(show_table(internal_shown, intervals=CI, human=True))

# %% [markdown]
# ## External: per-fold AUC and the AUC of the fold-averaged score

# %%
external = cv.external_table(ext, level=section.level) if len(ext) else None
if external is not None:
    with atomic_path(out_dir / "external_auc.csv") as tmp:
        external.to_csv(tmp, index=False)
    external_shown = cv.for_reading(external)
    display(show_table(external_shown, intervals=CI, human=True))
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
display(show_table(comparisons.drop(columns=["model_a", "model_b"]), intervals=CI, p_values=["p_value", "p_holm"],
                   human=True))
for row in comparisons.itertuples():
    if row.note.startswith("not estimable"):
        display(Markdown(f"**{row.comparison}**: {row.note}"))

# %% [markdown]
# ## Shortcut audits and goals
# Every result of the folds, pooled as above (internal: out of fold; external: the score averaged over the fold
# models), beside the checks that could explain it without the method: the synthetic images' realism and
# separability (per fold), the lesion box's geometry alone, and the same networks without the expert outline.

# %%
from diffkd_study.cvrun import fold_timings
from diffkd_study.methods.diffkd import comparisons as cmp
from diffkd_study.methods.diffkd.box_geometry import box_geometry_reference

pooled = cv.pooled_tests(oof, ext)
synthetic_fidelity, synthetic_two_sample, synthetic_missing = cv.synthetic_summaries(run_dir, folds)
if len(synthetic_fidelity):
    display(Markdown("**Synthetic images, per fold** (in the classifier's domain; FID against the real-vs-real "
                     "floor at the same number of images; goal: within 2x the floor)."))
    display(show_table(synthetic_fidelity.assign(ratio=synthetic_fidelity["FID"] / synthetic_fidelity["FID floor"]),
                       {"fold": "Fold", "extractor": "Feature network", "n": "Images", "FID": "FID",
                        "FID floor": "FID floor", "ratio": "FID / floor", "KID": "KID", "KID floor": "KID floor"}))
if len(synthetic_two_sample):
    display(Markdown("**Can a classifier tell synthetic from real?** Two-sample test on the teacher's inputs, per fold "
                     "(AUC 0.5: not separable; goal: at most 0.70)."))
    display(show_table(synthetic_two_sample, {"fold": "Fold", "scope": "Images compared", "n_a": "Real",
                                              "n_b": "Synthetic", "auc": "AUC", "CI": "95% CI (patient-clustered)",
                                              "verdict": "Goal"}, intervals={"CI": ("ci_low", "ci_high")}))
for line in synthetic_missing:
    display(Markdown(line))

# %%
geometry = box_geometry_reference(pooled, level=section.level)
display(Markdown("**Beside the box-geometry baseline**: each model's AUC and the baseline's (the lesion box's aspect "
                 "ratio, size and the share of its crop outside the image, nothing else) on the same images, and the "
                 "difference with its patient-clustered interval."))
display(show_table(geometry, {"test_set": "Test set", "model": "Model", "n": "Images", "n_patients": "Patients",
                              "auc": "AUC", "auc_box_geometry": "Box-geometry AUC", "difference": "Difference",
                              "CI": f"{section.level:.0%} CI", "p_value": "p", "note": "Note"},
                   intervals={"CI": ("ci_low", "ci_high")}, p_values=["p_value"],
                   empty="The box-geometry baseline was not run in these folds."))

# %%
goals = pd.concat([cv.stratified_goals(oof, level=section.level).assign(test_set="internal (fold-stratified)"),
                   cmp.student_goals(pooled[pooled["test_set"] != cv.POOLED_INTERNAL], level=section.level)],
                  ignore_index=True)
display(Markdown("**Goals** (rules written before the run; *met*: the point estimate; *with confidence*: the "
                 "95% bound): a student within 0.03 AUC of its teacher; distillation adds at least 0.02; the "
                 "general-distillation start helps; without the expert outline within 0.05 of the outline crop. "
                 "Internal: within each fold, combined over the folds; external: the fold-averaged scores."))
display(show_table(goals, {"goal": "Goal", "test_set": "Test set", "model_a": "Model A", "model_b": "Model B",
                           "fold_differences": "Per fold", "auc_a": "AUC A", "auc_b": "AUC B", "difference": "A - B",
                           "CI": f"{section.level:.0%} CI",
                           "met": "Met", "with_confidence": "With confidence", "note": "Note"},
                   intervals={"CI": ("ci_low", "ci_high")}, empty="No goal's models are in this study."))
reader_mode = cmp.outline_free_vs_birads(pooled, level=section.level)
display(Markdown("**Without the expert outline, against the radiologists' BI-RADS** (model minus BI-RADS; "
                 "exploratory)."))
display(show_table(reader_mode, {"test_set": "Test set", "model_a": "Model", "n": "Images", "auc_a": "AUC",
                                 "auc_b": "BI-RADS AUC", "difference": "Difference", "CI": f"{section.level:.0%} CI",
                                 "p_value": "p", "note": "Note"},
                   intervals={"CI": ("ci_low", "ci_high")}, p_values=["p_value"],
                   empty="No model without the expert outline, or no BI-RADS baseline, in these folds."))

# %% [markdown]
# ## Wall time
# Seconds per stage and fold: the last successful run of each stage, from the folds' ledgers. A stage that
# ran again and re-used its trained fits (after a change to report code, say) shows only that re-run's time.

# %%
timings = pd.DataFrame(fold_timings(run_dir))
display(show_table(timings, digits=0))

# %% [markdown]
# ## The same comparisons within each fold (fold-stratified)
# The pooled test ranks one fold model's scores against another fold model's, which are not on one scale: a
# model whose two fold versions score on different scales loses pooled AUC that neither fold shows. Here each
# comparison is made within each fold (patient-clustered DeLong) and the folds' differences are combined by
# inverse-variance weighting (fixed effect); Holm over the three. Where this and the pooled table disagree, this
# one is the answer (it was added after a pooled comparison contradicted both folds in the BUS-BRA run).

# %%
stratified = cv.fold_stratified_pairs(oof, cv.PLANNED_PAIRS, level=section.level)
with atomic_path(out_dir / "comparisons_stratified.csv") as tmp:
    stratified.to_csv(tmp, index=False)
display(show_table(stratified.drop(columns=["model_a", "model_b"]), intervals=CI, p_values=["p_value", "p_holm"],
                   human=True))

# %% [markdown]
# ## Seeds
# The pooled out-of-fold AUC of each training seed on its own: how much the seed alone moves the result.

# %%
seeds = cv.seed_table(oof_by_seed)
display(show_table(seeds, human=True))

# %% [markdown]
# ## What this study can and cannot conclude
# Read from the tables above by rules fixed before the results (``diffkd_study.methods.diffkd.cv_reading``):
# a planned comparison is concluded when its fold-stratified Holm p is below 0.05; an effect of training on
# synthetic images is credited to realistic images only when they pass both realism goals in every fold; the
# networks beat the box geometry only when every interval says so; the teacher keeps its AUC without the expert
# outline when its interval stays within the goal's 0.05; one seed per fit and one external centre limit the rest.

# %%
reading = cv_reading.study_reading(
    stratified=stratified, goals=goals, synthetic_fidelity=synthetic_fidelity,
    synthetic_two_sample=synthetic_two_sample, geometry=geometry, reader_mode=reader_mode, seeds=seeds,
    external_sets=list(pd.unique(external["test_set"])) if external is not None else [], level=section.level)
READING_HEADINGS = {"question": "Question", "measured": "Measured", "verdict": "Verdict", "reading": "Reading"}
display(show_table(reading, READING_HEADINGS))

# %% tags=["reviewer-only"]
limitations = [
    "The pooled out-of-fold AUC combines scores of K different fold models, which are not calibrated to one "
    "scale; the per-fold mean ± SD is shown beside it.",
    "The per-fold SD describes the spread over folds; the folds share training patients, so it is not a standard "
    "error of the cross-validated estimate (Bengio & Grandvalet 2004).",
]
write_metrics(metrics_path, {
    "folds": folds,
    "positive_class": manifest.schema.positive_class,
    "internal_test_set": cv.POOLED_INTERNAL,
    "pooled_auc": records(internal_table),
    "external_auc": records(external) if external is not None else [],
    "comparisons": records(comparisons),
    "comparisons_stratified": records(stratified),
    "seeds": records(seeds),
    "synthetic_fidelity": records(synthetic_fidelity),
    "synthetic_two_sample": records(synthetic_two_sample),
    "box_geometry_reference": records(geometry),
    "goals": records(goals),
    "outline_free_vs_birads": records(reader_mode),
    "wall_s": records(timings),
    "reading": records(reading),
    "index_section": IndexSection(
        title="Cross-validation: pooled results",
        text=[f"{folds}-fold patient-grouped cross-validation: {len(internal)} internal images of "
              f"{internal['patient_id'].nunique()} patients, each predicted once out of fold; {n_external} external "
              "images predicted by every fold's models. Intervals are patient-clustered (Obuchowski 1997); the "
              "planned comparisons are Holm-adjusted."],
        tables=[
            IndexTable(title="What this study can and cannot conclude (rules fixed before the results)",
                       records=records(reading.rename(columns=READING_HEADINGS))),
            IndexTable(title="Internal: pooled out-of-fold AUC and per-fold AUC",
                       records=records(internal_shown.drop(columns=["fold_aucs"]).round(3))),
            *([IndexTable(title="External: fold-averaged score AUC and per-fold AUC",
                          records=records(external_shown.drop(columns=["fold_aucs"]).round(3)))]
              if external is not None else []),
            IndexTable(title="Planned comparisons (pooled out-of-fold, Holm-adjusted)",
                       records=records(comparisons.drop(columns=["model_a", "model_b"]).round(4))),
            IndexTable(title="Planned comparisons within each fold, combined (fold-stratified; read these where the "
                             "pooled ones differ)",
                       records=records(stratified.drop(columns=["model_a", "model_b"]).round(4))),
            *([IndexTable(title="Synthetic images per fold: FID against the real-vs-real floor (goal: within 2x)",
                          records=records(synthetic_fidelity.round(4)))] if len(synthetic_fidelity) else []),
            *([IndexTable(title="Real vs synthetic two-sample test per fold (goal: AUC at most 0.70)",
                          records=records(synthetic_two_sample.round(3)))] if len(synthetic_two_sample) else []),
            *([IndexTable(title="Every model beside the box-geometry baseline (same images, clustered difference)",
                          records=records(geometry.round(3)))] if len(geometry) else []),
            *([IndexTable(title="Goals (met: point estimate; with confidence: the 95% bound)",
                          records=records(goals.round(3)))] if len(goals) else []),
            *([IndexTable(title="Without the expert outline vs the radiologists' BI-RADS",
                          records=records(reader_mode.round(3)))] if len(reader_mode) else []),
            IndexTable(title="Wall time per stage and fold (s; each stage's last run, which may have re-used its fits)",
                       records=records(timings.round(0))),
        ],
        limitations=limitations,
    ).to_dict(),
})
