"""A reporting checklist page (``checklist.html``) in the spirit of TRIPOD+AI (Collins et al., BMJ 2024) and
CLAIM (Tejani et al., Radiology: AI 2024): each topic links to the section of this run's reports that covers it.

The topics paraphrase the guidelines' items (their numbering is not reproduced). Each names the sections that
address it: a page (a stage's clinician report, or ``index``) and the heading text there. A topic is
*reported* only when every one of its sections is on the page with content that addresses it: a table with
rows or a figure (``needs="result"``), or any shown output such as a settings sentence or a list
(``needs="text"``); the link then goes to the section's anchor (the id nbconvert gives a notebook heading, or
the id ``write_index`` gives an index section). Otherwise the row says why not: the stage did not run or
failed, or the section is absent or empty. Topics that no report of a run can address (dates of collection,
the reference standard) are *not reported* with the reason; ethics, funding and intended clinical use are the
authors' to write.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CHECKLIST", "INDEX", "ChecklistItem", "PageSection", "checklist_rows", "page_sections", "write_checklist"]

INDEX = "index"  # the page "stage" of index.html's own sections


@dataclass(frozen=True)
class ChecklistItem:
    """One checklist topic: what it asks, which guideline(s) ask for it, and the report sections (page, heading)
    that address it, all required, with the content they must show (``needs``); a topic no run reports says
    why (``unreported``) or is for the authors to write (``authors``).
    """

    topic: str
    guideline: str  # which guideline(s) ask for it
    sections: tuple[tuple[str, str], ...] = ()  # (stage or INDEX, heading text) that address it, all required
    needs: str = "result"  # "result": a table with rows or a figure; "text": any shown output
    unreported: str = ""  # no section: why no report of a run addresses it
    authors: bool = False  # no section: for the authors to write


@dataclass(frozen=True)
class PageSection:
    """A heading of an exported page: its anchor id and what its section shows (``table``, ``figure``, ``text``)."""

    anchor: str
    content: frozenset[str]


CHECKLIST: tuple[ChecklistItem, ...] = (
    ChecklistItem("Data sources and centres", "TRIPOD+AI, CLAIM", (("data_audit", "Cohort"),)),
    ChecklistItem("Dates of data collection", "TRIPOD+AI, CLAIM",
                  unreported="the manifests record no acquisition dates, so no table of this run can state when the "
                             "images were collected; the authors must state the period"),
    ChecklistItem("Eligibility criteria and excluded cases", "TRIPOD+AI, CLAIM",
                  unreported="the reports count the images that entered the study, not the inclusion criteria of the "
                             "source cohorts or the cases left out before the manifests were written"),
    ChecklistItem("Outcome / reference standard definition", "TRIPOD+AI, CLAIM",
                  unreported="the manifests give each image's label, not how it was established (histopathology, "
                             "follow-up) nor by whom; the label balance is under 'Outcome frequency per set'"),
    ChecklistItem("Outcome frequency per set (label balance)", "TRIPOD+AI, CLAIM", (("data_audit", "Splits"),)),
    ChecklistItem("Input data and preprocessing (resolution, region of interest)", "CLAIM",
                  (("teacher", "30 · Teacher"),), needs="text"),
    ChecklistItem("Sample size per set, with events", "TRIPOD+AI, CLAIM", (("data_audit", "Splits"),)),
    ChecklistItem("Missing data and how it was handled", "TRIPOD+AI", (("data_audit", "Clinical and imaging conditions"),)),
    ChecklistItem("Data partitions at patient level; leakage checks", "CLAIM",
                  (("data_audit", "Splits"), ("data_audit", "Data validation")), needs="text"),
    ChecklistItem("Synthetic data: how generated, quality, memorization", "TRIPOD+AI",
                  (("diffusion", "Training"), ("synthetic_quality", "Realism: FID, KID, precision and recall"),
                   ("synthetic_quality", "Memorization audit"))),
    ChecklistItem("Model architecture and initialisation", "TRIPOD+AI, CLAIM",
                  (("teacher", "30 · Teacher"), ("student", "40 · Student")), needs="text"),
    ChecklistItem("Training procedure and hyper-parameters", "CLAIM",
                  (("teacher", "Training runs"), ("student", "Training runs and loss terms"))),
    ChecklistItem("Model selection on validation data only", "CLAIM", (("teacher", "Training runs"),)),
    ChecklistItem("Discrimination with confidence intervals", "TRIPOD+AI, CLAIM", (("evaluation", "AUC per test set"),)),
    ChecklistItem("Calibration", "TRIPOD+AI", (("evaluation", "Calibration"),)),
    ChecklistItem("Clinical utility (decision curves)", "TRIPOD+AI", (("evaluation", "Decision curves"),)),
    ChecklistItem("Operating points chosen on validation, with CIs", "CLAIM", (("evaluation", "Operating points"),)),
    ChecklistItem("External validation and heterogeneity across centres", "TRIPOD+AI",
                  (("evaluation", "Centres and subgroups"),)),
    ChecklistItem("Performance in subgroups (fairness)", "TRIPOD+AI", (("evaluation", "Centres and subgroups"),)),
    ChecklistItem("Statistical comparison of models", "CLAIM", (("evaluation", "Paired comparison of the models"),)),
    ChecklistItem("Variability across training runs (seeds)", "CLAIM",
                  (("evaluation", "Variability across training seeds"),)),
    ChecklistItem("Comparison with readers", "CLAIM", (("reader_study", "Model versus readers (ORH)"),)),
    ChecklistItem("Model size and speed", "TRIPOD+AI", (("student", "Size and speed: teacher vs student"),)),
    ChecklistItem("Limitations", "TRIPOD+AI, CLAIM", (("summary", "Limitations"),), needs="text"),
    ChecklistItem("Reproducibility: code version, software, seeds, hardware", "TRIPOD+AI, CLAIM",
                  ((INDEX, "Provenance"),), needs="text"),
    ChecklistItem("Ethics approval, consent, funding, conflicts of interest", "TRIPOD+AI, CLAIM", authors=True),
    ChecklistItem("Intended use and users of the model", "TRIPOD+AI", authors=True,
                  unreported="the index states only the default: research and teaching, not for decisions about "
                             "patients"),
)

_HEADING = re.compile(r"<h([1-6])\b[^>]*?\bid=([\"'])(.*?)\2[^>]*>(.*?)</h\1>", re.S | re.I)
_OUTPUT = re.compile(r"class=\"[^\"]*\bjp-OutputArea-output\b[^\"]*\"[^>]*>(.*?)(?=<div class=\"jp-Cell\b|\Z)", re.S)


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", fragment)).replace("\u00b6", " ").strip()


def page_sections(page: str) -> dict[str, PageSection]:
    """The headings of an exported page that carry an id, by their text, with what each section (up to the next
    heading, so a title's section is what comes before the first subheading) shows: ``table`` (a table with a data cell), ``figure`` (an image),
    ``text`` (shown text: a notebook's outputs, not its prose; all of an index section)."""
    headings = list(_HEADING.finditer(page))
    notebook = "jp-OutputArea-output" in page
    out: dict[str, PageSection] = {}
    for k, match in enumerate(headings):
        end = headings[k + 1].start() if k + 1 < len(headings) else len(page)
        chunk = page[match.end():end]
        content = set()
        if re.search(r"<td\b", chunk, re.I):
            content.add("table")
        if re.search(r"<img\b", chunk, re.I):
            content.add("figure")
        shown = " ".join(m.group(1) for m in _OUTPUT.finditer(chunk)) if notebook else chunk
        if _text(shown):
            content.add("text")
        out.setdefault(" ".join(_text(match.group(4)).split()), PageSection(html.unescape(match.group(3)),
                                                                          frozenset(content)))
    return out


def _addresses(section: PageSection, needs: str) -> bool:
    return bool(section.content & ({"table", "figure"} if needs == "result" else {"table", "figure", "text"}))


def checklist_rows(stage_status: Mapping[str, str], notebooks: Mapping[str, str],
                   pages: Mapping[str, str]) -> list[dict[str, object]]:
    """One row per item: ``topic``, ``guideline``, ``links`` [(section words, href)], ``status`` (reported, not
    reported, not in this run, stage failed, authors) and ``reason`` (why not reported; empty when it is).
    ``pages``: file name -> HTML of the exported pages (``NN_stage.clinician.html``, ``index.html``)."""
    rows: list[dict[str, object]] = []
    for item in CHECKLIST:
        row: dict[str, object] = {"topic": item.topic, "guideline": item.guideline, "links": [], "reason": ""}
        if not item.sections:
            rows.append({**row, "status": "authors" if item.authors else "not reported",
                         "reason": item.unreported or "for the authors to write"})
            continue
        links, problems = [], []
        for stage, heading in item.sections:
            page = "index.html" if stage == INDEX else f"{notebooks.get(stage, stage)}.clinician.html"
            words = f"{page.removesuffix('.clinician.html').removesuffix('.html')}: {heading}"
            status = "ok" if stage == INDEX else stage_status.get(stage)
            if status not in ("ok", "cached"):
                problems.append(("stage failed" if status == "failed" else "not in this run",
                                 f"the {stage} stage {'failed' if status == 'failed' else 'did not run'}"))
                links.append((words, ""))
                continue
            section = page_sections(pages.get(page, "")).get(heading)
            if section is None:
                problems.append(("not reported", f"{page} has no section '{heading}'"))
                links.append((words, ""))
            elif not _addresses(section, item.needs):
                problems.append(("not reported", f"the section '{heading}' of {page} shows no "
                                 + ("table or figure" if item.needs == "result" else "content")))
                links.append((words, f"{page}#{section.anchor}"))
            else:
                links.append((words, f"{page}#{section.anchor}"))
        statuses = [status for status, _ in problems]
        status = "reported" if not problems else next(
            (s for s in ("stage failed", "not reported") if s in statuses), "not in this run")
        rows.append({**row, "links": links, "status": status, "reason": "; ".join(r for _, r in problems)})
    return rows


def write_checklist(report_dir: Path, study: str, stage_status: dict[str, str], notebooks: dict[str, str],
                    css: str) -> Path:
    """Write ``report_dir/checklist.html`` (atomically)."""
    from diffkd_study.io import write_text

    pages = {f.name: f.read_text(encoding="utf-8") for f in Path(report_dir).glob("*.html")
             if f.name == "index.html" or f.name.endswith(".clinician.html")}
    rows = checklist_rows(stage_status, notebooks, pages)

    def where(row: dict) -> str:
        shown = "<br>".join(f"<a href='{html.escape(href)}'>{html.escape(words)}</a>" if href else html.escape(words)
                            for words, href in row["links"])
        reason = f"<br><small>{html.escape(row['reason'])}</small>" if row["reason"] else ""
        return shown + reason

    body = "".join(
        f"<tr><td>{html.escape(r['topic'])}</td><td>{html.escape(r['guideline'])}</td><td>{where(r)}</td>"
        f"<td class='{str(r['status']).replace(' ', '-')}'>{html.escape(str(r['status']))}</td></tr>"
        for r in rows)
    n_reported = sum(r["status"] == "reported" for r in rows)
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
        f"<title>Reporting checklist: {html.escape(study)}</title><style>{css}</style></head><body>"
        f"<h1>Reporting checklist: {html.escape(study)}</h1>"
        "<p class='caption'>Topics of the TRIPOD+AI (Collins et al., BMJ 2024) and CLAIM 2024 (Tejani et al., "
        "Radiology: Artificial Intelligence 2024) guidelines, paraphrased, each linked to the section of this run's "
        f"reports that covers it. {n_reported} of {len(rows)} topics are reported by this run (their section is "
        "there and shows a result); 'not reported' says why, 'authors' marks what no automated run can report.</p>"
        "<p><a href='index.html'>Back to the study overview</a></p>"
        "<table class='checklist'><tr><th>topic</th><th>guideline</th><th>where</th><th>status</th></tr>" + body + "</table>"
        "</body></html>")
    path = report_dir / "checklist.html"
    write_text(path, page)
    return path
