"""SSD-KD: batch layout, error-level row selection, relational terms and the full objective.

Golden values come from loop implementations written here from docs/methods/ssdkd.md §3.5/§3.6 (float64, 1e-6).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffkd_study.distill.relational import RKDLoss
from diffkd_study.methods.ssdkd.losses import (
    ChannelRelationLoss,
    DiverseKDLoss,
    DualRelationalLoss,
    SSDKDLoss,
    TeacherSSHeadLoss,
)
from diffkd_study.methods.ssdkd.rotation import (
    error_level_selection,
    layout_indices,
    rotate_batch,
    rotation_targets,
    similarity_matrix,
    source_targets,
)

TOL = 1e-6


def _value(x) -> float:
    """A Python float of a tensor (detached) or number."""
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


# ------------------------------------------------------------------------- loop reference helpers
def _softmax(values):
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def _mean_kl(student_rows, teacher_rows, temperature):
    if not student_rows:
        return 0.0
    return _weighted_mean_kl(student_rows, teacher_rows, temperature, [1.0] * len(student_rows))


def _weighted_mean_kl(student_rows, teacher_rows, temperature, row_weights):
    total = sum(
        w * _kl(_softmax([v / temperature for v in t]), _softmax([v / temperature for v in s]))
        for s, t, w in zip(student_rows, teacher_rows, row_weights, strict=True)
    )
    return temperature**2 * total / sum(row_weights)


def _wce(rows, target, weights):
    num = den = 0.0
    for row, y in zip(rows, target, strict=True):
        w = 1.0 if weights is None else weights[y]
        num += -w * math.log(_softmax(row)[y])
        den += w
    return num / den


def _norm(v):
    return math.sqrt(sum(x * x for x in v))


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True)) / max(_norm(a) * _norm(b), 1e-8)


def _smooth_l1(a, b):
    total = 0.0
    for x, y in zip(a, b, strict=True):
        d = abs(x - y)
        total += 0.5 * d * d if d < 1 else d - 0.5
    return total / len(a)


def _rkd_dist(emb_s, emb_t):
    def normalised(emb):
        n = len(emb)
        d = [
            [_norm([a - b for a, b in zip(emb[i], emb[j], strict=True)]) if i != j else 0.0 for j in range(n)]
            for i in range(n)
        ]
        nonzero = [x for row in d for x in row if x > 0]
        mu = sum(nonzero) / len(nonzero)
        return [x / mu for row in d for x in row]

    return _smooth_l1(normalised(emb_s), normalised(emb_t))


def _rkd_angle(emb_s, emb_t):
    def angles(emb):
        n = len(emb)
        out = []
        for a in range(n):
            for b in range(n):
                for c in range(n):
                    u = [x - y for x, y in zip(emb[b], emb[a], strict=True)]
                    v = [x - y for x, y in zip(emb[c], emb[a], strict=True)]
                    nu, nv = max(_norm(u), 1e-12), max(_norm(v), 1e-12)
                    out.append(sum(x * y for x, y in zip(u, v, strict=True)) / (nu * nv))
        return out

    return _smooth_l1(angles(emb_s), angles(emb_t))


def _crkd(feat_s, feat_t):
    sq, count = 0.0, 0
    for fs, ft in zip(feat_s, feat_t, strict=True):
        c = len(fs)
        flat_s = [[x for row in ch for x in row] for ch in fs]
        flat_t = [[x for row in ch for x in row] for ch in ft]
        hw = len(flat_s[0])
        for i in range(c):
            for j in range(c):
                gs = sum(flat_s[i][k] * flat_s[j][k] for k in range(hw)) / (c * hw)
                gt = sum(flat_t[i][k] * flat_t[j][k] for k in range(hw)) / (c * hw)
                sq += (gs - gt) ** 2
                count += 1
    return math.sqrt(sq / count)


def _rank(scores, target):
    """Position of the target in the row sorted descending (no ties in the test data)."""
    order = sorted(range(len(scores)), key=lambda k: -scores[k])
    return order.index(target)


def _select(score_rows, targets, ratio):
    ranks = [_rank(row, y) for row, y in zip(score_rows, targets, strict=True)]
    correct = [i for i, r in enumerate(ranks) if r == 0]
    wrong = sorted((i for i, r in enumerate(ranks) if r != 0), key=lambda i: (ranks[i], i))
    return sorted(correct + wrong[: int(len(wrong) * ratio)])


def _rand(seed, *shape, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


# -------------------------------------------------------------------------------------- layout
def test_rotate_batch_layout_and_copies():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float64).reshape(2, 1, 3, 3)
    out = rotate_batch(x)
    assert out.shape == (8, 1, 3, 3)
    for i in range(2):
        for k in range(4):
            assert torch.equal(out[4 * i + k], torch.rot90(x[i], k, dims=(-2, -1)))
    # 90 degrees counter-clockwise by hand: [[0,1,2],[3,4,5],[6,7,8]] -> [[2,5,8],[1,4,7],[0,3,6]]
    assert out[1, 0].tolist() == [[2, 5, 8], [1, 4, 7], [0, 3, 6]]
    assert out[2, 0].tolist() == [[8, 7, 6], [5, 4, 3], [2, 1, 0]]


def test_rotate_batch_matches_official_numpy_rotation_of_hwc_images():
    image_hwc = np.arange(4 * 4 * 3).reshape(4, 4, 3)
    chw = torch.from_numpy(image_hwc.transpose(2, 0, 1).copy()).unsqueeze(0)
    out = rotate_batch(chw)
    for k in range(4):
        assert np.array_equal(out[k].numpy().transpose(1, 2, 0), np.rot90(image_hwc, k))


def test_rotate_batch_rejects_non_square():
    with pytest.raises(ValueError, match="square"):
        rotate_batch(torch.zeros(1, 3, 4, 5))


def test_layout_indices_and_targets():
    nor, aug = layout_indices(8)
    assert nor.tolist() == [True, False, False, False, True, False, False, False]
    assert aug.tolist() == [not v for v in nor.tolist()]
    assert rotation_targets(torch.tensor([5, 7])).tolist() == [5, 5, 5, 7, 7, 7]
    assert source_targets(2).tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="multiple of 4"):
        layout_indices(6)


def test_similarity_matrix_against_loop():
    rep = _rand(0, 8, 5)
    rows = rep.tolist()
    nor, aug = rows[0::4], [r for i, r in enumerate(rows) if i % 4]
    expected = [[_cos(a, n) for n in nor] for a in aug]
    got = similarity_matrix(rep)
    assert got.shape == (6, 2)
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=TOL, rtol=0)


# ----------------------------------------------------------------------------- row selection
# Six rows over four classes; the target's rank in each row is 0, 3, 1, 0, 2, 1.
SCORES = torch.tensor(
    [
        [0.70, 0.10, 0.15, 0.05],  # target 0: rank 0 (right)
        [0.40, 0.30, 0.20, 0.10],  # target 3: rank 3
        [0.50, 0.30, 0.15, 0.05],  # target 1: rank 1
        [0.10, 0.60, 0.20, 0.10],  # target 1: rank 0 (right)
        [0.40, 0.30, 0.20, 0.10],  # target 2: rank 2
        [0.20, 0.10, 0.45, 0.25],  # target 3: rank 1
    ]
)
SCORE_TARGETS = torch.tensor([0, 3, 1, 1, 2, 3])


@pytest.mark.parametrize(
    "ratio, kept",
    [
        (1.0, [0, 1, 2, 3, 4, 5]),  # everything
        (0.75, [0, 2, 3, 4, 5]),  # int(0.75 * 4) = 3 wrong rows kept: ranks 1, 1, 2; row 1 (rank 3) dropped
        (0.9, [0, 2, 3, 4, 5]),  # int(3.6) = 3: truncated, not rounded
        (0.5, [0, 2, 3, 5]),  # 2 wrong rows kept: the two rank-1 rows
        (0.0, [0, 3]),  # only rows the teacher ranks right
    ],
)
def test_error_level_selection_hand_example(ratio, kept):
    selection = error_level_selection(SCORES, SCORE_TARGETS, ratio)
    assert selection.index.tolist() == kept
    assert (selection.n_correct, selection.n_wrong) == (2, 4)


def test_error_level_selection_ties_keep_the_earlier_row():
    # rows 1 and 2 are both wrong with rank 1; int(0.5 * 2) = 1 wrong row is kept: row 1
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    assert error_level_selection(scores, torch.tensor([0, 0, 0]), 0.5).index.tolist() == [0, 1]


# --------------------------------------------------------------------------- relational terms
def test_rkd_terms_against_loop():
    emb_s, emb_t = _rand(1, 5, 3), _rand(2, 5, 4)
    terms = RKDLoss().terms(emb_s, emb_t)
    assert _value(terms["dist"]) == pytest.approx(25 * _rkd_dist(emb_s.tolist(), emb_t.tolist()), abs=TOL)
    assert _value(terms["angle"]) == pytest.approx(50 * _rkd_angle(emb_s.tolist(), emb_t.tolist()), abs=TOL)


def test_rkd_scale_makes_smooth_l1_hit_both_branches():
    # normalised distances (d01, d02, d12): student ~(0, 1.5, 1.5), teacher ~(1.5, 0, 1.5), so two
    # gaps exceed 1 (linear branch of smooth-L1) and one is 0 (quadratic branch)
    emb_s = torch.tensor([[0.0, 0.0], [0.01, 0.0], [0.0, 100.0]], dtype=torch.float64)
    emb_t = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 0.01]], dtype=torch.float64)
    assert _value(RKDLoss(1.0, 0.0)(emb_s, emb_t)) == pytest.approx(
        _rkd_dist(emb_s.tolist(), emb_t.tolist()), abs=TOL
    )


def test_crkd_against_loop():
    feat_s, feat_t = _rand(3, 2, 3, 2, 2), _rand(4, 2, 3, 2, 2)
    got = ChannelRelationLoss(weight=2.0)(feat_s, feat_t)
    assert _value(got) == pytest.approx(2.0 * _crkd(feat_s.tolist(), feat_t.tolist()), abs=TOL)


def test_crkd_channel_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="adapter must map"):
        ChannelRelationLoss()(torch.randn(1, 2, 2, 2), torch.randn(1, 3, 2, 2))


def _diverse_kd_inputs():
    """(logits_s, logits_t, target, emb_s, emb_t, feat_s, feat_t) of 4 rows and 3 classes, in ``terms`` order."""
    n, k = 4, 3
    logits_s, logits_t = _rand(5, n, k, scale=2), _rand(6, n, k, scale=2)
    target = torch.tensor([0, 2, 1, 2])
    emb_s, emb_t = _rand(7, n, 3), _rand(8, n, 5)
    feat_s, feat_t = _rand(9, n, 2, 2, 2), _rand(10, n, 2, 2, 2)
    return logits_s, logits_t, target, emb_s, emb_t, feat_s, feat_t


def test_diverse_kd_against_loop():
    logits_s, logits_t, target, emb_s, emb_t, feat_s, feat_t = _diverse_kd_inputs()
    weights = [1.0, 2.0, 4.0]
    loss = DiverseKDLoss(class_weights=weights).double()
    terms = loss.terms(logits_s, logits_t, target, emb_s, emb_t, feat_s, feat_t)
    expected = {
        "wce": 0.5 * _wce(logits_s.tolist(), target.tolist(), weights),
        "kl": 0.5 * _mean_kl(logits_s.tolist(), logits_t.tolist(), 5.0),
        "rkd_dist": 25 * _rkd_dist(emb_s.tolist(), emb_t.tolist()),
        "rkd_angle": 50 * _rkd_angle(emb_s.tolist(), emb_t.tolist()),
        "crkd": 1000 * _crkd(feat_s.tolist(), feat_t.tolist()),
    }
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert _value(terms[name]) == pytest.approx(value, abs=TOL), name
    total = loss(logits_s, logits_t, target, emb_s, emb_t, feat_s, feat_t)
    assert _value(total) == pytest.approx(sum(expected.values()), abs=TOL)


def test_dual_relational_constructs_and_matches_diverse_kd_relational_part():
    emb_s, emb_t = _rand(11, 4, 3), _rand(12, 4, 3)
    feat_s, feat_t = _rand(13, 4, 2, 2, 2), _rand(14, 4, 2, 2, 2)
    dr = DualRelationalLoss(lambd_rkd=2.0, lambd_crkd=10.0)
    expected = 2.0 * (
        25 * _rkd_dist(emb_s.tolist(), emb_t.tolist()) + 50 * _rkd_angle(emb_s.tolist(), emb_t.tolist())
    ) + 10.0 * _crkd(feat_s.tolist(), feat_t.tolist())
    assert _value(dr(emb_s, emb_t, feat_s, feat_t)) == pytest.approx(expected, abs=TOL)


# ------------------------------------------------------------------------------ full objective
def _head_loop(head, rows):
    w1, b1 = head[0].weight.tolist(), head[0].bias.tolist()
    w2, b2 = head[2].weight.tolist(), head[2].bias.tolist()
    out = []
    for e in rows:
        hidden = [
            max(sum(w * x for w, x in zip(wr, e, strict=True)) + b, 0.0) for wr, b in zip(w1, b1, strict=True)
        ]
        out.append(
            [sum(w * x for w, x in zip(wr, hidden, strict=True)) + b for wr, b in zip(w2, b2, strict=True)]
        )
    return out


def _similarity_loop(rep):
    nor = rep[0::4]
    aug = [r for i, r in enumerate(rep) if i % 4]
    return [[_cos(a, n) for n in nor] for a in aug]


def _ssd_batch(seed, batch=3, classes=4, dim=5, channels=2):
    n = 4 * batch
    return {
        "student_logits": _rand(seed, n, classes, scale=2),
        "teacher_logits": _rand(seed + 1, n, classes, scale=2),
        "target": torch.tensor([0, 3, 1, 2, 1, 0][:batch]),
        "student_embedding": _rand(seed + 2, n, dim),
        "teacher_embedding": _rand(seed + 3, n, dim),
        "student_feature": _rand(seed + 4, n, channels, 2, 2),
        "teacher_feature": _rand(seed + 5, n, channels, 2, 2),
    }


def test_ssd_kd_against_loop():
    data = _ssd_batch(20)
    weights = [1.0, 2.0, 0.5, 3.0]
    torch.manual_seed(0)
    loss = SSDKDLoss(student_dim=5, teacher_dim=5, class_weights=weights).double()
    with torch.no_grad():
        terms = loss.terms(**data)

    s_logits, t_logits = data["student_logits"].tolist(), data["teacher_logits"].tolist()
    target = data["target"].tolist()
    nor = [i for i in range(12) if i % 4 == 0]
    aug = [i for i in range(12) if i % 4]
    aug_targets = [y for y in target for _ in range(3)]
    aug_t_scores = [_softmax([v / 4.0 for v in t_logits[i]]) for i in aug]
    tf_rows = _select(aug_t_scores, aug_targets, 1.0)
    s_simi = _similarity_loop(_head_loop(loss.student_head, data["student_embedding"].tolist()))
    t_simi = _similarity_loop(_head_loop(loss.teacher_head, data["teacher_embedding"].tolist()))
    source = [i // 3 for i in range(9)]
    ss_rows = _select(t_simi, source, 0.75)
    expected = {
        "ce": 0.1 * _wce([s_logits[i] for i in nor], target, weights),
        "kd": 0.9 * _mean_kl([s_logits[i] for i in nor], [t_logits[i] for i in nor], 4.0),
        "tf": 2.7 * _mean_kl([s_logits[aug[r]] for r in tf_rows], [t_logits[aug[r]] for r in tf_rows], 4.0),
        "ss": 10.0 * _mean_kl([s_simi[r] for r in ss_rows], [t_simi[r] for r in ss_rows], 0.5),
        "rkd_dist": 25 * _rkd_dist(data["student_embedding"].tolist(), data["teacher_embedding"].tolist()),
        "rkd_angle": 50 * _rkd_angle(data["student_embedding"].tolist(), data["teacher_embedding"].tolist()),
        "crkd": 1000 * _crkd(data["student_feature"].tolist(), data["teacher_feature"].tolist()),
    }
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert _value(terms[name]) == pytest.approx(value, abs=TOL), name
    assert loss.last_stats["n_tf_rows"] == len(tf_rows) == 9
    assert loss.last_stats["n_ss_rows"] == len(ss_rows)
    # the example must exercise the SS selection: some rows wrong, and some of those dropped
    n_wrong = sum(_rank(row, y) != 0 for row, y in zip(t_simi, source, strict=True))
    assert n_wrong >= 2 and len(ss_rows) < 9
    assert loss.last_stats["teacher_ss_accuracy"] == pytest.approx((9 - n_wrong) / 9)


def test_ssd_kd_weights_are_configurable():
    data = _ssd_batch(30)
    torch.manual_seed(0)
    base = SSDKDLoss(student_dim=5, teacher_dim=5).double()
    torch.manual_seed(0)
    scaled = SSDKDLoss(student_dim=5, teacher_dim=5, ce_weight=1.0, ss_weight=0.0, dr_weight=2.0).double()
    with torch.no_grad():
        t_base, t_scaled = base.terms(**data), scaled.terms(**data)
    assert _value(t_scaled["ce"]) == pytest.approx(10 * _value(t_base["ce"]), abs=TOL)
    assert _value(t_scaled["ss"]) == 0.0
    for name in ("rkd_dist", "rkd_angle", "crkd"):
        assert _value(t_scaled[name]) == pytest.approx(2 * _value(t_base[name]), abs=TOL)


def test_ssd_kd_empty_selection_gives_zero_not_nan():
    # Teacher head = identity on positive embeddings; every rotated copy of image 0 looks like
    # original 1 and vice versa, so the teacher ranks every row wrong and ratio_ss = 0 keeps none.
    data = _ssd_batch(40, batch=2)
    a, b = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])
    data["teacher_embedding"] = torch.stack([a, b, b, b, b, a, a, a]).double()
    loss = SSDKDLoss(student_dim=5, teacher_dim=5, ratio_ss=0.0).double()
    with torch.no_grad():
        for layer in (loss.teacher_head[0], loss.teacher_head[2]):
            layer.weight.copy_(torch.eye(5))
            layer.bias.zero_()
        terms = loss.terms(**data)
    assert loss.last_stats["n_ss_rows"] == 0 and loss.last_stats["teacher_ss_accuracy"] == 0.0
    assert _value(terms["ss"]) == 0.0
    assert torch.isfinite(torch.stack(list(terms.values()))).all()


def test_ssd_kd_gradients_reach_student_side_only():
    data = {
        k: (v.float().requires_grad_(True) if v.is_floating_point() else v) for k, v in _ssd_batch(50).items()
    }
    loss = SSDKDLoss(student_dim=5, teacher_dim=5, student_channels=2, teacher_channels=2)
    loss(**data).backward()
    for name in ("student_logits", "student_embedding", "student_feature"):
        assert data[name].grad is not None and data[name].grad.abs().sum() > 0, name
    for name in ("teacher_logits", "teacher_embedding", "teacher_feature"):
        assert data[name].grad is None, name
    assert all(p.grad is not None for p in loss.student_head.parameters())
    assert all(p.grad is not None for p in loss.adapter.parameters())
    assert all(p.grad is None and not p.requires_grad for p in loss.teacher_head.parameters())
    loss.train()
    assert not loss.teacher_head.training


def test_ssd_kd_target_shape_is_checked():
    data = _ssd_batch(60)
    data["target"] = torch.zeros(12, dtype=torch.long)
    with pytest.raises(ValueError, match="one label per original image"):
        SSDKDLoss(student_dim=5, teacher_dim=5).double()(**data)


def test_teacher_ss_head_loss_against_loop():
    emb = _rand(70, 8, 4)
    loss = TeacherSSHeadLoss(dim=4).double()
    simi = _similarity_loop(_head_loop(loss.head, emb.tolist()))
    source = [i // 3 for i in range(6)]
    expected = sum(-math.log(_softmax(row)[y]) for row, y in zip(simi, source, strict=True)) / 6
    assert _value(loss(emb)) == pytest.approx(expected, abs=TOL)
    correct = sum(
        max(range(2), key=lambda j, row=row: row[j]) == y for row, y in zip(simi, source, strict=True)
    )
    assert loss.last_stats["ss_accuracy"] == pytest.approx(correct / 6)


# ------------------------------------------------------------------ layout: the whole pipeline on tiny tensors
def test_layout_rows_of_rotate_batch_are_originals_and_their_three_rotations():
    # B = 3 images of 2 x 2 pixels with distinct values; hand-written rotations (counter-clockwise)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[5.0, 6.0], [7.0, 8.0]]], [[[9.0, 10.0], [11.0, 12.0]]]])
    rows = rotate_batch(x)
    nor, aug = layout_indices(rows.shape[0])
    assert torch.equal(rows[nor], x)  # index % 4 == 0: the originals, in batch order
    # [[a, b], [c, d]] rotated by 90 / 180 / 270 degrees: [[b, d], [a, c]], [[d, c], [b, a]], [[c, a], [d, b]]
    expected = []
    for a, b, c, d in ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12)):
        expected += [[[b, d], [a, c]], [[d, c], [b, a]], [[c, a], [d, b]]]
    assert rows[aug][:, 0].tolist() == expected  # aug rows: x0_90, x0_180, x0_270, x1_90, ...


def test_rotation_and_source_targets_line_up_with_the_rotated_rows():
    x = torch.arange(3 * 4, dtype=torch.float64).reshape(3, 1, 2, 2)
    target = torch.tensor([6, 0, 3])
    rows = rotate_batch(x)
    _, aug = layout_indices(rows.shape[0])
    source = source_targets(3)
    # every rotated row's source image (by its multiset of pixel values) is source_targets[i]
    for i, row in enumerate(rows[aug]):
        assert sorted(row.flatten().tolist()) == sorted(x[int(source[i])].flatten().tolist())
    assert rotation_targets(target).tolist() == [target[int(s)] for s in source]


def test_similarity_rows_pick_their_source_when_each_image_has_its_own_direction():
    # representation = one-hot direction per source image (+ a small per-copy perturbation); every
    # rotated row is then most similar to its own original, so the selection with ratio 0 keeps all rows
    batch, dim = 3, 4
    rep = torch.zeros(4 * batch, dim, dtype=torch.float64)
    for i in range(batch):
        for k in range(4):
            rep[4 * i + k, i] = 1.0
            rep[4 * i + k, 3] = 0.1 * k
    simi = similarity_matrix(rep)
    source = source_targets(batch)
    assert simi.argmax(1).tolist() == source.tolist()
    selection = error_level_selection(simi, source, 0.0)
    assert selection.index.tolist() == list(range(3 * batch)) and selection.n_wrong == 0
    # x0_90 (rotated row 0) now looks most like x1, then x0: rank error 1; x1_180 (rotated row 4) looks
    # most like x0, then x2, then its source x1: rank error 2. Two wrong rows; ratio 0.5 keeps int(1.0) = 1
    # of them, the smaller rank error: row 0 is kept and row 4 dropped.
    rep[1, :3] = torch.tensor([0.3, 1.0, 0.0])
    rep[6, :3] = torch.tensor([1.0, 0.0, 0.3])
    simi = similarity_matrix(rep)
    selection = error_level_selection(simi, source, 0.5)
    assert (selection.n_correct, selection.n_wrong) == (7, 2)
    assert selection.index.tolist() == [0, 1, 2, 3, 5, 6, 7, 8]


def test_diverse_kd_class_weighted_kl_against_loop():
    args = _diverse_kd_inputs()
    logits_s, logits_t, target = args[:3]
    weights = [1.0, 2.0, 4.0]
    plain = DiverseKDLoss(class_weights=weights).double()
    weighted = DiverseKDLoss(class_weights=weights, kd_class_weighting=True).double()
    t_plain, t_weighted = plain.terms(*args), weighted.terms(*args)
    rows = [weights[y] for y in target.tolist()]
    expected = 0.5 * _weighted_mean_kl(logits_s.tolist(), logits_t.tolist(), 5.0, rows)
    assert _value(t_weighted["kl"]) == pytest.approx(expected, abs=TOL)
    assert abs(_value(t_weighted["kl"]) - _value(t_plain["kl"])) > 1e-3
    for name in ("wce", "rkd_dist", "rkd_angle", "crkd"):  # only the KL changes
        assert _value(t_weighted[name]) == pytest.approx(_value(t_plain[name]), abs=TOL), name
    with pytest.raises(ValueError, match="pass class_weights"):
        DiverseKDLoss(kd_class_weighting=True)


@pytest.mark.parametrize("ratio_tf", [1.0, 0.5])
def test_ssd_kd_class_weighted_kd_and_tf_against_loop(ratio_tf):
    data = _ssd_batch(20)
    weights = [1.0, 2.0, 0.5, 3.0]
    torch.manual_seed(0)
    plain = SSDKDLoss(student_dim=5, teacher_dim=5, class_weights=weights, ratio_tf=ratio_tf).double()
    torch.manual_seed(0)
    weighted = SSDKDLoss(student_dim=5, teacher_dim=5, class_weights=weights, ratio_tf=ratio_tf,
                         kd_class_weighting=True).double()
    with torch.no_grad():
        t_plain, t_weighted = plain.terms(**data), weighted.terms(**data)
    s_logits, t_logits = data["student_logits"].tolist(), data["teacher_logits"].tolist()
    target = data["target"].tolist()
    nor = [i for i in range(12) if i % 4 == 0]
    aug = [i for i in range(12) if i % 4]
    aug_targets = [y for y in target for _ in range(3)]
    tf_rows = _select([_softmax([v / 4.0 for v in t_logits[i]]) for i in aug], aug_targets, ratio_tf)
    kd = 0.9 * _weighted_mean_kl([s_logits[i] for i in nor], [t_logits[i] for i in nor], 4.0,
                                 [weights[y] for y in target])
    tf = 2.7 * _weighted_mean_kl([s_logits[aug[r]] for r in tf_rows], [t_logits[aug[r]] for r in tf_rows], 4.0,
                                 [weights[aug_targets[r]] for r in tf_rows])
    assert _value(t_weighted["kd"]) == pytest.approx(kd, abs=TOL)
    assert _value(t_weighted["tf"]) == pytest.approx(tf, abs=TOL)
    for name in ("ce", "ss", "rkd_dist", "rkd_angle", "crkd"):  # the other terms are untouched
        assert _value(t_weighted[name]) == pytest.approx(_value(t_plain[name]), abs=TOL), name
    if ratio_tf < 1.0:  # the example drops some teacher-wrong rotated rows, so the weights must follow the index
        assert len(tf_rows) < 9
