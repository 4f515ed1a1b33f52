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
# # 30 · Teacher
#
# The second stage of DiffKD-DCIS trains a large, accurate network, the *teacher*, whose knowledge
# the compact student will later learn. The teacher starts from ImageNet weights and is fine-tuned
# on the training patients, once on the real images only and once on real plus synthetic images
# from the diffusion stage, so that the value of the synthetic images can be measured. The best
# epoch is chosen on the validation patients only; the test sets are not looked at here. Each
# teacher then scores the validation, internal test and external test images for the evaluation.

# %% tags=["parameters"]
manifest_path = ""
data_root = ""
predictions_dir = ""
figures_dir = "figures"
metrics_path = "30_teacher.metrics.json"
provenance_path = ""
run_dir = ""
project_root = ""
data_root_base = ""
image_size = 128
seed = 0
model = "tf_efficientnet_lite2"
weights = "package:efficientnet-lite2"
variants = ["real", "real+syn"]
seeds = [0]
epochs = 12
batch_size = 16
lr = 0.0003
weight_decay = 0.0001
warmup_epochs = 1.0
grad_clip = 5.0
patience = 5
min_epochs = 3
augment = "ultrasound"
class_weighting = "balanced"
synthetic = "auto"
synthetic_ratio = 0.5
eval_batch_size = 64
device = "auto"
launcher = "inline"
nproc = 1
crop = "none"
crop_margin = 0.25
via = 0
extra_crops = []
crop_variants = []
checkpoint_minutes = 10.0

# %% tags=["reviewer-only"]
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from diffkd_study import viz as plots
from diffkd_study.methods.diffkd import study
from diffkd_study.nbutil import (
    NotebookParameterError,
    dedupe_limitations,
    provenance_markdown,
    records,
    require_paths,
    show_table,
    write_metrics,
)
from diffkd_study.stage_output import IndexFigure, IndexSection, IndexTable

paths = require_paths(manifest_path=manifest_path, data_root=data_root, run_dir=run_dir)
params = {name: globals()[name] for name in study.parameter_names("teacher")}
try:
    config = study.stage_config("teacher", params)
except ValueError as err:
    raise NotebookParameterError(f"teacher parameters: {err}") from None

# %%
display(Markdown(provenance_markdown(provenance_path)))
display(Markdown(
    f"Teacher network **{config.model}** (initial weights: {Path(config.weights).name}), {image_size} x {image_size} "
    f"pixels, variants {', '.join(config.variants)}, seeds {list(config.seeds)}, at most {config.epochs} epochs "
    f"(early stop after {config.patience} epochs without a better validation AUC). Input: "
    + study.input_sentence(config)))

# %% [markdown]
# ## Training
# Progress bars show each epoch's running loss and speed. A run interrupted here resumes from its last
# finished epoch when the stage is run again.

# %%
result = study.run_stage("teacher", params)

# %% [markdown]
# ## Data used
# Images per class and set. Synthetic images are used for training only, never for validation or testing.

# %%
counts = pd.DataFrame(result.counts).set_index("set")
show_table(counts.rename_axis("Set"))

# %%
notes = [f"**{variant}** was not trained: {reason}" for variant, reason in result.skipped.items()]
if result.synthetic_manifest and not result.synthetic_audited:
    notes.append("The synthetic images were **not audited** for memorization (the synthetic-quality stage did "
                 "not run): every generated image was used.")
for note in notes:
    display(Markdown(note))

# %% [markdown]
# ## Training runs
# One row per variant and seed: the epoch chosen on validation data and its validation AUC.

# %%
fits = study.fits_table(result)
show_table(fits, {"variant": "Variant", "seed": "Seed", "epochs_run": "Epochs run", "best_epoch": "Best epoch",
                  "val_auc": "Validation AUC", "val_balanced_accuracy": "Validation balanced accuracy",
                  "n_train_real": "Real training images", "synthetic_per_epoch": "Synthetic images per epoch",
                  "n_val": "Validation images", "training_s": "Training time (s)"}, digits={"training_s": 0})

# %%
curve_names = study.save_training_curves(result, figures_dir)
display(Markdown(plots.caption("loss_curves", model="the teacher")))

# %% tags=["reviewer-only"]
if not result.fits:
    raise NotebookParameterError("no teacher was trained: " + "; ".join(notes))
summary = fits.groupby("variant", sort=False)["val_auc"].agg(["mean", "std", "count"]).round(3)
limitations = [f"{v} not trained: {r}" for v, r in result.skipped.items()]
if fits["n_val"].iloc[0] < 100:
    limitations.append(f"The validation set has only {int(fits['n_val'].iloc[0])} images: the choice of the best "
                       "epoch is noisy.")
limitations = dedupe_limitations(limitations)
write_metrics(metrics_path, {
    "records": {k: v for k, v in result.to_dict().items() if k != "fits"},
    "fits": records(fits),
    "index_section": IndexSection(
        title="Teacher",
        text=[f"{config.model} ({config.weights}) fine-tuned at {image_size} px; best epoch by validation AUC. "
              f"Variants: {', '.join(config.variants)}; seeds {list(config.seeds)}."],
        tables=[IndexTable(title="Teacher validation AUC (mean, SD over seeds)",
                           records=records(summary.reset_index()))],
        figures=[IndexFigure(png=f"figures/{name}.png", title=f"Teacher {variant}: training curves",
                             caption=plots.caption("loss_curves", model=f"the {variant} teacher"))
                 for variant, name in curve_names[:1]],
        limitations=limitations,
    ).to_dict(),
})
