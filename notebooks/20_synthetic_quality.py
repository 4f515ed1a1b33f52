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
# # 20 · Quality of the synthetic images
#
# Are the generated images realistic, do they show what they were generated for, and are any of them
# near-copies of a patient's image? Realism is measured by comparing image statistics of synthetic
# and real test images (FID and KID; lower is better) as seen by two image-recognition networks,
# always next to the value that real images of other patients reach at the same sample size (the
# floor: no synthetic set can be expected to do better). A classifier trained on real images only
# then checks whether each synthetic image shows its intended diagnosis and characteristics. Finally,
# every synthetic image is compared with its most similar training image; images closer than real
# images of different patients ever are to each other are flagged and left out of the training data for
# the classifier.

# %% tags=["parameters"]
manifest_path = ""
data_root = ""
run_dir = ""
figures_dir = "figures"
metrics_path = "20_synthetic_quality.metrics.json"
provenance_path = ""
predictions_dir = ""
project_root = "."
data_root_base = ""
image_size = 128
seed = 0
reference_splits = ["test"]
kid_subsets = 100
kid_subset_size = 0
guidance_sweep = [0.0, 1.0, 2.0, 4.0]
sweep_images = 64
min_group_size = 10
faithfulness_min_per_level = 10
memorization_percentile = 1.0
memorization_pixel_size = 32
exclude_flagged = True
grid_images = 4
grid_condition = ""
feature_batch_size = 32
device = "auto"

# %% tags=["reviewer-only"]
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from diffkd_study.data.schema import read_manifest
from diffkd_study.devices import resolve_device
from diffkd_study.io import write_json
from diffkd_study.methods.diffkd.diffusion import augment, quality, workflow
from diffkd_study.methods.diffkd.diffusion import plots as dplots
from diffkd_study.methods.diffkd.diffusion.stage import SyntheticQualityStageConfig
from diffkd_study.methods.diffkd.diffusion.train import read_checkpoint_config
from diffkd_study.metrics import fidelity
from diffkd_study.nbutil import (
    NotebookParameterError,
    format_interval,
    provenance_markdown,
    records,
    require_paths,
    show_table,
    write_metrics,
)
from diffkd_study.sections import section_from_parameters
from diffkd_study.stage_output import IndexFigure, IndexSection, IndexTable
from diffkd_study.viz import save_figure

paths = require_paths(manifest_path=manifest_path, data_root=data_root, run_dir=run_dir)
try:
    section = section_from_parameters(SyntheticQualityStageConfig, globals(), "parameters")
    device_name = str(resolve_device(section.device))
except (ValueError, RuntimeError) as err:
    raise NotebookParameterError(f"synthetic_quality section: {err}") from None
synthetic_dir = paths["run_dir"] / "synthetic"
if not (synthetic_dir / "synthetic.csv").is_file():
    raise NotebookParameterError(f"{synthetic_dir / 'synthetic.csv'} not found: run the diffusion stage first")
manifest = read_manifest(paths["manifest_path"])
synthetic_manifest = read_manifest(synthetic_dir / "synthetic.csv")
generation, checkpoint = quality.read_generation(synthetic_dir, paths["run_dir"])
model_config = read_checkpoint_config(checkpoint)
size = int(model_config["train"]["image_size"])
domain_crop = model_config["train"].get("crop", "none")  # lesion: the classifier's lesion-centred squares
domain_margin = float(model_config["train"].get("roi_margin", 0.25))
domain_words = (f"lesion-centred squares (the mask's box + {domain_margin:.0%} margin, the classifier's input)"
                if domain_crop == "lesion" else "whole frames")
categorical = list(model_config["model"]["encoder"]["categorical"])
missing_splits = [s for s in section.reference_splits if not (manifest.df["split"] == s).any()]
if missing_splits:
    raise NotebookParameterError(f"reference_splits {missing_splits} have no rows in {manifest_path}")
