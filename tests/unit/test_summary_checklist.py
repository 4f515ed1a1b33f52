"""Summary-stage helpers, the checklist rows and the run comparison, on hand-made inputs."""

from __future__ import annotations

import json

import pytest
from nbconvert.filters.strings import add_anchor

from diffkd_study.checklist import CHECKLIST, checklist_rows, page_sections
from diffkd_study.compare import compare_runs
from diffkd_study.config import parse_config
from diffkd_study.index_page import write_index
from diffkd_study.stage_output import StageResult
from diffkd_study.stages import STAGE_NOTEBOOKS
from diffkd_study.summary import (
    SIMULATED_BANNER,
    collect_limitations,
    headline_box,
    headline_from_evaluation,
    headline_html,
    headline_models,
    read_stage_metrics,
    share_of_attainable,
)


def test_headline_models_prefer_the_full_method_and_check_named_ones():
    available = ["clinical", "teacher_real", "teacher_real+syn", "student_alone", "student_diffkd"]
    assert headline_models(available) == {"teacher": "teacher_real+syn", "student": "student_diffkd"}
    assert headline_models(["teacher_real", "student_kd_real"]) == {"teacher": "teacher_real",
                                                                     "student": "student_kd_real"}
    assert headline_models(["clinical"]) == {}
    assert headline_models(available, student="student_alone")["student"] == "student_alone"
    with pytest.raises(ValueError, match="summary.teacher: no predictions for 'teacher_x'"):
        headline_models(available, teacher="teacher_x")


def test_limitations_are_collected_in_stage_order_without_repeats(tmp_path):
    for name, metrics in {
        "00_data_audit": {"limitations": ["simulated data", "small test set"]},
        "50_evaluation": {"index_section": {"title": "Diagnostic performance", "text": [],
                                            "limitations": ["small test set", "few bootstrap resamples"]}},
        "90_summary": {"limitations": ["never read"]},
    }.items():
        (tmp_path / f"{name}.metrics.json").write_text(json.dumps(metrics))
    stages = read_stage_metrics(tmp_path)
    assert list(stages) == ["00_data_audit", "50_evaluation"]
    assert collect_limitations(stages, ["no reader study"]) == [
        "no reader study", "simulated data", "small test set", "few bootstrap resamples"]


def _notebook_page(*sections: tuple[str, str]) -> str:
    """A page as nbconvert's lab template exports it: each heading with the id nbconvert gives it, then an output."""
    cells = []
    for heading, output in sections:
        cells.append('<div class="jp-Cell jp-MarkdownCell jp-Notebook-cell"><div class="jp-RenderedMarkdown">'
                     + add_anchor(f"<h2>{heading}</h2>") + "<p>What this section shows.</p></div></div>")
        cells.append('<div class="jp-Cell jp-CodeCell jp-Notebook-cell"><div class="jp-OutputArea">'
                     f'<div class="jp-RenderedHTMLCommon jp-OutputArea-output">{output}</div></div></div>')
    return '<div class="jp-Notebook">' + "".join(cells) + "</div>"


TABLE = "<table><thead><tr><th>n</th></tr></thead><tbody><tr><td>40</td></tr></tbody></table>"
EMPTY_TABLE = "<table><thead><tr><th>model</th></tr></thead><tbody></tbody></table>"


def test_page_sections_find_nbconvert_anchors_and_what_each_section_shows():
    page = _notebook_page(("30 · Teacher", "<p>Teacher network resnet50</p>"), ("AUC per test set", TABLE),
                          ("Variability across training seeds", EMPTY_TABLE))
    sections = page_sections(page)
    assert sections["30 · Teacher"].anchor == "30-%C2%B7-Teacher"  # nbconvert's id, percent-encoded
    assert sections["30 · Teacher"].content == {"text"}
    assert sections["AUC per test set"].anchor == "AUC-per-test-set"
    assert sections["AUC per test set"].content == {"table", "text"}
    assert "table" not in sections["Variability across training seeds"].content  # a header row is no result


