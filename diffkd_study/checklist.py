"""A reporting checklist page (``checklist.html``) in the spirit of TRIPOD+AI (Collins et al., BMJ 2024) and
CLAIM (Tejani et al., Radiology: AI 2024): each topic links to the page of this run that reports it.

The topics paraphrase the guidelines' items (their numbering is not reproduced); a topic is *reported*
when the stage that covers it ran in this study (``ok`` or re-used), else it is listed as not reported,
so a reviewer sees at once what the run does not cover. Items that no automated run can fill (ethics
approval, funding, intended clinical use) are listed as the author's to write.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CHECKLIST", "ChecklistItem", "checklist_rows", "write_checklist"]


@dataclass(frozen=True)
class ChecklistItem:
    topic: str
    guideline: str  # which guideline(s) ask for it
    stage: str | None  # the stage whose report covers it; None: the authors must write it
    section: str  # where in that report


CHECKLIST: tuple[ChecklistItem, ...] = (
    ChecklistItem("Data sources, centres, dates of collection", "TRIPOD+AI, CLAIM", "data_audit", "Cohort table"),
    ChecklistItem("Eligibility criteria and excluded cases", "TRIPOD+AI, CLAIM", "data_audit", "Splits"),
    ChecklistItem("Outcome / reference standard definition", "TRIPOD+AI, CLAIM", "data_audit", "Label balance"),
    ChecklistItem("Input data and preprocessing (resolution, normalisation)", "CLAIM", "teacher", "Teacher settings"),
    ChecklistItem("Sample size per set, with events", "TRIPOD+AI, CLAIM", "data_audit", "Splits"),
    ChecklistItem("Missing data and how it was handled", "TRIPOD+AI", "data_audit", "Condition tables"),
    ChecklistItem("Data partitions at patient level; leakage checks", "CLAIM", "data_audit", "Validation results"),
    ChecklistItem("Synthetic data: how generated, quality, memorization", "TRIPOD+AI", "synthetic_quality",
                  "FID/KID against the floor; memorization audit"),
    ChecklistItem("Model architecture and initialisation", "TRIPOD+AI, CLAIM", "teacher", "Teacher and student settings"),
    ChecklistItem("Training procedure and hyper-parameters", "CLAIM", "student", "Training runs and loss terms"),
    ChecklistItem("Model selection on validation data only", "CLAIM", "teacher", "Training runs"),
    ChecklistItem("Discrimination with confidence intervals", "TRIPOD+AI, CLAIM", "evaluation", "AUC per test set"),
    ChecklistItem("Calibration", "TRIPOD+AI", "evaluation", "Calibration"),
    ChecklistItem("Clinical utility (decision curves)", "TRIPOD+AI", "evaluation", "Decision curves"),
    ChecklistItem("Operating points chosen on validation, with CIs", "CLAIM", "evaluation", "Operating points"),
    ChecklistItem("External validation and heterogeneity across centres", "TRIPOD+AI", "evaluation",
                  "Centres and subgroups"),
    ChecklistItem("Performance in subgroups (fairness)", "TRIPOD+AI", "evaluation", "Centres and subgroups"),
    ChecklistItem("Statistical comparison of models", "CLAIM", "evaluation", "Paired comparison; partial combinations"),
    ChecklistItem("Variability across training runs (seeds)", "CLAIM", "evaluation", "Variability across training seeds"),
    ChecklistItem("Comparison with readers", "CLAIM", "reader_study", "ORH multi-reader multi-case analysis"),
    ChecklistItem("Model size and speed", "TRIPOD+AI", "student", "Size and speed"),
    ChecklistItem("Limitations", "TRIPOD+AI, CLAIM", "summary", "Limitations"),
    ChecklistItem("Reproducibility: code version, software, seeds, hardware", "TRIPOD+AI, CLAIM", None,
                  "provenance.json and the provenance banner of every report"),
    ChecklistItem("Ethics approval, consent, funding, conflicts of interest", "TRIPOD+AI, CLAIM", None,
                  "for the authors to write"),
    ChecklistItem("Intended use and users of the model", "TRIPOD+AI", None, "for the authors to write"),
)


def checklist_rows(stage_status: dict[str, str], notebooks: dict[str, str]) -> list[dict[str, str]]:
    """One row per item: topic, guideline, where (a link target or text) and status."""
    rows = []
    for item in CHECKLIST:
        if item.stage is None:
            reproducible = item.section.startswith("provenance")
            rows.append({"topic": item.topic, "guideline": item.guideline, "where": item.section,
                         "link": "provenance.json" if reproducible else "",
                         "status": "reported" if reproducible else "authors"})
            continue
        status = stage_status.get(item.stage)
        ran = status in ("ok", "cached")
        rows.append({"topic": item.topic, "guideline": item.guideline,
                     "where": f"{notebooks.get(item.stage, item.stage)}: {item.section}",
                     "link": f"{notebooks[item.stage]}.clinician.html" if ran else "",
                     "status": "reported" if ran else ("stage failed" if status == "failed" else "not in this run")})
    return rows


def write_checklist(report_dir: Path, study: str, stage_status: dict[str, str], notebooks: dict[str, str],
                    css: str) -> Path:
    """Write ``report_dir/checklist.html`` (atomically)."""
    from diffkd_study.io import write_text

    rows = checklist_rows(stage_status, notebooks)
    body = "".join(
        f"<tr><td>{html.escape(r['topic'])}</td><td>{html.escape(r['guideline'])}</td><td>"
        + (f"<a href='{html.escape(r['link'])}'>{html.escape(r['where'])}</a>" if r["link"] else html.escape(r["where"]))
        + f"</td><td class='{r['status'].replace(' ', '-')}'>{html.escape(r['status'])}</td></tr>"
        for r in rows)
    n_reported = sum(r["status"] == "reported" for r in rows)
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
        f"<title>Reporting checklist: {html.escape(study)}</title><style>{css}</style></head><body>"
        f"<h1>Reporting checklist: {html.escape(study)}</h1>"
        "<p class='caption'>Topics of the TRIPOD+AI (Collins et al., BMJ 2024) and CLAIM 2024 (Tejani et al., "
        "Radiology: Artificial Intelligence 2024) guidelines, paraphrased, each linked to the report of this run "
        f"that covers it. {n_reported} of {len(rows)} topics are reported by this run; 'authors' marks what no "
        "automated run can report.</p>"
        "<p><a href='index.html'>Back to the study overview</a></p>"
        "<table><tr><th>topic</th><th>guideline</th><th>where</th><th>status</th></tr>" + body + "</table>"
        "</body></html>")
    path = report_dir / "checklist.html"
    write_text(path, page)
    return path
