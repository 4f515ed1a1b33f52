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
# # 80 · CoMoTo: lesion detection in tomosynthesis with knowledge from mammography
#
# Digital breast tomosynthesis (DBT) is newer than mammography, so far fewer annotated DBT images
# exist. CoMoTo (Alberb et al., arXiv 2407.17620) first trains a lesion detector on mammograms
# (the *teacher*) and then trains a DBT detector (the *student*) that, besides learning from its own
# DBT images, is pushed to describe lesions the way the teacher does: the features at nine points of
# each lesion box are compared (lesion-specific distillation, LsKD), while the background is ignored.
# While the teacher is trained, intra-modal point alignment (ImPA) makes its lesion features alike
# across mammograms and unlike the background. The mammograms and DBT slices come from different
# women (unpaired data), and only DBT is needed once the student is trained. This notebook compares
# CoMoTo with DBT-only training, mammography pre-training and image-level distillation when 10%, 25%
# or all of the DBT training patients are available, by 5-fold cross-validation over patients.

# %% tags=["parameters"]
manifest_path = ""
data_root = ""
predictions_dir = ""
figures_dir = "figures"
metrics_path = "80_comoto_dbt.metrics.json"
provenance_path = ""
run_dir = ""
project_root = ""
data_root_base = ""
image_size = 224
seed = 0
teacher_manifest = "data_manifests/mini-mias.csv"
teacher_root = "mini-mias"
teacher_holdout_frac = 0.2
teacher_release_scale = 0.5
methods = ["dbt_only", "pretraining", "image_kd", "lskd", "comoto"]
regimes = [0.1, 0.25, 1.0]
folds = 5
profile = "cpu"  # in a study config it also sets the detector, optimisation and budget below (here: cpu's)
backbone = "tf_efficientnet_lite0"
weights = "package:efficientnet-lite0"
feature_stage = 3
head_channels = 0
head_convs = 2
anchor_sizes = [16, 32, 64, 128]
aspect_ratios = [0.5, 1.0, 2.0]
detector_image_size = 256
score_thresh = 0.001
nms_thresh = 0.5
detections_per_img = 20
batch_size = 4
optimizer = "adamw"
lr = 0.0003
momentum = 0.9
weight_decay = 0.0001
warmup_steps = 20
lr_step_fraction = 0.6
lr_gamma = 0.1
grad_clip = 10.0
flip_prob = 0.5
teacher_epochs = 5
teacher_min_steps = 0
student_epochs = 4
student_min_steps = 40
alpha = 2.0
temperature = 4.0
beta = 2.0
num_points = 9
hit_min_distance = 100.0
scale_column = "scale"
fps_per_image = [1.0, 2.0, 3.0, 4.0]
sensitivity_method = "interpolate"
example_slices = 4
device = "auto"

# %% tags=["reviewer-only"]
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from diffkd_study import viz as plots
from diffkd_study.devices import resolve_device
from diffkd_study.io import write_json
from diffkd_study.methods.comoto import cv, report
from diffkd_study.methods.comoto.data import load_detection_data
from diffkd_study.methods.comoto.detector import DetectorSpec, create_detector, detector_info
from diffkd_study.methods.comoto.stage import METHODS, ComotoStageConfig, resolve_teacher_paths
from diffkd_study.methods.comoto.train import history_long
from diffkd_study.metrics.froc import evaluate_detections, match_detections
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
from diffkd_study.sections import section_from_parameters, section_parameters
from diffkd_study.stage_output import IndexFigure, IndexSection, IndexTable

started = time.perf_counter()
paths = require_paths(manifest_path=manifest_path, data_root=data_root, run_dir=run_dir)
try:
    config = section_from_parameters(ComotoStageConfig, globals(), "parameters")
    teacher_manifest_path, teacher_image_root = resolve_teacher_paths(config, project_root or ".", data_root_base)
except (ValueError, FileNotFoundError) as err:
    raise NotebookParameterError(f"comoto_dbt parameters: {err}") from None
out_dir = Path(run_dir) / "comoto"
compute = resolve_device(config.device)
torch.manual_seed(seed)

