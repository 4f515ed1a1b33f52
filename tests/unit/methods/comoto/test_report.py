"""Fold-paired comparisons of the CoMoTo stage: t-test, CI, exact sign-flip test, Holm, and the words."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from diffkd_study.methods.comoto import report

ALL = ["dbt_only", "pretraining", "image_kd", "lskd", "comoto"]


def _issue_differences() -> np.ndarray:
    """Five fold differences with exactly the issue's mean 0.123 and SD 0.140."""
    z = np.array([-1.2, -0.4, 0.1, 0.5, 1.0])
    z = (z - z.mean()) / z.std(ddof=1)
    return 0.123 + 0.140 * z


def test_paired_t_test_of_the_issue_numbers_matches_scipy():
    d = _issue_differences()
    base = np.array([0.20, 0.25, 0.22, 0.30, 0.18])
    test = report.fold_paired_test(d)
    reference = stats.ttest_rel(base + d, base)
    # t = 0.123 / (0.140 / sqrt(5)) = 1.96 on 4 df, two-sided p = 0.12: the "+0.123 +- 0.140" is not significant
    assert test.t == pytest.approx(0.123 / (0.140 / math.sqrt(5))) == pytest.approx(reference.statistic)
    assert round(test.t, 2) == 1.96 and test.df == 4
    assert test.p == pytest.approx(reference.pvalue) and 0.11 < test.p < 0.13
    low, high = reference.confidence_interval(0.95)
    assert (test.ci_low, test.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert test.ci_low < 0 < test.ci_high
    assert (test.mean, test.sd, test.n_folds) == (pytest.approx(0.123), pytest.approx(0.140), 5)
    assert (test.n_higher, test.n_lower) == (4, 1)


def test_exact_sign_flip_p_by_hand():
    # all 5 differences positive: only the observed assignment and its mirror are as extreme -> 2 / 32
    assert report.fold_paired_test([0.1, 0.2, 0.3, 0.4, 0.5]).sign_flip_p == pytest.approx(2 / 32)
    # (3, 1, -1): |sums| of the 8 assignments are 5, 3, 3, 1 (and mirrored); 6 of 8 reach the observed 3
    assert report.fold_paired_test([3.0, 1.0, -1.0]).sign_flip_p == pytest.approx(6 / 8)


def test_degenerate_differences_are_not_estimable():
    flat = report.fold_paired_test([0.05, 0.05, 0.05])
    assert math.isnan(flat.t) and math.isnan(flat.p) and math.isnan(flat.ci_low) and not flat.estimable
    assert flat.mean == pytest.approx(0.05) and flat.sign_flip_p == pytest.approx(2 / 8)
    single = report.fold_paired_test([0.1, np.nan])  # a fold where one method is missing is left out
    assert single.n_folds == 1 and math.isnan(single.sd) and math.isnan(single.p)


def _results(differences_by_method: dict[str, np.ndarray], regime: float = 0.1) -> pd.DataFrame:
    base = np.array([0.20, 0.25, 0.22, 0.30, 0.18])
    rows = [{"fold": f, "regime": regime, "method": "dbt_only", "mean_sensitivity": base[f]} for f in range(5)]
    for method, d in differences_by_method.items():
        rows += [{"fold": f, "regime": regime, "method": method, "mean_sensitivity": base[f] + d[f]} for f in range(5)]
    return pd.DataFrame(rows)


def _holm_by_hand(p: np.ndarray) -> np.ndarray:
    """Holm (1979): the j-th smallest of m p-values times (m - j + 1), made monotone, capped at 1."""
    order = np.argsort(p)
    adjusted, running = np.empty(len(p)), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def test_comparison_plan_names_families_and_the_primary_comparison():
    plan = report.comparison_plan(ALL, [0.1, 0.25, 1.0])
    assert plan.families["teacher vs DBT only"] == [(m, "dbt_only") for m in ALL[1:]]
    assert plan.families["CoMoTo vs other teacher uses"] == [("comoto", m) for m in ("pretraining", "image_kd", "lskd")]
    assert plan.primary == ("comoto", "pretraining", 0.1)
    assert report.comparison_plan(["dbt_only", "lskd"], [1.0]) == report.ComparisonPlan(
        {"teacher vs DBT only": [("lskd", "dbt_only")]}, None)


def test_paired_comparisons_holm_within_family_and_the_words_follow_the_test():
    issue = _issue_differences()
    clear = np.array([0.10, 0.11, 0.12, 0.13, 0.14])  # t = 0.12 / (0.0158 / sqrt 5) = 17: significant
    pre = issue + np.array([0.01, -0.02, 0.0, 0.02, -0.01])
    results = _results({"pretraining": pre, "image_kd": clear, "lskd": 0.5 * issue, "comoto": issue})
    plan = report.comparison_plan(ALL, [0.1])
    table = report.paired_comparisons(results, "mean_sensitivity", plan, [0.1]).set_index(["method", "baseline"])
    secondary = table.loc[[(m, "dbt_only") for m in ALL[1:]]]
    # Holm over the 4 comparisons against DBT only (no primary among them)
    assert secondary["p_holm"].to_numpy() == pytest.approx(_holm_by_hand(secondary["p"].to_numpy()))
    comoto = table.loc[("comoto", "dbt_only")]
    assert comoto["t"] == pytest.approx(1.9645, abs=1e-4) and comoto["verdict"] == "not significant"
    assert comoto["differences"] == pytest.approx(list(issue))
    sentence = report.comparison_sentence(comoto)
    assert sentence.startswith("CoMoTo (LsKD + ImPA) - DBT only, 10% of the training patients: higher in 4 of 5 folds, "
                               "mean +0.123 (95% CI -0.051 to +0.297; paired t = 1.96 on 4 df, p = 0.121, "
                               "Holm-adjusted p = ")
    assert sentence.endswith("exact sign-flip p = 0.188): not significant.")
    assert "helps" not in sentence
    assert table.loc[("image_kd", "dbt_only"), "verdict"] == "significant"
    # the primary comparison is tested alone: its own p decides, no Holm wording
    primary = table.loc[("comoto", "pretraining")]
    assert bool(primary["primary"]) and primary["p_holm"] == primary["p"]
    assert "(planned primary comparison)" in report.comparison_sentence(primary)
    assert "Holm" not in report.comparison_sentence(primary)
    # CoMoTo vs image-level KD and LsKD: Holm over those 2 only
    others = table.loc[[("comoto", "image_kd"), ("comoto", "lskd")]]
    assert others["p_holm"].to_numpy() == pytest.approx(_holm_by_hand(others["p"].to_numpy()))


def test_not_estimable_comparison_says_so():
    flat = np.full(5, 0.05)
    table = report.paired_comparisons(_results({"lskd": flat}), "mean_sensitivity",
                                      report.comparison_plan(["dbt_only", "lskd"], [0.1]), [0.1])
    row = table.iloc[0]
    assert row["verdict"] == "not estimable" and np.isnan(row["p_holm"])
    assert "not estimable" in report.comparison_sentence(row)
    shown = report.comparison_table(table)
    assert shown.loc[0, "Per-fold differences"] == "+0.050, +0.050, +0.050, +0.050, +0.050"
    assert shown.loc[0, "Role"] == "secondary"
