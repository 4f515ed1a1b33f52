import pandas as pd

from diffkd_study.nbutil import records


def test_records_drop_a_default_index_but_keep_a_named_one():
    plain = pd.DataFrame({"model": ["a", "b"], "auc": [0.5, 0.75]})
    assert records(plain) == [{"model": "a", "auc": 0.5}, {"model": "b", "auc": 0.75}]
    named = plain.set_index("model")
    assert records(named) == [{"model": "a", "auc": 0.5}, {"model": "b", "auc": 0.75}]
    multi = pd.DataFrame({"auc": [0.5]}, index=pd.MultiIndex.from_tuples([("a", "test")], names=["model", "set"]))
    assert records(multi) == [{"model": "a", "set": "test", "auc": 0.5}]
    filtered = plain[plain["auc"] > 0.6]  # row positions left by filtering are not data either
    assert records(filtered) == [{"model": "b", "auc": 0.75}]


def test_format_p_never_prints_zero():
    from diffkd_study.nbutil import format_p

    assert [format_p(p) for p in (0.0, 0.0004, 0.001, 0.0312, 0.5, 1.0, float("nan"), None)] == [
        "< 0.001", "< 0.001", "0.001", "0.031", "0.500", "1.000", "\u2013", "\u2013"]
    assert format_p(0.0000004, 6) == "< 0.000001" and format_p(0.2057123, 6) == "0.205712"


def test_format_interval():
    from diffkd_study.nbutil import format_interval

    assert format_interval(0.3451, 0.9889) == "0.345-0.989"
    assert format_interval(-0.0918, 0.4043, 2) == "-0.09 to 0.40"
    assert format_interval(0.0, 0.0) == "not estimable"
    assert format_interval(float("nan"), 0.5) == "\u2013"


def test_table_frame_human_columns_intervals_small_groups_and_no_empty_rows():
    import numpy as np

    from diffkd_study.nbutil import table_frame

    df = pd.DataFrame({"model": ["a", "b", "c", "d"], "n": [6, 40, 3, 50], "auc": [1.0, 0.8123, np.nan, np.nan],
                       "ci_low": [0.0, 0.7, np.nan, np.nan], "ci_high": [0.0, 0.9, np.nan, np.nan],
                       "p_value": [0.0001, 0.5, np.nan, np.nan], "params": [4813058.0, 12.5, 1.0, np.nan]})
    df.loc[3, "n"] = np.nan  # a row with no value at all is dropped
    out = table_frame(df, {"model": "Model", "n": "Images", "auc": "AUC", "ci": "95% CI", "p_value": "p",
                           "params": "Parameters", "absent": "Not in the table"},
                      intervals={"ci": ("ci_low", "ci_high")}, p_values=["p_value"], n_column="n",
                      digits={"params": 1})
    assert list(out.columns) == ["Model", "Images", "AUC", "95% CI", "p", "Parameters"]
    assert out.to_dict("records") == [
        {"Model": "a", "Images": "6", "AUC": "1.000", "95% CI": "too few cases", "p": "< 0.001", "Parameters": "4,813,058"},
        {"Model": "b", "Images": "40", "AUC": "0.812", "95% CI": "0.700-0.900", "p": "0.500", "Parameters": "12.5"},
        {"Model": "c", "Images": "3", "AUC": "\u2013", "95% CI": "too few cases", "p": "\u2013", "Parameters": "1.0"},
    ]


def test_table_frame_named_index_becomes_columns_and_default_names_read_as_words():
    from diffkd_study.nbutil import table_frame

    df = pd.DataFrame({"val_auc": [0.6875], "notes": [["a", "b"]]}, index=pd.Index(["clinical"], name="model"))
    assert table_frame(df).to_dict("records") == [{"model": "clinical", "val auc": "0.688", "notes": "a, b"}]


def test_show_table_hides_the_index_and_explains_an_empty_table():
    from IPython.display import Markdown

    from diffkd_study.nbutil import show_table

    html = show_table(pd.DataFrame({"test_set": ["internal test"], "auc": [0.75]}), {"test_set": "Test set", "auc": "AUC"}).to_html()
    assert ">Test set</th>" in html and ">0.750</td>" in html and "row_heading" not in html and "..." not in html
    empty = show_table(pd.DataFrame(columns=["model"]), empty="No model was trained with several seeds.")
    assert isinstance(empty, Markdown) and empty.data == "No model was trained with several seeds."


def test_dedupe_limitations_and_one_wording_for_small_test_sets():
    from diffkd_study.nbutil import dedupe_limitations, few_cases_limitation

    assert dedupe_limitations(["Few cases.", " few  cases", "", "Simulated data", "Few cases"]) == [
        "Few cases.", "Simulated data"]
    assert few_cases_limitation("internal test", 4, "malignant") == (
        "The internal test set has only 4 malignant cases: its confidence intervals are wide.")
    assert few_cases_limitation("external: center_C", 2, "malignant") == (
        "The external test set of center_C has only 2 malignant cases: its confidence intervals are wide.")
