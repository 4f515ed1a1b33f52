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
# # 50 · Evaluation
#
# How well do the models separate malignant from benign lesions on patients they have never seen,
# and does that hold at other centres? This report reads the prediction tables written by the
# earlier stages and shows, for every test set (the internal test set and each external centre):
# the area under the ROC curve (AUC) with its 95% confidence interval, paired comparisons of the
# models, calibration (do predicted risks match observed frequencies?), decision curves (is acting
# on the model worthwhile?), and sensitivity, specificity, PPV and NPV at decision thresholds that
# were fixed on the validation patients before the test sets were looked at. A model that has no
# predictions on a test set (a baseline whose inputs that set does not record) is listed there as *not
# applicable*, with the reason, and left out of that set's figures.
#
# **Beside the box geometry.** The shape of the outlined lesion box alone (how much taller than wide, how
# large, how much of the lesion crop falls outside the image) separates malignant from benign lesions well,
# and a network can read it from a lesion-centred crop without learning anything about the tissue. Every
# model's AUC is therefore shown beside that of the box-geometry baseline on the same images, with the
# difference (model minus box geometry) and its confidence interval by DeLong's paired test clustered by
# patient: a model is shown to use more than the box only where the interval lies above zero.
#
# **Patients, not images, are the unit.** A patient may contribute several images of the same lesion;
# those images are not independent evidence. Every confidence interval and test below therefore treats
# the patient as the unit: AUC intervals and paired tests by DeLong's method clustered by patient
# (Obuchowski 1997), the bootstrap check by resampling whole patients, and the intervals of sensitivity,
# specificity, PPV and NPV widened by the design effect of the clustering (Rao-Scott). Every table gives
# images and patients. With one image per patient these are the usual per-image methods.
#
# **Training seeds.** A network trained several times with different random seeds enters the tables,
# curves and tests with its score averaged over those seeds (per image, the mean predicted probability:
# an equally weighted ensemble of the seeds, itself a probability, so its calibration is assessed like any
# other); the thresholds are chosen on the validation images with the same averaged score. The tests are
# repeated with each single seed, and the AUC of every seed is shown, at the end.
#
# **Planned comparisons, fixed before the results.** Three questions form the primary family; their
# p-values are adjusted for multiplicity by Holm's method over the three, per test set:
#
# 1. *Do synthetic images help the teacher?* teacher trained on real + synthetic images
#    (`teacher_real+syn`) vs teacher trained on real images (`teacher_real`);
# 2. *Does distillation help the student?* student distilled from the real-image teacher
#    (`student_kd_real`) vs student trained alone (`student_alone`);
# 3. *Does the synthetic-trained teacher help the student?* full DiffKD student (`student_diffkd`) vs
#    student distilled from the real-image teacher (`student_kd_real`).
#
# Everything else is secondary: the full method against every other model (Holm over that table) and all
# pairs of models (Holm over all of them; exploratory). A difference is called significant only when its
# Holm-adjusted p is below 0.05; otherwise the report says "no significant difference" and gives the
# smallest difference the comparison could have detected.

# %% tags=["parameters"]
manifest_path = ""
predictions_dir = ""
figures_dir = "figures"
metrics_path = "50_evaluation.metrics.json"
provenance_path = ""
run_dir = ""
models = []
bootstrap = 2000
band_resamples = 500
subgroups = ["center", "cond_birads", "age_band"]
sensitivity_target = 0.9
specificity_target = 0.9
image_size = 128
efficiency_runs = 30
efficiency_threads = 1
verification_column = "cond_verification"
verified_value = "biopsy"
seed = 0

# %% tags=["reviewer-only"]
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from diffkd_study import summary as sm
from diffkd_study import viz as plots
from diffkd_study.data.schema import read_manifest
from diffkd_study.methods.diffkd import comparisons as cmp
from diffkd_study.methods.diffkd import evaluate as ev
from diffkd_study.methods.diffkd.baselines import read_baseline_inputs, read_not_applicable
from diffkd_study.methods.diffkd.box_geometry import BOX_GEOMETRY, box_geometry_reference, with_box_geometry
from diffkd_study.metrics import dca
from diffkd_study.metrics.calibration import calibration_summary
from diffkd_study.metrics.roc_band import roc_summary
from diffkd_study.nbutil import (
    SIMULATED_DATA,
    NotebookParameterError,
    dedupe_limitations,
    few_cases_limitation,
    provenance_markdown,
    records,
    require_paths,
    show_table,
    write_metrics,
)
from diffkd_study.predictions import read_predictions
from diffkd_study.stage_output import IndexFigure, IndexSection, IndexTable

