"""Multiclass metrics: weighted AUC, the lesion bootstrap, the report's numbers against hand counts."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from diffkd_study.methods.ssdkd.metrics import (
    cluster_bootstrap_weights,
    confusion_matrix,
    format_interval,
    mean_sd,
    multiclass_report,
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


def test_cluster_bootstrap_weights_resample_whole_lesions():
    groups = np.array(["b", "a", "a", "c", "b", "b"])
    weights = cluster_bootstrap_weights(groups, 50, seed=3)
    assert weights.shape == (50, 6)
    # images of one lesion share their weight; each resample draws 3 lesions
    assert (weights[:, 1] == weights[:, 2]).all() and (weights[:, 0] == weights[:, 4]).all()
    assert (weights[:, [1, 0, 3]].sum(axis=1) == 3).all()
    assert np.array_equal(weights, cluster_bootstrap_weights(groups, 50, seed=3))


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
