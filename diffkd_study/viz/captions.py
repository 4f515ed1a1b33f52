"""Words of the figures: one plain-language caption template per figure for the clinician report
(``CAPTIONS``, filled by ``caption``), and the legend texts the figures share (``auc_label``).

``fill_caption`` fills any such template dictionary; the method packages use it for their own
captions.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping
from typing import Any

import numpy as np

from diffkd_study.metrics.calibration import CalibrationSummary
from diffkd_study.metrics.roc import AUCResult
from diffkd_study.nbutil import format_p

# Placeholders: {test_set} (e.g. "the external test set of centre B"), {n} (cases), {n_pos} (cases
# with the condition), {condition} (e.g. "malignancy"), {model}. ``caption`` fills them.
CAPTIONS: dict[str, str] = {
    "roc": (
        "Receiver operating characteristic (ROC) curves of the compared models on {test_set} ({n} cases, "
        "{n_pos} with {condition}). Each curve traces, over every possible cut-off of a model's score, the "
        "proportion of cases with {condition} that the model flags (sensitivity, vertical axis) against the "
        "proportion of cases without {condition} that it flags wrongly (1 - specificity, horizontal axis); "
        "curves closer to the top-left corner are better, and the dashed diagonal is what guessing would "
        "achieve. The shaded areas show, at each false-positive rate, the range of sensitivities compatible "
        "with the data (95% pointwise bootstrap bands). The legend gives each model's area under the curve "
        "(AUC; 1.0 means perfect separation, 0.5 chance) with its 95% confidence interval (DeLong method; where the "
        "legend counts patients, clustered by patient, so that a patient's several images are not counted as "
        "independent evidence) and the number of cases. Where markers are shown, each is one reader's sensitivity and 1 - specificity "
        "at their own recall decisions, with 95% confidence bars; readers labelled 'simulated' come from a "
        "computer model of reader behaviour, not from real radiologists."
    ),
    "auc_forest": (
        "Area under the ROC curve (AUC) of each model on each test set: the internal test set (new patients "
        "from the training centres) and each external centre (patients from a centre never seen in "
        "training). A point is the AUC (1.0 means perfect separation of cases with and without {condition}, "
        "0.5 chance) and its horizontal bar the 95% confidence interval (DeLong method clustered by patient: "
        "each patient, not each image, counts as one independent case); the columns on the right repeat the "
        "numbers with the number of images and, in brackets, of images with {condition}. Wide bars come from few "
        "patients. A drop from the internal to an external test set means that performance "
        "does not fully carry over to other centres, scanners or patient populations."
    ),
    "calibration": (
        "Calibration of the predicted probabilities of {condition} on {test_set} ({n} cases, {n_pos} with "
        "{condition}). Cases are grouped by their predicted probability; each point is a group's average "
        "prediction against the proportion of its cases that had {condition}, with a 95% confidence bar, and "
        "the line is a smoothed version of the same relation. On the dotted diagonal a predicted risk of, "
        "say, 20% means {condition} in about 20 of 100 such patients; below the diagonal the model "
        "overestimates the risk, above it underestimates. The legend gives the calibration intercept (0 is "
        "ideal; negative means the predicted risks are too high on average), the calibration slope (1 is "
        "ideal; below 1 means the predictions are too extreme) and the Brier score (the mean squared error "
        "of the predicted probabilities; lower is better). The histogram below shows how the predictions "
        "are spread."
    ),
    "decision_curves": (
        "Decision curves on {test_set} ({n} cases, {n_pos} with {condition}). The horizontal axis is the "
        "threshold probability: the risk of {condition} above which one would act (for example biopsy); it "
        "states how many unnecessary interventions one accepts per case found (at 20%, one case found is "
        "worth four unnecessary interventions). The vertical axis is the net benefit: the cases with "
        "{condition} correctly acted on per patient, minus the unnecessary interventions weighted by that "
        "exchange rate. A model is useful over the range of thresholds where its curve lies above both "
        "'treat all' (act on every patient) and 'treat none' (act on no patient, net benefit 0)."
    ),
    "confusion": (
        "Confusion matrix of {model} on {test_set} ({n} cases) at the decision threshold fixed beforehand "
        "on validation data. Rows are the true diagnosis and columns the model's call; each cell gives the "
        "number of cases and, below it, their percentage of the row. The diagonal cells are correct calls, "
        "so their percentages are the proportion of each true class recognised correctly (with two classes, "
        "the sensitivity for {condition} and the specificity); the other cells are errors: missed cases "
        "(false negatives) and false alarms (false positives)."
    ),
    "loss_curves": (
        "Training curves of {model}. Each panel shows one term of the training objective (for example the "
        "classification loss, the distillation losses and their weighted total) against training progress, "
        "on the training data and on the validation data. Falling curves show that the model is learning; a "
        "validation curve that rises while the training curve keeps falling suggests overfitting. Where "
        "several training runs with different random seeds are shown, the line is their mean and the shaded "
        "area one standard deviation either side. These curves document how the model was trained; they do "
        "not measure diagnostic performance."
    ),
    "reader_study": (
        "Diagnostic accuracy of individual readers and of the model on the same {n} cases ({n_pos} with "
        "{condition}). Each marker is one reader's area under the ROC curve (AUC, from their confidence "
        "ratings; 1.0 means perfect separation, 0.5 chance), grouped by experience, with a 95% confidence "
        "bar; the black bar next to each group marks the group's mean AUC, with its 95% confidence interval "
        "where available (Obuchowski-Rockette-Hillis method, which allows for the variability of both "
        "readers and cases). Each horizontal line with its shaded band is a model's AUC with its 95% "
        "confidence interval. Readers labelled 'simulated' come from a computer model of reader behaviour, "
        "not from real radiologists."
    ),
}


def fill_caption(captions: Mapping[str, str], kind: str, **fields: Any) -> str:
    """``captions[kind]`` with its placeholders filled; every placeholder must be given, and no other."""
    if kind not in captions:
        raise ValueError(f"no caption {kind!r}; captions exist for {sorted(captions)}")
    template = captions[kind]
    needed = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    missing, unknown = sorted(needed - fields.keys()), sorted(fields.keys() - needed)
    if missing or unknown:
        raise ValueError(
            f"caption {kind!r} takes the fields {sorted(needed)}; missing {missing}, not used {unknown}"
        )
    return template.format(**fields)


def caption(kind: str, **fields: Any) -> str:
    """``CAPTIONS[kind]`` with its placeholders filled; every placeholder must be given, and no other."""
    return fill_caption(CAPTIONS, kind, **fields)


def _ci_text(low: float, high: float, level: float, digits: int = 3) -> str:
    return f"{level:.0%} CI {low:.{digits}f}\u2013{high:.{digits}f}"


def _p_text(p: float) -> str:
    """``= 0.042`` or ``< 0.001``: a p-value after the letter p, never ``0.000``."""
    shown = format_p(p)
    return shown if shown.startswith("<") else f"= {shown}"


def _difference_text(estimate: float, low: float, high: float, level: float) -> str:
    return f"{estimate:+.3f} ({level:.0%} CI {low:+.3f} to {high:+.3f})"


def auc_label(name: str, result: AUCResult, ci: bool = True, *, constant: bool = False) -> str:
    """Legend text "name: AUC 0.873 (95% CI 0.821-0.912); n=200 (80 positive)", or with a patient-clustered
    result (``result.n_clusters`` set) "...; n=200 images of 150 patients (80 positive)".

    ``constant``: every score is the same, so the AUC is 0.5 by construction and its interval has no
    width; the legend says so instead of showing a zero-width interval.
    """
    interval = f" ({_ci_text(result.ci_low, result.ci_high, result.level)})" if ci else ""
    if constant:
        interval = " (every score equal: no discrimination)"
    patients = "" if result.n_clusters is None else f" images of {result.n_clusters} patients"
    return f"{name}: AUC {result.auc:.3f}{interval}; n={result.n}{patients} ({result.n_pos} positive)"


def _reader_label(group: str, n_readers: int, simulated: bool) -> str:
    who = "simulated readers" if simulated else "readers"
    return f"{who}: {group} (n={n_readers})"


def _calibration_label(name: str, summary: CalibrationSummary) -> str:
    cal, brier, p = summary.calibration, summary.brier, summary.y_prob
    intercept = f"intercept {cal.intercept:+.2f} ({cal.intercept_ci[0]:+.2f} to {cal.intercept_ci[1]:+.2f})"
    if np.ptp(p) == 0:
        slope = f"slope not estimable (every prediction is {p[0]:.2f})"
    elif math.isnan(cal.slope):
        slope = "slope not estimable"
    else:
        slope = f"slope {cal.slope:.2f} ({cal.slope_ci[0]:.2f} to {cal.slope_ci[1]:.2f})"
    return f"{name}\n{intercept}, {slope}, Brier {brier.brier:.3f}"
