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
# # 00 · Data audit
#
# Before any model is trained we look at the data it will learn from. This stage counts the images,
# patients and labels per dataset and center, shows how the patients were split into training,
# validation, internal test and external test sets, summarises the clinical conditions, shows example
# images with their lesion outlines, and lists every problem the validator found (missing files,
# leakage of a patient across splits, duplicate images). A study whose data audit shows problems should
# not be trusted until they are fixed.

# %% tags=["parameters"]
manifest_path = ""
data_root = ""
validation_path = ""
figures_dir = "figures"
metrics_path = "00_data_audit.metrics.json"
provenance_path = ""
run_dir = ""
examples_per_group = 4
seed = 0

# %% tags=["reviewer-only"]
from IPython.display import Markdown, display

from diffkd_study.data import audit
from diffkd_study.data.schema import read_manifest
from diffkd_study.data.splits import split_table
from diffkd_study.nbutil import (
    SIMULATED_DATA,
    dedupe_limitations,
    few_cases_limitation,
    provenance_markdown,
    records,
    require_paths,
    show_table,
    write_metrics,
)
from diffkd_study.predictions import label_test_sets, ordered_test_sets
from diffkd_study.viz import save_figure

paths = require_paths(manifest_path=manifest_path, data_root=data_root, validation_path=validation_path)
manifest = read_manifest(paths["manifest_path"])
validation = audit.load_validation(paths["validation_path"])

# %%
display(Markdown(provenance_markdown(provenance_path)))

# %% [markdown]
# ## Cohort
# Images, patients and labels per dataset and center. The last column is the share of the positive
# class (the outcome the models predict).

# %%
cohort = audit.cohort_table(manifest)
show_table(cohort, digits=1)

# %%
fig = audit.plot_label_balance(manifest)
save_figure(fig, figures_dir, "label_balance");

# %% [markdown]
# ## Splits
# Patients, never single images, are assigned to a split, so no patient is seen in training and in
# testing. Centers held out as *external* test sets are never used for training or model selection.

# %%
splits = split_table(manifest)
show_table(splits)

# %% [markdown]
# ## Example images
# A few random images per center and label. The green line is the lesion outline from the mask,
# yellow boxes are annotated lesion boxes.

# %%
fig = audit.plot_examples(manifest, paths["data_root"], per_group=examples_per_group, seed=seed)
examples_png = save_figure(fig, figures_dir, "examples_per_center")

# %% [markdown]
# ## Image sizes
# Width and height in pixels as stored, per center. Different scanners and exports give different
# sizes; all images are resized to the study resolution before training.

# %%
show_table(audit.image_size_table(manifest, validation["image_sizes"]), digits=0)

# %%
fig = audit.plot_image_sizes(manifest, validation["image_sizes"])
save_figure(fig, figures_dir, "image_sizes");

# %% [markdown]
# ## Clinical and imaging conditions
# The conditions recorded with each image (for example BI-RADS category, age, lesion shape), by label.
# *missing* counts images where the value was not recorded; missing values are kept as missing, never
# replaced by a number.

# %%
for name, table in audit.condition_tables(manifest).items():
    label = name.removeprefix("cond_").replace("_", " ")
    display(Markdown(f"**{label}**"))
    display(show_table(table.rename_axis(index=label if table.index.name == name else table.index.name, columns=None),
                       digits=1, empty=f"No image records {label}."))

# %% [markdown]
# ## Data validation
# Every rule the validator checks (see `diffkd-study data validate`), with the number of problems
# found. Errors stop the study before this report is written, so only warnings can appear here.

# %%
summary = audit.validation_summary(validation)
display(Markdown(
    f"{validation['n_rows']} images checked: **{validation['n_errors']} error(s)**, "
    f"**{validation['n_warnings']} warning(s)**."))
show_table(summary, empty="Every rule passed: the validator found nothing to report.")

# %%
import pandas as pd

show_table(pd.DataFrame(validation["problems"]).head(50), empty="No problems found.")

# %% tags=["reviewer-only"]
positive = manifest.schema.positive_class
n_pos = int((manifest.df["label"] == positive).sum()) if positive else None
limitations = []
if "phantom" in set(manifest.df["dataset"]):
    limitations.append(SIMULATED_DATA)
for split_name, part in manifest.df[manifest.df["split"].isin(["train", "val"])].groupby("split"):
    if positive and (part["label"] == positive).sum() < 30:
        limitations.append(f"The {split_name} split has only {(part['label'] == positive).sum()} {positive} cases: "
                           "confidence intervals will be wide.")
test_sets = label_test_sets(manifest.df)
for test_set in ordered_test_sets(manifest.df):
    n_test_pos = int((manifest.df.loc[test_sets == test_set, "label"] == positive).sum()) if positive else 30
    if n_test_pos < 30:  # worded as the evaluation words it, so that the summary lists it once
        limitations.append(few_cases_limitation(test_set, n_test_pos, positive))
limitations = dedupe_limitations(limitations)
write_metrics(metrics_path, {
    "n_images": len(manifest.df),
    "n_patients": int(manifest.df["patient_id"].nunique()),
    "n_positive": n_pos,
    "cohort_table": records(cohort),
    "split_table": records(splits),
    "validation": {k: validation[k] for k in ("n_rows", "n_errors", "n_warnings")},
    "caption_cohort": f"{len(manifest.df)} images of {manifest.df['patient_id'].nunique()} patients "
                      f"from {manifest.df['center'].nunique()} center(s).",
    "headline_figures": [{
        "png": "figures/examples_per_center.png",
        "title": "Example images per center",
        "caption": "Random example images from each center and label, with the lesion outline in green. "
                   "Differences in brightness, texture and on-screen text between centers are what a model "
                   "must not rely on when it is tested on a new center.",
    }],
    "limitations": limitations,
})
