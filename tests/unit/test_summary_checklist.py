"""Summary-stage helpers, the checklist rows and the run comparison, on hand-made inputs."""

from __future__ import annotations

import json

import pytest

from diffkd_study.checklist import CHECKLIST, checklist_rows
from diffkd_study.compare import compare_runs
from diffkd_study.config import STAGE_NOTEBOOKS
from diffkd_study.summary import collect_limitations, headline_models, read_stage_metrics


def test_headline_models_prefer_the_full_method_and_check_named_ones():
    available = ["clinical", "teacher_real", "teacher_real+syn", "student_scratch", "student_diffkd"]
    assert headline_models(available) == {"teacher": "teacher_real+syn", "student": "student_diffkd"}
    assert headline_models(["teacher_real", "student_kd_real"]) == {"teacher": "teacher_real",
                                                                     "student": "student_kd_real"}
    assert headline_models(["clinical"]) == {}
    assert headline_models(available, student="student_scratch")["student"] == "student_scratch"
    with pytest.raises(ValueError, match="summary.teacher: no predictions for 'teacher_x'"):
        headline_models(available, teacher="teacher_x")


def test_limitations_are_collected_in_stage_order_without_repeats(tmp_path):
    for name, metrics in {
        "00_data_audit": {"limitations": ["simulated data", "small test set"]},
        "50_evaluation": {"index_section": {"limitations": ["small test set", "few bootstrap resamples"]}},
        "90_summary": {"limitations": ["never read"]},
    }.items():
        (tmp_path / f"{name}.metrics.json").write_text(json.dumps(metrics))
    stages = read_stage_metrics(tmp_path)
    assert list(stages) == ["00_data_audit", "50_evaluation"]
    assert collect_limitations(stages, ["no reader study"]) == [
        "no reader study", "simulated data", "small test set", "few bootstrap resamples"]


def test_checklist_rows_follow_the_stage_status():
    rows = checklist_rows({"data_audit": "ok", "evaluation": "cached", "teacher": "failed"}, dict(STAGE_NOTEBOOKS))
    assert len(rows) == len(CHECKLIST)
    by_topic = {r["topic"]: r for r in rows}
    auc = by_topic["Discrimination with confidence intervals"]
    assert auc["status"] == "reported" and auc["link"] == "50_evaluation.clinician.html"
    assert by_topic["Model selection on validation data only"]["status"] == "stage failed"
    assert by_topic["Comparison with readers"] == {**by_topic["Comparison with readers"], "status": "not in this run",
                                                   "link": ""}
    assert by_topic["Ethics approval, consent, funding, conflicts of interest"]["status"] == "authors"


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
