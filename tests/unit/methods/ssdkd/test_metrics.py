"""Multiclass metrics: weighted AUC, the lesion bootstrap, the report's numbers against hand counts."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from diffkd_study.methods.ssdkd.metrics import (
    confusion_matrix,
    format_interval,
    mean_sd,
    multiclass_report,
    paired_bootstrap_differences,
    weighted_auc,
)
from diffkd_study.metrics.operating_points import wilson_ci


def test_weighted_auc_with_unit_weights_is_sklearn_auc_including_ties():
    scores = np.array([0.1, 0.4, 0.4, 0.8, 0.35, 0.8, 0.2])
    positive = np.array([0, 0, 1, 1, 1, 0, 0], dtype=bool)
    assert weighted_auc(scores, positive, np.ones(7))[0] == pytest.approx(roc_auc_score(positive, scores))


def test_weighted_auc_equals_auc_of_the_duplicated_sample():
    scores = np.array([0.9, 0.3, 0.6, 0.2, 0.7])
    positive = np.array([1, 0, 1, 0, 0], dtype=bool)
    weights = np.array([2, 0, 1, 3, 1])
    repeated = np.repeat(np.arange(5), weights)
    assert weighted_auc(scores, positive, weights)[0] == pytest.approx(roc_auc_score(positive[repeated],
                                                                                      scores[repeated]))
    # by hand: positives 0.9 (x2), 0.6; negatives 0.2 (x3), 0.7 -> pairs won: 2*(3+1) + 1*3 = 11 of 3*4 = 12
    assert weighted_auc(scores, positive, weights)[0] == pytest.approx(11 / 12)
    assert np.isnan(weighted_auc(scores, np.zeros(5, dtype=bool), np.ones(5))[0])


def test_confusion_matrix_by_hand():
    assert confusion_matrix([0, 0, 1, 2], [0, 1, 1, 0], 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def _example():
    # 8 images of 3 classes; predictions (argmax): 0,0,1,1 | 1,1,2 | 2 ; truth 0,0,0,0 | 1,1,1 | 2
    y = np.array([0, 0, 0, 0, 1, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 1, 1, 2, 2])
    probabilities = np.full((8, 3), 0.1)
    probabilities[np.arange(8), pred] = 0.8
    probabilities[0, 0] = 0.85  # not all scores tied
    groups = np.array(["l0", "l0", "l1", "l2", "l3", "l4", "l5", "l6"])
    return y, probabilities, groups


def test_multiclass_report_point_estimates_by_hand():
    y, probabilities, groups = _example()
    report = multiclass_report(y, probabilities, groups, ("a", "b", "c"), n_resamples=200, seed=0)
    assert report.confusion.tolist() == [[2, 2, 0], [0, 2, 1], [0, 0, 1]]
    assert report.n == 8 and report.n_lesions == 7
    assert report.summary["accuracy"]["estimate"] == pytest.approx(5 / 8)
    # recalls 2/4, 2/3, 1/1 -> balanced accuracy 13/18
    assert report.summary["balanced_accuracy"]["estimate"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert report.summary["balanced_accuracy"]["estimate"] == pytest.approx(
        balanced_accuracy_score(y, probabilities.argmax(1)))
    expected_auc = np.mean([roc_auc_score(y == c, probabilities[:, c]) for c in range(3)])
    assert report.summary["macro_auc"]["estimate"] == pytest.approx(expected_auc)
    table = report.per_class.set_index("class")
    # precision: class a predicted 2 times (both right), b 4 times (2 right), c 2 times (1 right)
    assert table["precision"].tolist() == pytest.approx([1.0, 0.5, 0.5])
    assert table["recall"].tolist() == pytest.approx([0.5, 2 / 3, 1.0])
    # F1 = 2 TP / (2 TP + FP + FN): a 4 / (4 + 0 + 2), b 4 / (4 + 2 + 1), c 2 / (2 + 1 + 0)
    assert table["f1"].tolist() == pytest.approx([4 / 6, 4 / 7, 2 / 3])
    wilson = wilson_ci(2, 3)
    assert (table.loc["b", "recall_low"], table.loc["b", "recall_high"]) == pytest.approx((wilson.ci_low,
                                                                                             wilson.ci_high))
    accuracy = wilson_ci(5, 8)
    assert (report.summary["accuracy"]["low"], report.summary["accuracy"]["high"]) == pytest.approx(
        (accuracy.ci_low, accuracy.ci_high))


def test_multiclass_report_bootstrap_intervals_bracket_and_repeat():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    probabilities = rng.dirichlet(np.ones(3), 120)
    probabilities[np.arange(120), y] += 0.5  # informative scores
    groups = np.repeat(np.arange(60), 2)
    a = multiclass_report(y, probabilities, groups, ("a", "b", "c"), n_resamples=300, seed=1)
    b = multiclass_report(y, probabilities, groups, ("a", "b", "c"), n_resamples=300, seed=1)
    for name in ("balanced_accuracy", "macro_auc"):
        value = a.summary[name]
        assert value["low"] <= value["estimate"] <= value["high"] and value["high"] - value["low"] > 0.01
        assert value == b.summary[name]
    flat = a.flat()
    assert {"n", "n_lesions", "accuracy", "accuracy_low", "macro_auc_high"} <= set(flat)


def test_multiclass_report_rejects_bad_input():
    with pytest.raises(ValueError, match="disagree"):
        multiclass_report([0, 1], np.ones((2, 2)) / 2, ["a", "b"], ("a", "b", "c"))
    with pytest.raises(ValueError, match="labels must lie"):
        multiclass_report([0, 3], np.ones((2, 3)) / 3, ["a", "b"], ("a", "b", "c"))


def test_formatting():
    assert format_interval(0.81234, 0.79, 0.833) == "0.812 (0.790-0.833)"
    assert format_interval(float("nan"), 0, 1) == "n/a"
    assert mean_sd([0.8, 0.9]) == "0.850 ± 0.071 (2 seeds)"
    assert mean_sd([0.8]) == "0.800 (1 seed)"


def _three_models(n_lesions: int, seed: int = 0):
    """Labels, lesion ids and per-seed probabilities of models a (good), b (weak) and c (a copy of a)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n_lesions)
    probabilities = {}
    for model, skill in (("a", 1.5), ("b", 0.3)):
        seeds = []
        for _ in range(2):
            logits = rng.normal(size=(n_lesions, 3)) + skill * np.eye(3)[y]
            seeds.append(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
        probabilities[model] = seeds
    probabilities["c"] = [p.copy() for p in probabilities["a"]]
    return y, np.array([f"L{k:03d}" for k in range(n_lesions)]), probabilities


def test_paired_bootstrap_estimate_is_the_difference_of_seed_means():
    y, lesions, probabilities = _three_models(60)
    table = paired_bootstrap_differences(y, probabilities, lesions, [("a", "b"), ("a", "c")], n_resamples=200,
                                         seed=1).set_index(["reference", "metric"])
    reports = {m: [multiclass_report(y, p, lesions, ("x", "y", "z"), n_resamples=1).flat() for p in seeds]
               for m, seeds in probabilities.items()}
    for metric in ("accuracy", "balanced_accuracy", "macro_auc"):
        expected = np.mean([r[metric] for r in reports["a"]]) - np.mean([r[metric] for r in reports["b"]])
        assert table.loc[("b", metric), "estimate"] == pytest.approx(expected)
        row = table.loc[("b", metric)]
        assert row["low"] <= row["estimate"] <= row["high"] and row["resamples"] == 200
        # a model against its own copy: every replicate is 0, so the CI is [0, 0] and p = 1
        same = table.loc[("c", metric)]
        assert (same["estimate"], same["low"], same["high"], same["p"]) == (0, 0, 0, 1)
    # a far better model: no replicate at or below 0, p = 2 / (B + 1)
    assert table.loc[("b", "accuracy"), "p"] == pytest.approx(2 / 201)


def test_paired_bootstrap_resamples_whole_lesions():
    """Three identical images per lesion: drawing whole lesions gives exactly the replicates of the one-image-per-
    lesion data (same seed, same lesions drawn), while drawing images as if independent narrows the interval."""
    y, lesions, probabilities = _three_models(80, seed=4)
    triple = np.repeat(np.arange(80), 3)
    kwargs = {"n_resamples": 400, "seed": 2, "metrics": ("accuracy", "balanced_accuracy")}
    single = paired_bootstrap_differences(y, probabilities, lesions, [("a", "b")], **kwargs)
    repeated = {m: [p[triple] for p in seeds] for m, seeds in probabilities.items()}
    clustered = paired_bootstrap_differences(y[triple], repeated, lesions[triple], [("a", "b")], **kwargs)
    columns = ["estimate", "low", "high", "p"]
    assert clustered[columns].to_numpy() == pytest.approx(single[columns].to_numpy())
    naive = paired_bootstrap_differences(y[triple], repeated, np.arange(240), [("a", "b")], **kwargs)
    assert ((naive["high"] - naive["low"]) < 0.75 * (clustered["high"] - clustered["low"])).all()


def test_paired_bootstrap_rejects_misaligned_predictions():
    y, lesions, probabilities = _three_models(10)
    with pytest.raises(ValueError, match="no predictions for model 'd'"):
        paired_bootstrap_differences(y, probabilities, lesions, [("a", "d")], n_resamples=5)
    probabilities["b"] = [p[:9] for p in probabilities["b"]]
    with pytest.raises(ValueError, match="do not match 10 labels"):
        paired_bootstrap_differences(y, probabilities, lesions, [("a", "b")], n_resamples=5)
    with pytest.raises(ValueError, match="unknown metric"):
        paired_bootstrap_differences(y, probabilities, lesions, [("a", "c")], n_resamples=5, metrics=("f1",))
