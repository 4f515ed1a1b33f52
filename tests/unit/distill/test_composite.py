"""CompositeLoss: weighted total, every term reported, input routing, and build_loss from a config."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from torch import nn

from diffkd_study.distill.composite import CompositeLoss, build_loss
from diffkd_study.distill.hooks import Adapter
from diffkd_study.distill.losses import CrossEntropyLoss, DKDLoss, FitNetLoss, KDLoss
from diffkd_study.methods.ssdkd.losses import SSDKDLoss
from diffkd_study.methods.ssdkd.rotation import ProjectionHead

TOL = 1e-6


def _softmax(values):
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def _ce_loop(logits, target):
    return sum(-math.log(_softmax(row)[y]) for row, y in zip(logits, target, strict=True)) / len(target)


def _kd_loop(student, teacher, temperature):
    total = 0.0
    for s, t in zip(student, teacher, strict=True):
        p_s = _softmax([v / temperature for v in s])
        p_t = _softmax([v / temperature for v in t])
        total += sum(a * math.log(a / b) for a, b in zip(p_t, p_s, strict=True))
    return temperature**2 * total / len(student)


@pytest.fixture
def context() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "student_logits": (torch.randn(4, 3, generator=g, dtype=torch.float64) * 2).requires_grad_(True),
        "teacher_logits": torch.randn(4, 3, generator=g, dtype=torch.float64) * 2,
        "target": torch.tensor([0, 2, 1, 2]),
        "s_map": torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64),
        "t_map": torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64),
    }


def test_weighted_total_and_every_term_reported(context):
    loss = CompositeLoss(
        {"ce": (0.1, CrossEntropyLoss()), "kd": (0.9, KDLoss(temperature=4.0)), "dkd": (2.0, DKDLoss())}
    )
    total, terms = loss(context)
    s, t, y = (
        context["student_logits"].tolist(),
        context["teacher_logits"].tolist(),
        context["target"].tolist(),
    )
    ce, kd = 0.1 * _ce_loop(s, y), 0.9 * _kd_loop(s, t, 4.0)
    assert terms["ce"] == pytest.approx(ce, abs=TOL)
    assert terms["kd"] == pytest.approx(kd, abs=TOL)
    assert terms["dkd"] == pytest.approx(terms["dkd.tckd"] + terms["dkd.nckd"], abs=TOL)
    assert terms["total"] == pytest.approx(ce + kd + terms["dkd"], abs=TOL)
    assert float(total.detach()) == pytest.approx(terms["total"], abs=TOL)
    assert set(terms) == {"ce", "kd", "dkd", "dkd.tckd", "dkd.nckd", "total"}
    assert all(type(value) is float for value in terms.values())
    assert loss.last_stats == {"dkd.warmup": 1.0}
    total.backward()
    assert context["student_logits"].grad.abs().sum() > 0


def test_inputs_are_renamed_and_kwargs_work(context):
    loss = CompositeLoss(
        {"hint": (3.0, FitNetLoss(), {"student_feature": "s_map", "teacher_feature": "t_map"})}
    )
    _, terms = loss(**context)
    s, t = context["s_map"].flatten().tolist(), context["t_map"].flatten().tolist()
    expected = 3.0 * sum((a - b) ** 2 for a, b in zip(s, t, strict=True)) / len(s)
    assert terms["hint"] == pytest.approx(expected, abs=TOL)


def test_missing_input_names_term_and_key(context):
    loss = CompositeLoss({"hint": (1.0, FitNetLoss())})
    with pytest.raises(KeyError, match="'hint' .*needs 'student_feature' from context key 'student_feature'"):
        loss(context)


def test_unknown_input_name_is_rejected():
    with pytest.raises(ValueError, match="has no input"):
        CompositeLoss({"kd": (1.0, KDLoss(), {"logits": "x"})})


def test_zero_weight_term_is_skipped_and_reported(context):
    loss = CompositeLoss({"ce": (1.0, CrossEntropyLoss()), "hint": (0.0, FitNetLoss())})
    total, terms = loss(context)  # FitNet's inputs are absent, but its weight is 0
    assert terms["hint"] == 0.0 and terms["total"] == pytest.approx(terms["ce"])


@pytest.mark.parametrize("name", ["a.b", ""])
def test_term_names_are_validated(name):
    with pytest.raises(ValueError, match="no '.'"):
        CompositeLoss({name: (1.0, KDLoss())})


CONFIG = """
ce: {type: ce, weight: 0.1}
kd: {type: kd, weight: 0.9, params: {temperature: 4.0}}
hint:
  type: fitnet
  weight: 2.0
  params: {student_channels: 2, teacher_channels: 2}
  inputs: {student_feature: s_map, teacher_feature: t_map}
