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
# # 60 · Reader study
#
# How does the model compare with radiologists reading the same images? Each reader gave every
# test image a confidence rating (1-5) and a decision (recall / no recall). This report places each
# reader's decisions on the model's ROC curve, compares the model's sensitivity at each reader's
# specificity (and vice versa), summarises the readers by experience, and compares the model's AUC
# with the readers' mean AUC by the Obuchowski-Rockette-Hillis (ORH) method, which allows for the
# variability of both readers and cases.

# %% tags=["parameters"]
manifest_path = ""
predictions_dir = ""
reader_study_dir = ""
reads_path = ""
simulate = False
n_junior = 0
n_senior = 0
model = ""
figures_dir = "figures"
metrics_path = "60_reader_study.metrics.json"
provenance_path = ""
run_dir = ""
seed = 0

# %% tags=["reviewer-only"]
import json
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from diffkd_study import reader_study as rs
from diffkd_study import viz as plots
from diffkd_study.data.schema import read_manifest
from diffkd_study.io import atomic_path
from diffkd_study.methods.diffkd.evaluate import seed_averaged
from diffkd_study.metrics.roc import auc_delong
from diffkd_study.metrics.roc_band import roc_summary
from diffkd_study.nbutil import (
    NotebookParameterError,
    dedupe_limitations,
    provenance_markdown,
    records,
    require_paths,
    show_table,
    table_frame,
    write_metrics,
)
from diffkd_study.predictions import read_predictions
from diffkd_study.stage_output import IndexFigure, IndexSection, IndexTable

paths = require_paths(manifest_path=manifest_path, predictions_dir=predictions_dir)
if simulate == bool(reads_path):
    raise NotebookParameterError("give either simulate=True (phantom cohort) or reads_path (a read table), not both")
manifest = read_manifest(paths["manifest_path"])
if simulate and set(manifest.df["dataset"]) != {"phantom"}:
    raise NotebookParameterError("readers are simulated only for the phantom cohort; give reads_path for real data")
summary_path = Path(predictions_dir) / "summary.json"
if model:
    chosen, how = model, "named in the study config"
elif (Path(predictions_dir) / "student_diffkd.csv").is_file():
    chosen, how = "student_diffkd", "the distilled student of the full method (DiffKD)"
else:
    chosen = json.loads(summary_path.read_text())["best_model"]
    how = "the best baseline by validation AUC (the teacher and student networks have not been trained)"
predictions = read_predictions(Path(predictions_dir) / f"{chosen}.csv", manifest=manifest)
n_seeds = predictions["seed"].nunique()
predictions = seed_averaged(predictions)  # the score the evaluation stage tests: the mean over training seeds
cases = predictions[predictions["split"].isin(["test", "external"])]
truth = pd.DataFrame({"case_id": cases["image_id"], "truth": cases["y_true"]})
model_scores = pd.Series(cases["y_score"].to_numpy(), index=cases["image_id"])
condition = f"{manifest.schema.positive_class} lesions"

# %%
display(Markdown(provenance_markdown(provenance_path)))
display(Markdown(f"**The model** here is **{chosen}** (score averaged over {n_seeds} training seed(s), as in the evaluation), {how}. Cases: the internal test and external test images "
                 f"({len(cases)} images, {int(cases['y_true'].sum())} {manifest.schema.positive_class})."))

# %% [markdown]
# ## The reads
# For the simulated phantom cohort, **simulated readers** stand in for radiologists: a statistical
# model of reader behaviour (correlated binormal ratings; juniors less accurate and a little more
# liberal than seniors) generates ratings from the true diagnosis. They show how the analysis works;
# they say nothing about real radiologists.

# %%
if simulate:
    groups = (replace(rs.DEFAULT_READER_GROUPS[0], n_readers=n_junior),
              replace(rs.DEFAULT_READER_GROUPS[1], n_readers=n_senior))
    reads = rs.simulate_reader_study(truth, groups=groups, seed=seed)
    reads_file = Path(reader_study_dir) / "reads.csv"
    with atomic_path(reads_file) as tmp:
        reads.to_csv(tmp, index=False)