grid_by = section.grid_condition or (categorical[0] if categorical else "")
if grid_by and grid_by not in synthetic_manifest.df.columns:
    raise NotebookParameterError(f"grid_condition {grid_by!r} is not a column of the synthetic manifest")
DOMAIN = fidelity.DOMAIN_EXTRACTOR

# %%
display(Markdown(provenance_markdown(provenance_path)))
display(Markdown(
    f"Synthetic set: {len(synthetic_manifest.df)} images from checkpoint `{checkpoint.name}` "
    f"(sha256 {generation['checkpoint_sha256'][:12]}…), sampler {generation['sampler']}, {generation['steps']} "
    f"steps, guidance {generation['guidance_scale']:g}. All comparisons at the model's resolution, {size} px, "
    f"in its domain: {domain_words}."))

# %% [markdown]
# ## Image sets
# Real training images (what the model learnt from), real reference images (patients the model never
# saw) and the synthetic images, all at the same resolution.

# %%
domain = {"crop": domain_crop, "roi_margin": domain_margin}
training = quality.load_image_set(manifest, paths["data_root"], size, name="real training", splits=["train"], **domain)
reference = quality.load_image_set(manifest, paths["data_root"], size, name="real reference",
                                   splits=section.reference_splits, **domain)
synthetic = quality.load_image_set(synthetic_manifest, synthetic_dir, size, name="synthetic")
for image_set in (training, reference, synthetic):
    for extractor in quality.EXTRACTORS.values():
        image_set.ensure_features(extractor, section.feature_batch_size, progress=True)
sets_table = pd.DataFrame([
    {"set": "real training", "splits": "train", "images": len(training)},
    {"set": "real reference", "splits": ", ".join(section.reference_splits), "images": len(reference)},
    {"set": "synthetic", "splits": "-", "images": len(synthetic)}])
show_table(sets_table, {"set": "Image set", "splits": "Splits", "images": "Images"})

# %% [markdown]
# ## Realism: FID, KID, precision and recall
# Each row compares one set of images with the real reference images. **FID** and **KID** measure how
# far apart the two sets are in the eyes of an image-recognition network (0 = indistinguishable;
# lower is better); KID is less dependent on the number of images. Its **95% CI** comes from resampling
# the images of both sets (a bootstrap): the range of KID values these images are compatible with, so two
# sets whose intervals overlap widely are not shown to differ. The **KID SD** column is what other papers
# print after "±": the spread of KID between random subsets of *m* images (m is given), not an uncertainty
# of the KID shown. **Precision** is the share of generated images that look like some real image
# (realism) and **recall** the share of real images that some generated image resembles (diversity).
# The *floor* row uses real training images of other patients instead of synthetic ones: the value
# a perfect generator would reach with this many images. The *classic augmentation* row (flipped,
# rotated, rescaled copies of training images) is the simple baseline.

# %%
n_eval = min(len(synthetic), len(training))
synthetic_eval = synthetic.subset(quality.seeded_subset(len(synthetic), n_eval, seed, "synthetic-eval"))
augmented_images, augmented_sources = augment.classic_augmentation(training.images, n_eval, seed)
augmented = quality.ImageSet("classic augmentation", augmented_images,
                             training.frame.iloc[augmented_sources].reset_index(drop=True))
floor_set = training.subset(quality.seeded_subset(len(training), n_eval, seed, "floor"))
candidates = {"synthetic": synthetic_eval, "classic augmentation (baseline)": augmented,
              "real training (floor)": floor_set}
main_table = quality.fidelity_table(candidates, reference, kid_subsets=section.kid_subsets,
                                    kid_subset_size=section.kid_subset_size, batch_size=section.feature_batch_size)
