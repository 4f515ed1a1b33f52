"""The headline's words for differences between models follow their tests (planned comparisons, Holm, power)."""

from __future__ import annotations

import math

from diffkd_study.summary import comparison_sentence, headline_box, headline_from_evaluation, headline_html

PLANNED = {"comparison": "(iii) Does the synthetic-trained teacher help the student?",
           "contrast": "Full DiffKD student vs student distilled from the real-image teacher", "test_set": "internal test",
           "model_a": "student_diffkd", "model_b": "student_kd_real", "difference": 0.0123, "ci_low": -0.0512,
           "ci_high": 0.0758, "p_value": 0.43, "p_holm": 1.0, "mdd": 0.0734, "note": ""}


def test_a_difference_that_is_not_significant_is_worded_with_what_could_be_detected():
    assert comparison_sentence(PLANNED) == (
        "no significant difference (difference +0.012, 95% CI -0.051 to +0.076; p = 0.430, Holm p = 1.000; "
        "detectable difference at 80% power 0.07)")
    # significant by the raw p only: the Holm-adjusted p decides, so still no difference is claimed
    assert comparison_sentence({**PLANNED, "p_value": 0.02, "p_holm": 0.06}).startswith("no significant difference")
    assert "not estimable" in comparison_sentence({**PLANNED, "mdd": math.nan})


def test_a_significant_difference_names_the_model_with_the_higher_auc():
    row = {**PLANNED, "difference": -0.081, "ci_low": -0.12, "ci_high": -0.04, "p_value": 0.0004, "p_holm": 0.0012}
    assert comparison_sentence(row) == ("student_kd_real had the higher AUC by 0.081 (95% CI -0.120 to -0.040; "
                                        "p < 0.001, Holm p = 0.001)")
    without_holm = {k: v for k, v in row.items() if k != "p_holm"}
    assert comparison_sentence(without_holm).endswith("(95% CI -0.120 to -0.040; p < 0.001)")
    assert comparison_sentence({**PLANNED, "p_value": None, "note": "teacher_real: not in this run"}) == (
        "not tested (teacher_real: not in this run)")


def test_the_headline_lists_each_test_sets_planned_comparisons_in_words():
    auc = [{"model": "student_diffkd", "test_set": "internal test", "auc": 0.8, "ci_low": 0.7, "ci_high": 0.9,
            "note": ""}]
    sizes = [{"test_set": "internal test", "n_images": 375, "n_patients": 213, "n_pos": 120}]
    other = {**PLANNED, "test_set": "external: B"}
    box = headline_box({"student": "student_diffkd"}, auc, sizes, comparisons=[PLANNED, other])
    assert [c["sentence"] for c in box["test_sets"][0]["comparisons"]] == [comparison_sentence(PLANNED)]
    page = headline_html(box, simulated=False)
    assert "375 images of 213 patients" in page and "Planned comparisons:" in page
    assert ("(iii) Does the synthetic-trained teacher help the student? Full DiffKD student vs student distilled from "
            "the real-image teacher: no significant difference") in page
    assert "better" not in page and "worse" not in page
    evaluation = {"full_model": "student_diffkd", "planned_comparisons": [PLANNED],
                  "auc": [{**auc[0], "n": 375, "n_patients": 213, "n_pos": 120}]}
    page = headline_html(headline_from_evaluation(evaluation), simulated=False)
    assert "375 images of 213 patients" in page and "detectable difference at 80% power 0.07" in page
    assert "The summary stage did not run: the oracle AUC" in page


def test_a_cross_validation_index_opens_with_the_pooled_headline(tmp_path):
    """The pooled report of a K-fold study starts, like any index, with the headline box: the student's and the
    teacher's pooled out-of-fold AUC on the internal patients and on the external set, with CI and n; the
    folds' box comes after it."""
    from diffkd_study.config import parse_config
    from diffkd_study.index_page import write_index
    from diffkd_study.stage_output import StageResult
    from diffkd_study.stages import POOLED_STAGE, STAGE_NOTEBOOKS
    from diffkd_study.summary import headline_from_cv

    def row(model, auc, **extra):
        return {"model": model, "n_images": 1875, "n_patients": 1064, "n_pos": 607, "auc": auc,
                "ci_low": auc - 0.03, "ci_high": auc + 0.03, **extra}

    pooled = {"folds": 4, "positive_class": "malignant",
              "pooled_auc": [row("teacher_real", 0.70), row("student_diffkd", 0.68), row("box_geometry", 0.85)],
              "external_auc": [row("student_diffkd", 0.66, test_set="external: breast-lesions-usg", n_images=252,
                                   n_patients=252, n_pos=98)]}
    headline = headline_from_cv(pooled)
    assert headline["main_model"] == "student_diffkd" and headline["models"]["teacher"] == "teacher_real"
    page = headline_html(headline, simulated=False)
    assert "1875 images of 1064 patients (607 malignant)" in page and "pooled out of fold" in page
    assert "AUC 0.680 (95% CI 0.650\u20130.710)" in page and "252 images of 252 patients (98 malignant)" in page
    assert "External test set breast-lesions-usg" in page and "External test set internal" not in page
    assert "4 patient-grouped folds" in page
    assert headline_from_cv({"pooled_auc": [], "external_auc": []}) is None

    config = parse_config({"name": "cvidx", "stages": ["baselines"], "cv": {"folds": 4}, "data": {"phantom": {}}})
    result = StageResult(POOLED_STAGE, STAGE_NOTEBOOKS[POOLED_STAGE], "ok", 1.0, metrics=pooled)
    index = write_index(tmp_path, config, {}, [result]).read_text()
    assert index.index("id='headline'") < index.index("Cross-validation: 4 patient-grouped folds")
    assert "simulated data" in index.lower()  # the phantom cohort's banner
    missing = write_index(tmp_path, config, {}, []).read_text()
    assert "No headline numbers: the pooled stage has not run" in missing
