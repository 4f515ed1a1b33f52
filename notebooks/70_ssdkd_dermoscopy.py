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
# # 70 · SSD-KD on dermoscopy (HAM10000)
#
# This stage reproduces SSD-KD (Wang et al., *Medical Image Analysis* 2023), a way to teach a small network
# that could run on a phone to diagnose skin lesions from dermoscopic images as well as a large one. A large
# *teacher* network, pretrained on everyday photographs (ImageNet), is fine-tuned on the training lesions; then
# the same small *student* network is trained six ways with the same seeds and budget: on the labels alone,
# and with five kinds of knowledge distillation from the teacher, up to SSD-KD, which adds relations between
# and within images and a self-supervised task on rotated copies. All networks are compared on held-out test
# lesions that none of them saw during training.

# %% tags=["parameters"]
manifest_path = ""
data_root = ""
predictions_dir = ""
figures_dir = "figures"
metrics_path = "70_ssdkd_dermoscopy.metrics.json"
provenance_path = ""
run_dir = ""
project_root = ""
data_root_base = ""
image_size = 96
seed = 0
profile = "cpu"  # in a study config it also sets the values below (here: cpu's)
teacher_model = "tf_efficientnet_lite2"
teacher_weights = "package:efficientnet-lite2"
student_model = "mobilenetv2_100"
student_weights = "distilled"
initialisation = {"views": 2, "epochs": 4, "whole_images": False}
methods = ["ce", "kd", "rkd", "dkd", "diverse_kd", "ssd_kd"]
seeds = [0, 1]
train_fraction = 0.25
class_weighting = "frequency"
augment = "dermoscopy"
batch_size = 32
teacher_epochs = 10
teacher_lr = 0.0003
student_epochs = 5
student_lr = 0.002
weight_decay = 0.0001
warmup_epochs = 0.5
grad_clip = 5.0
patience = 3
min_epochs = 2
ss_head_epochs = 10
ss_head_lr = 0.01
ss_head_views = 1
kd_lambda = 0.5
kd_temperature = 5.0
kd_class_weighting = True  # KD terms averaged with the WCE class weights (not official)
lambd_rkd = 1.0
lambd_crkd = 1000.0
dkd_alpha = 1.0
dkd_beta = 8.0
dkd_temperature = 4.0
bootstrap = 1000
eval_batch_size = 64
efficiency_runs = 20
device = "auto"
amp = True
threads = 1

# %% tags=["reviewer-only"]
import dataclasses
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from diffkd_study import viz as plots
from diffkd_study.methods.ssdkd import workflow
from diffkd_study.methods.ssdkd.plots import CAPTIONS, plot_comparison, ss_head_frame
from diffkd_study.methods.ssdkd.stage import METHODS, SSDKDStageConfig
from diffkd_study.methods.ssdkd.tasks import method_objective
from diffkd_study.nbutil import (
    NotebookParameterError,
    dedupe_limitations,
    provenance_markdown,
    records,
    require_paths,
    show_table,
    write_metrics,
)
from diffkd_study.sections import section_from_parameters
from diffkd_study.stage_output import IndexFigure, IndexSection, IndexTable

paths = require_paths(manifest_path=manifest_path, data_root=data_root, run_dir=run_dir)
fields = [f.name for f in dataclasses.fields(SSDKDStageConfig)]
params = {name: globals()[name] for name in [*fields, "manifest_path", "data_root", "run_dir", "image_size", "seed",
                                             "project_root"]}
try:
    config = section_from_parameters(SSDKDStageConfig, params, "parameters")
except ValueError as err:
    raise NotebookParameterError(f"ssdkd_dermoscopy parameters: {err}") from None
if int(image_size) < 32:
    raise NotebookParameterError(f"image_size must be >= 32 px, got {image_size}")

