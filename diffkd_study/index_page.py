"""The run's ``index.html``: the study at a glance, the stages with their links and status, each stage's
index section (:class:`~diffkd_study.stage_output.IndexSection`, read from its metrics JSON), the cohort and
the provenance; ``checklist.html`` beside it.

Self-contained pages: figures are relative PNG files of the report folder, styles inline, no script and nothing
fetched from the network.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from diffkd_study.config import StudyConfig
from diffkd_study.io import write_text
from diffkd_study.nbutil import P_VALUE_COLUMNS, format_p, human_column
from diffkd_study.stage_output import IndexSection, StageResult
from diffkd_study.stages import POOLED_STAGE, STAGE_NOTEBOOKS

__all__ = ["NO_FAVICON", "anchor_id", "write_index"]

# an empty inline icon: browsers then request no /favicon.ico (a 404 on any static server)
NO_FAVICON = "<link rel='icon' href='data:,'>"

PAGE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em} th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.ok,.cached{color:#1a7f37;font-weight:600} .failed{color:#c62828;font-weight:600} .skipped{color:#8a6d00;font-weight:600}
.prov{background:#f8f8f8;border:1px solid #e3e3e3;padding:.6em 1em;font-size:.85em}
.caption{color:#555;font-size:.9em;max-width:900px} img{max-width:100%;border:1px solid #eee}
.warn{background:#fff4e5;border-left:4px solid #f0a030;padding:.5em 1em}
.headline h2{margin-top:.6em;border:none} .headline li{margin:.4em 0} .banner{font-size:1.05em}
.missing{color:#8a6d00}
.reported{color:#1a7f37;font-weight:600} .not-reported,.stage-failed{color:#c62828;font-weight:600}
.not-in-this-run,.authors{color:#8a6d00;font-weight:600} table.checklist td{text-align:left}
"""