else:
    reads_file = Path(reads_path)
study = rs.read_reader_study(reads_file, truth)
simulated = "simulated" in study.reads.columns and bool(pd.to_numeric(study.reads["simulated"]).any())
who = "simulated readers" if simulated else "readers"
display(Markdown(study.describe(who, condition) + (" These are **simulated readers**." if simulated else "")))

# %% [markdown]
# ## Readers on the model's ROC curve
# Each marker is one reader's sensitivity and false-positive rate at their own recall decisions.

# %%
ops = rs.reader_operating_points(study, auc_ci=True)
model_roc = roc_summary(truth["truth"].to_numpy(), model_scores.to_numpy(), n_resamples=500, seed=seed)
fig = plots.plot_roc({chosen: model_roc}, reader_points=ops, simulated_readers=simulated,
                     title=f"Model and {who} (internal + external test)")
plots.save_figure(fig, figures_dir, "reader_roc")
plt.show()
roc_caption = plots.caption("roc", test_set="the reader-study cases (internal and external test sets)",
                            n=len(truth), n_pos=int(truth["truth"].sum()), condition=condition)
display(Markdown(roc_caption))
show_table(ops, {"reader_id": "Reader", "reader_group": "Experience", "n_cases": "Cases", "sensitivity": "Sensitivity",
                 "sensitivity_ci": "Sensitivity 95% CI", "specificity": "Specificity",
                 "specificity_ci": "Specificity 95% CI", "auc": "AUC", "auc_ci": "AUC 95% CI"},
           intervals={"sensitivity_ci": ("sensitivity_ci_low", "sensitivity_ci_high"),
                      "specificity_ci": ("specificity_ci_low", "specificity_ci_high"),
                      "auc_ci": ("auc_ci_low", "auc_ci_high")}, digits=2)

# %% [markdown]
# ## The model at each reader's operating point
# The model's sensitivity when its threshold is set to match the reader's specificity, and its
# specificity at the reader's sensitivity, compared with the reader on the same cases by McNemar's
# test. The matching threshold is tuned on these cases, so this comparison is descriptive.

# %%
matched = rs.model_at_reader_operating_points(study, model_scores)
show_table(matched, {"reader_id": "Reader", "reader_group": "Experience", "comparison": "Comparison", "n": "Cases",
                     "reader_estimate": "Reader's value", "model_estimate": "Model's value",
                     "difference": "Difference (model - reader)", "mcnemar_p": "McNemar p"},
           p_values=["mcnemar_p"], digits=2)

# %% [markdown]
# ## Reader groups

# %%
group_summary = rs.reader_group_summary(study)
show_table(group_summary, {**({"treatment": "Reading condition"} if len(study.treatments) > 1 else {}),
                           "reader_group": "Readers", "n_readers": "Number", "mean_sensitivity": "Mean sensitivity",
                           "sd_sensitivity": "SD sensitivity", "mean_specificity": "Mean specificity",
                           "sd_specificity": "SD specificity", "mean_auc": "Mean AUC", "auc_ci": "Mean AUC 95% CI"},
           intervals={"auc_ci": ("auc_ci_low", "auc_ci_high")}, digits=2)

# %% [markdown]
# ## Model versus readers (ORH)
# Difference between the model's AUC and the readers' mean AUC, treating both the readers and the
# cases as samples from larger populations, so that the interval allows for other readers and other
# patients.

# %%
comparisons = {}
for covariance in ("jackknife", "delong"):
    comparisons[f"all {who} ({covariance})"] = rs.model_vs_readers(study, model_scores, covariance=covariance)