# %%
display(Markdown(provenance_markdown(provenance_path)))
display(Markdown(
    f"Teacher **{config.teacher_model}** (initial weights {Path(config.teacher_weights).name}), student "
    f"**{config.student_model}** (initial weights "
    + ("general distillation from the ImageNet " + config.initialisation.teacher_model
       if config.student_weights == "distilled" else Path(config.student_weights).name)
    + f"), {image_size} x {image_size} pixels. "
    f"Students: {', '.join(METHODS[m] for m in config.methods)}; seeds {list(config.seeds)}; teacher at most "
    f"{config.teacher_epochs} epochs, students at most {config.student_epochs} epochs (best epoch by validation "
    f"balanced accuracy, early stop after {config.patience} epochs without improvement); "
    f"{config.train_fraction:.0%} of the training lesions. Softened-output KD terms: "
    + ("each row's KL weighted by the class weight of its label, as the weighted cross-entropy (not in the "
       "official code)." if config.kd_class_weighting else "batch means, as the official code.")))

# %%
display(Markdown("Objectives of the students, from the registered losses' descriptions:\n\n" + "\n".join(
    f"* **{METHODS[m]}** (`{m}`): {method_objective(m, config)}" for m in config.methods)))

# %% [markdown]
# ## Protocol, and where it departs from the official code
# * **Data**: HAM10000 (7 diagnoses; ISIC 2019 of the paper has 8), split by lesion (all images of a lesion in
#   one split) and stratified by diagnosis with the study seed; the official code splits ISIC 2019 by image
#   (10% test, fold 2 of 5 for validation). Images are resized to a square without keeping the aspect ratio,
#   as the official `Resize(224)`.
# * **Loss weights**: weighted cross-entropy with the official `N / n_c` class weights; the official weights of
#   every term (the objectives above: D-KD lambda 0.5, T 5, lambda_rkd 1, lambda_crkd 1000; SSD-KD ce 0.1, kd 0.9,
#   tf 2.7, ss 10, DR 1, T 4, tau 0.5, ratios 1.0 / 0.75). The official DR class crashes when constructed; its
#   intended computation is used. The channel (Gram) relation is computed in an exactly equivalent, faster form.
# * **Class weights in the KD terms** (`kd_class_weighting`, on in the CPU profile, not in the official code): the
#   official objectives give the class weights to the weighted cross-entropy only, whose share is small (0.5
#   against 0.5 T^2 KL in D-KD; 0.1 against 0.9 T^2 and 2.7 T^2 KL terms in SSD-KD), so the distilled students
#   learn mostly from the natural class mix (two thirds nevi) and lose balanced accuracy. With the option on, the
#   KL terms of KD, DKD, D-KD and SSD-KD average their rows with the same class weights as the cross-entropy.
#   `configs/ham10000_ssdkd_full.yaml` keeps the official batch means.
# * **Optimiser**: AdamW with warm-up and cosine decay, best epoch by validation balanced accuracy (official:
#   SGD, plateau schedule, best validation loss, up to 150 epochs). Every student: same network, seeds (and
#   initialisation per seed), epochs and augmentation; a student of seed *s* learns from the teacher of seed *s*.
# * **SSD-KD batches**: `batch_size / 4` images x 4 rotations, each copy augmented independently; the teacher's
#   self-supervision head is trained first on the frozen teacher (the CPU profile caches its augmented views).
# * **Networks**: EfficientNet-Lite2 teacher from its ImageNet weights (no offline ResNet-50 weights; a
#   ResNet-50 is one config line away for users who have them). The official MobileNetV2 student starts from
#   ImageNet weights, which do not exist offline: every student here starts from one *general-distillation*
#   initialisation instead (the EfficientNet-Lite2's ImageNet features and class scores distilled into the
#   MobileNetV2 on every training image, without labels; `student_weights: none` trains from scratch).

# %% [markdown]
# ## Training
# The teacher is fine-tuned first, then its self-supervision head is trained (SSD-KD only), then every student.
# Progress bars show the running loss terms and speed. An interrupted run continues from the last finished
# epoch of each network when the stage is run again, and finished networks are re-used.

# %%
result = workflow.run_stage(params)