def test_checklist_links_the_section_anchor_and_reports_only_what_is_there():
    pages = {
        "00_data_audit.clinician.html": _notebook_page(("Cohort", TABLE), ("Splits", TABLE),
                                                       ("Data validation", "<p>48 images checked: 0 errors</p>")),
        "50_evaluation.clinician.html": _notebook_page(("AUC per test set", TABLE), ("Calibration", "<img src='c.png'>"),
                                                       ("Variability across training seeds", EMPTY_TABLE)),
        "index.html": "<h2 id='provenance'>Provenance</h2><div class='prov'><div>seed: 0</div></div>",
    }
    rows = checklist_rows({"data_audit": "ok", "evaluation": "cached", "teacher": "failed"}, dict(STAGE_NOTEBOOKS),
                          pages)
    assert len(rows) == len(CHECKLIST)
    by_topic = {r["topic"]: r for r in rows}
    auc = by_topic["Discrimination with confidence intervals"]
    assert auc["status"] == "reported" and auc["reason"] == ""
    assert auc["links"] == [("50_evaluation: AUC per test set", "50_evaluation.clinician.html#AUC-per-test-set")]
    assert by_topic["Calibration"]["status"] == "reported"
    assert by_topic["Data partitions at patient level; leakage checks"]["links"] == [
        ("00_data_audit: Splits", "00_data_audit.clinician.html#Splits"),
        ("00_data_audit: Data validation", "00_data_audit.clinician.html#Data-validation")]
    assert by_topic["Reproducibility: code version, software, seeds, hardware"]["links"] == [
        ("index: Provenance", "index.html#provenance")]
    seeds = by_topic["Variability across training runs (seeds)"]
    assert seeds["status"] == "not reported"
    assert seeds["reason"] == ("the section 'Variability across training seeds' of 50_evaluation.clinician.html "
                               "shows no table or figure")
    decision = by_topic["Clinical utility (decision curves)"]
    assert (decision["status"], decision["reason"]) == ("not reported",
                                                        "50_evaluation.clinician.html has no section 'Decision curves'")
    assert by_topic["Model selection on validation data only"]["status"] == "stage failed"
    readers = by_topic["Comparison with readers"]
    assert (readers["status"], readers["links"]) == ("not in this run", [("60_reader_study: Model versus readers (ORH)", "")])
    assert by_topic["Ethics approval, consent, funding, conflicts of interest"]["status"] == "authors"


def test_checklist_says_why_outcome_definition_and_dates_are_not_reported():
    rows = {r["topic"]: r for r in checklist_rows({"data_audit": "ok"}, dict(STAGE_NOTEBOOKS),
                                                  {"00_data_audit.clinician.html": _notebook_page(("Splits", TABLE))})}
    dates = rows["Dates of data collection"]
    assert dates["status"] == "not reported" and "no acquisition dates" in dates["reason"] and dates["links"] == []
    outcome = rows["Outcome / reference standard definition"]
    assert outcome["status"] == "not reported" and "not how it was established" in outcome["reason"]
    balance = rows["Outcome frequency per set (label balance)"]
    assert (balance["status"], balance["links"]) == ("reported", [("00_data_audit: Splits",
                                                                    "00_data_audit.clinician.html#Splits")])


def test_share_of_attainable_discrimination():
    assert share_of_attainable(0.8, 0.9) == pytest.approx(0.75)
    assert share_of_attainable(0.5, 0.9) == 0.0
    assert share_of_attainable(0.8, 0.5) is None and share_of_attainable(None, 0.9) is None
    assert share_of_attainable(float("nan"), 0.9) is None


