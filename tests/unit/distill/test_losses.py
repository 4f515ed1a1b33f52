"""Logit and feature KD losses against hand values and independent loop implementations (float64, 1e-6)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from diffkd_study.distill.hooks import Adapter
from diffkd_study.distill.losses import (
    AttentionTransferLoss,
    CrossEntropyLoss,
    DKDLoss,
    FitNetLoss,
    KDLoss,
    describe_loss,
)
from diffkd_study.loss_catalog import LOSSES, describe_objective

TOL = 1e-6


def _value(x) -> float:
    """A Python float of a tensor (detached) or number."""
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def _logits(seed: int, batch: int = 3, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, classes, generator=g, dtype=torch.float64) * 2
    teacher = torch.randn(batch, classes, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, classes, (batch,), generator=g)
    return student, teacher, target


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_registered_loss_has_documentation_and_a_one_line_description(name):
    loss_class = LOSSES.get(name)
    assert loss_class.__doc__, f"loss {name!r} has no docstring"
    text = describe_loss(loss_class)  # the template filled with the constructor's defaults
    assert text.strip() and "\n" not in text and "{" not in text, f"loss {name!r}: description {text!r}"


def test_the_catalog_holds_the_generic_and_every_method_loss():
    assert {"ce", "kd", "dkd", "fitnet", "at"} <= set(LOSSES.names())  # distill.losses
    assert {"rkd", "crkd", "diverse_kd", "ssd_dr", "ssd_kd", "ssd_teacher_ss"} <= set(LOSSES.names())  # SSD-KD
    assert {"lskd", "image_kd", "impa"} <= set(LOSSES.names())  # CoMoTo
    assert "d_kd" not in LOSSES  # renamed: one character from "dkd"


def test_a_loss_without_description_is_refused():
    class Undescribed(nn.Module):
        """A loss that forgot its description."""

    with pytest.raises(ValueError, match="Undescribed has no description"):
        describe_loss(Undescribed)

    class Misdescribed(nn.Module):
        description = "KD at T = {tau}"

        def __init__(self, temperature: float = 4.0):
            super().__init__()

    with pytest.raises(ValueError, match="names 'tau', which its constructor lacks"):
        describe_loss(Misdescribed)


def test_descriptions_fill_in_the_parameters():
    assert describe_loss(KDLoss) == "T^2 KL (Hinton KD, T = 4.0)"
    assert describe_loss(KDLoss, {"temperature": 2}) == "T^2 KL (Hinton KD, T = 2)"
    assert describe_loss(DKDLoss, {"beta": 0.5}) == "decoupled KD (1.0 x TCKD + 0.5 x NCKD, T = 4.0)"
    recipe = {"ce": {"type": "ce", "weight": 0.5}, "kd": {"type": "kd", "weight": 0.5, "params": {"temperature": 4.0}},
              "hint": {"type": "at"}}
    assert describe_objective(recipe) == ("0.5 x cross-entropy + 0.5 x T^2 KL (Hinton KD, T = 4.0) + "
                                          "attention transfer (beta = 1000.0, p = 2.0)")


def test_kd_by_hand():
    # p_t = softmax(ln 3, 0) = (3/4, 1/4), p_s = (1/2, 1/2), T = 1
    student = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert _value(KDLoss(temperature=1.0)(student, teacher)) == pytest.approx(expected, abs=TOL)
    # the same pair at T = 2 with weight 0.9: T**2 scaling and the weight multiply the softened KL
    p_t = _softmax([math.log(3.0) / 2, 0.0])
    expected_t2 = 0.9 * 4 * _kl(p_t, [0.5, 0.5])
    assert _value(KDLoss(temperature=2.0, weight=0.9)(student, teacher)) == pytest.approx(
        expected_t2, abs=TOL
    )


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_against_loop(temperature):
    student, teacher, _ = _logits(0)
    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        p_s = _softmax([v / temperature for v in s_row])
        p_t = _softmax([v / temperature for v in t_row])
        expected += _kl(p_t, p_s)
    expected = 0.5 * temperature**2 * expected / len(student)
    got = KDLoss(temperature=temperature, weight=0.5)(student, teacher)
    assert _value(got) == pytest.approx(expected, abs=TOL)


def _dkd_loop(student, teacher, target, alpha, beta, temperature):
    tckd = nckd = 0.0
    for s_row, t_row, y in zip(student.tolist(), teacher.tolist(), target.tolist(), strict=True):
        p_s = _softmax([v / temperature for v in s_row])
        p_t = _softmax([v / temperature for v in t_row])
        tckd += _kl([p_t[y], 1 - p_t[y]], [p_s[y], 1 - p_s[y]])
        q_s = _softmax([v / temperature for k, v in enumerate(s_row) if k != y])
        q_t = _softmax([v / temperature for k, v in enumerate(t_row) if k != y])
        nckd += _kl(q_t, q_s)
    batch = len(target)
    return alpha * temperature**2 * tckd / batch, beta * temperature**2 * nckd / batch


def test_dkd_against_loop_and_warmup():
    student, teacher, target = _logits(1, batch=4, classes=5)
    loss = DKDLoss(alpha=1.0, beta=8.0, temperature=4.0, warmup_epochs=20)
    tckd, nckd = _dkd_loop(student, teacher, target, 1.0, 8.0, 4.0)
    terms = loss.terms(student, teacher, target)
    assert _value(terms["tckd"]) == pytest.approx(tckd, abs=TOL)
    assert _value(terms["nckd"]) == pytest.approx(nckd, abs=TOL)
    assert _value(loss(student, teacher, target)) == pytest.approx(tckd + nckd, abs=TOL)
    # epoch 5 of a 20-epoch warm-up scales both parts by 1/4; past the warm-up the factor is 1
    assert _value(loss(student, teacher, target, epoch=5)) == pytest.approx((tckd + nckd) / 4, abs=TOL)
    assert _value(loss(student, teacher, target, epoch=40)) == pytest.approx(tckd + nckd, abs=TOL)


def test_weighted_cross_entropy_against_loop():
    student, _, target = _logits(2, batch=5, classes=3)
    weights = [1.0, 2.5, 0.5]
    numerator = denominator = 0.0
    for row, y in zip(student.tolist(), target.tolist(), strict=True):
        numerator += -weights[y] * math.log(_softmax(row)[y])
        denominator += weights[y]
    loss = CrossEntropyLoss(class_weights=weights).double()
    assert _value(loss(student, target)) == pytest.approx(numerator / denominator, abs=TOL)


def _features(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_fitnet_identity_against_loop():
    student, teacher = _features(3, (2, 3, 2, 2)), _features(4, (2, 3, 2, 2))
    flat_s, flat_t = student.flatten().tolist(), teacher.flatten().tolist()
    expected = 2.0 * sum((a - b) ** 2 for a, b in zip(flat_s, flat_t, strict=True)) / len(flat_s)
    assert _value(FitNetLoss(weight=2.0)(student, teacher)) == pytest.approx(expected, abs=TOL)


def test_fitnet_adapter_is_conv_bn_relu():
    student, teacher = _features(5, (2, 2, 2, 2)), _features(6, (2, 3, 2, 2))
    loss = FitNetLoss(student_channels=2, teacher_channels=3).double().eval()  # BN: running mean 0, var 1
    weight = [[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]]
    bias = [0.1, -0.2, 0.3]
    with torch.no_grad():
        loss.adapter.conv.weight.copy_(torch.tensor(weight).reshape(3, 2, 1, 1))
        loss.adapter.conv.bias.copy_(torch.tensor(bias))
    scale = 1 / math.sqrt(1 + 1e-5)
    total, count = 0.0, 0
    s, t = student.tolist(), teacher.tolist()
    for b in range(2):
        for o in range(3):
            for y in range(2):
                for x in range(2):
                    conv = bias[o] + sum(weight[o][i] * s[b][i][y][x] for i in range(2))
                    total += (max(conv * scale, 0.0) - t[b][o][y][x]) ** 2
                    count += 1
    with torch.no_grad():
        assert _value(loss(student, teacher)) == pytest.approx(total / count, abs=TOL)


def test_fitnet_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="does not match teacher feature"):
        FitNetLoss()(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, 2))


def _attention_loop(feature: list) -> list[list[float]]:
    maps = []
    for sample in feature:
        h, w = len(sample[0]), len(sample[0][0])
        values = [sum(channel[y][x] ** 2 for channel in sample) for y in range(h) for x in range(w)]
        norm = math.sqrt(sum(v * v for v in values))
        maps.append([v / norm for v in values])
    return maps


def _at_pair_loop(student: torch.Tensor, teacher: torch.Tensor) -> float:
    q_s, q_t = _attention_loop(student.tolist()), _attention_loop(teacher.tolist())
    diffs = [
        (a - b) ** 2 for row_s, row_t in zip(q_s, q_t, strict=True) for a, b in zip(row_s, row_t, strict=True)
    ]
    return sum(diffs) / len(diffs)


def test_attention_transfer_against_loop_two_layers():
    pairs = [
        (_features(7, (2, 3, 3, 3)), _features(8, (2, 5, 3, 3))),
        (_features(9, (2, 2, 2, 2)), _features(10, (2, 4, 2, 2))),
    ]
    expected = 1000.0 / 2 * sum(_at_pair_loop(s, t) for s, t in pairs)
    got = AttentionTransferLoss()([s for s, _ in pairs], [t for _, t in pairs])
    assert _value(got) == pytest.approx(expected, abs=TOL)


def test_attention_transfer_pools_the_larger_map():
    student, teacher = _features(11, (1, 2, 4, 4)), _features(12, (1, 3, 2, 2))
    s = student.tolist()
    pooled = [
        [
            [
                [sum(s[0][c][2 * y + dy][2 * x + dx] for dy in (0, 1) for dx in (0, 1)) / 4 for x in range(2)]
                for y in range(2)
            ]
            for c in range(2)
        ]
    ]
    expected = 500.0 * _at_pair_loop(torch.tensor(pooled, dtype=torch.float64), teacher)
    assert _value(AttentionTransferLoss()(student, teacher)) == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize(
    "make_loss, needs_target",
    [(lambda: KDLoss(), False), (lambda: DKDLoss(), True)],
)
def test_logit_losses_send_gradient_to_student_only(make_loss, needs_target):
    student, teacher, target = _logits(13)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    args = (student, teacher, target) if needs_target else (student, teacher)
    make_loss()(*args).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


@pytest.mark.parametrize("make_loss", [lambda: FitNetLoss(2, 3), lambda: AttentionTransferLoss()])
def test_feature_losses_send_gradient_to_student_only(make_loss):
    student = _features(14, (2, 2, 3, 3)).float().requires_grad_(True)
    teacher = _features(15, (2, 3, 3, 3)).float().requires_grad_(True)
    make_loss()(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_adapter_is_part_of_fitnet_parameters():
    loss = FitNetLoss(student_channels=4, teacher_channels=8)
    assert isinstance(loss.adapter, Adapter)
    assert sum(p.numel() for p in loss.parameters()) == 4 * 8 + 8 + 2 * 8


def _weighted_kl_loop(student, teacher, target, weights, temperature):
    num = den = 0.0
    for s_row, t_row, y in zip(student.tolist(), teacher.tolist(), target.tolist(), strict=True):
        p_s = _softmax([v / temperature for v in s_row])
        p_t = _softmax([v / temperature for v in t_row])
        num += weights[y] * _kl(p_t, p_s)
        den += weights[y]
    return temperature**2 * num / den


def test_kd_with_class_weights_averages_rows_as_weighted_cross_entropy():
    student, teacher, target = _logits(3, batch=6, classes=3)
    target = torch.tensor([0, 0, 0, 1, 2, 2])  # unequal classes, so the weighting changes the mean
    weights = [0.5, 3.0, 1.5]
    got = KDLoss(temperature=4.0, weight=0.5, class_weights=weights)(student, teacher, target)
    assert _value(got) == pytest.approx(0.5 * _weighted_kl_loop(student, teacher, target, weights, 4.0), abs=TOL)
    plain = KDLoss(temperature=4.0, weight=0.5)(student, teacher, target)
    assert abs(_value(got) - _value(plain)) > 1e-3
    # equal weights give Hinton's batch mean back
    same = KDLoss(temperature=4.0, weight=0.5, class_weights=[2.0, 2.0, 2.0])(student, teacher, target)
    assert _value(same) == pytest.approx(_value(plain), abs=TOL)
    with pytest.raises(ValueError, match="pass target"):
        KDLoss(class_weights=weights)(student, teacher)


def test_dkd_with_class_weights_against_loop():
    student, teacher, target = _logits(4, batch=5, classes=4)
    target = torch.tensor([0, 1, 1, 3, 3])
    weights = [1.0, 2.0, 0.0, 4.0]
    loss = DKDLoss(alpha=1.0, beta=8.0, temperature=4.0, warmup_epochs=0, class_weights=weights)
    terms = loss.terms(student, teacher, target)
    tckd = nckd = den = 0.0
    for row in range(len(target)):
        y = int(target[row])
        t_row, n_row = _dkd_loop(student[row:row + 1], teacher[row:row + 1], target[row:row + 1], 1.0, 8.0, 4.0)
        tckd, nckd, den = tckd + weights[y] * t_row, nckd + weights[y] * n_row, den + weights[y]
    assert _value(terms["tckd"]) == pytest.approx(tckd / den, abs=TOL)
    assert _value(terms["nckd"]) == pytest.approx(nckd / den, abs=TOL)


def test_row_weights_that_sum_to_zero_are_a_clear_error():
    student, teacher, _ = _logits(5, batch=2, classes=3)
    with pytest.raises(ValueError, match="sum to 0"):
        KDLoss(class_weights=[0.0, 1.0, 1.0])(student, teacher, torch.tensor([0, 0]))