# %% [markdown]
# ## Starting point of the students
# What the students' initialisation already knows: a linear probe (logistic regression on frozen features,
# fitted on the training images, C chosen on validation) scores the student at random weights, after general
# distillation, and the ImageNet teacher it imitated (macro one-vs-rest AUC and balanced accuracy).

# %%
init = result.initialisation
if init is None:
    display(Markdown(f"No general distillation in this run: the students start from `{config.student_weights}`."))
    probe = None
else:
    display(Markdown(
        f"General distillation {'re-used' if init['reused'] else 'made'} on {sum(init['images'].values())} training "
        f"images ({init['views']} views, {init['config']['epochs']} epochs; teacher pass {init['teacher_s']:.0f} s, "
        f"student training {init['train_s']:.0f} s); weights sha256 `{init['sha256'][:16]}...`."))
    probe = pd.DataFrame(init["probe"])
    display(show_table(probe, {"representation": "Features", "split": "Set", "images": "Images",
                               "patients": "Lesions", "auc": "Macro AUC", "balanced_accuracy": "Balanced accuracy",
                               "C": "Chosen C"}))

# %% [markdown]
# ## Data
# Images (and lesions) per diagnosis and split. Every image of a lesion is in the same split (grouped by
# lesion), and the diagnoses are spread alike over the splits (stratified).

# %%
counts = pd.DataFrame(result.counts).set_index("split")
sub = result.subsample
display(show_table(counts.rename_axis("Split")))
display(Markdown(
    f"Training set: {sub['images_after']} images of {sub['lesions_after']} lesions"
    + (f" ({sub['train_fraction']:.0%} of the {sub['lesions_before']} training lesions of each diagnosis, "
       f"{sub['images_before']} images, chosen at random with the study seed {result.study_seed}; validation "
       "and test are complete)." if sub["train_fraction"] < 1 else ".")
    + " Class weights of the weighted cross-entropy (the official frequency weighting: images / images of the class): "
    + ", ".join(f"{c} {w:g}" for c, w in zip(result.classes, result.class_weights or [], strict=False))))

# %% [markdown]
# ## Results on the held-out test split
# Mean ± standard deviation over the training seeds; the next table gives each seed with its 95% confidence
# interval (Wilson for accuracy; a bootstrap over lesions for balanced accuracy and macro AUC, because several
# test images can show the same lesion).

# %%
comparison = workflow.comparison_table(result, "test")
comparison_display = comparison[["model", "seeds", "n images", "n lesions", "accuracy", "balanced accuracy",
                                 "macro AUC"]]
show_table(comparison_display)

# %%
seed_rows = workflow.seed_table(result, "test")
show_table(seed_rows)

# %%
goal = workflow.goal_check(result, "test")
goal_validation = workflow.goal_check(result, "val")  # the split on which settings may be chosen
display(Markdown(
    f"**Goal of the reproduction** ({workflow.GOAL_STATEMENT}). Each half is judged on the 95% confidence "
    "interval of the paired difference (below): it is met *with confidence* only when the interval's lower bound "
    "clears the goal's margin.\n\n"
    f"- {workflow.goal_text(goal, 'test')}\n- {workflow.goal_text(goal_validation, 'val')} Compare settings on "
    "this split, not on the test split."))

# %% [markdown]
# ### Paired differences: SSD-KD against every other network
# All networks scored the same test images, so each difference is resampled in pairs: test lesions are drawn with
# replacement (every image of a drawn lesion comes along), both networks are scored on the same draw, and the
# difference of their means over the seeds is one replicate (2,000 draws, fixed seed). The table gives the
# difference on the test split, its 95% percentile interval and a two-sided bootstrap p for no difference. The
# goal's two comparisons are the planned primary ones; the other p-values are Holm-adjusted within each metric. The
# interval reflects which lesions were tested, not training noise: the networks of each seed are held fixed.