paths = require_paths(manifest_path=manifest_path, predictions_dir=predictions_dir)
if bootstrap < 100 or band_resamples < 100:
    raise NotebookParameterError(f"bootstrap and band_resamples must be >= 100; got {bootstrap}, {band_resamples}")
if models:  # the models the earlier stages produced: each one's table must be there
    tables = [Path(predictions_dir) / f"{m}.csv" for m in models]
    absent = [f"{m} ({t})" for m, t in zip(models, tables, strict=True) if not t.is_file()]
    if absent:
        raise NotebookParameterError(f"no predictions file for model(s) {', '.join(absent)}: the stage that writes "
                                     "it did not run or failed; run it first, or leave the model out of models")
else:  # every table found
    tables = sorted(Path(predictions_dir).glob("*.csv"))
if not tables:
    raise NotebookParameterError(f"no prediction tables in {predictions_dir}: run the baselines (or training) stage first")
manifest = read_manifest(paths["manifest_path"])
predictions = read_predictions(tables, manifest=manifest)
tests = ev.evaluation_rows(predictions, models)  # seed-averaged scores
model_names = list(models) or list(dict.fromkeys(predictions["model"]))
averaged = ev.seed_averaged(predictions[predictions["model"].isin(model_names)])  # validation rows for thresholds
n_seeds = {m: n for m, n in ev.seed_counts(predictions).items() if m in model_names}
descriptions = ev.model_descriptions(model_names, read_baseline_inputs(predictions_dir).get("clinical"))
test_sets = ev.manifest_test_sets(manifest)
not_applicable = ev.not_applicable_pairs(tests, model_names, test_sets, read_not_applicable(predictions_dir))
figure_sets = [t for t in test_sets if (tests["test_set"] == t).any()]  # a figure needs some model's predictions
if not figure_sets:
    raise NotebookParameterError(f"no model in {tables} has predictions on any test set ({', '.join(test_sets)})")
sizes = ev.test_set_sizes(tests)
condition = f"{manifest.schema.positive_class} lesions"
negative = next(label for label in manifest.schema.label_set if label != manifest.schema.positive_class)
positives = f"{manifest.schema.positive_class.capitalize()} images"
full_model = cmp.FULL_MODEL if cmp.FULL_MODEL in model_names else None


def footnote(table):
    """Show the BI-RADS footnote under a table that lists the radiologists' reading."""
    names = set(table["model"]) if "model" in table.columns else set(table["model_a"]) | set(table["model_b"])
    note = ev.reading_footnote(sorted(names), descriptions)
    if note and len(table):
        display(Markdown(f"*{note}*"))


# %%
display(Markdown(provenance_markdown(provenance_path)))
display(Markdown("Models: " + "; ".join(f"**{m}**: {descriptions[m]}" for m in model_names) + ". Test sets: "
                 + "; ".join(f"{r.test_set} ({r.n_images} images of {r.n_patients} patients)"
                             for r in sizes.itertuples()) + "."))
several = {m: n for m, n in n_seeds.items() if n > 1}
display(Markdown("Scores averaged over training seeds: " + ", ".join(f"{m} {n} seeds" for m, n in several.items())
                 + "; every other model was trained once (one seed: its score is used as it is)." if several else
                 "Every model was trained once (one seed), so its score is used as it is."))
for row in not_applicable.itertuples():
    display(Markdown(f"**{row.model}** is not applicable on **{row.test_set}**: {row.reason}."))

# %% [markdown]
# ## AUC per test set
# AUC with its 95% confidence interval by DeLong's method clustered by patient (on the logit scale, so it
# stays between 0 and 1), and beside it a bootstrap interval that resamples whole patients, as a check.
# Images and patients are counted separately; positives are images with a malignant lesion.

# %%
geometry = BOX_GEOMETRY in model_names  # the box-geometry baseline, the reference every model is shown beside
GEOMETRY_ABSENT = ("The box-geometry baseline was not run in this study (add box_geometry to the baselines "
                   "stage's models), so the models cannot be shown beside it.")