BOX = headline_box(
    {"teacher": "teacher_real", "student": "student_diffkd"},
    [{"model": "student_diffkd", "test_set": "internal test", "auc": 0.8, "ci_low": 0.7, "ci_high": 0.9, "note": ""},
     {"model": "teacher_real", "test_set": "internal test", "auc": 0.86, "ci_low": 0.75, "ci_high": 0.92, "note": ""},
     {"model": "student_diffkd", "test_set": "external: C", "auc": None, "ci_low": None, "ci_high": None,
      "note": "fewer than 2 cases of a class"}],
    [{"test_set": "internal test", "n_images": 40, "n_patients": 38, "n_pos": 10},
     {"test_set": "external: C", "n_images": 12, "n_patients": 12, "n_pos": 1}],
    [{"test_set": "internal test", "auc": 0.9, "ci_low": 0.82, "ci_high": 0.95, "note": ""}],
    positive_class="malignant", simulated=True)


def test_headline_box_says_per_test_set_the_main_model_auc_with_n_images_and_patients():
    assert BOX["main_model"] == "student_diffkd" and BOX["main_role"] == "student"
    internal = BOX["test_sets"][0]
    assert [m["model"] for m in internal["models"]] == ["student_diffkd", "teacher_real"]
    assert internal["models"][0]["share_of_attainable"] == pytest.approx(0.75)
    page = headline_html(BOX, simulated=True)
    assert page.startswith("<section id='headline' class='headline' style=")
    assert SIMULATED_BANNER in page
    assert ("<b>Internal test set (new patients from the training centres)</b>, 40 images of 38 patients "
            "(10 malignant): <b>student_diffkd AUC 0.800 (95% CI 0.700\u20130.900), 75% of the attainable "
            "discrimination above chance</b>; teacher_real AUC 0.860 (95% CI 0.750\u20130.920), 90% of the "
            "attainable discrimination above chance; oracle (true risk) AUC 0.900 (95% CI 0.820\u20130.950).") in page
    assert ("External test set C (a centre never used for training)</b>, 12 images of 12 patients (1 malignant): "
            "<b>student_diffkd AUC not estimable (fewer than 2 cases of a class)</b>.") in page
    assert "<b>Intended use:</b> Research and teaching only" in page
    assert SIMULATED_BANNER not in headline_html(BOX, simulated=False)


def test_headline_from_the_evaluation_alone_says_what_is_missing():
    box = headline_from_evaluation({"full_model": None, "auc": [
        {"model": "clinical", "test_set": "internal test", "n": 8, "n_pos": 4, "auc": 0.875, "ci_low": 0.345,
         "ci_high": 0.989, "note": ""},
        {"model": "clinical", "test_set": "external: C", "n": 0, "n_pos": 0, "auc": None, "note": "not applicable"}]})
    page = headline_html(box, simulated=False)
    assert "8 images (4 positive): <b>clinical AUC 0.875 (95% CI 0.345\u20130.989)</b>." in page
    assert "The summary stage did not run: patient counts and the oracle AUC" in page
    assert headline_from_evaluation({"auc": []}) is None


def _config(phantom: bool):
    data = ({"phantom": {"n_per_center": 16, "image_size": 64}} if phantom
            else {"manifests": [{"path": "data_manifests/x.csv", "root": "x"}]})
    return parse_config({"name": "toy", "seed": 0, "data": data, "stages": ["data_audit", "baselines", "evaluation", "summary"]})


def test_index_starts_with_the_headline_and_ends_with_the_provenance(tmp_path):
    summary = StageResult("summary", "90_summary", "ok", 1.0, None, {
        "headline_box": BOX, "index_section": {"title": "The study at a glance", "text": ["Numbers."]}})
    page = write_index(tmp_path, _config(phantom=True), {"seed": 0}, [summary]).read_text()
    headline, glance, provenance = (page.index("<section id='headline'"), page.index("id='the-study-at-a-glance'"),
                                    page.index('<h2 id="provenance">Provenance</h2>'))
    assert page.index("<h1>") < headline < page.index(SIMULATED_BANNER) < glance < provenance
    assert provenance > page.index("<h2>Stages</h2>")
    real = write_index(tmp_path, _config(phantom=False), {"seed": 0}, [summary]).read_text()
    assert SIMULATED_BANNER not in real and "40 images of 38 patients" in real