"""


def test_build_loss_from_yaml_config(context):
    loss = build_loss(yaml.safe_load(CONFIG)).double()
    assert isinstance(loss.losses["hint"].adapter, Adapter)
    # adapter parameters are part of the composite, so one optimiser over loss.parameters() trains them
    assert sum(p.numel() for p in loss.parameters()) == 2 * 2 + 2 + 2 * 2
    total, terms = loss(context)
    s, t, y = (
        context["student_logits"].tolist(),
        context["teacher_logits"].tolist(),
        context["target"].tolist(),
    )
    assert terms["ce"] == pytest.approx(0.1 * _ce_loop(s, y), abs=TOL)
    assert terms["kd"] == pytest.approx(0.9 * _kd_loop(s, t, 4.0), abs=TOL)
    assert set(terms) == {"ce", "kd", "hint", "total"}
    total.backward()
    assert all(p.grad is not None for p in loss.losses["hint"].adapter.parameters())


def test_build_loss_errors_are_clear():
    with pytest.raises(KeyError, match="unknown loss 'nope'; known: .*kd"):
        build_loss({"x": {"type": "nope"}})
    with pytest.raises(ValueError, match="unknown key"):
        build_loss({"x": {"type": "kd", "temperature": 4}})
    with pytest.raises(TypeError, match="accepted arguments"):
        build_loss({"x": {"type": "kd", "params": {"tau": 4}}})
    with pytest.raises(ValueError, match="not in the config"):
        build_loss({"x": {"type": "kd"}}, extra_params={"y": {}})


def test_build_loss_with_module_extra_params_and_stats():
    head = ProjectionHead(5)
    cfg = {"ssd": {"type": "ssd_kd", "params": {"student_dim": 5}}}
    loss = build_loss(cfg, extra_params={"ssd": {"teacher_head": head}})
    assert isinstance(loss.losses["ssd"], SSDKDLoss) and loss.losses["ssd"].teacher_head is head
    g = torch.Generator().manual_seed(1)
    ctx = {
        "student_logits": torch.randn(8, 3, generator=g),
        "teacher_logits": torch.randn(8, 3, generator=g),
        "target": torch.tensor([0, 2]),
        "student_embedding": torch.randn(8, 5, generator=g),
        "teacher_embedding": torch.randn(8, 5, generator=g),
        "student_feature": torch.randn(8, 2, 2, 2, generator=g),
        "teacher_feature": torch.randn(8, 2, 2, 2, generator=g),
    }
    _, terms = loss(ctx)
    assert {f"ssd.{part}" for part in ("ce", "kd", "tf", "ss", "rkd_dist", "rkd_angle", "crkd")} <= set(terms)
    assert loss.last_stats["ssd.n_tf_rows"] == 6.0
    assert not any(p.requires_grad for p in head.parameters())


def test_non_module_term_is_rejected():
    with pytest.raises(TypeError, match="expected an nn.Module"):
        CompositeLoss({"x": (1.0, lambda a: a)})
    assert isinstance(CompositeLoss({"x": (1.0, KDLoss())}).losses, nn.ModuleDict)