reference = box_geometry_reference(tests)
auc = ev.auc_table(tests, bootstrap=bootstrap, seed=seed, not_applicable=not_applicable)
if geometry:
    auc = with_box_geometry(auc, reference)
AUC_COLUMNS = {"model": "Model", "description": "What it is", "test_set": "Test set", "n": "Images",
               "n_patients": "Patients", "n_pos": positives, "n_seeds": "Seeds averaged", "auc": "AUC",
               "ci": "95% CI (DeLong, clustered by patient)", "bootstrap_ci": "95% CI (bootstrap of patients)",
               "box_geometry_auc": "Box-geometry AUC (same images)",
               "vs_box_geometry": "Model - box geometry (95% CI, clustered by patient)", "note": "Note"}
AUC_INTERVALS = {"ci": ("ci_low", "ci_high"), "bootstrap_ci": ("bootstrap_ci_low", "bootstrap_ci_high")}
show_table(auc.assign(description=auc["model"].map(descriptions)), AUC_COLUMNS, intervals=AUC_INTERVALS)

# %%
footnote(auc)
if not geometry:
    display(Markdown(GEOMETRY_ABSENT))

# %% tags=["reviewer-only"]
# how much treating the images as independent would narrow each interval (reviewer information)
show_table(auc, {"model": "Model", "test_set": "Test set", "n": "Images", "n_patients": "Patients",
                 "ci": "95% CI clustered by patient", "ci_per_image": "95% CI per image (images independent)"},
           intervals={"ci": ("ci_low", "ci_high"), "ci_per_image": ("ci_low_per_image", "ci_high_per_image")})

# %% [markdown]
# ## External test, biopsy-verified only
# Where the manifest records how each diagnosis was verified, every model again on the external test images
# whose diagnosis was verified by biopsy (or the method the study names).

# %%
verified_tests, verified_sentence = ev.verified_subset(tests, manifest, verification_column, verified_value)
display(Markdown(verified_sentence))
verified_auc = (ev.auc_table(verified_tests, bootstrap=bootstrap, seed=seed) if verified_tests is not None
                else auc.iloc[0:0])
if geometry and verified_tests is not None:
    verified_auc = with_box_geometry(verified_auc, box_geometry_reference(verified_tests))
if len(verified_auc):
    display(show_table(verified_auc.assign(description=verified_auc["model"].map(descriptions)), AUC_COLUMNS,
                       intervals=AUC_INTERVALS))
    footnote(verified_auc)

# %%
fig = plots.plot_auc_forest(auc)
plots.save_figure(fig, figures_dir, "auc_forest")
display(Markdown(plots.caption("auc_forest", condition=condition)))

# %% [markdown]
# ## Beside the box-geometry baseline
# Each model against the box-geometry baseline (the lesion box's shape, size and crop position alone) on each
# test set, on the images both scored: both AUCs, the difference (model minus box geometry) with its 95%
# confidence interval and p by DeLong's paired test clustered by patient, and the smallest difference the
# comparison could detect. One reference per model, not a family of claims: no multiplicity adjustment.

# %%
REFERENCE_COLUMNS = {"test_set": "Test set", "model": "Model", "n": "Images", "n_patients": "Patients",
                     "n_pos": positives, "auc": "AUC of the model", "auc_box_geometry": "AUC of the box geometry",
                     "difference": "Difference (model - box geometry)", "ci": "95% CI (clustered by patient)",
                     "p_value": "p", "mdd": "Detectable difference (80% power)", "note": "Note"}
if geometry:
    display(show_table(reference, REFERENCE_COLUMNS, intervals={"ci": ("ci_low", "ci_high")}, p_values=["p_value"],
                       empty="No other model has predictions on the test sets the box geometry scored."))
    if len(reference):
        display(Markdown(cmp.MDD_SENTENCE))
        footnote(reference)
else:
    display(Markdown(GEOMETRY_ABSENT))

# %% [markdown]
# ## ROC curves
# One figure per test set, of the seed-averaged scores. The shaded bands are pointwise bootstrap bands
# (resamples as stated in the caption's method note below); the legend's intervals are clustered by patient.

