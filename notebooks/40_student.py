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
# # 40 · Student
#
# The third stage of DiffKD-DCIS trains a compact network, the *student*, that is far smaller and
# faster than the teacher, by knowledge distillation: besides the true labels it learns to match the
# teacher's softened predictions. To see what each stage contributes, the same student is trained
# in several "partial combinations": alone, distilled from a teacher trained on real images only,
# distilled from the teacher trained on real + synthetic images (the full method), and that plus
# synthetic images for the student too. Every variant gets the same epochs, optimiser and seeds,
# and starts from the same weights: by default an initialisation made by *general distillation*, in
# which the student first learns, without labels, to reproduce the ImageNet-trained EfficientNet-Lite2's
# view of the training images (no offline ImageNet weights exist for so small a network).

# %% tags=["parameters"]
manifest_path = ""
data_root = ""
predictions_dir = ""
figures_dir = "figures"
metrics_path = "40_student.metrics.json"
provenance_path = ""
run_dir = ""
project_root = ""
data_root_base = ""
image_size = 128
seed = 0
model = "lcnet_035"
weights = "distilled"
variants = ["alone", "kd_real", "diffkd", "diffkd+syn"]
initialisation = {}
scratch_variants = []
seeds = [0]
epochs = 12
batch_size = 16
lr = 0.002
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
loss = {"ce": {"weight": 0.5, "params": {}}, "kd": {"weight": 0.5, "params": {"temperature": 4.0}}}
efficiency_runs = 30

# %% tags=["reviewer-only"]
from pathlib import Path

import torch
from IPython.display import Markdown, display

from diffkd_study import viz as plots
from diffkd_study.data.schema import read_manifest
from diffkd_study.methods.diffkd import study
from diffkd_study.metrics.efficiency import compare_models
from diffkd_study.models.classifier import create_classifier
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
params = {name: globals()[name] for name in study.parameter_names("student")}
try:
    config = study.stage_config("student", params)
except ValueError as err:
    raise NotebookParameterError(f"student parameters: {err}") from None
teacher_records = study.read_records(run_dir, "teacher")

# %%
display(Markdown(provenance_markdown(provenance_path)))
try:  # the objective in words, from the registered losses' descriptions (unknown names fail here)
    objective = study.student_objective(config)
except ValueError as err:
    raise NotebookParameterError(f"student parameters: {err}") from None
start = ("general distillation from the ImageNet " + config.initialisation.teacher_model
         if config.weights == "distilled" else Path(config.weights).name)
display(Markdown(
    f"Student network **{config.model}** (initial weights: {start}), {image_size} x {image_size} pixels; "
    f"distillation objective: {objective}. Variants {', '.join(config.variants)}; seeds {list(config.seeds)}"
    + (f"; also from random weights: {', '.join(config.scratch_variants)}." if config.scratch_variants else ".")
    + " Input: " + study.input_sentence(config)))

# %% [markdown]
# ## Training
# A distilled student runs the frozen teacher on every batch, so it trains slower than the student alone.

# %%
result = study.run_stage("student", params)

# %%
for variant, reason in result.skipped.items():
    display(Markdown(f"**{variant}** was not trained: {reason}"))

# %% [markdown]
# ## Starting point: general distillation
# Before any label is used, the student learns the ImageNet teacher's features and ImageNet class scores on
# the training images only (each in a few fixed views: as it is, mirrored, augmented). The *linear probe*
# measures what a starting point already knows about the task: a logistic regression on its frozen features,
# fitted on the training images with its regularisation chosen on validation, scored on each held-out set
# (AUC with a patient-clustered 95% CI). The student at random weights is the floor; the ImageNet teacher's
# features are what the student was asked to imitate.

# %%
init = result.initialisation
if init is None:
    display(Markdown(f"No general distillation in this run: the students start from `{config.weights}`."))
    probe = None
else:
    seen = ", ".join(f"{n} {name}s" for name, n in init["images"].items())
    display(Markdown(
        f"General distillation {'re-used' if init['reused'] else 'made'}: {seen} of the training split, "
        f"{init['views']} views in all, {init['config']['epochs']} epochs; teacher pass {init['teacher_s']:.0f} s, "
        f"student training {init['train_s']:.0f} s. Weights sha256 `{init['sha256'][:16]}...`."))
    import pandas as pd

    probe = pd.DataFrame(init["probe"])
    display(show_table(probe, {"representation": "Features", "split": "Set", "images": "Images", "patients": "Patients",
                       "auc": "AUC", "ci_low": "95% CI low", "ci_high": "95% CI high", "C": "Chosen C"},
               digits={"auc": 3, "ci_low": 3, "ci_high": 3}))

