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
# # 10 · Conditional diffusion model and synthetic images
#
# Stage 1 of DiffKD-DCIS: a diffusion model learns to generate breast-ultrasound images from the
# training patients only, *conditioned* on what is recorded about each image (its diagnosis, BI-RADS
# category, scanner and other descriptors, and optionally the outline of the lesion). It learns by
# removing noise that was added to the real images; once trained, it starts from pure noise and
# removes it step by step, steered towards the conditions it is given. We then draw conditions from
# the training patients (balancing benign and malignant) and generate a synthetic training set,
# which the teacher network later learns from together with the real images. Whether these images
# are any good, and whether any of them copies a patient's image, is checked in the next report.

# %% tags=["parameters"]
manifest_path = ""
data_root = ""
run_dir = ""
figures_dir = "figures"
metrics_path = "10_diffusion.metrics.json"
provenance_path = ""
predictions_dir = ""
project_root = "."
data_root_base = ""
image_size = 128
seed = 0
profile = "demo"  # the UNet; in a study config it also sets the training values below (here: demo's)
diffusion_image_size = 64
crop = "auto"
crop_margin = 0.25
conditions = []
mask_conditioning = True
max_steps = 500
batch_size = 16
learning_rate = 0.001
warmup_steps = 50
ema_decay = 0.995
checkpoint_every = 250
checkpoint_minutes = 10.0
prediction_type = "epsilon"
beta_schedule = "squaredcos_cap_v2"
label_dropout = 0.1
condition_dropout = 0.1
numeric_dropout = 0.1
mask_dropout = 0.1
resume = True
sampler = "dpmsolver++"
sampling_steps = 20
guidance_scale = 2.0
sample_batch_size = 32
label_mix = "prior"
n_synthetic = 0
n_per_class = 0
class_counts = []
condition_table = ""
device = "auto"

# %% tags=["reviewer-only"]
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from diffkd_study.data.schema import read_manifest
from diffkd_study.devices import resolve_device
from diffkd_study.methods.diffkd.diffusion import plots as dplots
from diffkd_study.methods.diffkd.diffusion import workflow
from diffkd_study.methods.diffkd.diffusion.stage import DiffusionStageConfig
from diffkd_study.nbutil import (
    NotebookParameterError,
    provenance_markdown,
    records,
    require_paths,
    show_table,
    write_metrics,
)
from diffkd_study.sections import section_from_parameters
from diffkd_study.stage_output import IndexFigure, IndexSection, IndexTable
from diffkd_study.viz import plot_loss_curves, save_figure

paths = require_paths(manifest_path=manifest_path, data_root=data_root, run_dir=run_dir)
try:
    section = section_from_parameters(DiffusionStageConfig, globals(), "parameters")
    device_name = str(resolve_device(section.device))
except (ValueError, RuntimeError) as err:
    raise NotebookParameterError(f"diffusion section: {err}") from None
manifest = read_manifest(paths["manifest_path"])
try:
    train_config = workflow.train_config_from_section(section, manifest, seed)
except ValueError as err:
    raise NotebookParameterError(str(err)) from None
table = None
if section.condition_table:
    table_path = Path(section.condition_table)
    table = workflow.read_condition_table(table_path if table_path.is_absolute() else Path(project_root) / table_path)
diffusion_dir = paths["run_dir"] / "diffusion"
synthetic_dir = paths["run_dir"] / "synthetic"

# %%
display(Markdown(provenance_markdown(provenance_path)))
display(Markdown(
    f"Model: UNet profile **{train_config.profile}** at **{train_config.image_size} x {train_config.image_size} px** "
    f"(the study resolution is {image_size} px: the classifier's data loader resizes the synthetic images to it). "
    f"Conditions: label, {', '.join(c.removeprefix('cond_') for c in train_config.conditions) or 'none'}"
    f"{', lesion mask' if train_config.mask_conditioning else ''}. Device: {device_name}."))

# %% [markdown]
# ## Training
# The model sees only the training split. In a random tenth of the steps each condition is hidden
# from it (classifier-free guidance dropout), so that it also learns to generate without that
# condition; at sampling time, the difference between the conditioned and the unconditioned
# prediction is amplified to make the images follow their conditions more closely. A re-run with
# the same settings continues from the last checkpoint instead of starting over.

