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
# # 45 · Baselines
#
# Before any deep network is trained, simple models set the bar it has to clear. All are
# logistic regressions fitted on the training patients only; their settings are chosen on the
# validation patients only, and they then predict the validation, internal test and external test
# images. The prediction tables they write are what the evaluation and reader-study stages read.
#
# * **clinical**: the recorded clinical and imaging conditions (for example BI-RADS category, age,
#   lesion descriptors). Where a BI-RADS category is recorded, the later reports call this model
#   **radiologists' BI-RADS (reading the same images)**: the BI-RADS category is the radiologists' own
#   reading of the very images the networks see, not an independent clinical covariate such as age. This
#   model therefore shows how well the radiologists' assessment separates benign from malignant lesions
#   (a reference reading to compare the networks with), not what clinical information adds to them. Where
#   benign lesions of low suspicion were confirmed by follow-up rather than biopsy, that reading also
#   decided how the truth was established, which flatters it; the evaluation reports the biopsy-verified
#   cases separately where the data record the verification.
# * **image features**: a handful of measurements of the lesion in the image and its outline (mask):
#   brightness and its variation, contrast to the surrounding tissue, darkening or brightening
#   behind the lesion, size, irregularity of the outline, taller-than-wide shape and texture.
# * **box geometry**: the lesion's bounding box alone, measured on the original outline at the image's own
#   resolution: how much taller than wide it is, how large it is relative to the image, and how much of the
#   square cut around it for the networks (the lesion crop) would fall outside the image. It sees no pixel
#   of the lesion. It is a check for a shortcut: the shape of the outlined box alone separates malignant from
#   benign lesions well (on BUS-BRA about as well as the teacher network), and a network shown a lesion-centred
#   crop can read that shape from the crop. The evaluation therefore shows every image model beside it; it is
#   never chosen as *the* best baseline.
#
# A model is *not applicable* on a test set whose images do not record its inputs (for example a
# dataset released without clinical conditions, or without lesion outlines): it makes no predictions
# there, rather than one and the same guess for every image, and the evaluation lists it as not
# applicable on that set.

# %% tags=["parameters"]
manifest_path = ""
data_root = ""
predictions_dir = ""
figures_dir = "figures"
metrics_path = "45_baselines.metrics.json"
provenance_path = ""
run_dir = ""
models = ["clinical", "image_features", "box_geometry"]
clinical_conditions = []
image_size = 128
seed = 0

# %% tags=["reviewer-only"]
import pandas as pd
from IPython.display import Markdown, display

from diffkd_study.data.schema import read_manifest
from diffkd_study.io import write_json
from diffkd_study.methods.diffkd import baselines
from diffkd_study.nbutil import (
    NotebookParameterError,
    provenance_markdown,
    records,
    require_paths,
    show_table,
    write_metrics,
)
from diffkd_study.stage_output import IndexSection, IndexTable

paths = require_paths(manifest_path=manifest_path, data_root=data_root, run_dir=run_dir)
unknown = [m for m in models if m not in baselines.BASELINES]
if unknown or not models:
    raise NotebookParameterError(f"models must be a non-empty list of {list(baselines.BASELINES)}; got {models!r}")
manifest = read_manifest(paths["manifest_path"])

# %%
display(Markdown(provenance_markdown(provenance_path)))

# %% [markdown]
# ## Fitting
# Each model is fitted on the training split; the strength of its regularisation is chosen from a
# small grid by the area under the ROC curve (AUC) on the validation split.

# %%
fits, skipped = baselines.run_baselines(
    manifest, predictions_dir, models=models, root=paths["data_root"], clinical_conditions=clinical_conditions or None,
    image_size=image_size, seed=seed)
best = baselines.best_by_validation(fits)
summary = pd.DataFrame([fit.summary() for fit in fits.values()]).set_index("model")
show_table(summary, {"model": "Model", "n_train": "Training images", "n_features": "Inputs",
                     "penalty_C": "Regularisation (C)", "val_auc": "Validation AUC"})

# %%
for name, reason in skipped.items():
    display(Markdown(f"**{name} was not fitted:** {reason}"))
for name, fit in fits.items():
    for note in fit.notes:
        display(Markdown(f"*{name}:* {note}"))
not_applicable = {name: fit.not_applicable for name, fit in fits.items() if fit.not_applicable}
for name, sets in not_applicable.items():
    for test_set, reason in sets.items():
        display(Markdown(f"**{name} is not applicable on {test_set}:** {reason}; it makes no predictions there."))
display(Markdown(
    f"The model with the highest validation AUC, **{best}**, is used as *the model* in the reader study "
    "until the teacher and student networks exist"
    + (" (the box geometry is a shortcut check, not a candidate)." if len(fits) > 1 and "box_geometry" in fits
       else ".")))

# %% [markdown]
# ## What the models learnt
# Coefficients per standard deviation of each input (positive = higher risk of malignancy). They
# describe these simple models, not causes of disease.

# %%
for name, fit in fits.items():
    display(Markdown(f"**{name}**"))
    display(show_table(fit.coefficients.sort_values(key=abs, ascending=False).head(15).rename_axis("input").to_frame()
                       .reset_index().assign(input=lambda t: t["input"].str.removeprefix("cond_").str.replace("_", " ")),
                       {"input": "Input", fit.coefficients.name: "Coefficient (per SD)"}))

# %% [markdown]
# ## Predictions written
# One row per image of the validation, internal test and external test sets (except those of a test
# set a model is not applicable on); training images are never scored (that would be leakage).

# %%
counts = pd.concat([fit.predictions for fit in fits.values()]).groupby(["model", "split"]).size().unstack()
show_table(counts.rename(columns={"val": "validation", "test": "internal test", "external": "external test"}))

# %% tags=["reviewer-only"]
write_json(f"{predictions_dir}/{baselines.SUMMARY_FILE}", {
    "best_model": best, "selection": "highest validation AUC", "models": {n: f.summary() for n, f in fits.items()},
    "skipped": skipped, "not_applicable": not_applicable})
write_metrics(metrics_path, {
    "models": {n: f.summary() for n, f in fits.items()},
    "skipped": skipped,
    "not_applicable": not_applicable,
    "best_model": best,
    "index_section": IndexSection(
        title="Baselines",
        text=[f"Simple logistic-regression baselines fitted on the training split, tuned on validation only. "
              f"Best by validation AUC: {best}."] + [f"{n} not fitted: {r}" for n, r in skipped.items()]
             + [f"{n} not applicable on {t} (no predictions there): {r}"
                for n, sets in not_applicable.items() for t, r in sets.items()],
        tables=[IndexTable(title="Validation AUC",
                           records=records(summary[["n_train", "n_features", "val_auc"]].round(3)))],
    ).to_dict(),
})