for group in sorted(set(study.reader_groups.values())):
    if sum(g == group for g in study.reader_groups.values()) >= 2:
        comparisons[f"{group} {who} (jackknife)"] = rs.model_vs_readers(study, model_scores, reader_group=group)
orh = pd.DataFrame([{"comparison": k, "model_auc": v.model_auc, "mean_reader_auc": v.mean_reader_auc,
                     "difference": v.difference, "ci_low": v.ci_low, "ci_high": v.ci_high, "df": v.df,
                     "p_value": v.p_value, "n_readers": len(v.readers), "n_cases": v.n_pos + v.n_neg}
                    for k, v in comparisons.items()])
primary = comparisons[f"all {who} (jackknife)"]
display(Markdown(primary.describe(who)))
orh_view = table_frame(
    orh[orh["comparison"].str.endswith("(jackknife)")].assign(comparison=lambda t: t["comparison"].str.removesuffix(" (jackknife)")),
    {"comparison": "Readers", "n_readers": "Number", "n_cases": "Cases", "model_auc": "Model AUC",
     "mean_reader_auc": "Readers' mean AUC", "difference": "Difference (model - readers)", "ci": "95% CI", "p_value": "p"},
    intervals={"ci": ("ci_low", "ci_high")}, p_values=["p_value"], digits=2)
show_table(orh_view)

# %% tags=["reviewer-only"]
# the full 1T-RRRC results (t, its Hillis df, p to 6 decimals): case covariance by the jackknife (primary)
# and by DeLong's method (check)
for name, result in comparisons.items():
    print(f"{name}: {result}")
show_table(orh.assign(t=[v.statistic for v in comparisons.values()]),
           {"comparison": "comparison (1T-RRRC)", "model_auc": "model AUC", "mean_reader_auc": "readers' mean AUC",
            "difference": "difference", "ci": "95% CI", "t": "t", "df": "df", "p_value": "p", "n_readers": "readers",
            "n_cases": "cases"}, intervals={"ci": ("ci_low", "ci_high")}, p_values=["p_value"],
           digits={"t": 4, "df": 4, "p_value": 6, "ci": 4, "model_auc": 4, "mean_reader_auc": 4, "difference": 4})

# %%
model_auc = auc_delong(truth["truth"].to_numpy(), model_scores.to_numpy())
fig = plots.plot_reader_study(ops, model_auc={chosen: model_auc}, group_summary=group_summary,
                              comparison=primary, simulated=simulated, title=f"{who.capitalize()} and model")
plots.save_figure(fig, figures_dir, "reader_study")
plt.show()
reader_caption = plots.caption("reader_study", n=len(truth), n_pos=int(truth["truth"].sum()), condition=condition)
display(Markdown(reader_caption))

# %% tags=["reviewer-only"]
limitations = [] if chosen.startswith(("student_", "teacher_")) else [
    f"The model is the baseline {chosen}, not the teacher or student network."]
if simulated:
    limitations.insert(0, "The readers are simulated readers (a statistical model of reader behaviour), not "
                          "radiologists: the comparison demonstrates the analysis only.")
limitations = dedupe_limitations(limitations)
write_metrics(metrics_path, {
    "model": chosen,
    "simulated_readers": simulated,
    "reads": str(reads_file),
    "n_readers": len(study.readers),
    "n_cases": len(study.cases),
    "reader_operating_points": records(ops),
    "model_at_reader_operating_points": records(matched),
    "group_summary": records(group_summary),
    "orh": records(orh),
    "index_section": IndexSection(
        title="Reader study" + (" (simulated readers)" if simulated else ""),
        text=[primary.describe(who), f"Model: {chosen}; {len(study.readers)} {who}, {len(study.cases)} cases."],
        tables=[IndexTable(title=f"Model vs {who}", records=records(orh_view))],
        figures=[IndexFigure(png="figures/reader_study.png", title=f"{who} and model", caption=reader_caption)],
        limitations=limitations,
    ).to_dict(),
})