def anchor_id(title: str) -> str:
    """The id of an index section's heading: 'The study at a glance' -> 'the-study-at-a-glance'."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


def _index_cell(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if column in P_VALUE_COLUMNS and isinstance(value, int | float):
        return format_p(float(value))
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3f}"
    return str(value)


def _table_html(records: list[dict[str, Any]]) -> str:
    """A table of the index: human column names, numbers to 3 decimals, p-values never 0.000, and a sentence
    instead of an empty table."""
    if not records:
        return "<p class='caption'>Nothing to show: this run produced no rows for this table.</p>"
    columns = list(records[0])
    head = "".join(f"<th>{html.escape(human_column(str(c)))}</th>" for c in columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_index_cell(str(c), r.get(c)))}</td>" for c in columns) + "</tr>"
        for r in records
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


def _provenance_html(provenance: dict[str, Any]) -> str:
    git = provenance.get("git", {})
    hw = provenance.get("hardware", {})
    pk = provenance.get("packages", {})
    dirty = {True: " (uncommitted changes)", False: "", None: ""}[git.get("dirty")]
    items = [
        ("config", provenance.get("config_path")),
        ("seed", provenance.get("seed")),
        ("git commit", f"{git.get('sha') or 'not a git checkout'}{dirty}"),
        ("started / finished", f"{provenance.get('started')} / {provenance.get('finished', 'running')}"),
        ("wall time", f"{provenance.get('wall_s', '?')} s"),
        ("machine", f"{hw.get('platform')}, {hw.get('cpu_count')} CPUs, {hw.get('memory_gb')} GB RAM, "
                    f"GPU: {', '.join(hw.get('gpus') or []) or 'none'}"),
        ("packages", ", ".join(f"{k} {v}" for k, v in pk.items() if v)),
        ("inputs sha256", "; ".join(f"{k}: {v[:16]}…" for k, v in provenance.get("inputs_sha256", {}).items())),
    ]
    rows = "".join(f"<div><b>{html.escape(k)}:</b> {html.escape(str(v))}</div>" for k, v in items)
    return (f'<h2 id="provenance">Provenance</h2><div class="prov">{rows}'
            '<div>full record: <a href="provenance.json">provenance.json</a></div></div>')


def _section_html(section: IndexSection) -> str:
    """A stage's part of the index, as its notebook wrote it in the metrics JSON under ``index_section``: the
    title, the paragraphs, the tables (title, caption, records), the figures and the limitations."""
    parts = [f"<h2 id='{anchor_id(section.title)}'>{html.escape(section.title)}</h2>"]
    parts += [f"<p>{html.escape(p)}</p>" for p in section.text]
    for table in section.tables or []:
        parts.append(f"<h3>{html.escape(table.title)}</h3>")
        if table.caption:
            parts.append(f"<p class='caption'>{html.escape(table.caption)}</p>")
        parts.append(_table_html(table.records))
    for fig in section.figures or []:
        parts.append(f"<figure><img src='{html.escape(fig.png)}' alt='{html.escape(fig.title)}'>"
                     f"<figcaption class='caption'>{html.escape(fig.caption)}</figcaption></figure>")
    if section.limitations:
        parts.append("<h3>Limitations</h3><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in section.limitations)
                     + "</ul>")
    return "\n".join(parts)


def _cohort_html(metrics: dict[str, Any]) -> list[str]:
    parts = ["<h2 id='cohort'>Cohort</h2>", f"<p class='caption'>{html.escape(metrics.get('caption_cohort', ''))}</p>",
             _table_html(metrics.get("cohort_table", [])), "<h3>Splits</h3>" + _table_html(metrics.get("split_table", []))]
    validation = metrics.get("validation", {})
    parts.append(f"<p>Data validation: {validation.get('n_errors', '?')} error(s), {validation.get('n_warnings', '?')} "
                 f"warning(s) over {validation.get('n_rows', '?')} images.</p>")
    for fig in metrics.get("headline_figures", []):
        parts.append(f"<figure><img src='{html.escape(fig['png'])}' alt='{html.escape(fig['title'])}'>"
                     f"<figcaption class='caption'>{html.escape(fig['caption'])}</figcaption></figure>")
    return parts


def _headline_box_html(config: StudyConfig, results: list[StageResult]) -> str:
    """The box the index starts with: the summary stage's headline, else one from the evaluation metrics, else
    a sentence saying which stage is missing; the simulated-data banner whenever the cohort is the phantom."""
    from diffkd_study.summary import headline_from_evaluation, headline_html

    simulated = config.data.phantom is not None
    by_stage = {r.stage: r for r in results}
    summary, evaluation = by_stage.get("summary"), by_stage.get("evaluation")
    if summary is not None and summary.status in ("ok", "cached") and summary.metrics.get("headline_box"):
        return headline_html(summary.metrics["headline_box"], simulated=simulated)
    headline = None
    if evaluation is not None and evaluation.status in ("ok", "cached"):
        headline = headline_from_evaluation(evaluation.metrics, simulated=simulated)

    def why(stage: str, result: StageResult | None) -> str:
        if result is None:
            return f"the study has no {stage} stage"
        if result.status in ("ok", "cached"):
            return f"the {stage} stage wrote no headline numbers"
        if result.status == "failed":
            return f"the {stage} stage failed"
        return f"the {stage} stage was not run" + (f" ({result.error.removeprefix('not run: ')})" if result.error else "")

    missing = (f"No headline numbers: {why('summary', summary)} and {why('evaluation', evaluation)}. Add or fix "
               "these stages (they need a stage that writes predictions: baselines, teacher or student) and run "
               "the study again.")
    return headline_html(headline, simulated=simulated, missing=missing)


def _cv_headline_html(config: StudyConfig, results: list[StageResult]) -> str:
    """A cross-validation study's headline box, from the pooled stage (``summary.headline_from_cv``), or a
    sentence saying why it has none."""
    from diffkd_study.summary import headline_from_cv, headline_html

    simulated = config.data.phantom is not None
    pooled = next((r for r in results if r.stage == POOLED_STAGE), None)
    ok = pooled is not None and pooled.status in ("ok", "cached")
    headline = headline_from_cv(pooled.metrics, simulated=simulated) if ok else None
    missing = ("No headline numbers: " + ("the pooled stage wrote no AUC." if ok else
               "the pooled stage has not run (run every fold, then the same command without --fold)."))
    return headline_html(headline, simulated=simulated, missing=missing)


def _folds_html(report_dir: Path, config: StudyConfig) -> str:
    """A cross-validation study's box: one row per fold (the status of its stages, its wall time and a link to
    its index page, read from ``fold-k/provenance.json``) and a sentence on what the pooled report below holds."""
    rows = []
    for fold in range(1, config.cv.folds + 1):
        folder = f"fold-{fold}"
        record = report_dir / folder / "provenance.json"
        stages = json.loads(record.read_text(encoding="utf-8")).get("stages", []) if record.is_file() else []
        failed = [s["stage"] for s in stages if s.get("status") == "failed"]
        status = ("not run" if not stages else f"failed ({', '.join(failed)})" if failed
                  else f"{len(stages)} stage(s) ok")
        wall = sum(float(s.get("wall_s") or 0.0) for s in stages)
        link = (f"<a href='{folder}/index.html'>{folder}/index.html</a>" if (report_dir / folder / "index.html").is_file()
                else "-")
        rows.append(f"<tr><td>{folder}</td><td>{html.escape(status)}</td><td>{wall:.1f}</td><td>{link}</td></tr>")
    return (f"<div class='prov'><h2 id='cross-validation'>Cross-validation: {config.cv.folds} patient-grouped folds</h2>"
            "<p>Each fold is a complete run of the study's stages: its internal test set is one fold of the internal "
            "patients, its models (diffusion, teachers, students, baselines) are trained on the other folds' "
            "patients only. The pooled analysis below combines the folds' out-of-fold predictions.</p>"
            "<table><tr><th>fold</th><th>status</th><th>time (s)</th><th>report</th></tr>" + "".join(rows)
            + "</table></div>")


def write_index(report_dir: Path, config: StudyConfig, provenance: dict[str, Any], results: list[StageResult]) -> Path:
    """``index.html`` (the study at a glance, the stages with their links, each stage's index section)
    and ``checklist.html``. Self-contained: figures are relative PNG files of the report folder, styles
    inline, no script and nothing fetched from the network."""
    from diffkd_study.checklist import write_checklist

    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>{NO_FAVICON}",
        f"<title>diffkd-study: {html.escape(config.name)}</title><style>{PAGE_CSS}</style></head><body>",
        f"<h1>Study report: {html.escape(config.name)}"
        + (f" · fold {config.fold} of {config.cv.folds}" if config.fold is not None else "") + "</h1>",
        f"<p>{html.escape(config.description)}</p>" if config.description else "",
    ]
    if config.fold is not None:
        parts.append(f"<p class='warn'>One fold of a cross-validation study: its internal test set is fold "
                     f"{config.fold}'s patients. The study's pooled report: <a href='../index.html'>../index.html</a>"
                     "</p>")
    if config.cv is not None and config.fold is None:  # the pooled report: its headline, then the folds
        parts += [_cv_headline_html(config, results), _folds_html(report_dir, config)]
    else:
        parts.append(_headline_box_html(config, results))
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        # the page that shows the error in context, if the notebook got as far as being executed and exported
        shown = next((f"{r.notebook}{s}" for s in (".html", ".ipynb") if (report_dir / f"{r.notebook}{s}").is_file()),
                     None)
        where = (f"Its executed notebook (<a href='{html.escape(shown)}'>{html.escape(shown)}</a>) shows the error in "
                 "context" if shown else "It stopped before its notebook ran, so there is no executed notebook to "
                 "show; the runner's output has the traceback")
        parts.append(f"<p class='warn'><b>Stage {html.escape(r.stage)} failed:</b> {html.escape(r.error or '')}. "
                     f"{where}; later stages were not run.</p>")
    parts.append("<p><a href='checklist.html'>Reporting checklist (TRIPOD+AI / CLAIM topics)</a></p>")
    summary = next((r for r in results if r.stage == "summary" and r.status in ("ok", "cached")), None)
    if summary is not None and summary.metrics.get("index_section"):
        parts.append(_section_html(IndexSection.from_dict(summary.metrics["index_section"], stage=summary.stage)))
    parts.append("<h2>Stages</h2><table><tr><th>stage</th><th>status</th><th>time (s)</th>"
                 "<th>for clinicians (no code)</th><th>for reviewers (with code)</th><th>notebook</th>"
                 "<th>provenance</th></tr>")
    for r in results:
        status = f'<span class="{r.status}">{r.status}</span>' + (
            f"<br><small>{html.escape(r.error)}</small>" if r.error else "")
        links = [f'<a href="{r.notebook}{s}">{r.notebook}{s}</a>' if (report_dir / f"{r.notebook}{s}").exists() else "-"
                 for s in (".clinician.html", ".html", ".ipynb", ".provenance.json")]
        parts.append(f"<tr><td>{r.stage}</td><td>{status}</td><td>{r.wall_s:.1f}</td>"
                     + "".join(f"<td>{link}</td>" for link in links) + "</tr>")
    parts.append("</table>")

    audit = next((r for r in results if r.stage == "data_audit" and r.status in ("ok", "cached")), None)
    if audit is not None:
        parts += _cohort_html(audit.metrics)
    for r in results:
        if r.stage in ("data_audit", "summary"):
            continue
        if r.status in ("ok", "cached") and r.metrics.get("index_section"):
            parts.append(_section_html(IndexSection.from_dict(r.metrics["index_section"], stage=r.stage)))
        elif r.status in ("ok", "cached") and not r.metrics:
            parts.append(f"<h2>{html.escape(r.stage.replace('_', ' ').capitalize())}</h2>"
                         f"<p class='warn'>No results to show: the stage's metrics file "
                         f"({html.escape(r.notebook)}.metrics.json) is missing. Run the same command again to "
                         "re-create it.</p>")
        elif r.status == "skipped":
            parts.append(f"<h2>{html.escape(r.stage.replace('_', ' ').capitalize())}</h2>"
                         f"<p class='warn'>Not run: {html.escape(r.error or '')}</p>")
    if summary is None and audit is not None and audit.metrics.get("limitations"):
        parts.append("<h2>Limitations</h2><ul>" + "".join(f"<li>{html.escape(x)}</li>"
                                                          for x in audit.metrics["limitations"]) + "</ul>")
    parts.append(_provenance_html(provenance))  # how the run was made, after what it found
    parts.append("</body></html>")
    path = report_dir / "index.html"
    write_text(path, "\n".join(parts))
    write_checklist(report_dir, config.name, {r.stage: r.status for r in results}, dict(STAGE_NOTEBOOKS), PAGE_CSS)
    return path
