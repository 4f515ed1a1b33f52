"""Report tables of the stage from hand-made records: mean ± SD over seeds, the goal check, timings, weights paths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diffkd_study.methods.ssdkd import workflow

CLASSES = ("a", "b", "c")


def _summary_row(model, seed, accuracy, balanced, auc, split="test"):
    return {"model": model, "seed": seed, "split": split, "n": 100, "n_lesions": 80,
            "accuracy": accuracy, "accuracy_low": accuracy - 0.05, "accuracy_high": accuracy + 0.05,
            "balanced_accuracy": balanced, "balanced_accuracy_low": balanced - 0.1,
            "balanced_accuracy_high": balanced + 0.1, "macro_auc": auc, "macro_auc_low": auc - 0.05,
            "macro_auc_high": auc + 0.05}


def _result(evaluation, timings=()):
    """A stage result holding only what the report tables read."""
    return workflow.SSDKDStageResult(
        config={}, image_size=32, study_seed=0, classes=list(CLASSES), device="cpu", threads=1, counts=[],
        subsample={}, class_weights=None, teachers=[], ss_heads=[], students=[], evaluation=evaluation,
        timings=list(timings), wall_s=0.0)


def _difference(reference, metric, estimate, low, high, p, split="test"):
    return {"split": split, "model": "ssd_kd", "reference": reference, "metric": metric, "estimate": estimate,
            "low": low, "high": high, "p": p, "p_holm": p, "resamples": 2000, "level": 0.95,
            "primary": (reference, metric) in workflow.GOAL_COMPARISONS}


def _records(ba_ci=(0.035, 0.05, 0.001), acc_ci=(-0.018, -0.01, 0.002)):
    """Teacher, plain student and SSD-KD over 2 seeds; the paired CIs (low, high, p) of the goal's differences."""
    rows = [_summary_row("teacher", 0, 0.80, 0.60, 0.90), _summary_row("teacher", 1, 0.82, 0.62, 0.92),
            _summary_row("ce", 0, 0.70, 0.40, 0.80), _summary_row("ce", 1, 0.72, 0.44, 0.82),
            _summary_row("ssd_kd", 0, 0.79, 0.45, 0.85), _summary_row("ssd_kd", 1, 0.80, 0.47, 0.86),
            _summary_row("ssd_kd", 0, 0.5, 0.5, 0.5, split="val")]
    differences = [_difference("ce", "balanced_accuracy", 0.04, *ba_ci),
                   _difference("teacher", "accuracy", -0.015, *acc_ci)]
    return _result({"summary": rows, "per_class": [], "confusion": [], "differences": differences,
                    "n_paired_resamples": 2000},
                   [{"part": "data", "seed": None, "wall_s": 30.0},
                    {"part": "teacher", "seed": 0, "wall_s": 600.0, "train_s": 590.0},
                    {"part": "ssd_kd", "seed": 0, "wall_s": 6.0, "train_s": 1200.0}])


def test_comparison_table_mean_and_sd_over_seeds():
    table = workflow.comparison_table(_records()).set_index("model")
    assert list(table.index) == ["Teacher", "Plain student (WCE)", "SSD-KD"]
    assert table.loc["Plain student (WCE)", "balanced accuracy"] == "0.420 ± 0.028 (2 seeds)"
    assert table.loc["SSD-KD", "accuracy_mean"] == pytest.approx(0.795)
    assert table.loc["Teacher", "n images"] == 100 and table.loc["Teacher", "seeds"] == 2


def test_goal_check_by_hand():
    goal = workflow.goal_check(_records())
    # balanced accuracy 0.46 - 0.42 = +4 points (met); accuracy 0.795 - 0.81 = -1.5 points (met)
    assert goal["balanced_accuracy_gain_over_plain"] == pytest.approx(0.04)
    assert goal["accuracy_minus_teacher"] == pytest.approx(-0.015)
    assert goal["goal_met"] is True and goal["goal_met_with_confidence"] is True
    assert (goal["balanced_accuracy_gain_low"], goal["accuracy_minus_teacher_high"]) == (0.035, -0.01)
    assert "at least 3 points of balanced accuracy" in workflow.GOAL_STATEMENT
    assert "within 2 points of the teacher's accuracy" in workflow.GOAL_STATEMENT
    assert workflow.goal_text(goal, "test") == (
        "On the held-out test split: balanced accuracy +4.0 points (95% CI +3.5 to +5.0; p = 0.001 for no "
        "difference: significant) over the plain student; goal at least +3: met with confidence. Accuracy -1.5 "
        "points (95% CI -1.8 to -1.0; p = 0.002 for no difference: significant) relative to the teacher; goal at "
        "least -2: met with confidence. Overall: **reached with confidence**.")
    # the validation split holds SSD-KD only here: not evaluated, and the sentence says why
    val = workflow.goal_check(_records(), "val")
    assert val["evaluated"] is False
    assert workflow.goal_text(val, "val").startswith("Goal not evaluated on the validation split: the teacher")
    records = _records()
    records.evaluation["summary"] = [r for r in records.evaluation["summary"] if r["model"] != "ce"]
    assert workflow.goal_check(records) == {"evaluated": False, "reason": "the teacher, the plain student and "
                                                                          "SSD-KD must all be trained"}


