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
seed = 0

# %% tags=["reviewer-only"]
import json
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from diffkd_study import viz as plots
from diffkd_study.data.schema import read_manifest
from diffkd_study.methods.diffkd import evaluate as ev
from diffkd_study.methods.diffkd.baselines import read_not_applicable
from diffkd_study.metrics import dca
from diffkd_study.metrics.calibration import calibration_summary
from diffkd_study.metrics.roc import roc_summary
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
tests = ev.evaluation_rows(predictions, models, seed=seed)
seeds_used = ev.primary_seeds(predictions, seed)
model_names = list(models) or list(dict.fromkeys(predictions["model"]))
test_sets = ev.manifest_test_sets(manifest)
not_applicable = ev.not_applicable_pairs(tests, model_names, test_sets, read_not_applicable(predictions_dir))
figure_sets = [t for t in test_sets if (tests["test_set"] == t).any()]  # a figure needs some model's predictions
if not figure_sets:
    raise NotebookParameterError(f"no model in {tables} has predictions on any test set ({', '.join(test_sets)})")
condition = f"{manifest.schema.positive_class} lesions"
negative = next(label for label in manifest.schema.label_set if label != manifest.schema.positive_class)
positives = f"{manifest.schema.positive_class.capitalize()} images"

# %%
display(Markdown(provenance_markdown(provenance_path)))
display(Markdown(f"Models: {', '.join(f'**{m}**' for m in model_names)}. Test sets: {', '.join(test_sets)}."))
several = {m: s for m, s in seeds_used.items() if predictions.loc[predictions["model"] == m, "seed"].nunique() > 1}
if several:
    display(Markdown("Models trained with several seeds enter the tables, curves and tests below with one seed "
                     f"each (the study seed where trained, else the lowest): "
                     f"{', '.join(f'{m} seed {s}' for m, s in several.items())}; all seeds are summarised in "
                     "*Variability across training seeds*."))
for row in not_applicable.itertuples():
    display(Markdown(f"**{row.model}** is not applicable on **{row.test_set}**: {row.reason}."))

# %% [markdown]
# ## AUC per test set
# AUC with its 95% confidence interval by DeLong's method (on the logit scale, so it stays between 0
# and 1), and beside it a stratified bootstrap interval as a check; n is the number of images,
# n_pos those with a malignant lesion.

# %%
auc = ev.auc_table(tests, bootstrap=bootstrap, seed=seed, not_applicable=not_applicable)
show_table(auc, {"model": "Model", "test_set": "Test set", "n": "Images", "n_pos": positives, "auc": "AUC",
                 "ci": "95% CI (DeLong)", "bootstrap_ci": "95% CI (bootstrap)", "note": "Note"},
           intervals={"ci": ("ci_low", "ci_high"), "bootstrap_ci": ("bootstrap_ci_low", "bootstrap_ci_high")})

# %%
fig = plots.plot_auc_forest(auc)
plots.save_figure(fig, figures_dir, "auc_forest")
display(Markdown(plots.caption("auc_forest", condition=condition)))

# %% [markdown]
# ## ROC curves
# One figure per test set. The shaded bands are pointwise bootstrap bands (resamples as stated in
# the caption's method note below).

# %%
roc_captions = {}
for test_set in test_sets:
    part = tests[tests["test_set"] == test_set]
    if test_set not in figure_sets:
        display(Markdown(f"**{test_set}**: no model has predictions on this test set, so it has no figures."))
        continue
    curves = {m: (g["y_true"].to_numpy(), g["y_score"].to_numpy()) for m, g in part.groupby("model", sort=False)}
    summaries = {m: roc_summary(y, s, n_resamples=band_resamples, seed=seed) for m, (y, s) in curves.items()}
    fig = plots.plot_roc(summaries, title=f"ROC curves: {test_set}")
    plots.save_figure(fig, figures_dir, f"roc_{ev.slug(test_set)}")
    plt.show()
    first = next(iter(curves.values()))[0]
    roc_captions[test_set] = plots.caption("roc", test_set=ev.describe_test_set(test_set), n=len(first),
                                           n_pos=int(first.sum()), condition=condition)
    display(Markdown(roc_captions[test_set] + f" (Bands: {band_resamples} bootstrap resamples.) "
                     + ev.not_applicable_note(not_applicable, test_set)))