# %%
roc_captions = {}
for test_set in test_sets:
    part = tests[tests["test_set"] == test_set]
    if test_set not in figure_sets:
        display(Markdown(f"**{test_set}**: no model has predictions on this test set, so it has no figures."))
        continue
    curves = {m: (g["y_true"].to_numpy(), g["y_score"].to_numpy(), g[ev.PATIENT].to_numpy())
              for m, g in part.groupby("model", sort=False)}
    # patient-clustered interval and band (whole patients resampled) where a patient has several images
    summaries = {m: roc_summary(y, s, n_resamples=band_resamples, seed=seed,
                                groups=patients if pd.Series(patients).duplicated().any() else None)
                 for m, (y, s, patients) in curves.items()}
    fig = plots.plot_roc(summaries, title=f"ROC curves: {test_set}")
    plots.save_figure(fig, figures_dir, f"roc_{ev.slug(test_set)}")
    plt.show()
    first, patients = next(iter(curves.values()))[0], next(iter(curves.values()))[2]
    roc_captions[test_set] = plots.caption("roc", test_set=ev.describe_test_set(test_set), n=len(first),
                                           n_pos=int(first.sum()), condition=condition)
    display(Markdown(roc_captions[test_set] + f" The {len(first)} images come from {len(set(patients))} patients. "
                     f"(Bands: {band_resamples} bootstrap resamples.) "
                     + ev.not_applicable_note(not_applicable, test_set)))

# %% [markdown]
# ## Planned comparisons
# The three comparisons fixed before the results (see the top of this report), on each test set: the
# difference in AUC (first minus second model) on the images both scored, with its 95% confidence interval
# and p-value by DeLong's paired test clustered by patient; the Holm-adjusted p over the three
# comparisons of the test set; and the smallest difference the comparison could detect.

# %%
TEST_COLUMNS = {"comparison": "Comparison", "test_set": "Test set", "model_a": "Model A", "model_b": "Model B",
                "n": "Images", "n_patients": "Patients", "auc_a": "AUC A", "auc_b": "AUC B",
                "difference": "Difference (A - B)", "ci": "95% CI (clustered by patient)", "p_value": "p",
                "p_holm": "Holm p", "mdd": "Detectable difference (80% power)", "note": "Note"}
planned = cmp.planned_comparisons(tests)
if planned["p_value"].notna().any():
    display(show_table(planned, TEST_COLUMNS, intervals={"ci": ("ci_low", "ci_high")}, p_values=["p_value", "p_holm"]))
    display(Markdown(cmp.MDD_SENTENCE))
    display(Markdown("\n".join(f"* **{r['test_set']}**, {r['comparison']} {r['contrast']}: "
                                f"{sm.comparison_sentence(r)}." for r in records(planned))))
else:
    display(Markdown("None of the planned comparisons can be made in this run ("
                     + "; ".join(dict.fromkeys(planned["note"])) + "): the networks they compare were not trained. "
                     "The comparisons below are secondary or exploratory."))

# %% [markdown]
# ## Partial combinations against the full method (secondary)
# The full three-stage method (teacher trained on real + synthetic images, student distilled from it)
# against every other model on the same images: the difference in AUC (full minus other) with its
# 95% confidence interval and p-value (DeLong's paired test clustered by patient), and Holm's adjusted p
# over the comparisons of this table, per test set.

# %%
ablation = cmp.paired_delong_tests(tests, reference=full_model) if full_model else planned.iloc[0:0, 2:]
display(show_table(ablation, TEST_COLUMNS, intervals={"ci": ("ci_low", "ci_high")}, p_values=["p_value", "p_holm"],
                   empty="The full method's student network has not been trained in this run (the training stages "
                         "did not run), so there is nothing to compare it with."))
if len(ablation):
    display(Markdown(cmp.MDD_SENTENCE))
    footnote(ablation)

# %% [markdown]
# ## Students' goals: starting point, distillation, distance to the teacher (secondary)
# Rules written down before the run: a student is within 0.03 AUC of its teacher when teacher minus student is
# at most 0.03; distillation helps when the distilled student minus the student alone (same starting weights) is
# at least 0.02; the general-distillation starting point helps when a student minus its twin trained from random
# weights (`-scratch`) is at least 0; a model trained and tested without the expert outline (`-jittered`: a
# rough box; `-whole`: the full frame) is within 0.05 AUC of the same model on the outline crop. "Met" reads
# the point estimate; "with confidence" asks the 95% bound (clustered by patient) to satisfy the rule too. No
# multiplicity adjustment: each goal is read on its own.