# %% [markdown]
# ## Training runs and loss terms
# Each term of the objective is logged separately (mdistiller's "report every term"), under its name in
# the recipe and already multiplied by its weight: by default ``ce``, the class-weighted cross-entropy with
# the labels, and ``kd``, the distillation term; ``total`` is their sum.

# %%
fits = study.fits_table(result)
show_table(fits, {"variant": "Variant", "seed": "Seed", "epochs_run": "Epochs run", "best_epoch": "Best epoch",
                  "val_auc": "Validation AUC", "val_balanced_accuracy": "Validation balanced accuracy",
                  "n_train_real": "Real training images", "synthetic_per_epoch": "Synthetic images per epoch",
                  "n_val": "Validation images", "training_s": "Training time (s)"}, digits={"training_s": 0})

# %%
curve_names = study.save_training_curves(result, figures_dir)
display(Markdown(plots.caption("loss_curves", model="each student variant")))

# %% [markdown]
# ## Partial combinations (ablation grid)
# AUC of every teacher and student on the validation set and on each test set, as the mean +- SD over
# the training seeds. Confidence intervals and paired tests against the full method are in the
# evaluation report.

# %%
manifest = read_manifest(manifest_path)
names = [f["name"] for f in teacher_records.fits] + [f["name"] for f in result.fits]
ablation = study.ablation_table(predictions_dir, list(dict.fromkeys(names)), manifest)
show_table(ablation.rename_axis("Model"), empty="No prediction tables of the teacher or student yet: nothing to compare.")

# %% [markdown]
# ## Size and speed: teacher vs student
# Parameters, computation (FLOPs) and single-thread CPU latency (batch 1, median of repeated runs,
# the two networks timed in turn) at the study resolution.

# %%
in_chans = result.in_chans
classes = len(result.classes)
torch.manual_seed(seed)
teacher_net = create_classifier(teacher_records.config["model"], classes, in_chans, "none")
student_net = create_classifier(config.model, classes, in_chans, "none")
efficiency = compare_models(teacher_net, student_net, (1, in_chans, image_size, image_size), threads=1, warmup=5,
                            runs=efficiency_runs)
display(Markdown(f"Latency measured in the {efficiency.attrs.get('memory_format', 'contiguous')} memory layout, "
                 "the one the networks train in."))
show_table(efficiency.rename_axis("Measure"), {"Measure": "Measure", "teacher": "Teacher", "student": "Student",
                                              "student_to_teacher": "Student / teacher"})

# %% tags=["reviewer-only"]
ratios = efficiency["student_to_teacher"]
limitations = [f"{v} not trained: {r}" for v, r in result.skipped.items()]
if len(config.seeds) < 3:
    limitations.append(f"{len(config.seeds)} training seed(s) per variant: the SD over seeds is a rough guide.")
limitations = dedupe_limitations(limitations)
write_metrics(metrics_path, {
    "records": {k: v for k, v in result.to_dict().items() if k != "fits"},
    "fits": records(fits),
    "ablation": records(ablation.reset_index()) if len(ablation) else [],
    "efficiency": records(efficiency),
    "initialisation_probe": records(probe) if probe is not None else [],
    "efficiency_ratios": {"params": float(ratios["params"]), "GFLOPs": float(ratios["GFLOPs"]),
                          "cpu_latency": float(ratios["CPU latency median ms"])},
    "index_section": IndexSection(
        title="Student and partial combinations",
        text=[f"Student {config.model} distilled with {objective}. The student has "
              f"{ratios['params']:.3f} of the teacher's parameters, {ratios['GFLOPs']:.3f} of its FLOPs and "
              f"{ratios['CPU latency median ms']:.3f} of its single-thread CPU latency at {image_size} px."],
        tables=[IndexTable(title="Partial combinations: AUC mean +- SD over seeds", caption="DeLong intervals and "
                           "paired tests are in the evaluation report.",
                           records=records(ablation.reset_index()) if len(ablation) else []),
                IndexTable(title="Efficiency (student / teacher)", records=records(efficiency.round(4)))]
        + ([IndexTable(title="Starting point: linear-probe AUC of frozen features", caption="Logistic regression "
                       "on the training images, C chosen on validation; patient-clustered 95% CIs.",
                       records=records(probe))] if probe is not None else []),
        figures=[IndexFigure(png=f"figures/{name}.png", title=f"Student {variant}: training curves",
                             caption=plots.caption("loss_curves", model=f"the {variant} student"))
                 for variant, name in curve_names if variant == "diffkd"][:1],
        limitations=limitations,
    ).to_dict(),
})