split_half = quality.split_half_floor(reference, kid_subsets=section.kid_subsets, seed=seed)
fidelity_display = pd.concat([main_table, split_half], ignore_index=True)
FIDELITY_COLUMNS = {"set": "Image set", "extractor": "Feature network", "guidance": "Guidance scale", "n_generated": "Images",
                    "n_real": "Reference images", "fid": "FID", "kid_mean": "KID", "kid_ci": "KID 95% CI (bootstrap)",
                    "kid_std": "KID SD over subsets", "kid_subset_size": "Subset size m",
                    "precision": "Precision", "recall": "Recall"}
KID_INTERVAL = {"kid_ci": ("kid_ci_low", "kid_ci_high")}
show_table(fidelity_display, FIDELITY_COLUMNS, digits=4, intervals=KID_INTERVAL)

# %%
headline = quality.compare_to_floor(main_table).round(
    {"FID": 2, "FID floor": 2, "FID - floor": 2, "KID": 4, "KID CI low": 4, "KID CI high": 4, "KID floor": 4,
     "KID floor CI low": 4, "KID floor CI high": 4})
show_table(headline.rename(columns={"n": "images", "n_reference": "reference images"}),
           digits={"FID": 2, "FID floor": 2, "FID - floor": 2, "KID": 4, "KID 95% CI": 4, "KID floor": 4,
                   "KID floor 95% CI": 4},
           intervals={"KID 95% CI": ("KID CI low", "KID CI high"),
                      "KID floor 95% CI": ("KID floor CI low", "KID floor CI high")})
display(Markdown("\n".join(
    f"- {row['extractor']}: synthetic KID {row['KID']:.4f} (95% CI "
    f"{format_interval(row['KID CI low'], row['KID CI high'], 4)}), floor {row['KID floor']:.4f} (95% CI "
    f"{format_interval(row['KID floor CI low'], row['KID floor CI high'], 4)})."
    for _, row in headline.iterrows())
    + "\n\nEach interval resamples the images of both sets with replacement: it shows how much the KID would move "
    "with other images of the same kind. Overlapping intervals of the synthetic set and its floor do not show a "
    "difference; the KID SD of the table above (subsets of m images) is not such an uncertainty."))

# %% [markdown]
# ### Per class and per center
# The same comparison within each class and each center (a synthetic image counts for the center of
# the patient whose conditions it was generated from), where every set has enough images.

# %%
class_table, class_skipped = quality.group_fidelity(
    synthetic, training, reference, by="label", min_group_size=section.min_group_size,
    kid_subsets=min(section.kid_subsets, 50), seed=seed, batch_size=section.feature_batch_size)
center_table, center_skipped = quality.group_fidelity(
    synthetic, training, reference, by="center", synthetic_by="source_center", min_group_size=section.min_group_size,
    kid_subsets=min(section.kid_subsets, 50), seed=seed, batch_size=section.feature_batch_size)
group_views = []
for by, table in (("label", class_table), ("center", center_table)):
    if not table.empty:
        view = quality.compare_to_floor(table, keys=(by, "extractor"))
        group_views.append(view.rename(columns={by: "group"}).assign(by=by))
group_table = pd.concat(group_views, ignore_index=True) if group_views else pd.DataFrame()
for name, skipped in (("class", class_skipped), ("center", center_skipped)):
    if skipped:
        display(Markdown(f"Not compared per {name} (fewer than {section.min_group_size} images): {'; '.join(skipped)}."))
show_table(group_table.rename(columns={"n": "images", "n_reference": "reference images"}), digits=4,
           empty=f"No class or center has at least {section.min_group_size} images in every set: no per-group comparison.")

# %% [markdown]
# ## Guidance scale
# The same conditions are sampled again at several guidance scales, starting from the same noise.
# Scale 1 is the model without guidance (the second baseline); 0 ignores the conditions.