# %%
goals = cmp.student_goals(tests)
GOAL_COLUMNS = {"goal": "Goal", "test_set": "Test set", "model_a": "Model A", "model_b": "Model B",
                "n": "Images", "n_patients": "Patients", "auc_a": "AUC A", "auc_b": "AUC B",
                "difference": "Difference (A - B)", "ci": "95% CI (clustered by patient)", "p_value": "p",
                "met": "Met", "with_confidence": "Met with confidence", "note": "Note"}
display(show_table(goals, GOAL_COLUMNS, intervals={"ci": ("ci_low", "ci_high")}, p_values=["p_value"],
                   empty="This run has no distilled student with its teacher, student alone or from-scratch twin."))

# %% [markdown]
# ## Without the expert outline, against the radiologists' BI-RADS
# The radiologists assigned BI-RADS without anyone's outline of the lesion, so the like-for-like comparison
# uses the models whose input needs no expert outline: trained and tested on a rough box (`-jittered`) or on
# the whole frame (`-whole`). Model minus BI-RADS, clustered by patient; exploratory (no adjustment).

# %%
reader_mode = cmp.outline_free_vs_birads(tests)
display(show_table(reader_mode, TEST_COLUMNS, intervals={"ci": ("ci_low", "ci_high")}, p_values=["p_value"],
                   empty="This run has no model without the expert outline (teacher/student extra_crops) or no "
                         "BI-RADS baseline (clinical on cond_birads), so this comparison is not drawn."))

# %% [markdown]
# ## All pairs of models (exploratory)
# Every pair of models on each test set, with Holm's adjusted p over all the pairs of the test set. These
# comparisons were not planned: read them as leads for a future study, not as findings.

# %%
paired = cmp.paired_delong_tests(tests)
display(show_table(paired, TEST_COLUMNS, intervals={"ci": ("ci_low", "ci_high")}, p_values=["p_value", "p_holm"],
                   empty="Only one model has predictions on the test sets: there is no pair to compare."))
if len(paired):
    display(Markdown(cmp.MDD_SENTENCE))
    footnote(paired)

# %% [markdown]
# ## The comparisons seed by seed
# The planned and partial-combination comparisons repeated with single training seeds: for each pair and
# each seed both models were trained with (seeds paired by number), the test on that seed's predictions
# alone. These show how much a result depends on the seed; the seed-averaged tests above are the analysis.

# %%
per_seed = cmp.per_seed_tests(predictions, cmp.tested_pairs(planned, ablation))
show_table(per_seed, {"test_set": "Test set", "model_a": "Model A", "model_b": "Model B", "seed": "Seed",
                      "n": "Images", "n_patients": "Patients", "auc_a": "AUC A", "auc_b": "AUC B",
                      "difference": "Difference (A - B)", "ci": "95% CI (clustered by patient)", "p_value": "p",
                      "note": "Note"},
           intervals={"ci": ("ci_low", "ci_high")}, p_values=["p_value"],
           empty="No planned or partial-combination comparison could be made in this run.")

# %% [markdown]
# ## Variability across training seeds
# Networks trained with several random seeds: the AUC of each seed with its own 95% interval (clustered by
# patient: variability of the test cases) and the mean +- SD over seeds (variability of training).

# %%
seed_table = ev.seed_variability_table(predictions, model_names)
show_table(seed_table, {"model": "Model", "test_set": "Test set", "n": "Images", "n_patients": "Patients",
                        "n_pos": positives, "n_seeds": "Seeds", "summary": "AUC, mean \u00b1 SD over seeds",
                        "per_seed": "AUC of each seed (95% CI)"},
           empty="Every model in this run was trained with a single seed, so there is no variability across seeds "
                 "to show.")

# %% [markdown]
# ## Calibration
# Of the seed-averaged probabilities (for a network trained with several seeds, the mean of its seeds'
# probabilities). The intervals of the intercept and slope treat the images as independent.

# %%
calibration = ev.calibration_table(tests, not_applicable=not_applicable)
show_table(calibration, {"model": "Model", "test_set": "Test set", "n": "Images", "n_patients": "Patients",
                         "n_pos": positives, "intercept": "Calibration intercept", "intercept_ci": "Intercept 95% CI",
                         "slope": "Calibration slope", "slope_ci": "Slope 95% CI", "brier": "Brier score",
                         "scaled_brier": "Scaled Brier score", "note": "Note"},
           intervals={"intercept_ci": ("intercept_ci_low", "intercept_ci_high"),
                      "slope_ci": ("slope_ci_low", "slope_ci_high")})

