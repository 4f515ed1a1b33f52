"""The typed index section a stage notebook writes (round trip through its metrics JSON, and the errors on a
section of another shape) and the index page that reads it."""

from __future__ import annotations

import json

import pytest

from diffkd_study.config import parse_config
from diffkd_study.index_page import write_index
from diffkd_study.stage_output import IndexFigure, IndexSection, IndexSectionError, IndexTable, StageResult
from diffkd_study.summary import collect_limitations

SECTION = IndexSection(
    title="Diagnostic performance",
    text=["AUC with 95% DeLong confidence interval per model and test set."],
    tables=[IndexTable(title="AUC per test set", records=[{"model": "clinical", "test_set": "internal test",
                                                             "n": 8, "auc_95ci": "0.875 (0.345-0.989)"}]),
            IndexTable(title="Paired DeLong tests", caption="Difference in AUC.",
                       records=[{"test_set": "internal test", "difference": -0.17412, "p_value": 0.00001}])],
    figures=[IndexFigure(png="figures/auc_forest.png", title="AUC by test set", caption="AUC with 95% CI.")],
    limitations=["Small test set."],
)

#: What the notebook wrote before the section was typed: the JSON to_dict must reproduce key for key.
SECTION_JSON = (
    '{"title": "Diagnostic performance", "text": ["AUC with 95% DeLong confidence interval per model and test set."], '
    '"tables": [{"title": "AUC per test set", "records": [{"model": "clinical", "test_set": "internal test", "n": 8, '
    '"auc_95ci": "0.875 (0.345-0.989)"}]}, {"title": "Paired DeLong tests", "caption": "Difference in AUC.", '
    '"records": [{"test_set": "internal test", "difference": -0.17412, "p_value": 1e-05}]}], '
    '"figures": [{"png": "figures/auc_forest.png", "title": "AUC by test set", "caption": "AUC with 95% CI."}], '
    '"limitations": ["Small test set."]}'
)


def test_a_section_writes_the_json_of_the_notebooks_and_reads_back_equal():
    assert json.dumps(SECTION.to_dict()) == SECTION_JSON
    assert IndexSection.from_dict(json.loads(SECTION_JSON), stage="evaluation") == SECTION


def test_fields_left_at_none_are_left_out_and_empty_lists_are_kept():
    bare = IndexSection(title="Baselines", text=[], tables=[IndexTable(title="Validation AUC", records=[])])
    assert bare.to_dict() == {"title": "Baselines", "text": [], "tables": [{"title": "Validation AUC", "records": []}]}
    empty = IndexSection(title="Teacher", text=["t"], tables=[], figures=[], limitations=[])
    assert list(empty.to_dict()) == ["title", "text", "tables", "figures", "limitations"]
    for section in (bare, empty):
        assert IndexSection.from_dict(section.to_dict(), stage="teacher") == section


@pytest.mark.parametrize(("data", "message"), [
    ({"title": "T", "text": [], "figure": []},
     "stage evaluation: index_section has unknown key(s) ['figure']; known keys: title, text, tables, figures, "
     "limitations"),
    ({"text": ["a"]}, "stage evaluation: index_section lacks the key(s) ['title']"),
    ({"title": "T", "text": "one paragraph"}, "stage evaluation: index_section.text must be a list of strings, got str"),
    ({"title": "T", "text": ["a", 2]}, "stage evaluation: index_section.text[1] must be a string, got int"),
    ({"title": "T", "text": [], "tables": [{"title": "A", "records": [], "caption": 3}]},
     "stage evaluation: index_section.tables[0].caption must be a string, got int"),
    ({"title": "T", "text": [], "tables": [{"title": "A", "rows": []}]},
     "stage evaluation: index_section.tables[0] has unknown key(s) ['rows']; known keys: title, caption, records"),
    ({"title": "T", "text": [], "tables": [{"title": "A", "records": [[1, 2]]}]},
     "stage evaluation: index_section.tables[0].records[0] must be a record (column name -> value), got list"),
    ({"title": "T", "text": [], "figures": [{"png": "a.png", "title": "A"}]},
     "stage evaluation: index_section.figures[0] lacks the key(s) ['caption']"),
    ({"title": "T", "text": [], "figures": None}, "stage evaluation: index_section.figures must be a list of "
                                                  "IndexFigure records, got null"),
    ({"title": "T", "text": [], "limitations": [None]},
     "stage evaluation: index_section.limitations[0] must be a string, got null"),
    (["T"], "stage evaluation: index_section must be an object, got list"),
])
def test_a_section_of_another_shape_is_an_error_naming_the_stage_and_the_field(data, message):
    with pytest.raises(IndexSectionError) as err:
        IndexSection.from_dict(data, stage="evaluation")
    assert str(err.value) == message


def test_a_section_built_with_wrong_types_fails_when_built():
    with pytest.raises(IndexSectionError, match=r"^IndexSection.tables\[0\] must be an IndexTable, got dict$"):
        IndexSection(title="T", text=[], tables=[{"title": "A", "records": []}])  # type: ignore[list-item]
    with pytest.raises(IndexSectionError, match=r"^IndexFigure.caption must be a string, got float$"):
        IndexFigure(png="a.png", title="A", caption=0.5)  # type: ignore[arg-type]
    with pytest.raises(IndexSectionError, match=r"^IndexTable.records must be a list of records, got dict$"):
        IndexTable(title="A", records={"a": 1})  # type: ignore[arg-type]


def test_the_index_page_shows_a_typed_section(tmp_path):
    config = parse_config({"name": "toy", "seed": 0, "data": {"phantom": {"n_per_center": 16, "image_size": 64}},
                           "stages": ["data_audit", "baselines", "evaluation"]})
    result = StageResult("evaluation", "50_evaluation", "ok", 1.0, None, {"index_section": SECTION.to_dict()})
    page = write_index(tmp_path, config, {"seed": 0}, [result]).read_text()
    assert "<h2 id='diagnostic-performance'>Diagnostic performance</h2>" in page
    assert "<p class='caption'>Difference in AUC.</p>" in page and "<td>&lt; 0.001</td>" in page
    assert "<img src='figures/auc_forest.png' alt='AUC by test set'>" in page
    assert "<h3>Limitations</h3><ul><li>Small test set.</li></ul>" in page
    broken = StageResult("evaluation", "50_evaluation", "ok", 1.0, None, {"index_section": {"title": "T"}})
    with pytest.raises(IndexSectionError, match="stage evaluation: index_section lacks the key"):
        write_index(tmp_path, config, {"seed": 0}, [broken])


def test_the_summary_reads_limitations_through_the_typed_section():
    stages = {"50_evaluation": {"index_section": SECTION.to_dict()},
              "60_reader_study": {"index_section": {"title": "Readers", "text": [], "limitations": "one"}}}
    with pytest.raises(IndexSectionError, match=r"stage 60_reader_study: index_section.limitations must be a list"):
        collect_limitations(stages)
    assert collect_limitations({"50_evaluation": stages["50_evaluation"]}, ["no reader study"]) == [
        "no reader study", "Small test set."]