# %%
differences = workflow.difference_table(result, "test")
display(show_table(differences, {"comparison": "Comparison", "metric": "Metric", "role": "Role",
                                 "difference": "Difference", "95% CI": "95% CI", "p": "p (bootstrap)",
                                 "p_holm": "p (Holm)", "verdict": "Verdict"},
                   intervals={"95% CI": ("ci_low", "ci_high")}, p_values=("p", "p_holm"),
                   empty="SSD-KD and at least one other network are needed for a paired difference."))

# %%
summary = pd.DataFrame(result.evaluation["summary"])
test_summary = summary[summary["split"] == "test"]
order = ["teacher", *config.methods]
titles = {name: workflow.model_title(name) for name in order}
fig = plot_comparison(test_summary, order, titles)
plots.save_figure(fig, figures_dir, "ssdkd_comparison")
plt.show()
n_test, n_lesions = int(test_summary["n"].iloc[0]), int(test_summary["n_lesions"].iloc[0])
comparison_caption = CAPTIONS["comparison"].format(n=n_test, n_lesions=n_lesions)
display(Markdown(comparison_caption))

# %% [markdown]
# ## Per diagnosis
# Recall (sensitivity: the share of each diagnosis recognised), precision (the share of the network's calls of
# a diagnosis that were right), F1 and one-vs-rest AUC, with 95% intervals, for the teacher, the plain student
# and the SSD-KD student of the first seed.

# %%
primary = int(config.seeds[0])
per_class = {}
for name in [m for m in ("teacher", "ce", "ssd_kd") if m in order]:
    per_class[name] = workflow.per_class_table(result, name, primary, "test")
    display(Markdown(f"**{titles[name]}** (seed {primary})"))
    display(show_table(per_class[name]))

# %%
classes = result.classes
confusion_names = []
for entry in result.evaluation["confusion"]:
    if entry["split"] != "test" or entry["seed"] != primary or entry["model"] not in per_class:
        continue
    matrix = np.asarray(entry["matrix"])
    truth = np.repeat(np.arange(len(classes)), matrix.sum(axis=1))
    predicted = np.concatenate([np.repeat(np.arange(len(classes)), row) for row in matrix])
    fig = plots.plot_confusion(truth, predicted, dict(enumerate(classes)),
                               title=f"{titles[entry['model']]} (seed {primary})")
    name = f"ssdkd_confusion_{entry['model']}"
    plots.save_figure(fig, figures_dir, name)
    confusion_names.append((entry["model"], name))
    plt.show()
display(Markdown(CAPTIONS["confusion"].format(model="each network", n=n_test)))

# %% [markdown]
# ## Training curves
# Every term of each objective is logged separately (already multiplied by its weight): `wce`/`ce` the weighted
# cross-entropy, `kd`/`kl` the softened-output KD, `tf` the KD on rotated copies, `ss` the self-supervised
# similarity KD, `rkd_dist`/`rkd_angle` the inter-instance relations (RKD), `crkd` the intra-instance channel
# (Gram) relation, `tckd`/`nckd` the two parts of DKD.

# %%
history = workflow.history_frame(result)
curve_names = []
for name in dict.fromkeys(history["model"]):
    fig = plots.plot_loss_curves(history[history["model"] == name], x="epoch", title=f"{titles[name]}: training")
    figure_name = f"ssdkd_curves_{name}"
    plots.save_figure(fig, figures_dir, figure_name)
    curve_names.append((name, figure_name))
    plt.show()
display(Markdown(CAPTIONS["loss_curves"].format(model="each network")))

# %%
if result.ss_heads:
    fig = plots.plot_loss_curves(ss_head_frame(result.ss_heads), x="epoch", title="Teacher self-supervision head")
    plots.save_figure(fig, figures_dir, "ssdkd_ss_head")
    plt.show()
    display(Markdown(CAPTIONS["ss_head"]))
    display(show_table(pd.DataFrame(result.ss_heads),
                       {"teacher_seed": "Teacher seed", "epochs": "Epochs", "best_epoch": "Best epoch",
                        "best_val_ss_loss": "Best validation loss", "best_val_ss_accuracy": "Best validation accuracy",
                        "wall_s": "Training time (s)"}, digits={"wall_s": 0}))