# %%
footnote(calibration)
for test_set in figure_sets:
    y, probs = ev.scores_by_model(tests, test_set)
    fig = plots.plot_calibration({m: calibration_summary(y, p) for m, p in probs.items()},
                                 title=f"Calibration: {test_set}")
    plots.save_figure(fig, figures_dir, f"calibration_{ev.slug(test_set)}")
    plt.show()
    display(Markdown(plots.caption("calibration", test_set=ev.describe_test_set(test_set), n=len(y),
                                   n_pos=int(y.sum()), condition=condition) + " "
                     + ev.not_applicable_note(not_applicable, test_set)))

# %% [markdown]
# ## Decision curves

# %%
for test_set in figure_sets:
    y, probs = ev.scores_by_model(tests, test_set)
    fig = plots.plot_decision_curves(dca.decision_curves(y, probs), title=f"Decision curves: {test_set}")
    plots.save_figure(fig, figures_dir, f"decision_curves_{ev.slug(test_set)}")
    plt.show()
    display(Markdown(plots.caption("decision_curves", test_set=ev.describe_test_set(test_set), n=len(y),
                                   n_pos=int(y.sum()), condition=condition) + " "
                     + ev.not_applicable_note(not_applicable, test_set)))

# %% [markdown]
# ## Operating points
# Decision thresholds are chosen on the validation patients only, on the same seed-averaged scores (three
# rules: the Youden index, which balances sensitivity and specificity, and the thresholds meeting a target
# sensitivity or specificity), then applied unchanged to each test set. Each proportion has its
# numerator/denominator (images) and a 95% Wilson confidence interval widened for patients with several
# images (Rao-Scott design effect; the plain Wilson interval when every patient has one image).

# %%
thresholds = ev.validation_thresholds(averaged, model_names, sensitivity_target=sensitivity_target,
                                      specificity_target=specificity_target)
show_table(ev.threshold_table(thresholds),
           {"model": "Model", "rule": "Rule (chosen on validation)", "threshold": "Threshold",
            "validation_sensitivity": "Validation sensitivity", "validation_specificity": "Validation specificity",
            "validation_n": "Validation images"})

# %%
operating = ev.operating_point_table(tests, thresholds, not_applicable=not_applicable)
show_table(operating.assign(**{f"{m}_counts": operating[f"{m}_n"] + " (" + operating[f"{m}_ci"] + ")"
                               for m in ("sensitivity", "specificity", "ppv", "npv")}),
           {"model": "Model", "test_set": "Test set", "rule": "Threshold rule", "n": "Images",
            "n_patients": "Patients",
            "sensitivity": "Sensitivity", "sensitivity_counts": "Sensitivity: images (95% CI)",
            "specificity": "Specificity", "specificity_counts": "Specificity: images (95% CI)",
            "ppv": "PPV", "ppv_counts": "PPV: images (95% CI)", "npv": "NPV", "npv_counts": "NPV: images (95% CI)",
            "note": "Note"}, digits=2)

# %%
footnote(operating)
fig, axes = plt.subplots(len(model_names), len(figure_sets), squeeze=False, layout="constrained",
                         figsize=(4.2 * len(figure_sets), 3.6 * len(model_names)))
for i, model in enumerate(model_names):
    threshold = next(iter(thresholds[model].values()))
    for j, test_set in enumerate(figure_sets):
        part = tests[(tests["test_set"] == test_set) & (tests["model"] == model)]
        if part.empty:
            plots.draw_not_applicable(axes[i, j], f"{model}\n{test_set}")
            continue
        calls = (part["y_score"] >= threshold.value).astype(int)
        plots.plot_confusion(part["y_true"], calls, {0: negative, 1: manifest.schema.positive_class},
                             title=f"{model}\n{test_set}", ax=axes[i, j])
plots.save_figure(fig, figures_dir, "confusion_matrices")
plt.show()
display(Markdown(plots.caption("confusion", model="each model", test_set="each test set", n="all",
                               condition=condition) + " Threshold: Youden index on validation. "
                 + " ".join(ev.not_applicable_note(not_applicable, t) for t in figure_sets).strip()))