# %%
summary = workflow.run_training(manifest, diffusion_dir, train_config, root=paths["data_root"],
                                resume=section.resume, device=device_name)
training_table = pd.DataFrame([{
    "steps trained": summary.steps, "steps run now": summary.steps_run, "batch size": train_config.batch_size,
    "training images": int((manifest.df["split"] == "train").sum()),
    "wall time (s, all runs)": summary.wall_s_total, "images/s (this run)": summary.images_per_second,
    "final loss (mean of last 10%)": round(float(pd.Series(summary.losses).tail(max(1, summary.steps // 10)).mean()), 4),
    "checkpoint": summary.checkpoint.name, "checkpoint sha256": summary.checkpoint_sha256[:16]}])
show_table(training_table.T.rename(columns={0: "Value"}).rename_axis("Training"), digits=2)

# %%
history = workflow.loss_history(summary.losses)
block = int(history["step"].iloc[0])
loss_figure = plot_loss_curves(history, title="Diffusion model: training loss")
save_figure(loss_figure, figures_dir, "diffusion_loss")
loss_caption = dplots.caption("loss_curve", block=block, steps=summary.steps)
plt.show()
display(Markdown(loss_caption))

# %% [markdown]
# ## Synthetic images
# Conditions (and lesion outlines) are whole training images' records, drawn at random within each
# class, so the synthetic set keeps the combinations seen in real patients. By default the classes
# come in the real training proportions (so synthetic images add data without changing how often
# each class is seen); a balanced mix is an option of the configuration.

# %%
per_class = None if table is not None else workflow.resolve_class_counts(
    manifest, n_per_class=section.n_per_class, class_counts=section.class_counts, label_mix=section.label_mix,
    n_synthetic=section.n_synthetic)
synthetic = workflow.ensure_synthetic(
    summary.checkpoint, manifest, synthetic_dir, root=paths["data_root"], per_class=per_class, table=table,
    sampler=section.sampler, steps=section.sampling_steps, guidance_scale=section.guidance_scale, seed=seed,
    batch_size=section.sample_batch_size, device=device_name)
counts = synthetic.manifest.df.groupby("label").size().rename("synthetic images").to_frame()
counts["real training images"] = manifest.df[manifest.df["split"] == "train"].groupby("label").size()
display(Markdown(
    ("An identical synthetic set (same checkpoint and sampling settings) already existed and was kept. "
     if synthetic.reused else f"Sampled in {synthetic.wall_s:.0f} s "
     f"({synthetic.wall_s / max(1, len(synthetic.manifest.df)):.2f} s per image). ")
    + f"Sampler {section.sampler}, {section.sampling_steps} steps, guidance scale {section.guidance_scale:g}, "
    f"seed {seed}."))
show_table(counts.rename_axis("Class"))

# %% tags=["reviewer-only"]
write_metrics(metrics_path, {
    "training": summary.to_dict(),
    "synthetic": {"path": str(synthetic_dir / "synthetic.csv"), "n_images": int(len(synthetic.manifest.df)),
                  "per_class": {k: int(v) for k, v in counts["synthetic images"].items()},
                  "reused": synthetic.reused, "wall_s": round(synthetic.wall_s, 2), **synthetic.record},
    "index_section": IndexSection(
        title="Stage 1: conditional diffusion model",
        text=[f"Diffusion model (UNet profile {train_config.profile}, {train_config.image_size} px) trained for "
              f"{summary.steps} steps on the training split "
              f"({summary.wall_s_total:.0f} s of training in all); {len(synthetic.manifest.df)} synthetic images "
              f"sampled with {section.sampler} ({section.sampling_steps} steps, guidance {section.guidance_scale:g}). "
              "Their quality and a memorization audit are in the next section."],
        tables=[IndexTable(title="Training", caption="One row: the trained model.",
                           records=records(training_table)),
                IndexTable(title="Synthetic images per class", caption="Synthetic and real training images per class.",
                           records=records(counts.reset_index()))],
        figures=[IndexFigure(png="figures/diffusion_loss.png", title="Diffusion training loss", caption=loss_caption)],
        limitations=[f"Synthetic images have the detail of {train_config.image_size} px; they are resized to the "
                     f"study resolution ({image_size} px) when the classifier reads them."],
    ).to_dict(),
})