# %%
sweep_table = pd.DataFrame()
sweep_caption = ""
if section.guidance_sweep:
    n_sweep = min(section.sweep_images, len(synthetic), len(training))
    sweep_table, sweep_sets = quality.guidance_sweep(
        checkpoint, synthetic, synthetic_dir, reference, training, scales=section.guidance_sweep, n=n_sweep,
        sampler=generation["sampler"], steps=int(generation["steps"]), seed=int(generation["seed"]),
        kid_subsets=min(section.kid_subsets, 50), batch_size=section.feature_batch_size, device=device_name,
        progress=True)
    sweep_figure = dplots.plot_guidance_sweep(sweep_table)
    save_figure(sweep_figure, figures_dir, "synthetic_guidance_sweep")
    sweep_caption = dplots.caption("guidance_sweep", n=n_sweep, n_real=len(reference))
    plt.show()
    display(Markdown(sweep_caption))
show_table(sweep_table, FIDELITY_COLUMNS, digits=4, empty="No guidance sweep was asked for in this run.")

# %% [markdown]
# ## Do the images show what they were generated for?
# A simple classifier (a logistic regression on image features) is trained on real training images
# only, for the diagnosis and for each recorded category with enough images. It then classifies the
# synthetic images; agreement with the diagnosis or category the image was generated for is shown
# next to the same classifier's accuracy on real held-out images (how well the property can be read
# from an image at all) and to chance (always guessing the most frequent class).

# %%
faithfulness, faithfulness_notes = quality.faithfulness_table(
    training, reference, synthetic, ["label", *categorical], min_per_level=section.faithfulness_min_per_level,
    seed=seed)
for note in faithfulness_notes:
    display(Markdown(f"*{note}*"))
show_table(faithfulness, empty="No diagnosis or category has enough images to train the checking classifier.")

# %% [markdown]
# ## Memorization audit
# For every synthetic image, its nearest training image in image-feature space and in pixel space.
# A synthetic image is flagged when it is at least as close to a training image as the closest few
# percent of real training images are to an image of *another* patient (the percentage is stated below
# the histograms): a patient's own second image of the same lesion is a near-copy by nature and is not
# used as the yardstick. Flagged images are excluded from the classifier's training data.

# %%
audit = fidelity.memorization_audit(
    synthetic.images, training.images, training_groups=training.frame["patient_id"].astype(str).to_numpy(),
    synthetic_features=synthetic.features[DOMAIN],
    training_features=training.features[DOMAIN], pixel_size=section.memorization_pixel_size,
    percentile=section.memorization_percentile)
memorization = quality.memorization_table(audit, synthetic, training)
quality.write_table(memorization, synthetic_dir / quality.MEMORIZATION_FILE)
flagged_ids = memorization.loc[memorization["flagged"], "image_id"].tolist()
augmentation = augment.write_augmentation_manifest(synthetic_manifest, flagged_ids, synthetic_dir,
                                                   exclude_flagged=section.exclude_flagged)
flag_counts = augment.flagged_summary(memorization["flagged"], synthetic.frame["label"])
nn_figure = dplots.plot_nn_histograms(audit.spaces)
save_figure(nn_figure, figures_dir, "synthetic_memorization_histogram")
nn_caption = dplots.caption("nn_histograms", percentile=section.memorization_percentile, n_flagged=len(flagged_ids),
                            n_synthetic=len(synthetic))
plt.show()
display(Markdown(nn_caption))
display(Markdown(
    f"{len(flagged_ids)} of {len(synthetic)} synthetic images flagged; the classifier's training data takes "
    f"{len(augmentation.df)} synthetic images"
    f"{' (flagged ones excluded)' if section.exclude_flagged else ' (all of them: the configuration keeps flagged ones)'}. "
    f"Thresholds: {', '.join(f'{k} {v.threshold:.4g}' for k, v in audit.spaces.items())}."))
show_table(flag_counts.rename_axis("Class"))

# %%
closest = audit.closest_pairs.groupby("space", sort=False).head(4)  # the 4 closest pairs of each space
train_index = {image_id: i for i, image_id in enumerate(training.frame["image_id"])}
pairs_figure = dplots.plot_closest_pairs(
    [synthetic.images[i] for i in closest["synthetic_index"]], [training.images[i] for i in closest["training_index"]],
    [f"{space} {d:.3g}{' flagged' if f else ''}"
     for space, d, f in zip(closest["space"], closest["distance"], closest["flagged"], strict=True)],
    title="Closest synthetic-training pairs (domain-feature and pixel space)")