# %% [markdown]
# ## Centres and subgroups
# AUC per centre and per subgroup recorded in the manifest, with images and patients and the interval
# clustered by patient. Subgroups with fewer than two cases (or two patients) of a class have no AUC; small
# subgroups have wide intervals and are descriptive only.

# %%
with_groups, subgroup_columns = ev.add_subgroups(tests, manifest, subgroups)
subgroup = ev.subgroup_table(with_groups, subgroup_columns)
show_table(subgroup.assign(subgroup=subgroup["subgroup"].str.replace("_", " ")) if len(subgroup) else subgroup,
           {"model": "Model", "test_set": "Test set", "subgroup": "Subgroup", "level": "Group", "n": "Images",
            "n_patients": "Patients", "n_pos": positives, "auc": "AUC", "ci": "95% CI (clustered by patient)",
            "note": "Note"},
           intervals={"ci": ("ci_low", "ci_high")}, n_column="n",
           empty="The manifest records no subgroup (centre, BI-RADS, age) for the test images.")

# %%
if len(subgroup):
    footnote(subgroup)

# %% [markdown]
# ## Efficiency: teacher vs student
# Size and speed of the teacher and student networks at the study resolution (the architectures the
# training stages used; before they have run, the default ones). CPU latency is the median of
# repeated single-image forward passes on one thread.

# %% tags=["reviewer-only"]
import torch

from diffkd_study.metrics.efficiency import compare_models
from diffkd_study.models.classifier import DEFAULT_STUDENT, DEFAULT_TEACHER, create_classifier

architectures = {"teacher": DEFAULT_TEACHER, "student": DEFAULT_STUDENT}
trained = {kind: Path(run_dir) / kind / "records.json" for kind in architectures}
for kind, path in trained.items():
    if run_dir and path.is_file():
        architectures[kind] = json.loads(path.read_text())["config"]["model"]
torch.manual_seed(seed)
networks = {kind: create_classifier(name, num_classes=2, in_chans=1, pretrained="none")
            for kind, name in architectures.items()}

# %%
efficiency = compare_models(networks["teacher"], networks["student"], (1, 1, image_size, image_size),
                            threads=efficiency_threads, warmup=5, runs=efficiency_runs)
display(Markdown(f"Teacher **{architectures['teacher']}**, student **{architectures['student']}**, input 1 x "
                 f"{image_size} x {image_size} pixels, {efficiency_threads} CPU thread(s), {efficiency_runs} timed runs, "
                 f"memory layout {efficiency.attrs.get('memory_format', 'contiguous')} (as in training)."))
show_table(efficiency.rename_axis("Measure"), {"Measure": "Measure", "teacher": "Teacher", "student": "Student",
                                              "student_to_teacher": "Student / teacher"})

# %% tags=["reviewer-only"]
headline = auc.assign(auc_95ci=auc.apply(ev.format_auc, axis=1))
headline_columns = ["model", "test_set", "n", "n_patients", "n_pos", "auc_95ci"] + (
    ["box_geometry_auc", "vs_box_geometry"] if geometry else [])
limitations = [f"ROC bands use {band_resamples} bootstrap resamples, bootstrap AUC intervals {bootstrap}."]
if not any(m.startswith(("teacher_", "student_")) for m in model_names):
    limitations.insert(0, "The models are simple baselines (logistic regressions), not the teacher and student "
                          "networks; the training stages add those to the same tables.")
if several:
    limitations.append("Networks trained with several seeds enter the tables, curves and tests with their score "
                       "averaged over the seeds (" + ", ".join(f"{m}: {n}" for m, n in several.items())
                       + "); the per-seed tests and the seed table show each seed.")
if (sizes["n_images"] > sizes["n_patients"]).any():
    limitations.append("Some patients contribute several images: every interval and test here (AUC, ROC bands, "
                       "paired tests, operating points, calibration) is clustered by patient; the decision curves "
                       "are point estimates.")
if not planned["p_value"].notna().any():
    limitations.append("None of the planned comparisons could be made in this run (their models were not all "
                       "trained): the comparisons shown are secondary or exploratory.")
if "phantom" in set(manifest.df["dataset"]):
    limitations.insert(0, SIMULATED_DATA)
if not geometry:
    limitations.append(GEOMETRY_ABSENT)
