"""CoMoTo point extraction, LsKD, image-level KD and ImPA on known feature maps and loop references."""

from __future__ import annotations

import math

import pytest
import torch

from diffkd_study.methods.comoto.lesion import (
    POINT_NAMES,
    ImageLevelKDLoss,
    ImPALoss,
    LesionKDLoss,
    boxes_from_masks,
    extract_background_points,
    extract_lesion_points,
    impa_loss,
)

TOL = 1e-6


def _value(x) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def _position_map(h: int, w: int, batch: int = 1) -> torch.Tensor:
    """Channel 0 holds x + 100 y; channel 1 holds 1000 + x + 100 y."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    base = (xs + 100 * ys).double()
    return torch.stack([base, 1000 + base]).unsqueeze(0).repeat(batch, 1, 1, 1)


# ------------------------------------------------------------------------------ lesion points
def test_nine_points_in_documented_order():
    fmap = _position_map(8, 8)
    # image 64 px -> 8 cells, ratio 1/8: (9, 17, 40, 50) -> (1.125, 2.125, 5, 6.25) -> (1, 2, 5, 6)
    box = torch.tensor([[9.0, 17.0, 40.0, 50.0]])
    result = extract_lesion_points(fmap, [box], (64, 64))
    assert POINT_NAMES == (
        "top_left", "top_right", "bottom_left", "bottom_right", "centre", "left_mid", "right_mid", "top_mid", "bottom_mid",
    )  # fmt: skip
    assert result.points[0, 0].tolist() == [201, 205, 601, 605, 403, 401, 405, 203, 603]
    assert result.points[0, 1].tolist() == [1201, 1205, 1601, 1605, 1403, 1401, 1405, 1203, 1603]
    assert result.valid.tolist() == [True]


@pytest.mark.parametrize(
    # The official subsets (comoto/engine/utils.py extract_critical_features): 1 centre; 4 corners
    # TL, TR, BL, BR; 5 centre, left-mid, right-mid, top-mid, bottom-mid (not corners + centre).
    "num_points, values", [(1, [403]), (4, [201, 205, 601, 605]), (5, [403, 401, 405, 203, 603])]
)
def test_point_subsets(num_points, values):
    fmap = _position_map(8, 8)
    result = extract_lesion_points(
        fmap, [torch.tensor([[9.0, 17.0, 40.0, 50.0]])], (64, 64), num_points=num_points
    )
    assert result.points[0, 0].tolist() == values


def test_unsupported_point_count_is_rejected():
    with pytest.raises(ValueError, match="num_points"):
        extract_lesion_points(_position_map(4, 4), [torch.zeros(1, 4)], (4, 4), num_points=3)


def test_boxes_of_an_image_are_averaged():
    fmap = _position_map(8, 8)
    boxes = torch.tensor([[9.0, 17.0, 40.0, 50.0], [0.0, 0.0, 8.0, 8.0]])  # second -> (0, 0, 1, 1)
    second = [0, 1, 100, 101, 0, 0, 1, 0, 100]
    first = [201, 205, 601, 605, 403, 401, 405, 203, 603]
    result = extract_lesion_points(fmap, [boxes], (64, 64))
    assert result.points[0, 0].tolist() == [(a + b) / 2 for a, b in zip(first, second, strict=True)]


def test_official_scaling_uses_the_width_ratio_for_both_axes():
    fmap = _position_map(8, 8)
    box = [torch.tensor([[16.0, 8.0, 48.0, 24.0]])]  # image H=32, W=64
    official = extract_lesion_points(fmap, box, (32, 64))  # y * 8/64 -> (1, 3)
    corrected = extract_lesion_points(fmap, box, (32, 64), per_axis_scale=True)  # y * 8/32 -> (2, 6)
    assert official.points[0, 0].tolist() == [102, 106, 302, 306, 204, 202, 206, 104, 304]
    assert corrected.points[0, 0].tolist() == [202, 206, 602, 606, 404, 402, 406, 204, 604]


def test_boxes_are_clamped_to_the_map():
    fmap = _position_map(8, 8)
    result = extract_lesion_points(fmap, [torch.tensor([[40.0, 40.0, 200.0, 100.0]])], (64, 64))
    assert result.points[0, 0].tolist() == [505, 507, 705, 707, 606, 605, 607, 506, 706]


def test_images_without_boxes_are_marked_invalid():
    fmap = _position_map(8, 8, batch=3)
    lesions = [torch.zeros(0, 4), {"boxes": torch.tensor([[9.0, 17.0, 40.0, 50.0]])}, torch.zeros(0, 4)]
    result = extract_lesion_points(fmap, lesions, (64, 64))
    assert result.valid.tolist() == [False, True, False]
    assert result.points[0].abs().sum() == 0 and result.points[2].abs().sum() == 0
    assert result.points[1, 0, 0] == 201


def test_batch_size_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="2 images but the feature map holds 1"):
        extract_lesion_points(_position_map(4, 4), [torch.zeros(0, 4)] * 2, (4, 4))


# ----------------------------------------------------------------------------------- masks
def _two_blob_mask() -> torch.Tensor:
    mask = torch.zeros(2, 16, 16)
    mask[0, 2:5, 3:7] = 1  # blob 1: x 3..6, y 2..4
    mask[0, 5, 7] = 1  # touches blob 1 diagonally only: same 8-connected region -> x 3..7, y 2..5
    mask[0, 10:13, 9:15] = 1  # blob 2: x 9..14, y 10..12
    return mask  # image 1 is empty


def test_boxes_from_masks_components_and_bbox():
    components = boxes_from_masks(_two_blob_mask())
    assert components[0].tolist() == [[3, 2, 7, 5], [9, 10, 14, 12]]
    assert components[1].shape == (0, 4)
    bbox = boxes_from_masks(_two_blob_mask().unsqueeze(1), mode="bbox")
    assert bbox[0].tolist() == [[3, 2, 14, 12]]
    assert bbox[1].shape == (0, 4)


def test_a_box_tensor_is_not_mistaken_for_masks():
    with pytest.raises(ValueError, match="must be binary"):
        extract_lesion_points(_position_map(8, 8), torch.tensor([[[9.0, 17.0, 40.0, 50.0]]]), (64, 64))


def test_masks_give_the_same_points_as_their_boxes():
    fmap = _position_map(8, 8, batch=2)
    from_mask = extract_lesion_points(fmap, _two_blob_mask(), None)  # image size = mask size 16 x 16
    from_boxes = extract_lesion_points(fmap, boxes_from_masks(_two_blob_mask()), (16, 16))
    assert torch.equal(from_mask.points, from_boxes.points)
    assert from_mask.valid.tolist() == [True, False]


# ------------------------------------------------------------------------------ background
def test_background_points_avoid_boxes_and_follow_the_generator():
    fmap = _position_map(4, 4)
    # image 4 x 4 = map: the official slice [1:3, 1:3] is exclusive, so cells x, y in {1, 2} are lesion
    box = [torch.tensor([[1.0, 1.0, 3.0, 3.0]])]
    result = extract_background_points(fmap, box, (4, 4), generator=torch.Generator().manual_seed(0))
    background = [x + 100 * y for y in range(4) for x in range(4) if not (1 <= x <= 2 and 1 <= y <= 2)]
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0)).tolist()
    assert result.points[0, 0].tolist() == [background[i] for i in order[:9]]
    again = extract_background_points(fmap, box, (4, 4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(result.points, again.points)


def test_background_slice_is_exclusive_as_in_the_official_code():
    # comoto/engine/utils.py extract_noncritical_features: boxes_mask[ymin:ymax, xmin:xmax] = 0, so the box
    # (1, 1, 2, 2) on a 4 x 4 map removes only cell (1, 1), and a box inside one cell removes nothing.
    fmap = _position_map(4, 4, batch=2)
    lesions = [torch.tensor([[1.0, 1.0, 2.0, 2.0]]), torch.tensor([[1.2, 1.2, 1.8, 1.8]])]
    result = extract_background_points(fmap, lesions, (4, 4), num_points=16, generator=torch.Generator().manual_seed(0))
    assert set(result.points[0, 0].tolist()) == {x + 100 * y for y in range(4) for x in range(4)} - {101}
    assert set(result.points[1, 0].tolist()) == {x + 100 * y for y in range(4) for x in range(4)}
    # A box reaching the right and bottom edges (scaled 4 = the map size) removes through the last cells.
    edge = extract_background_points(_position_map(4, 4), [torch.tensor([[2.0, 2.0, 4.0, 4.0]])], (4, 4),
                                     num_points=16, generator=torch.Generator().manual_seed(0))
    assert set(edge.points[0, 0].tolist()) == {x + 100 * y for y in range(4) for x in range(4)} - {202, 203, 302, 303}


def test_background_repeats_when_short_and_is_invalid_when_absent():
    fmap = _position_map(3, 3, batch=2)
    # image 0 keeps 5 background cells of 9 (slice [0:2, 0:2] removed), image 1 none ([0:3, 0:3])
    lesions = [torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[0.0, 0.0, 3.0, 3.0]])]
    result = extract_background_points(fmap, lesions, (3, 3), generator=torch.Generator().manual_seed(1))
    values = result.points[0, 0].tolist()
    assert len(set(values)) == 5 and values[5:] == values[:4]
    assert set(values) == {2, 102, 200, 201, 202}
    assert result.valid.tolist() == [True, False]


# ------------------------------------------------------------------------------------ LsKD
def _points_loop(fmap: list, boxes: list, image_hw: tuple[int, int]) -> list[list[float]] | None:
    """One image: (C, 9) lesion points by the official rule, or None without boxes."""
    if not boxes:
        return None
    c, h, w = len(fmap), len(fmap[0]), len(fmap[0][0])
    r = w / image_hw[1]
    acc = [[0.0] * 9 for _ in range(c)]
    for x1, y1, x2, y2 in boxes:
        x1, x2 = (min(max(int(v * r), 0), w - 1) for v in (x1, x2))
        y1, y2 = (min(max(int(v * r), 0), h - 1) for v in (y1, y2))
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        pts = [(x1, y1), (x2, y1), (x1, y2), (x2, y2), (cx, cy), (x1, cy), (x2, cy), (cx, y1), (cx, y2)]
        for ch in range(c):
            for p, (x, y) in enumerate(pts):
                acc[ch][p] += fmap[ch][y][x] / len(boxes)
    return acc


def _softmax(values):
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def _kd_loop(student_rows, teacher_rows, temperature, alpha):
    total = 0.0
    for s, t in zip(student_rows, teacher_rows, strict=True):
        p_s = _softmax([v / temperature for v in s])
        p_t = _softmax([v / temperature for v in t])
        total += sum(a * math.log(a / b) for a, b in zip(p_t, p_s, strict=True))
    return alpha * temperature**2 * total / len(student_rows)


def _batch_mean(per_image):
    kept = [m for m in per_image if m is not None]
    return [
        [sum(m[c][p] for m in kept) / len(kept) for p in range(len(kept[0][0]))] for c in range(len(kept[0]))
    ]


def _linear_loop(rows, weight, bias):
    return [
        [
            sum(wi * x for wi, x in zip(w_row, row, strict=True)) + b
            for w_row, b in zip(weight, bias, strict=True)
        ]
        for row in rows
    ]


def _rand(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_lskd_against_loop_skipping_images_without_boxes():
    student_map, teacher_map = _rand(0, 3, 2, 4, 4), _rand(1, 2, 2, 6, 6)
    # student images 16 x 16 (image 1 has no lesion), teacher images 24 x 24
    student_boxes = [[[2.0, 3.0, 11.0, 9.0]], [], [[0.0, 0.0, 15.0, 15.0], [4.0, 8.0, 8.0, 12.0]]]
    teacher_boxes = [[[3.0, 3.0, 20.0, 14.0]], [[10.0, 0.0, 23.0, 23.0]]]
    loss = LesionKDLoss().double()
    weight = _rand(2, 9, 9).tolist()
    bias = _rand(3, 9).tolist()
    with torch.no_grad():
        loss.projection.weight.copy_(torch.tensor(weight))
        loss.projection.bias.copy_(torch.tensor(bias))
    got = loss(
        student_map,
        teacher_map,
        [torch.tensor(b).reshape(-1, 4) for b in student_boxes],
        [torch.tensor(b).reshape(-1, 4) for b in teacher_boxes],
        (16, 16),
        (24, 24),
    )
    z_s = _batch_mean(
        [_points_loop(m, b, (16, 16)) for m, b in zip(student_map.tolist(), student_boxes, strict=True)]
    )
    z_t = _batch_mean(
        [_points_loop(m, b, (24, 24)) for m, b in zip(teacher_map.tolist(), teacher_boxes, strict=True)]
    )
    expected = _kd_loop(_linear_loop(z_s, weight, bias), z_t, 4.0, 2.0)
    assert _value(got) == pytest.approx(expected, abs=TOL)
    assert loss.last_stats == {"empty": 0.0, "n_student_images": 2.0, "n_teacher_images": 2.0}


def test_lskd_without_any_lesion_is_zero_with_a_flag_and_backpropagates():
    student_map = _rand(4, 2, 2, 4, 4).requires_grad_(True)
    loss = LesionKDLoss().double()
    got = loss(student_map, _rand(5, 2, 2, 4, 4), [torch.zeros(0, 4)] * 2, None, (16, 16))
    assert _value(got) == 0.0 and loss.last_stats["empty"] == 1.0
    got.backward()
    assert loss.projection.weight.grad is not None and loss.projection.weight.grad.abs().sum() == 0


def test_lskd_with_masks_and_shared_lesions_matches_boxes():
    student_map, teacher_map = _rand(6, 2, 2, 8, 8), _rand(7, 2, 2, 8, 8)
    mask = _two_blob_mask()
    torch.manual_seed(0)
    loss = LesionKDLoss().double()
    from_masks = loss(student_map, teacher_map, mask)
    from_boxes = loss(
        student_map, teacher_map, boxes_from_masks(mask), boxes_from_masks(mask), (16, 16), (16, 16)
    )
    assert _value(from_masks) == pytest.approx(_value(from_boxes), abs=TOL)
    assert loss.last_stats["n_student_images"] == 1.0


def test_lskd_gradient_reaches_student_and_projection_only():
    student_map = _rand(8, 2, 2, 4, 4).float().requires_grad_(True)
    teacher_map = _rand(9, 2, 2, 4, 4).float().requires_grad_(True)
    boxes = [torch.tensor([[0.0, 0.0, 3.0, 3.0]]), torch.tensor([[1.0, 1.0, 2.0, 3.0]])]
    loss = LesionKDLoss()
    loss(student_map, teacher_map, boxes, None, (4, 4)).backward()
    assert student_map.grad.abs().sum() > 0
    assert loss.projection.weight.grad.abs().sum() > 0
    assert teacher_map.grad is None


def test_image_level_kd_against_loop():
    student_map, teacher_map = _rand(10, 2, 3, 2, 2), _rand(11, 3, 3, 3, 3)
    loss = ImageLevelKDLoss(student_hw=4, teacher_hw=9).double()
    weight, bias = _rand(12, 9, 4).tolist(), _rand(13, 9).tolist()
    with torch.no_grad():
        loss.projection.weight.copy_(torch.tensor(weight))
        loss.projection.bias.copy_(torch.tensor(bias))

    def flat_mean(fmap):  # (B, C, h, w) -> (C, h*w) batch mean
        flat = [[[v for row in channel for v in row] for channel in image] for image in fmap]
        return [
            [sum(img[c][p] for img in flat) / len(flat) for p in range(len(flat[0][0]))]
            for c in range(len(flat[0]))
        ]

    z_s = _linear_loop(flat_mean(student_map.tolist()), weight, bias)
    expected = _kd_loop(z_s, flat_mean(teacher_map.tolist()), 4.0, 2.0)
    assert _value(loss(student_map, teacher_map)) == pytest.approx(expected, abs=TOL)


# ------------------------------------------------------------------------------------ ImPA
def _cos(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        max(math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)), 1e-8)
    )


def _impa_loop(positives, negatives, beta):
    v = [[x for ch in p for x in ch] for p in positives]
    u = [[x for ch in n for x in ch] for n in negatives]
    pull = sum(max(1 - _cos(a, b), 0.0) for a in v for b in v) / (len(v) * len(v))
    push = sum(max(_cos(a, b), 0.0) for a in v for b in u) / (len(v) * len(u))
    return beta * (pull + push)


def test_impa_function_against_loop():
    positives, negatives = _rand(14, 3, 2, 3), _rand(15, 3, 2, 3)
    expected = _impa_loop(positives.tolist(), negatives.tolist(), 2.0)
    assert _value(impa_loss(positives, negatives, beta=2.0)) == pytest.approx(expected, abs=TOL)
    # i = j contributes 0 to the pull term: identical positives leave only the push term
    same = positives[:1].repeat(3, 1, 1)
    assert _value(impa_loss(same, negatives)) == pytest.approx(
        _impa_loop(same.tolist(), negatives.tolist(), 2.0), abs=TOL
    )


def test_impa_module_skips_lesion_free_positives_but_keeps_their_background():
    fmap = _rand(16, 3, 2, 4, 4)
    boxes = [torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.zeros(0, 4), torch.tensor([[2.0, 2.0, 3.0, 3.0]])]
    loss = ImPALoss(seed=3)
    got = loss(fmap, boxes, (4, 4))
    maps = fmap.tolist()
    positives = [_points_loop(m, b.tolist(), (4, 4)) for m, b in zip(maps, boxes, strict=True)]
    generator = torch.Generator().manual_seed(3)
    negatives = []
    for m, b in zip(maps, boxes, strict=True):
        cells = [
            (x, y) for y in range(4) for x in range(4)
            if not any(x1 <= x < x2 and y1 <= y < y2 for x1, y1, x2, y2 in b.int().tolist())
        ]  # fmt: skip  (the official half-open slice)
        order = torch.randperm(len(cells), generator=generator).tolist()
        negatives.append([[ch[cells[i][1]][cells[i][0]] for i in order[:9]] for ch in m])
    expected = _impa_loop([p for p in positives if p is not None], negatives, 2.0)
    assert _value(got) == pytest.approx(expected, abs=TOL)
    assert loss.last_stats == {"empty": 0.0, "n_positive_images": 2.0, "n_negative_images": 3.0}


def test_impa_without_lesions_is_zero_with_a_flag():
    fmap = _rand(17, 2, 2, 4, 4).requires_grad_(True)
    loss = ImPALoss(seed=0)
    got = loss(fmap, [torch.zeros(0, 4)] * 2, (4, 4))
    assert _value(got) == 0.0 and loss.last_stats["empty"] == 1.0
    got.backward()
    assert fmap.grad.abs().sum() == 0


def test_impa_gradient_reaches_the_feature_map():
    fmap = _rand(18, 2, 2, 4, 4).requires_grad_(True)
    ImPALoss(seed=0)(
        fmap, [torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[1.0, 1.0, 3.0, 2.0]])], (4, 4)
    ).backward()
    assert fmap.grad.abs().sum() > 0