# %%
display(Markdown(provenance_markdown(provenance_path)))
display(Markdown(
    f"Profile **{config.profile}**: detector RetinaNet on {config.backbone} (initial weights "
    f"{Path(config.weights).name}, feature stage {config.feature_stage}), images letterboxed to "
    f"{config.detector_image_size} x {config.detector_image_size} "
    f"pixels, batch {config.batch_size}, {config.optimizer} lr {config.lr:g}; device {compute}. "
    f"KD: alpha {config.alpha:g}, T {config.temperature:g}, ImPA beta {config.beta:g}, {config.num_points} points."))

# %% [markdown]
# ## Data
# The student learns from the annotated BCS-DBT slices (one slice per lesion, every slice holds a
# lesion); the teacher from mini-MIAS mammograms, lesion boxes and normal films alike. Mammograms
# whose abnormality has no recorded location cannot be used and are listed. The study's own
# train/validation/test split is not used here: with so few patients, every patient is a test patient
# once in a 5-fold cross-validation instead.

# %%
scale = config.scale_column or 1.0
dbt = load_detection_data(paths["manifest_path"], paths["data_root"], config.detector_image_size,
                          hit_min_distance=config.hit_min_distance, release_scale=scale, progress=False)
mammo = load_detection_data(teacher_manifest_path, teacher_image_root, config.detector_image_size,
                            hit_min_distance=config.hit_min_distance, release_scale=config.teacher_release_scale,
                            progress=False)
data_table = pd.DataFrame([{"role": "student (DBT)", **dbt.summary()}, {"role": "teacher (mammography)", **mammo.summary()}])
show_table(data_table.drop(columns="source", errors="ignore"))

# %%
if len(mammo.excluded):
    display(Markdown("**Left out (lesion label without a box):** " + ", ".join(
        f"{r.image_id} ({r.reason})" for r in mammo.excluded.itertuples())))
detector = create_detector(DetectorSpec(**config.detector_fields()))
info = detector_info(detector)
del detector
display(Markdown(
    f"A lesion hit: the detection's centre lies within max(half the lesion box diagonal, "
    f"{config.hit_min_distance:g} pixels of the full-resolution release) of the lesion centre "
    f"({float(np.median(dbt.min_distance)):g} px of the stored DBT slices). Feature map for LsKD/ImPA: "
    f"{info['feature_channels']} channels on a {info['feature_grid'][0]} x {info['feature_grid'][1]} grid "
    f"(stride {info['feature_stride']}); {info['params'] / 1e6:.2f} M parameters."))

# %% [markdown]
# ## Teachers
# Two mammography teachers with the same starting weights and the same batches: one trained with
# the detection loss only (for the "LsKD without ImPA" ablation) and one with ImPA added (CoMoTo's
# teacher). Mammography patients held out from training show whether the teachers learnt to find
# lesions at all.

# %%
teachers = cv.train_teachers(config, mammo, out_dir, seed, compute, progress=True)
teacher_table = pd.DataFrame([
    {"teacher": kind, "steps": t.steps, "minutes": t.seconds / 60, "reused": t.reused,
     **({} if t.holdout is None else t.holdout.summary("holdout "))}
    for kind, t in teachers.items()]).set_index("teacher")
show_table(teacher_table, digits={"minutes": 1})

# %%
teacher_history = pd.concat([history_long(t.history.drop(columns=["total"]), split=f"teacher {k}")
                             for k, t in teachers.items()], ignore_index=True)