def test_goal_met_on_point_estimates_only_is_not_met_with_confidence():
    # the old check called this goal met and reached (both point estimates clear their margins); the paired
    # CIs do not exclude failing either half, and the balanced-accuracy gain is not even significant
    goal = workflow.goal_check(_records(ba_ci=(-0.01, 0.09, 0.12), acc_ci=(-0.05, 0.02, 0.40)))
    assert goal["goal_met"] is True and goal["balanced_accuracy_goal_met"] is True
    assert goal["balanced_accuracy_goal_met_with_confidence"] is False
    assert goal["accuracy_goal_met_with_confidence"] is False and goal["goal_met_with_confidence"] is False
    text = workflow.goal_text(goal, "test")
    assert "(95% CI -1.0 to +9.0; p = 0.120 for no difference: not significant) over the plain student" in text
    assert text.count("the point estimate meets the goal, the CI does not exclude failing it: not met with "
                      "confidence") == 2
    assert text.endswith("Overall: **reached on the point estimates only, not with confidence**.")
    assert "**reached**" not in text
    records = _records()
    records.evaluation["differences"] = records.evaluation["differences"][:1]
    assert workflow.goal_check(records)["evaluated"] is False


@pytest.mark.parametrize(("estimate", "low", "high", "status"), [
    (0.04, 0.031, 0.05, "met with confidence"),
    (0.04, 0.01, 0.07, "the point estimate meets the goal, the CI does not exclude failing it: not met with confidence"),
    (0.02, 0.00, 0.04, "not met on the point estimate; the CI does not exclude meeting it"),
    (0.01, -0.01, 0.029, "not met (the CI excludes meeting it)"),
    (0.04, float("nan"), float("nan"), "met on the point estimate; the CI is not estimable"),
])
def test_goal_half_status_follows_the_interval(estimate, low, high, status):
    met, confident, words = workflow._goal_half(estimate, low, high, 0.03)
    assert (met, confident, words) == (estimate >= 0.03, status == "met with confidence", status)


@pytest.mark.parametrize(("ssd_balanced", "ssd_accuracy", "ba_met", "acc_met"), [
    (0.45, 0.79, True, True),      # exactly +3 points and exactly -2 points: both halves met
    (0.449, 0.79, False, True),    # +2.9 points
    (0.45, 0.789, True, False),    # -2.1 points
])
def test_goal_check_boundaries(ssd_balanced, ssd_accuracy, ba_met, acc_met):
    rows = [_summary_row("teacher", 0, 0.81, 0.60, 0.90), _summary_row("ce", 0, 0.70, 0.42, 0.80),
            _summary_row("ssd_kd", 0, ssd_accuracy, ssd_balanced, 0.85)]
    differences = [_difference("ce", "balanced_accuracy", ssd_balanced - 0.42, -0.1, 0.1, 0.5),
                   _difference("teacher", "accuracy", ssd_accuracy - 0.81, -0.1, 0.1, 0.5)]
    goal = workflow.goal_check(_result({"summary": rows, "per_class": [], "confusion": [],
                                        "differences": differences}))
    assert (goal["balanced_accuracy_goal_met"], goal["accuracy_goal_met"]) == (ba_met, acc_met)
    assert goal["goal_met_with_confidence"] is False  # CIs from -10 to +10 points clear no margin
    assert goal["goal_met"] is (ba_met and acc_met)


def test_seed_table_intervals_and_timing_minutes():
    seeds = workflow.seed_table(_records())
    assert len(seeds) == 6 and seeds.iloc[0]["accuracy (Wilson)"] == "0.800 (0.750-0.850)"
    timing = workflow.timing_table(_records())
    assert timing["part"].tolist() == ["data (read, split, cache)", "Teacher", "SSD-KD"]
    assert timing["seed"].tolist()[1:] == [0, 0] and pd.isna(timing["seed"].iloc[0])
    assert timing["wall min"].tolist() == [0.5, 10.0, 0.1] and timing["train min"].tolist()[1:] == [9.83, 20.0]