def test_index_headline_says_in_words_which_stage_is_missing(tmp_path):
    results = [StageResult("evaluation", "50_evaluation", "failed", 1.0, "ValueError: broken"),
               StageResult("summary", "90_summary", "skipped", 0.0, "not run: an earlier stage failed")]
    page = write_index(tmp_path, _config(phantom=False), {"seed": 0}, results).read_text()
    assert ("No headline numbers: the summary stage was not run (an earlier stage failed) and the evaluation stage "
            "failed.") in page
    page = write_index(tmp_path, _config(phantom=True), {"seed": 0}, []).read_text()
    assert "No headline numbers: the study has no summary stage and the study has no evaluation stage." in page


def _headline(folder, auc, wall):
    folder.mkdir()
    (folder / "headline.json").write_text(json.dumps({
        "models": {"student": "student_diffkd"},
        "auc": [{"model": "student_diffkd", "test_set": "internal test", "n": 40, "n_pos": 10, "auc": auc,
                 "ci_low": auc - 0.1, "ci_high": auc + 0.05}],
        "efficiency_ratios": {"params": 0.1}, "synthetic_quality": []}))
    (folder / "provenance.json").write_text(json.dumps({"seed": 0, "wall_s": wall, "git": {"sha": "abc", "dirty": False}}))


def test_compare_two_runs_side_by_side(tmp_path):
    _headline(tmp_path / "a", 0.80, 100.0)
    _headline(tmp_path / "b", 0.85, 90.0)
    table = compare_runs("a", "b", reports_dir=tmp_path).set_index("measure")
    assert table.loc["AUC student: internal test", "B - A"] == "+0.0500"
    assert table.loc["AUC student: internal test", "a"].startswith("0.800 [0.700, 0.850] (n=40, 10 pos")
    assert table.loc["wall time (s)", "B - A"] == "-10.0000"
    assert table.loc["commit", "B - A"] == ""
    with pytest.raises(FileNotFoundError, match="no headline.json for run 'c'"):
        compare_runs("a", "c", reports_dir=tmp_path)


def test_compare_shows_an_auc_that_is_not_estimable_without_crashing(tmp_path):
    _headline(tmp_path / "a", 0.80, 100.0)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "headline.json").write_text(json.dumps({
        "models": {"student": "student_diffkd"},
        "auc": [{"model": "student_diffkd", "test_set": "internal test", "n": 0, "n_pos": 0, "auc": None,
                 "ci_low": None, "ci_high": None}]}))
    (tmp_path / "b" / "provenance.json").write_text(json.dumps({"seed": 0, "wall_s": 1.0, "git": {}}))
    table = compare_runs("a", "b", reports_dir=tmp_path).set_index("measure")
    assert table.loc["AUC student: internal test", "b"].startswith("not estimable (n=0")
    assert table.loc["AUC student: internal test", "B - A"] == ""


def test_index_tables_use_human_names_round_numbers_and_never_show_p_as_zero():
    from diffkd_study.index_page import _table_html

    page = _table_html([{"test_set": "internal test", "n_pos": 13, "auc_95ci": "0.737 (0.533-0.873)",
                         "difference": -0.17412, "p_value": 0.00001, "ci_low": None}])
    assert "<th>Test set</th>" in page and "<th>Malignant images</th>" in page and "<th>AUC (95% CI)</th>" in page
    assert "<td>-0.174</td>" in page and "<td>&lt; 0.001</td>" in page and "<td>–</td>" in page
    assert "n_pos" not in page and "0.000" not in page
    assert "Nothing to show" in _table_html([]) and "(empty)" not in _table_html([])