# %% [markdown]
# ## Paired comparison of the models
# DeLong's test of the difference between two models' AUCs on the same images (the difference and
# its 95% confidence interval; p < 0.05 is conventionally called significant).

# %%
paired = ev.paired_delong_tests(tests)
show_table(paired, {"test_set": "Test set", "model_a": "Model A", "model_b": "Model B", "n": "Images", "auc_a": "AUC A",
                   "auc_b": "AUC B", "difference": "Difference (A - B)", "ci": "95% CI", "p_value": "p", "note": "Note"},
           intervals={"ci": ("ci_low", "ci_high")}, p_values=["p_value"],
           empty="Only one model has predictions on the test sets: there is no pair to compare.")

# %% [markdown]
# ## Partial combinations against the full method
# The full three-stage method (teacher trained on real + synthetic images, student distilled from it)
# against every other model on the same images: the difference in AUC (full minus other) with its
# DeLong 95% confidence interval and p-value.

# %%
full_model = "student_diffkd" if "student_diffkd" in model_names else None
ablation = ev.paired_delong_tests(tests, reference=full_model) if full_model else paired.iloc[0:0]
show_table(ablation, {"test_set": "Test set", "model_a": "Model A", "model_b": "Model B", "n": "Images", "auc_a": "AUC A",
                   "auc_b": "AUC B", "difference": "Difference (A - B)", "ci": "95% CI", "p_value": "p", "note": "Note"},
           intervals={"ci": ("ci_low", "ci_high")}, p_values=["p_value"],
           empty="The full method's student network has not been trained in this run (the training stages did not "
                 "run), so there is nothing to compare it with.")

# %% [markdown]
# ## Variability across training seeds
# Networks trained with several random seeds: the AUC of each seed with its own 95% DeLong interval
# (variability of the test cases) and the mean +- SD over seeds (variability of training).

# %%
seed_table = ev.seed_variability_table(predictions, model_names)
show_table(seed_table, {"model": "Model", "test_set": "Test set", "n": "Images", "n_pos": positives, "n_seeds": "Seeds",
                        "summary": "AUC, mean \u00b1 SD over seeds", "per_seed": "AUC of each seed (95% CI)"},
           empty="Every model in this run was trained with a single seed, so there is no variability across seeds "
                 "to show.")

# %% [markdown]
# ## Calibration

# %%
calibration = ev.calibration_table(tests, not_applicable=not_applicable)
show_table(calibration, {"model": "Model", "test_set": "Test set", "n": "Images", "n_pos": positives,
                         "intercept": "Calibration intercept", "intercept_ci": "Intercept 95% CI",
                         "slope": "Calibration slope", "slope_ci": "Slope 95% CI", "brier": "Brier score",
                         "scaled_brier": "Scaled Brier score", "note": "Note"},
           intervals={"intercept_ci": ("intercept_ci_low", "intercept_ci_high"),
                      "slope_ci": ("slope_ci_low", "slope_ci_high")})

# %%
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
# Decision thresholds are chosen on the validation patients only (three rules: the Youden index,
# which balances sensitivity and specificity, and the thresholds meeting a target sensitivity or
# specificity), then applied unchanged to each test set. Each proportion has a 95% Wilson
# confidence interval and its numerator/denominator.

# %%
thresholds = ev.validation_thresholds(predictions, model_names, sensitivity_target=sensitivity_target,
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
            "sensitivity": "Sensitivity", "sensitivity_counts": "Sensitivity: cases (95% CI)",
            "specificity": "Specificity", "specificity_counts": "Specificity: cases (95% CI)",
            "ppv": "PPV", "ppv_counts": "PPV: cases (95% CI)", "npv": "NPV", "npv_counts": "NPV: cases (95% CI)",
            "note": "Note"}, digits=2)

# %%
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
# AUC per centre and per subgroup recorded in the manifest, with counts. Subgroups with fewer than
# two cases of a class have no AUC; small subgroups have wide intervals and are descriptive only.