save_figure(pairs_figure, figures_dir, "synthetic_closest_pairs")
pairs_caption = dplots.caption("closest_pairs")
plt.show()
display(Markdown(pairs_caption))

# %% [markdown]
# ## Can a simple classifier tell synthetic from real?
# A classifier two-sample test (Lopez-Paz and Oquab, 2017): the real training images and the synthetic
# images the teacher trains on, exactly as the teacher receives them (same crop, same resize chain, the
# study's resolution), are described by simple image statistics that catch trivial cues (blur and
# resolution through the power spectrum and gradients, intensity histograms, black borders, a 16 x 16
# thumbnail), and a logistic regression learns to tell the two sets apart in 5-fold cross-validation,
# grouped by patient (a synthetic image counts for the patient whose record it was generated from). Its
# area under the ROC curve (AUC) is near 0.5 when nothing trivial separates them and near 1 when a cue
# does; the goal is at most 0.70. Also within each class.

# %%
from diffkd_study.metrics import two_sample
from diffkd_study.training.data import load_images

if domain_crop == "lesion":  # the classifier's chain: crop, then the diffusion resolution, then the study's
    real_options = {"resize_mode": "lesion", "roi_margin": domain_margin, "via": size}
    synthetic_options = {"resize_mode": "stretch", "via": size}
else:  # whole frames: compared as whole frames at the study resolution
    real_options = synthetic_options = {"resize_mode": "stretch"}
real_inputs = load_images(manifest, paths["data_root"], size=image_size, splits=("train",), **real_options)
synthetic_inputs = load_images(augmentation, synthetic_dir, size=image_size, synthetic=True, **synthetic_options)
patient_of = dict(zip(manifest.df["image_id"].astype(str), manifest.df["patient_id"].astype(str), strict=True))
synthetic_rows = augmentation.df.set_index("image_id").loc[synthetic_inputs.image_ids]
two_sample_results = two_sample.c2st_images(
    real_inputs.images.float() / 255, synthetic_inputs.images.float() / 255,
    [patient_of[i] for i in real_inputs.image_ids],
    [patient_of.get(str(s), f"synthetic:{i}") for i, s in zip(synthetic_inputs.image_ids,
                                                              synthetic_rows["source_image_id"], strict=True)],
    labels_a=[real_inputs.classes[k] for k in real_inputs.labels.tolist()],
    labels_b=[synthetic_inputs.classes[k] for k in synthetic_inputs.labels.tolist()], seed=seed)
two_sample_frame = two_sample.two_sample_table(two_sample_results)
display(show_table(two_sample_frame[["scope", "n_a", "n_b", "groups_a", "auc", "ci_low", "ci_high", "verdict"]],
                   {"scope": "Images compared", "n_a": "Real", "n_b": "Synthetic", "groups_a": "Patients",
                    "auc": "AUC", "CI": "95% CI (patient-clustered)",
                    "verdict": f"Goal: AUC <= {two_sample.C2ST_GOAL:.2f}"}, digits=3,
                   intervals={"CI": ("ci_low", "ci_high")}))
overall = two_sample_results[0]
display(Markdown(
    f"Real vs synthetic classifier inputs ({image_size} px, {'lesion crops through ' + str(size) + ' px' if domain_crop == 'lesion' else 'whole frames'}): "
    f"AUC {overall.auc:.3f} (95% CI {format_interval(overall.ci_low, overall.ci_high, 3)}). "
    + ("A value this close to 0.5 means these simple statistics do not tell the sets apart." if overall.auc <= 0.6
       else "Simple image statistics do tell the sets apart to this degree: the synthetic images carry a cue real "
            "ones lack, and a model trained on both could learn it.")))

