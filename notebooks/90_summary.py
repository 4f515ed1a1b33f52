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
# # 90 · The study at a glance
#
# The box first says in plain words how well the main model separates malignant from benign lesions on each
# test set. This last report then gathers the headline results of the whole study in one place: how well the teacher
# and the distilled student separate malignant from benign lesions on each test set (with 95%
# confidence intervals), how they compare with the readers, what each stage of the method contributes
# (the partial combinations), how good the synthetic images are, and how much smaller and faster the
# student is. It ends with the limitations a reader of these results should keep in mind. Every number
# here comes from an earlier stage's report, which holds the details.

# %% tags=["parameters"]
manifest_path = ""
predictions_dir = ""
figures_dir = "figures"
metrics_path = "90_summary.metrics.json"
provenance_path = ""
run_dir = ""
project_root = ""
data_root = ""
data_root_base = ""
image_size = 128
seed = 0
teacher = ""
student = ""
band_resamples = 500

# %% tags=["reviewer-only"]
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import HTML, Markdown, display

from diffkd_study import reader_study as rs
from diffkd_study import summary as sm
from diffkd_study import viz as plots
from diffkd_study.data.schema import read_manifest
from diffkd_study.io import write_json
from diffkd_study.methods.diffkd import evaluate as ev
from diffkd_study.methods.diffkd.baselines import read_not_applicable
from diffkd_study.metrics.roc_band import roc_summary
from diffkd_study.nbutil import (
    NotebookParameterError,
    provenance_markdown,
    records,
    require_paths,
    write_metrics,
)
from diffkd_study.predictions import read_predictions
from diffkd_study.stage_output import IndexFigure, IndexSection, IndexTable

paths = require_paths(manifest_path=manifest_path, predictions_dir=predictions_dir, run_dir=run_dir)
report_dir = Path(metrics_path).parent  # every stage's metrics JSON sits next to this one
reader_study_dir = Path(run_dir) / "reader_study"
tables = sorted(Path(predictions_dir).glob("*.csv"))
if not tables:
    raise NotebookParameterError(f"no prediction tables in {predictions_dir}: the study trained or fitted no model")
manifest = read_manifest(paths["manifest_path"])
predictions = read_predictions(tables, manifest=manifest)
stage_metrics = sm.read_stage_metrics(report_dir)
try:
    headline = sm.headline_models(list(predictions["model"].unique()), teacher, student)
except ValueError as err:
    raise NotebookParameterError(str(err)) from None
if not headline:  # neither network was trained: the best baseline stands in
    best = stage_metrics.get("45_baselines", {}).get("best_model")
    headline = {"model": best} if best else {"model": str(predictions["model"].iloc[0])}
models = list(headline.values())
tests = ev.evaluation_rows(predictions, models)  # seed-averaged scores, as in the evaluation
not_applicable = ev.not_applicable_pairs(tests, models, ev.manifest_test_sets(manifest), read_not_applicable(predictions_dir))
seeds = ev.seed_counts(predictions)  # training seeds averaged per model
condition = f"{manifest.schema.positive_class} lesions"
auc = ev.auc_table(tests, bootstrap=200, seed=seed, not_applicable=not_applicable)
simulated_cohort = "phantom" in set(manifest.df["dataset"])
# the oracle: the AUC of the true risk the phantom drew each label from, on the same cases (real data has none)
oracle = ev.oracle_auc_table(tests, manifest) if ev.TRUE_RISK in manifest.df.columns else pd.DataFrame()
headline_box = sm.headline_box(headline, records(auc), records(ev.test_set_sizes(tests)), records(oracle),
                               positive_class=str(manifest.schema.positive_class), simulated=simulated_cohort,
                               missing=[f"{r.model} is not applicable on {r.test_set}: {r.reason}."
                                        for r in not_applicable.itertuples()],
                               comparisons=stage_metrics.get("50_evaluation", {}).get("planned_comparisons", []))

# %%
display(HTML(sm.headline_html(headline_box, simulated=simulated_cohort)))
display(Markdown(provenance_markdown(provenance_path)))
display(Markdown("Headline models: " + ", ".join(f"{role} **{name}** (score averaged over {seeds[name]} training "
                                                 "seed(s))" for role, name in headline.items()) + "."))

# %% [markdown]
# ## Diagnostic performance per test set
# Area under the ROC curve (AUC) with its 95% confidence interval (DeLong, logit scale) on the
# internal test set and on each external centre; n is the number of images, n_pos those with a
# malignant lesion. A model without predictions on a test set (a baseline whose inputs that set does
# not record) is listed there as not applicable. On the simulated cohort the oracle row is the AUC of
# the true risk itself: the ceiling any model can reach on the same cases.

# %%
auc_view = pd.concat([auc, oracle]) if len(oracle) else auc
auc_view = auc_view.assign(auc_95ci=auc_view.apply(ev.format_auc, axis=1))[["model", "test_set", "n", "n_pos", "auc_95ci"]]
auc_view = auc_view.sort_values("test_set", key=lambda c: c.map({t: k for k, t in enumerate(pd.unique(auc["test_set"]))}),
                                kind="stable").reset_index(drop=True)
auc_view

# %% [markdown]
# ## Headline ROC figure: teacher, student and readers
# On the cases the readers read (the internal and external test images together) when a reader study
# ran, otherwise on each test set.