teacher_history = teacher_history.assign(step=(teacher_history["step"] // 10) * 10)  # 10-step means
fig = plots.plot_loss_curves(teacher_history, title="Teacher training on mammography (means of 10 steps)")
plots.save_figure(fig, figures_dir, "comoto_teacher_loss")
plt.show()

# %% [markdown]
# ## Cross-validation on DBT
# For each of the folds, each data regime and each method a student is trained on the regime's
# training patients and tested on the fold's held-out patients. Every method of a fold and regime
# sees the same patients, the same batches and the same number of training steps.

# %%
results = cv.run_cross_validation(config, dbt, teachers, mammo, out_dir, seed, compute, progress=True)
fold_sizes = results.groupby("fold")[["n_test_patients", "n_images", "n_boxes"]].first()
show_table(fold_sizes, {"fold": "Fold", "n_test_patients": "Test patients", "n_images": "Test slices",
                        "n_boxes": "Test lesions"})

# %% [markdown]
# ## Mean sensitivity
# Sensitivity is the share of lesions found; it is read at 1, 2, 3 and 4 false positives per slice
# on each fold's held-out slices and averaged (CoMoTo's "mean sensitivity"). Cells: mean ± SD over
# the folds (n = number of folds); each fold holds about a fifth of the slices.

# %%
metric_names = [f"sens@{k:g}fp" for k in config.fps_per_image] + ["mean_sensitivity"]
summary = report.summary_table(results, metric_names)
mean_table = report.fold_table(summary, "mean_sensitivity", config.methods, config.regimes)
show_table(mean_table)

# %% [markdown]
# Sensitivity at 2 false positives per slice (the official challenge's second metric):

# %%
sens2_table = report.fold_table(summary, "sens@2fp", config.methods, config.regimes)
show_table(sens2_table)

# %% [markdown]
# ## Paired differences between methods
# Each fold trains every method on the same patients and tests it on the same held-out patients, so a
# difference between two methods is read fold by fold: the table gives the per-fold differences of mean
# sensitivity, their mean, the paired t-test (t, degrees of freedom, two-sided p) with the 95% confidence
# interval of the mean difference, and the exact sign-flip test over all sign assignments of the folds,
# which assumes no normal distribution (with 5 folds its p cannot go below 2/32 = 0.0625). Two families are
# compared: every use of the mammography teacher against DBT-only training, and CoMoTo against each other use
# of the teacher. The planned primary comparison is the paper's claim, CoMoTo against pre-training with the
# least DBT data; it is tested alone. The other p-values are Holm-adjusted within each family and regime. A
# difference is called significant only when its p (Holm-adjusted for the secondary ones) is below 0.05.

# %%
plan = report.comparison_plan(config.methods, config.regimes)
differences = report.paired_comparisons(results, "mean_sensitivity", plan, config.regimes)
difference_sentences = [report.comparison_sentence(r) for r in differences.to_dict("records")]
difference_options = {"digits": {"t": 2}, "intervals": {"95% CI": ("ci_low", "ci_high")},
                      "p_values": ("p (t-test)", "p (Holm)", "p (sign-flip)")}
difference_table = report.comparison_table(differences)
display(show_table(difference_table, empty="No two methods to compare in this run.", **difference_options))
display(Markdown("\n".join(f"- {sentence}" for sentence in difference_sentences)))

# %% [markdown]
# ## FROC curves
# The out-of-fold detections of all folds pooled: each slice is scored by the model that did not see
# its patient. Higher and further left is better.

# %%
pooled_detections = cv.pooled_detections(out_dir, config)
pooled = {key: evaluate_detections(frame, dbt.truth(), dbt.reach(), config.fps_per_image, config.sensitivity_method)
          for key, frame in pooled_detections.items()}
fig = report.plot_froc_curves(pooled, config.methods, config.regimes, config.fps_per_image)
plots.save_figure(fig, figures_dir, "comoto_froc")
plt.show()

# %%
pooled_table = pd.DataFrame([
    {"regime": cv.regime_name(regime), "method": METHODS[method].title,
     **pooled[(regime, method)].summary()} for regime in config.regimes for method in config.methods])
show_table(pooled_table)

# %% [markdown]
# ## Detections on example slices
# Slices drawn at random (fixed seed) from all folds, as scored out of fold in the largest data
# regime; each method's detections are those kept at its threshold for 2 false positives per slice.

# %%
regime = config.regimes[-1]
rng = np.random.default_rng(seed)
examples = [str(i) for i in rng.choice(dbt.image_ids, size=min(config.example_slices, len(dbt)), replace=False)]
matched = {method: match_detections(pooled_detections[(regime, method)], dbt.truth(), dbt.reach())
           for method in config.methods}
thresholds = {method: report.operating_threshold(pooled[(regime, method)], 2.0) for method in config.methods}
if examples:
    fig = report.plot_example_detections(dbt, matched, thresholds, examples,
                                         titles={m: METHODS[m].title for m in config.methods})
    plots.save_figure(fig, figures_dir, "comoto_examples")
    plt.show()

# %% [markdown]
# ## Computing time
# Training wall time per part of the study on this machine (teachers read back from an earlier run
# of the same settings count with the time they took then).

# %%
timing = report.timing_table({k: (t.seconds, t.steps) for k, t in teachers.items()}, results)
show_table(timing, digits=1)

# %% tags=["reviewer-only"]
summary.to_csv(out_dir / "summary.csv", index=False)
limitations = [
    "Small data: 109 BCS-DBT slices (110 lesions) of 50 patients; a test fold holds about 22 lesions, so one "
    "lesion moves a fold's sensitivity by about 0.05. Differences between methods are tested over the folds "
    "(paired t-test on K - 1 df; the exact sign-flip test cannot go below 2 / 2^K, 0.0625 with 5 folds), and the "
    "folds' training sets overlap, so the t-test is somewhat optimistic (Nadeau & Bengio 2003).",
    "Every BCS-DBT slice here holds a lesion: false positives per slice are counted on lesion slices only "
    "(the official challenge also reports sensitivity at 2 FPs over all volumes, including normal ones).",
    "2-D slices, not volumes: the official metric's slice-distance condition and the 3-D NMS are not applied.",
    "The teacher data (mini-MIAS, digitised film, 322 images) are far smaller than the paper's OMI-DB.",
    "Model selection uses the final weights (no validation split inside a training fold), unlike the "
    "official best-validation-mAP checkpoint.",
]
if config.profile == "cpu":
    limitations.append(
        f"CPU profile: {config.backbone} at {config.detector_image_size} px, {config.student_epochs} student epochs "
        f"(at least {config.student_min_steps} steps); the paper trains a ResNet-50 RetinaNet at about 1333 px for "
        "50 epochs. Absolute sensitivities are therefore not comparable with the paper's.")
elapsed = time.perf_counter() - started
write_json(out_dir / "stage.json", {"config": section_parameters(config), "wall_seconds": elapsed})
limitations = dedupe_limitations(limitations)
write_metrics(metrics_path, {
    "config": section_parameters(config),
    "detector": info,
    "data": records(data_table.set_index("role")),
    "teachers": records(teacher_table),
    "results": records(results),
    "summary": records(summary),
    "paired_differences": records(differences),
    "paired_difference_sentences": difference_sentences,
    "pooled": records(pooled_table),
    "timing": records(timing),
    "wall_seconds": elapsed,
    "index_section": IndexSection(
        title="CoMoTo: mammography-to-DBT lesion distillation",
        text=[
            f"Mean sensitivity (1-4 false positives per slice) of DBT lesion detectors by {config.folds}-fold "
            f"patient-grouped cross-validation on {len(dbt)} BCS-DBT slices ({dbt.n_boxes} lesions, "
            f"{len(set(dbt.patient_ids))} patients); teachers trained on {mammo.summary()['n_images']} mini-MIAS "
            f"mammograms. Profile {config.profile}; stage wall time {elapsed / 60:.0f} min.",
            *[sentence for sentence, row in zip(difference_sentences, differences.to_dict("records"), strict=True)
              if row["primary"]]],
        tables=[
            IndexTable(title="Mean sensitivity (mean ± SD over folds)", caption="Rows: methods; columns: share of the "
                       "DBT training patients used.", records=records(mean_table)),
            IndexTable(title="Sensitivity at 2 false positives per slice (mean ± SD over folds)",
                       records=records(sens2_table)),
            IndexTable(title="Paired differences of mean sensitivity over folds",
                       caption="Per-fold differences, their mean with the t-based 95% CI, paired t-test, Holm-adjusted "
                               "p within each family and regime (the primary comparison is tested alone), exact "
                               "sign-flip p.", records=records(table_frame(difference_table, **difference_options))),
        ],
        figures=[
            IndexFigure(png="figures/comoto_froc.png", title="FROC curves",
                        caption="Share of lesions found against false positives per slice, out-of-fold detections "
                                "pooled."),
        ] + ([IndexFigure(png="figures/comoto_examples.png", title="Example detections",
                          caption="Annotated lesions (green) and detections at 2 false positives per slice (orange).")]
             if examples else []),
        limitations=limitations,
    ).to_dict(),
})