# %%
fid_goal = headline[["extractor", "FID", "FID floor"]].assign(ratio=lambda t: t["FID"] / t["FID floor"])
goals = pd.DataFrame(
    [{"goal": f"FID within 2x the real-vs-real floor ({row.extractor})",
      "measured": f"FID {row.FID:.2f} vs floor {row['FID floor']:.2f} (ratio {row.ratio:.2f})",
      "met": bool(row.ratio <= 2.0)} for _, row in fid_goal.iterrows()]
    + [{"goal": f"real-vs-synthetic two-sample AUC <= {two_sample.C2ST_GOAL:.2f}",
        "measured": f"AUC {overall.auc:.3f} (95% CI {format_interval(overall.ci_low, overall.ci_high, 3)})",
        "met": bool(overall.estimable and overall.auc <= two_sample.C2ST_GOAL)}])
display(show_table(goals, {"goal": "Goal", "measured": "Measured", "met": "Met"}))
# beside the synthetic set, for the pooled cross-validation report (which reads every fold's run folder)
write_json(synthetic_dir / quality.SUMMARY_FILE, {
    "domain": {"crop": domain_crop, "roi_margin": domain_margin, "resolution_px": size},
    "fidelity_vs_floor": records(headline), "two_sample": records(two_sample_frame), "goals": records(goals)})

# %% [markdown]
# ## Sample images
# Synthetic images next to the real training image whose record (diagnosis, conditions and, where
# used, lesion outline in yellow) they were generated from.

# %%
def pair_rows(column: str) -> list[dplots.PairRow]:
    rows = []
    for value in sorted(synthetic.frame[column].dropna().astype(str).unique()):
        members = np.flatnonzero(synthetic.frame[column].astype(str).to_numpy() == value)
        chosen = members[quality.seeded_subset(len(members), min(section.grid_images, len(members)), seed, "grid",
                                               column, value)]
        sources = [train_index.get(str(s)) for s in synthetic.frame["source_image_id"].iloc[chosen]]
        kept = [(c, s) for c, s in zip(chosen, sources, strict=True) if s is not None]
        rows.append(dplots.PairRow(
            f"{column.removeprefix('cond_')}: {value}", [training.images[s] for _, s in kept],
            [synthetic.images[c] for c, _ in kept], [training.masks[s] for _, s in kept],
            [synthetic.masks[c] for c, _ in kept]))
    return [r for r in rows if len(r.real)]


mask_text = " and lesion outline" if model_config["train"]["mask_conditioning"] else ""
grid_figures = []
for column, name in (("label", "synthetic_grid_per_class"), (grid_by, "synthetic_grid_per_level")):
    if not column:
        continue
    figure = dplots.plot_sample_pairs(pair_rows(column), title=f"Real and synthetic images per {column.removeprefix('cond_')}")
    save_figure(figure, figures_dir, name)
    grid_caption = dplots.caption("sample_pairs", grouping=f"one row per {column.removeprefix('cond_')}",
                                  mask_text=mask_text, size=size)
    grid_figures.append({"png": f"figures/{name}.png", "title": f"Samples per {column.removeprefix('cond_')}",
                         "caption": grid_caption})
    plt.show()
    display(Markdown(grid_caption))

# %% tags=["reviewer-only"]
headline_records = records(headline)
summary_table = main_table[["set", "extractor", "n_generated", "n_real", "fid", "kid_mean", "kid_ci_low", "kid_ci_high",
                            "kid_std", "kid_subset_size", "precision", "recall"]].round(4)