# %%
reads_file = reader_study_dir / "reads.csv"
# the figure names what it shows: the trained networks, or only baselines when no network was trained
who = "Teacher and student" if any(m.startswith(("teacher", "student")) for m in models) else "Baseline models"
cases = tests[tests["model"] == models[0]][["image_id", "y_true"]]
reader_points, simulated = None, False
if reads_file.is_file():
    truth = pd.DataFrame({"case_id": cases["image_id"], "truth": cases["y_true"]}).drop_duplicates("case_id")
    study = rs.read_reader_study(reads_file, truth)
    reader_points = rs.reader_operating_points(study)
    simulated = "simulated" in study.reads.columns and bool(pd.to_numeric(study.reads["simulated"]).any())
    curves = {m: (g["y_true"].to_numpy(), g["y_score"].to_numpy()) for m, g in tests.groupby("model", sort=False)}
    title = f"{who} and " + ("simulated readers" if simulated else "readers")
    headline_set = "the internal and external test images together"
else:
    first = tests["test_set"].iloc[-1]
    part = tests[tests["test_set"] == first]
    curves = {m: (g["y_true"].to_numpy(), g["y_score"].to_numpy()) for m, g in part.groupby("model", sort=False)}
    title = f"{who}: {first}"
    headline_set = ev.describe_test_set(first)
summaries = {m: roc_summary(y, s, n_resamples=band_resamples, seed=seed) for m, (y, s) in curves.items()}
fig = plots.plot_roc(summaries, reader_points=reader_points, simulated_readers=simulated, title=title)
plots.save_figure(fig, figures_dir, "headline_roc")
plt.show()
first_curve = next(iter(curves.values()))[0]
headline_caption = plots.caption("roc", test_set=headline_set, n=len(first_curve), n_pos=int(first_curve.sum()),
                                 condition=condition)
display(Markdown(headline_caption))

# %% [markdown]
# ## What each stage contributes (partial combinations)
# The full method against every other model on the same images (difference in AUC, full minus other,
# with its 95% DeLong interval), from the evaluation report; and each model's AUC as the mean +- SD over
# its training seeds, from the student report.

# %%
evaluation = stage_metrics.get("50_evaluation", {})
ablation = pd.DataFrame(evaluation.get("ablation_vs_full", []))
if len(ablation):
    ablation = ablation[["test_set", "model_a", "model_b", "n", "difference", "ci_low", "ci_high", "p_value"]]
seed_grid = pd.DataFrame(stage_metrics.get("40_student", {}).get("ablation", []))
display(ablation.round(4) if len(ablation) else Markdown("No partial-combination tests in this run."))
display(seed_grid if len(seed_grid) else Markdown("No student stage in this run."))

# %% [markdown]
# ## Synthetic images and efficiency

# %%
quality_section = sm.stage_section(stage_metrics, "20_synthetic_quality")
quality_tables = quality_section.tables if quality_section is not None and quality_section.tables else []
quality = pd.DataFrame(quality_tables[0].records) if quality_tables else pd.DataFrame()
display(quality if len(quality) else Markdown("No synthetic-quality stage in this run."))
ratios = stage_metrics.get("40_student", {}).get("efficiency_ratios", {})
efficiency = pd.DataFrame([{"measure": k, "student / teacher": v} for k, v in ratios.items()])
display(efficiency.round(4) if len(efficiency) else Markdown("No student stage in this run."))

# %% [markdown]
# ## Limitations

# %%
extra = []  # what the stages' own limitations cannot know: the whole run's view
if not reads_file.is_file():
    extra.append("No reader study: there is no comparison with radiologists in this run.")
limitations = sm.collect_limitations(stage_metrics, extra)
display(Markdown("\n".join(f"* {item}" for item in limitations)))

# %% tags=["reviewer-only"]
quality_records = records(quality) if len(quality) else []
headline_json = {
    "models": headline, "seeds_averaged": {m: seeds[m] for m in models},
    "auc": records(auc.loc[auc["n"] > 0, ["model", "test_set", "n", "n_pos", "auc", "ci_low", "ci_high", "note"]]),
    "oracle_auc": records(oracle[["test_set", "n", "n_pos", "auc", "ci_low", "ci_high", "note"]]) if len(oracle) else [],
    "not_applicable": records(not_applicable),
    "synthetic_quality": quality_records, "efficiency_ratios": ratios,
    "ablation_vs_full": records(ablation) if len(ablation) else [],
}
write_json(report_dir / "headline.json", headline_json)
write_metrics(metrics_path, {
    **headline_json,
    "headline_box": headline_box,
    "limitations": limitations,
    "index_section": IndexSection(
        title="The study at a glance",
        text=["Headline models: " + ", ".join(f"{r} {n}" for r, n in headline.items())
              + ". AUC with 95% DeLong intervals per test set; every figure and table is detailed in the stage "
                "reports linked below."],
        tables=[
            IndexTable(title="AUC per test set (95% CI)", records=records(auc_view.set_index(["model", "test_set"]))),
            *([IndexTable(title="Partial combinations: the full method against each other model",
                          caption="Difference in AUC (full minus other) with its DeLong 95% CI and p-value.",
                          records=records(ablation.round(4).set_index("test_set")))] if len(ablation) else []),
            *([IndexTable(title="Partial combinations: AUC mean +- SD over seeds", records=records(seed_grid))]
              if len(seed_grid) else []),
            *([IndexTable(title="Synthetic-image quality", records=quality_records)] if quality_records else []),
            *([IndexTable(title="Efficiency: student / teacher", records=records(efficiency.round(4)))]
              if len(efficiency) else []),
        ],
        figures=[IndexFigure(png="figures/headline_roc.png", title=title, caption=headline_caption)],
        limitations=limitations,
    ).to_dict(),
})