# %% [markdown]
# ## Size and speed: teacher vs student
# Parameters, computation (FLOPs: two per multiply-accumulate, convolutions and matrix products only) at the
# study resolution and at the paper's 224 px, and single-thread CPU latency (batch 1, median of repeated runs).

# %%
efficiency = workflow.efficiency(result)
show_table(efficiency)

# %% [markdown]
# ## Computing time
# `train min` is the time of the epochs each network actually trained (summed over interrupted and resumed
# runs); `wall min` is this execution's time (near zero for a network that was re-used).

# %%
timing = workflow.timing_table(result)
display(show_table(timing, digits=1))
display(Markdown(f"Device {result.device}, {result.threads} CPU thread(s); total training time "
                 f"{timing['train min'].fillna(0).sum():.0f} min; this execution {result.wall_s / 60:.0f} min."))

# %% tags=["reviewer-only"]
limitations = []
if len(config.seeds) < 3:
    limitations.append(f"{len(config.seeds)} training seeds per network: the SD over seeds is a rough guide.")
if config.train_fraction < 1:
    limitations.append(f"CPU profile: {config.train_fraction:.0%} of the training lesions, {image_size} px, at most "
                       f"{config.student_epochs} student epochs (the official code trains at 224 px for up to 150).")
if config.teacher_model != "resnet50":
    limitations.append(f"Teacher {config.teacher_model} instead of the paper's ResNet-50 (no offline ResNet-50 "
                       "ImageNet weights); the students start from a general-distillation initialisation, not from "
                       "ImageNet weights as the official one.")
limitations.append("HAM10000 has 7 classes (no SCC); the paper's figures are on ISIC 2019 (8 classes).")
if goal.get("evaluated") and not goal["goal_met"]:
    limitations.append(f"The reproduction goal ({workflow.GOAL_STATEMENT}) was not reached in this run.")
elif goal.get("evaluated") and not goal["goal_met_with_confidence"]:
    limitations.append(f"The reproduction goal ({workflow.GOAL_STATEMENT}) was reached on the point estimates only: "
                       "the paired 95% confidence intervals do not exclude failing it.")
limitations.append("The paired intervals resample the test lesions with the trained networks held fixed; the "
                   "variation between training seeds is not in them.")
limitations = dedupe_limitations(limitations)
efficiency_records = records(efficiency.reset_index())
write_metrics(metrics_path, {
    "records": {k: v for k, v in result.to_dict().items() if k != "evaluation"},
    "evaluation": result.evaluation,
    "comparison": records(comparison),
    "goal": goal,
    "goal_validation": goal_validation,
    "goal_text": {"test": workflow.goal_text(goal, "test"), "val": workflow.goal_text(goal_validation, "val")},
    "paired_differences": records(differences),
    "efficiency": efficiency_records,
    "timing": records(timing),
    "initialisation_probe": records(probe) if probe is not None else [],
    "index_section": IndexSection(
        title="SSD-KD on dermoscopy (HAM10000)",
        text=[f"Teacher {config.teacher_model} ({config.teacher_weights}), student {config.student_model} "
              f"({config.student_weights}), {image_size} px; {len(config.seeds)} seeds; test split of {n_test} "
              f"images ({n_lesions} lesions).",
              f"Goal ({workflow.GOAL_STATEMENT}). " + workflow.goal_text(goal, "test").replace("**", "")],
        tables=[
            IndexTable(title="Test split: mean ± SD over seeds", caption=comparison_caption,
                       records=records(comparison_display)),
            IndexTable(title="Teacher vs student efficiency", caption="Parameters, FLOPs and single-thread CPU latency.",
                       records=efficiency_records),
            IndexTable(title="Computing time", caption="Minutes per part of the stage.", records=records(timing)),
        ],
        figures=[IndexFigure(png="figures/ssdkd_comparison.png", title="Teacher and students on the test split",
                             caption=comparison_caption)],
        limitations=limitations,
    ).to_dict(),
})