for row in not_applicable.itertuples():
    limitations.append(f"{row.model} is not applicable on {row.test_set}, so it has no results there: {row.reason}.")
for _, row in auc[auc["n"] > 0].drop_duplicates("test_set").iterrows():
    if row["n_pos"] < 30:
        limitations.append(few_cases_limitation(row["test_set"], int(row["n_pos"]), manifest.schema.positive_class))
limitations = dedupe_limitations(limitations)
planned_view = planned.assign(sentence=[sm.comparison_sentence(r) for r in records(planned)])
write_metrics(metrics_path, {
    "auc": records(auc),
    "auc_verified": records(verified_auc),
    "verification": verified_sentence,
    "box_geometry_reference": records(reference),
    "planned_comparisons": records(planned),
    "paired_delong": records(paired),
    "ablation_vs_full": records(ablation),
    "per_seed_tests": records(per_seed),
    "full_model": full_model,
    "seeds_averaged": n_seeds,
    "model_descriptions": descriptions,
    "seed_variability": records(seed_table),
    "not_applicable": records(not_applicable),
    "calibration": records(calibration),
    "thresholds": records(ev.threshold_table(thresholds)),
    "operating_points": records(operating),
    "subgroups": records(subgroup),
    "efficiency": records(efficiency),
    "bootstrap": bootstrap,
    "band_resamples": band_resamples,
    "student_goals": records(goals),
    "outline_free_vs_birads": records(reader_mode),
    "index_section": IndexSection(
        title="Diagnostic performance",
        text=["AUC with its 95% confidence interval clustered by patient (DeLong's method, Obuchowski's extension) "
              "per model and test set, of the seed-averaged scores; thresholds for sensitivity and specificity were "
              "fixed on validation data. Differences are called significant only when the Holm-adjusted p of "
              "their family is below 0.05. Full tables in 50_evaluation."]
             + ([ev.reading_footnote(model_names, descriptions)] if ev.reading_footnote(model_names, descriptions)
                else [])
             + (["Each model's AUC is shown beside the box-geometry baseline's on the same images (the lesion box's "
                 "shape, size and crop position alone), with the difference model minus box geometry and its 95% "
                 "CI clustered by patient."] if geometry else [GEOMETRY_ABSENT]),
        tables=[
            IndexTable(title="AUC per test set", records=records(
                headline[headline_columns].round(4).set_index(["model", "test_set"]))),
            IndexTable(title="Planned comparisons (primary family, Holm over the three per test set)",
                       caption="Difference in AUC (first minus second model) with its 95% CI clustered by patient, "
                               "p and Holm p. " + cmp.MDD_SENTENCE,
                       records=records(planned_view[["test_set", "model_a", "model_b", "n_patients", "sentence"]]
                                       .set_index("test_set"))),
            IndexTable(title="Partial combinations: the full method against each other model" if full_model
                       else "Paired tests of all pairs (exploratory)",
                       caption="Difference in AUC (first minus second model) with its 95% CI clustered by patient, "
                               "p, Holm p over the table's comparisons per test set and the detectable difference "
                               "at 80% power.",
                       records=records(
                           (ablation if full_model else paired)[["test_set", "model_a", "model_b", "n", "n_patients",
                                                                 "difference", "ci_low", "ci_high", "p_value",
                                                                 "p_holm", "mdd"]]
                           .round(4).set_index("test_set"))),
        ] + ([IndexTable(title="Students' goals (secondary; rules written before the run)",
                         caption="Teacher minus student at most 0.03; distilled student minus student alone at least "
                                 "0.02; student minus its from-scratch twin at least 0. Met: point estimate; with "
                                 "confidence: the 95% bound clustered by patient as well.",
                         records=records(goals[["goal", "test_set", "model_a", "model_b", "difference", "ci_low",
                                                "ci_high", "met", "with_confidence"]].round(4).set_index("goal")))]
             if len(goals) else []),
        figures=[
            IndexFigure(png=f"figures/roc_{ev.slug(figure_sets[0])}.png", title=f"ROC curves: {figure_sets[0]}",
                        caption=roc_captions[figure_sets[0]]),
            IndexFigure(png="figures/auc_forest.png", title="AUC by test set",
                        caption=plots.caption("auc_forest", condition=condition)),
        ],
        limitations=limitations,
    ).to_dict(),
})