def test_evaluate_predictions_per_model_seed_and_split():
    rng = np.random.default_rng(0)
    frames = []
    for model, seed, split in (("teacher", 0, "val"), ("teacher", 0, "test"), ("ce", 1, "test")):
        n = 30
        p = rng.dirichlet(np.ones(3), n)
        frame = pd.DataFrame({"model": model, "seed": seed, "split": split, "image_id": [f"i{k}" for k in range(n)],
                              "lesion_id": [f"l{k // 2}" for k in range(n)], "label_index": rng.integers(0, 3, n)})
        for c, name in enumerate(CLASSES):
            frame[f"prob_{name}"] = p[:, c]
        frames.append(frame)
    evaluation = workflow.evaluate_predictions(pd.concat(frames), CLASSES, n_resamples=100, seed=0)
    assert [(r["model"], r["seed"], r["split"]) for r in evaluation["summary"]] == [
        ("teacher", 0, "val"), ("teacher", 0, "test"), ("ce", 1, "test")]
    assert all(r["n"] == 30 and r["n_lesions"] == 15 for r in evaluation["summary"])
    assert len(evaluation["per_class"]) == 9 and np.array(evaluation["confusion"][0]["matrix"]).sum() == 30
    table = workflow.per_class_table(evaluation_records := _result(evaluation), "teacher", 0, "test")
    assert table["class"].tolist() == list(CLASSES)
    with pytest.raises(KeyError, match="no per-class metrics"):
        workflow.per_class_table(evaluation_records, "ssd_kd", 0)


def test_relative_file_weights_resolve_against_the_project_root():
    resolve = workflow._resolve_weights
    assert resolve("file:weights/r50.pth#sha256=ab", "/proj") == "file:/proj/weights/r50.pth#sha256=ab"
    assert resolve("file:/abs/r50.pth#sha256=ab", "/proj") == "file:/abs/r50.pth#sha256=ab"
    assert resolve("package:efficientnet-lite2", "/proj") == "package:efficientnet-lite2"


def test_paired_differences_from_predictions_feed_the_goal():
    """SSD-KD, plain student and teacher (2 seeds) on the same images: paired differences with Holm on the
    secondary comparisons, estimates equal to the differences of the mean-over-seed metrics."""
    rng = np.random.default_rng(1)
    n = 40
    labels = np.repeat(np.arange(3), [20, 12, 8])
    frames = []
    for model, skill in (("teacher", 2.0), ("ce", 0.5), ("kd", 0.8), ("ssd_kd", 1.5)):
        for seed in (0, 1):
            logits = rng.normal(size=(n, 3)) + skill * np.eye(3)[labels]
            p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            order = rng.permutation(n)  # rows in another order for every model: aligned by image id
            frame = pd.DataFrame({"model": model, "seed": seed, "split": "test",
                                  "image_id": [f"i{k:02d}" for k in order], "lesion_id": [f"l{k // 2}" for k in order],
                                  "label_index": labels[order]})
            for c, name in enumerate(CLASSES):
                frame[f"prob_{name}"] = p[order, c]
            frames.append(frame)
    evaluation = workflow.evaluate_predictions(pd.concat(frames), CLASSES, n_resamples=50, seed=0,
                                               n_paired_resamples=300)
    assert evaluation["n_paired_resamples"] == 300
    differences = pd.DataFrame(evaluation["differences"]).set_index(["reference", "metric"])
    assert len(differences) == 3 * 3 and set(differences.index.get_level_values(0)) == {"teacher", "ce", "kd"}
    assert differences["primary"].sum() == 2
    assert differences.loc[("ce", "balanced_accuracy"), "primary"]
    assert differences.loc[("teacher", "accuracy"), "primary"]
    # Holm over the secondary comparisons of one metric (balanced accuracy: teacher and KD; the plain student's
    # is the goal's, primary, and keeps its p): the smaller p doubled, the larger at least that
    secondary = differences.xs("balanced_accuracy", level="metric").loc[["teacher", "kd"]]
    small, large = sorted(secondary["p"])
    assert sorted(secondary["p_holm"]) == pytest.approx([min(1, 2 * small), max(min(1, 2 * small), large)])
    assert differences.loc[("ce", "balanced_accuracy"), "p_holm"] == differences.loc[("ce", "balanced_accuracy"), "p"]
    result = _result(evaluation)
    table = workflow.comparison_table(result).set_index("model")
    goal = workflow.goal_check(result)
    assert goal["balanced_accuracy_gain_over_plain"] == pytest.approx(
        differences.loc[("ce", "balanced_accuracy"), "estimate"])
    assert goal["accuracy_minus_teacher"] == pytest.approx(
        table.loc["SSD-KD", "accuracy_mean"] - table.loc["Teacher", "accuracy_mean"])
    low, high = goal["balanced_accuracy_gain_low"], goal["balanced_accuracy_gain_high"]
    assert low <= goal["balanced_accuracy_gain_over_plain"] <= high
    shown = workflow.difference_table(result)
    assert shown["role"].tolist().count("primary (goal)") == 2 and len(shown) == 9
    assert set(shown["verdict"]) <= {"significant", "not significant"}
    frames[0] = frames[0].assign(image_id=frames[0]["image_id"].str.replace("i00", "x00"))
    with pytest.raises(ValueError, match="other images"):
        workflow.evaluate_predictions(pd.concat(frames), CLASSES, n_resamples=10, seed=0, n_paired_resamples=10)