# %%
with_groups, subgroup_columns = ev.add_subgroups(tests, manifest, subgroups)
subgroup = ev.subgroup_table(with_groups, subgroup_columns)
show_table(subgroup.assign(subgroup=subgroup["subgroup"].str.replace("_", " ")) if len(subgroup) else subgroup,
           {"model": "Model", "test_set": "Test set", "subgroup": "Subgroup", "level": "Group", "n": "Images",
            "n_pos": positives, "auc": "AUC", "ci": "95% CI", "note": "Note"},
           intervals={"ci": ("ci_low", "ci_high")}, n_column="n",
           empty="The manifest records no subgroup (centre, BI-RADS, age) for the test images.")

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
                 f"{image_size} x {image_size} pixels, {efficiency_threads} CPU thread(s), {efficiency_runs} timed runs."))
show_table(efficiency.rename_axis("Measure"), {"Measure": "Measure", "teacher": "Teacher", "student": "Student",
                                              "student_to_teacher": "Student / teacher"})

# %% tags=["reviewer-only"]
headline = auc.assign(auc_95ci=auc.apply(ev.format_auc, axis=1))
limitations = [f"ROC bands use {band_resamples} bootstrap resamples, bootstrap AUC intervals {bootstrap}."]
if not any(m.startswith(("teacher_", "student_")) for m in model_names):
    limitations.insert(0, "The models are simple baselines (logistic regressions), not the teacher and student "
                          "networks; the training stages add those to the same tables.")
if several:
    limitations.append("Tables, curves and tests use one training seed per network (" +
                       ", ".join(f"{m}: {s}" for m, s in several.items()) + "); the seed table shows the others.")
if "phantom" in set(manifest.df["dataset"]):
    limitations.insert(0, SIMULATED_DATA)
for row in not_applicable.itertuples():
    limitations.append(f"{row.model} is not applicable on {row.test_set}, so it has no results there: {row.reason}.")
for _, row in auc[auc["n"] > 0].drop_duplicates("test_set").iterrows():
    if row["n_pos"] < 30:
        limitations.append(few_cases_limitation(row["test_set"], int(row["n_pos"]), manifest.schema.positive_class))
limitations = dedupe_limitations(limitations)
write_metrics(metrics_path, {
    "auc": records(auc),
    "paired_delong": records(paired),
    "ablation_vs_full": records(ablation),
    "full_model": full_model,
    "seeds_used": seeds_used,
    "seed_variability": records(seed_table),
    "not_applicable": records(not_applicable),
    "calibration": records(calibration),
    "thresholds": records(ev.threshold_table(thresholds)),
    "operating_points": records(operating),
    "subgroups": records(subgroup),
    "efficiency": records(efficiency),
    "bootstrap": bootstrap,
    "band_resamples": band_resamples,
    "index_section": IndexSection(
        title="Diagnostic performance",
        text=["AUC with 95% DeLong confidence interval per model and test set; thresholds for sensitivity and "
              "specificity were fixed on validation data. Full tables in 50_evaluation."],
        tables=[
            IndexTable(title="AUC per test set", records=records(
                headline[["model", "test_set", "n", "n_pos", "auc_95ci"]].set_index(["model", "test_set"]))),
            IndexTable(title="Partial combinations: the full method against each other model" if full_model
                       else "Paired DeLong tests",
                       caption="Difference in AUC (first minus second model) with its DeLong 95% CI and p-value.",
                       records=records(
                           (ablation if full_model else paired)[["test_set", "model_a", "model_b", "n", "difference",
                                                                 "ci_low", "ci_high", "p_value"]]
                           .round(4).set_index("test_set"))),
        ],
        figures=[
            IndexFigure(png=f"figures/roc_{ev.slug(figure_sets[0])}.png", title=f"ROC curves: {figure_sets[0]}",
                        caption=roc_captions[figure_sets[0]]),
            IndexFigure(png="figures/auc_forest.png", title="AUC by test set",
                        caption=plots.caption("auc_forest", condition=condition)),
        ],
        limitations=limitations,
    ).to_dict(),
})
