"""FROC, sensitivity at k FPs per image and mean sensitivity on hand-made detection lists."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diffkd_study.metrics.froc import (
    FROCMetric,
    evaluate_detections,
    fold_summary,
    froc_curve,
    match_detections,
    sensitivity_at,
)


def _box(cx: float, cy: float, half: float = 4.0) -> list[float]:
    return [cx - half, cy - half, cx + half, cy + half]


# Image A: two GT boxes; B: two (the second is never found); C: none (a negative image).
TRUTH = {
    "A": [[0, 0, 20, 20], [100, 100, 140, 120]],  # centres (10, 10), (120, 110); half diagonals 14.1, 22.4
    "B": [[50, 50, 60, 60], [200, 200, 210, 210]],  # centres (55, 55), (205, 205); half diagonal 7.1 -> reach 10
    "C": [],
}
DETECTIONS = pd.DataFrame(
    [
        ("A", 0.9, *_box(12, 10)),  # hits A0 (distance 2)
        ("B", 0.8, *_box(70, 55)),  # distance 15 > 10: FP
        ("A", 0.7, *_box(10, 12)),  # A0 again: neither TP nor FP
        ("C", 0.6, *_box(30, 30)),  # FP
        ("B", 0.5, *_box(58, 59)),  # hits B0 (distance 5)
        ("A", 0.4, *_box(300, 300)),  # FP ...
        ("A", 0.4, *_box(125, 110)),  # ... tied with a hit on A1 (distance 5)
        ("C", 0.3, *_box(30, 30)),  # FP
        ("C", 0.2, *_box(40, 40)),  # FP
        ("B", 0.1, *_box(100, 100)),  # FP
    ],
    columns=["image_id", "score", "x1", "y1", "x2", "y2"],
)


def test_matching_by_centre_distance_with_duplicates():
    matched = match_detections(DETECTIONS, TRUTH, min_distance=10.0)
    assert matched["hit"].tolist() == [True, False, True, False, True, False, True, False, False, False]
    assert matched["gt_index"].tolist() == [0, -1, 0, -1, 0, -1, 1, -1, -1, -1]
    assert matched.loc[0, "distance"] == pytest.approx(2.0)
    assert matched.loc[1, "distance"] == pytest.approx(15.0)


def test_froc_curve_by_hand():
    matched = match_detections(DETECTIONS, TRUTH, min_distance=10.0)
    curve = froc_curve(matched, n_images=3, n_boxes=4)
    # thresholds inf, .9, .8, .7, .6, .5, .4 (two detections), .3, .2, .1
    assert curve["tp"].tolist() == [0, 1, 1, 1, 1, 2, 3, 3, 3, 3]
    assert curve["fp"].tolist() == [0, 0, 1, 1, 2, 2, 3, 4, 5, 6]
    assert curve["n_detections"].tolist() == [0, 1, 2, 3, 4, 5, 7, 8, 9, 10]
    assert curve["threshold"].tolist()[1:] == [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    assert np.allclose(curve["fps_per_image"], np.array([0, 0, 1, 1, 2, 2, 3, 4, 5, 6]) / 3)


def test_sensitivity_at_fps_step_and_interpolated():
    curve = froc_curve(match_detections(DETECTIONS, TRUTH, 10.0), 3, 4)
    step = sensitivity_at(curve, (0.5, 0.8, 1, 2, 4), method="step")
    interp = sensitivity_at(curve, (0.5, 0.8, 1, 2, 4))
    # 0.5 FP/image: envelope points (1/3, 1/4) and (2/3, 2/4) -> 1/4 + (0.5 - 1/3) / (1/3) * 1/4 = 3/8
    # 0.8 FP/image: the tie at 0.4 jumps from 2 to 3 FPs (0.667 -> 1.0): (2/4 -> 3/4) -> 2/4 + 0.4 * 1/4 = 0.6
    assert step == pytest.approx({0.5: 0.25, 0.8: 0.5, 1.0: 0.75, 2.0: 0.75, 4.0: 0.75})
    assert interp == pytest.approx({0.5: 0.375, 0.8: 0.6, 1.0: 0.75, 2.0: 0.75, 4.0: 0.75})


def test_mean_sensitivity_and_flat_extension_beyond_the_last_point():
    result = evaluate_detections(DETECTIONS, TRUTH, 10.0)
    # at most 6 FPs on 3 images = 2 FP/image: 3 and 4 FP/image keep the final sensitivity 3/4
    assert result.sensitivity == pytest.approx({1.0: 0.75, 2.0: 0.75, 3.0: 0.75, 4.0: 0.75})
    assert result.mean_sensitivity == pytest.approx(0.75)
    assert (result.n_images, result.n_boxes, result.n_detections) == (3, 4, 10)
    assert result.max_fps_per_image == pytest.approx(2.0)
    summary = result.summary("test_")
    assert summary["test_sens@2fp"] == pytest.approx(0.75) and summary["test_n_boxes"] == 4


def test_no_exact_k_fps_is_interpolated_not_a_division_by_zero():
    # 2 images, 1 box each; scores tied in pairs: FP counts jump 0 -> 2 -> 4, never exactly 1 or 3 FPs (0.5/1.5 per image)
    truth = {"a": [[0, 0, 10, 10]], "b": [[0, 0, 10, 10]]}
    det = pd.DataFrame(
        [("a", 0.9, *_box(50, 50)), ("b", 0.9, *_box(50, 50)), ("a", 0.5, *_box(5, 5)), ("b", 0.5, *_box(80, 80)),
         ("b", 0.5, *_box(90, 90)), ("b", 0.2, *_box(5, 5))],
        columns=["image_id", "score", "x1", "y1", "x2", "y2"],
    )
    result = evaluate_detections(det, truth, 0.0, fps=(0.5, 1.0, 1.5, 2.0))
    # operating points (fp/image, sens): (0, 0), (1, 0), (2, 0.5), (2, 1.0)
    assert result.curve["fps_per_image"].tolist() == [0.0, 1.0, 2.0, 2.0]
    assert result.sensitivity == pytest.approx({0.5: 0.0, 1.0: 0.0, 1.5: 0.5, 2.0: 1.0})
    step = sensitivity_at(result.curve, (1.5,), method="step")
    assert step == {1.5: 0.0}


def test_nearest_ground_truth_box_gets_the_hit():
    truth = {"x": [[0, 0, 40, 40], [30, 0, 70, 40]]}  # centres (20, 20) and (50, 20), both in reach of (40, 20)
    det = pd.DataFrame([("x", 1.0, *_box(40, 20))], columns=["image_id", "score", "x1", "y1", "x2", "y2"])
    matched = match_detections(det, truth, 0.0)
    assert matched["gt_index"].tolist() == [1]


def test_min_distance_widens_the_reach_per_image():
    truth = {"p": [[0, 0, 10, 10]], "q": [[0, 0, 10, 10]]}  # centre (5, 5), half diagonal 7.07
    det = pd.DataFrame([("p", 1.0, *_box(5, 25)), ("q", 1.0, *_box(5, 25))],
                       columns=["image_id", "score", "x1", "y1", "x2", "y2"])  # distance 20
    matched = match_detections(det, truth, {"p": 20.0, "q": 19.9})
    assert matched["hit"].tolist() == [True, False]  # inclusive at exactly 20


def _reference_step_froc(det: pd.DataFrame, truth: dict, reach: float, fps: tuple[float, ...]) -> list[float]:
    """The official duke-dbt-data algorithm, written as plain loops."""
    rows = []
    for r in det.itertuples():
        px, py = (r.x1 + r.x2) / 2, (r.y1 + r.y2) / 2
        best, best_d = -1, None
        for k, (x1, y1, x2, y2) in enumerate(truth[r.image_id]):
            d = ((px - (x1 + x2) / 2) ** 2 + (py - (y1 + y2) / 2) ** 2) ** 0.5
            if d <= max(((x2 - x1) ** 2 + (y2 - y1) ** 2) ** 0.5 / 2, reach) and (best_d is None or d < best_d):
                best, best_d = k, d
        rows.append((r.image_id, r.score, best))
    n_boxes = sum(len(b) for b in truth.values())
    tpr, fpr = [], []
    for th in sorted({s for _, s, _ in rows} | {np.inf}, reverse=True):
        kept = [(i, g) for i, s, g in rows if s >= th]
        tpr.append(len({(i, g) for i, g in kept if g >= 0}) / n_boxes)
        fpr.append(sum(1 for _, g in kept if g < 0) / len(truth))
    return [max(t for t, f in zip(tpr, fpr, strict=True) if f <= k) for k in fps]


@pytest.mark.parametrize("seed", range(5))
def test_step_method_equals_the_official_loop_on_random_lists(seed):
    r = np.random.default_rng(seed)
    truth = {f"im{i}": [_box(*r.uniform(20, 180, 2), r.uniform(3, 15)) for _ in range(r.integers(0, 3))] for i in range(6)}
    truth["im0"] = [_box(50, 50, 10)]
    n = 40
    centres = r.uniform(0, 200, (n, 2))
    det = pd.DataFrame({
        "image_id": r.choice(list(truth), n), "score": np.round(r.uniform(0, 1, n), 1),  # rounding makes ties
        "x1": centres[:, 0] - 5, "y1": centres[:, 1] - 5, "x2": centres[:, 0] + 5, "y2": centres[:, 1] + 5,
    })
    fps = (0.25, 0.5, 1.0, 2.0, 4.0)
    got = evaluate_detections(det, truth, 30.0, fps=fps, method="step").sensitivity
    assert list(got.values()) == pytest.approx(_reference_step_froc(det, truth, 30.0, fps))


def test_accumulating_metric_equals_the_function():
    metric = FROCMetric()
    for image_id, boxes in TRUTH.items():
        part = DETECTIONS[DETECTIONS["image_id"] == image_id]
        metric.update(image_id, part[["x1", "y1", "x2", "y2"]].to_numpy(), part["score"].to_numpy(), boxes, 10.0)
    assert metric.aggregate().sensitivity == evaluate_detections(DETECTIONS, TRUTH, 10.0).sensitivity
    with pytest.raises(ValueError, match="already added"):
        metric.update("A", [], [], [], 10.0)


def test_images_without_detections_and_no_detections_at_all():
    result = evaluate_detections(DETECTIONS.iloc[:0], {"a": [[0, 0, 5, 5]]}, 1.0)
    assert result.mean_sensitivity == 0.0 and result.n_detections == 0


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="missing \\['score'\\]"):
        evaluate_detections(DETECTIONS.drop(columns="score"), TRUTH, 10.0)
    with pytest.raises(ValueError, match="no ground-truth entry"):
        evaluate_detections(DETECTIONS, {"A": TRUTH["A"]}, 10.0)
    flipped = DETECTIONS.copy()
    flipped.loc[3, "x2"] = -100.0
    with pytest.raises(ValueError, match="row 3 has x2 < x1"):
        evaluate_detections(flipped, TRUTH, 10.0)
    with pytest.raises(ValueError, match="not \\(x1, y1, x2, y2\\)"):
        evaluate_detections(DETECTIONS, {**TRUTH, "C": [[5, 5, 1, 9]]}, 10.0)
    with pytest.raises(ValueError, match="no boxes"):
        evaluate_detections(DETECTIONS, {"A": [], "B": [], "C": []}, 10.0)
    with pytest.raises(ValueError, match="interpolate"):
        sensitivity_at(froc_curve(match_detections(DETECTIONS, TRUTH, 1.0), 3, 4), method="linear")


def test_fold_summary_mean_sd_n():
    results = pd.DataFrame({"method": ["a", "a", "a", "b", "b"], "fold": [0, 1, 2, 0, 1],
                            "mean_sensitivity": [0.2, 0.4, 0.6, 0.5, 0.5]})
    out = fold_summary(results, "mean_sensitivity", ["method"]).set_index("method")
    assert out.loc["a", "mean"] == pytest.approx(0.4) and out.loc["a", "sd"] == pytest.approx(0.2)
    assert out.loc["b", "sd"] == 0.0 and out["n_folds"].tolist() == [3, 2]
