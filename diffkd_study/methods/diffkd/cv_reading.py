"""What a cross-validation study can and cannot conclude, read from its pooled tables by rules fixed before the
results (``55_cv_pooled`` shows the table and puts it first in the study's index section).

One row per question, each with what was measured, a verdict (:data:`CAN` or :data:`CANNOT`) and the reading in
words. The rules:

* **Realism of the synthetic images**: both goals of the DiffKD audit hold in every fold (TF-Inception FID at
  most :data:`FID_RATIO_GOAL` times the real-vs-real floor; real-vs-synthetic two-sample AUC at most
  :data:`TWO_SAMPLE_GOAL`), else an effect of training on them cannot be credited to realistic images.
* **Planned comparisons** (fold-stratified, Holm-adjusted): a difference is concluded when Holm's p is below
  ``1 - level``; otherwise the reading names the largest difference the interval leaves open. A difference that
  involves a model trained on or distilled from synthetic images says, when the realism rule failed, that it
  cannot be credited to realistic synthesis.
* **Box geometry**: per test set, every image network's interval entirely below (or above) the baseline's AUC;
  otherwise the counts above, below and not distinguishable.
* **Without the expert outline**: the teacher's goal rows (external test set, else internal): within the margin
  with confidence, on the point estimate only, or beyond it with confidence.
* **Against the radiologists' BI-RADS**, in the outline-free modes: every interval below (or above) zero.
* **Seeds and centres**: one seed per fit, or one external centre, limit what can be concluded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from diffkd_study.methods.diffkd.evaluate import model_descriptions
from diffkd_study.metrics.two_sample import C2ST_GOAL

__all__ = ["CAN", "CANNOT", "COLUMNS", "FID_RATIO_GOAL", "TWO_SAMPLE_GOAL", "study_reading", "uses_synthetic"]

CAN, CANNOT = "can conclude", "cannot conclude"
#: The audit's goals for the synthetic images (issue 25): FID within 2x the real-vs-real floor, and a
#: real-vs-synthetic two-sample AUC of at most the two-sample test's own goal (:data:`C2ST_GOAL`, 0.70).
FID_RATIO_GOAL, TWO_SAMPLE_GOAL = 2.0, C2ST_GOAL
COLUMNS = ["question", "measured", "verdict", "reading"]
_NETWORKS = ("teacher", "student")
_MODES = {"-jittered": "a rough box around the lesion", "-whole": "the whole image"}


def uses_synthetic(model: str) -> bool:
    """Whether a model was trained on synthetic images or distilled from a teacher that was (the DiffKD students)."""
    return "syn" in model or model.startswith("student_diffkd")


def _finite(table: pd.DataFrame, *columns: str) -> pd.DataFrame:
    if table is None or table.empty or any(c not in table for c in columns):
        return pd.DataFrame(columns=list(columns))
    values = table[list(columns)].apply(pd.to_numeric, errors="coerce")
    return table[np.isfinite(values.to_numpy(dtype=float)).all(axis=1)]


def _span(values: pd.Series, fmt: str) -> str:
    low, high = format(float(values.min()), fmt), format(float(values.max()), fmt)
    return low if low == high else f"{low}-{high}"


def _diff(row: pd.Series) -> str:
    return f"{row['difference']:+.3f} ({row['ci_low']:+.3f} to {row['ci_high']:+.3f})"


def _realism(fidelity: pd.DataFrame, two_sample: pd.DataFrame) -> tuple[dict | None, bool | None]:
    fid = _finite(fidelity, "FID", "FID floor")
    if not fid.empty and "extractor" in fid and fid["extractor"].astype(str).str.startswith("TF").any():
        fid = fid[fid["extractor"].astype(str).str.startswith("TF")]
    fid = fid[fid["FID floor"].astype(float) > 0]
    two = _finite(two_sample, "auc")
    if not two.empty and "scope" in two:
        two = two[two["scope"] == "all"]
    if fid.empty and two.empty:
        return None, None
    measured, failed = [], []
    if not fid.empty:
        ratio = fid["FID"].astype(float) / fid["FID floor"].astype(float)
        measured.append(f"FID {_span(ratio, '.1f')}x the real-vs-real floor (goal at most {FID_RATIO_GOAL:g}x)")
        if ratio.max() > FID_RATIO_GOAL:
            failed.append("the FID goal")
    if not two.empty:
        measured.append(f"real-vs-synthetic two-sample AUC {_span(two['auc'].astype(float), '.3f')} "
                        f"(goal at most {TWO_SAMPLE_GOAL:.2f})")
        if two["auc"].astype(float).max() > TWO_SAMPLE_GOAL:
            failed.append("the two-sample goal (a classifier tells them from real images)")
    folds = fid["fold"].nunique() if "fold" in fid and not fid.empty else two.get("fold", pd.Series()).nunique()
    row = {"question": "Are the synthetic images realistic?",
           "measured": "; ".join(measured) + (f", over {folds} folds" if folds else "")}
    if failed:
        return {**row, "verdict": CANNOT,
                "reading": "That realistic synthetic images help or harm: the synthetic images fail "
                           + " and ".join(failed) + ", so an effect of training on them may come from what sets "
                           "them apart, not from realistic content."}, False
    return {**row, "verdict": CAN, "reading": "The synthetic images pass both realism checks in every fold: an effect "
                                              "of training on them is not explained by a cue that tells them apart."}, True


def _comparisons(stratified: pd.DataFrame, realistic: bool | None, level: float) -> list[dict]:
    rows = []
    if stratified is None or stratified.empty:
        return rows
    words = model_descriptions(list(pd.unique(pd.concat([stratified["model_a"], stratified["model_b"]]))))
    for _, r in stratified.iterrows():
        a, b = r["model_a"], r["model_b"]
        question = f"Does the {words[a]} differ from the {words[b]}?"
        if not np.isfinite(float(r.get("difference", np.nan))):
            rows.append({"question": question, "measured": str(r.get("note") or "not estimable"), "verdict": CANNOT,
                         "reading": "Any difference: it could not be estimated."})
            continue
        measured = (f"A minus B {_diff(r)} AUC within folds (per fold {r.get('fold_differences', '')}); "
                    f"Holm p {float(r['p_holm']):.3g}")
        if float(r["p_holm"]) < 1 - level:
            better = "better" if r["difference"] > 0 else "worse"
            reading = f"The first is {better} by {abs(r['difference']):.3f} AUC, within folds on the internal patients."
            if realistic is not True and (uses_synthetic(a) or uses_synthetic(b)):
                reading += (" It cannot be credited to realistic synthetic images: they fail the realism checks."
                            if realistic is False else " The synthetic images' realism was not audited in these folds.")
            rows.append({"question": question, "measured": measured, "verdict": CAN, "reading": reading})
        else:
            reach = max(abs(float(r["ci_low"])), abs(float(r["ci_high"])))
            rows.append({"question": question, "measured": measured, "verdict": CANNOT,
                         "reading": f"A difference: the interval includes 0, and differences up to {reach:.3f} AUC "
                                    "either way are not excluded."})
    return rows


def _geometry(geometry: pd.DataFrame) -> list[dict]:
    table = _finite(geometry, "auc", "auc_box_geometry", "difference", "ci_low", "ci_high")
    rows = []
    for test_set, part in table.groupby("test_set", sort=False) if not table.empty else []:
        nets = part[part["model"].astype(str).str.startswith(_NETWORKS)]
        if nets.empty:
            continue
        below, above = (nets["ci_high"] < 0).sum(), (nets["ci_low"] > 0).sum()
        measured = (f"box geometry AUC {float(part['auc_box_geometry'].iloc[0]):.3f}; {len(nets)} networks "
                    f"{_span(nets['auc'], '.3f')}; network minus geometry {nets['difference'].min():+.3f} to "
                    f"{nets['difference'].max():+.3f}")
        question = f"Do the image networks beat the lesion box's shape alone ({test_set})?"
        if below == len(nets):
            rows.append({"question": question, "measured": measured, "verdict": CAN,
                         "reading": "No: every image network is below the box's shape, size and position alone, so "
                                    "their accuracy does not show that they read more than the box."})
        elif above == len(nets):
            rows.append({"question": question, "measured": measured, "verdict": CAN,
                         "reading": "Yes: every image network is above the box-geometry baseline."})
        else:
            rows.append({"question": question, "measured": measured, "verdict": CANNOT,
                         "reading": f"That the networks as a group beat it or not: {above} above, {below} below, "
                                    f"{len(nets) - above - below} not distinguishable from it."})
    return rows


def _outline_free(goals: pd.DataFrame, level: float) -> list[dict]:
    table = _finite(goals, "difference", "ci_low", "ci_high", "margin")
    if table.empty or "goal" not in table:
        return []
    table = table[table["goal"].astype(str).str.startswith("without the expert outline")
                  & table["model_a"].astype(str).str.startswith("teacher")]
    external = table[table["test_set"].astype(str).str.startswith("external")]
    table = external if not external.empty else table
    rows = []
    for _, r in table.iterrows():
        margin = float(r["margin"])
        mode = next((words for suffix, words in _MODES.items() if str(r["model_b"]).endswith(suffix)), r["model_b"])
        question = f"Does the teacher keep its AUC ({r['test_set']}) without the expert outline, on {mode}?"
        measured = f"outline crop minus this mode {_diff(r)} AUC; goal within {margin:.2f}"
        if r["ci_high"] <= margin:
            verdict, reading = CAN, f"Yes: within {margin:.2f} AUC with {level:.0%} confidence."
        elif r["difference"] <= margin:
            verdict, reading = CANNOT, (f"That it stays within {margin:.2f}: it does on the point estimate, but the "
                                        f"interval reaches {r['ci_high']:+.3f}.")
        elif r["ci_low"] > margin:
            verdict, reading = CAN, f"No: it loses more than {margin:.2f} AUC without the outline."
        else:
            verdict, reading = CANNOT, (f"That it stays within {margin:.2f}: the point estimate is beyond it, the "
                                        "interval includes it.")
        rows.append({"question": question, "measured": measured, "verdict": verdict, "reading": reading})
    return rows


def _birads(reader_mode: pd.DataFrame) -> list[dict]:
    table = _finite(reader_mode, "difference", "ci_low", "ci_high")
    rows = []
    for test_set, part in table.groupby("test_set", sort=False) if not table.empty else []:
        question = f"Without the expert outline, do the networks match the radiologists' BI-RADS ({test_set})?"
        measured = (f"{len(part)} networks, model minus BI-RADS {part['difference'].min():+.3f} to "
                    f"{part['difference'].max():+.3f}")
        if (part["ci_high"] < 0).all():
            verdict, reading = CAN, "No: every one is below the radiologists' BI-RADS on the same images."
        elif (part["ci_low"] > 0).all():
            verdict, reading = CAN, "Every one is above the radiologists' BI-RADS on the same images."
        else:
            verdict, reading = CANNOT, "A uniform answer: some intervals include 0."
        rows.append({"question": question, "measured": measured, "verdict": verdict, "reading": reading})
    return rows


def _seeds(seeds: pd.DataFrame) -> list[dict]:
    if seeds is None or seeds.empty or "n_seeds" not in seeds:
        return []
    n = int(pd.to_numeric(seeds["n_seeds"], errors="coerce").max())
    question = "How much does the training seed move a result?"
    if n <= 1:
        return [{"question": question, "measured": "one seed per fit", "verdict": CANNOT,
                 "reading": "How much of any difference above is the seed's own variation: it was not measured."}]
    sd = pd.to_numeric(seeds.get("seed_auc_sd"), errors="coerce")
    return [{"question": question, "measured": f"{n} seeds per fit; SD of the per-seed AUC up to {sd.max():.3f}",
             "verdict": CAN, "reading": "The seed's own variation is measured and shown beside each model."}]


def _centres(external_sets: Sequence[str]) -> list[dict]:
    sets = list(external_sets)
    question = "Does the result hold at other centres?"
    if not sets:
        return [{"question": question, "measured": "no external test set", "verdict": CANNOT,
                 "reading": "Anything beyond the training centre's own patients."}]
    return [{"question": question, "measured": f"{len(sets)} external set(s): " + ", ".join(sets),
             "verdict": CANNOT if len(sets) == 1 else CAN,
             "reading": ("Beyond that one external centre: one centre's devices and patients are one sample."
                         if len(sets) == 1 else "Across the external centres listed; not beyond them.")}]


def study_reading(*, stratified: pd.DataFrame, goals: pd.DataFrame, synthetic_fidelity: pd.DataFrame,
                  synthetic_two_sample: pd.DataFrame, geometry: pd.DataFrame, reader_mode: pd.DataFrame,
                  seeds: pd.DataFrame, external_sets: Sequence[str], level: float = 0.95) -> pd.DataFrame:
    """The study's reading (:data:`COLUMNS`), one row per question, by the rules of this module's docstring, from
    the tables ``55_cv_pooled`` computes: the fold-stratified planned comparisons
    (:func:`~diffkd_study.methods.diffkd.cv.fold_stratified_pairs`), the goals, the per-fold synthetic audits
    (:func:`~diffkd_study.methods.diffkd.cv.synthetic_summaries`), the box-geometry reference, the outline-free
    models against BI-RADS, the seed table and the names of the external test sets. A question whose table is
    empty (no synthetic images, no baseline) has no row."""
    realism, realistic = _realism(synthetic_fidelity, synthetic_two_sample)
    rows = ([realism] if realism else []) + _comparisons(stratified, realistic, level) + _geometry(geometry) \
        + _outline_free(goals, level) + _birads(reader_mode) + _seeds(seeds) + _centres(external_sets)
    return pd.DataFrame(rows, columns=COLUMNS)