write_metrics(metrics_path, {
    "image_sets": {"resolution_px": size, "n_training": len(training), "n_reference": len(reference),
                   "reference_splits": list(section.reference_splits), "n_synthetic": len(synthetic),
                   "n_eval": n_eval},
    "fidelity": records(main_table),
    "floor": {"matched_real_training": records(main_table[main_table["set"] == "real training (floor)"]),
              "reference_split_half": records(split_half)},
    "fidelity_vs_floor": headline_records,
    "per_group": records(group_table) if not group_table.empty else [],
    "per_group_skipped": {"label": class_skipped, "center": center_skipped},
    "guidance_sweep": records(sweep_table) if not sweep_table.empty else [],
    "faithfulness": {"records": records(faithfulness) if not faithfulness.empty else [], "notes": faithfulness_notes},
    "memorization": {**{k: v for k, v in audit.summary().items() if k != "histograms"},
                     "flagged_image_ids": flagged_ids, "n_augmentation": len(augmentation.df),
                     "exclude_flagged": section.exclude_flagged,
                     "memorization_csv": str(synthetic_dir / quality.MEMORIZATION_FILE),
                     "augmentation_csv": str(synthetic_dir / augment.AUGMENTATION_FILE)},
    "generation": generation,
    "domain": {"crop": domain_crop, "roi_margin": domain_margin, "resolution_px": size},
    "two_sample": records(two_sample_frame),
    "goals": records(goals),
    "index_section": IndexSection(
        title="Stage 1: quality of the synthetic images",
        text=[f"{len(synthetic)} synthetic images ({size} px, {domain_words}) compared with {len(reference)} real reference images "
              f"({', '.join(section.reference_splits)} split) using {n_eval} images per set. FID/KID: lower is "
              "better; the floor is the value of real training images of other patients at the same sample size.",
              f"Memorization audit: {len(flagged_ids)} of {len(synthetic)} synthetic images flagged as near-copies "
              f"(threshold: the closest {section.memorization_percentile:g}% of real-vs-real nearest-neighbour "
              f"distances between images of different patients); {len(augmentation.df)} images go to the "
              "teacher's training data."],
        tables=[IndexTable(title="Goals of the synthetic set",
                           caption="FID of the synthetic set within twice the real-vs-real floor (same n, same "
                                   "domain); a classifier two-sample test on the teacher's inputs at most 0.70.",
                           records=records(goals)),
                IndexTable(title="Real vs synthetic: classifier two-sample test",
                           caption="Logistic regression on simple image statistics, 5-fold patient-grouped "
                                   "cross-validation; AUC with a patient-clustered 95% CI. 0.5: not separable.",
                           records=records(two_sample_frame.round(3))),
                IndexTable(title="Synthetic vs real: FID and KID against the floor",
                           caption="n = images per set (reference n_reference); both extractors. FID - floor near 0 "
                                   "means as close to the real images as other real images are. KID CI: 95% "
                                   "bootstrap interval over images.",
                           records=headline_records),
                IndexTable(title="All sets (with precision and recall)",
                           caption="Synthetic, classic-augmentation baseline and the real floor, each vs the reference.",
                           records=records(summary_table)),
                IndexTable(title="Conditional faithfulness",
                           caption="Agreement of a classifier trained on real images with the label/condition each "
                                   "synthetic image was generated for, next to its accuracy on real held-out images.",
                           records=records(faithfulness.round(3)) if not faithfulness.empty else [])],
        figures=[*(IndexFigure(**figure) for figure in grid_figures[:1]),
                 *([IndexFigure(png="figures/synthetic_guidance_sweep.png", title="Guidance sweep",
                                caption=sweep_caption)] if sweep_caption else []),
                 IndexFigure(png="figures/synthetic_memorization_histogram.png", title="Memorization audit",
                             caption=nn_caption)],
        limitations=[
            f"FID and KID at {n_eval} images per set and {len(reference)} reference images are noisy and depend on "
            "the sample size: compare a row only with its floor at the same n.",
            "The Inception network was trained on natural photographs; the EfficientNet-Lite0 features are ImageNet "
            "features too (no ultrasound-trained extractor is used here).",
            "With mask conditioning a synthetic image shares its lesion outline with its source image, so it is "
            "expected to resemble that image more than unrelated real images resemble each other."],
    ).to_dict(),
})
