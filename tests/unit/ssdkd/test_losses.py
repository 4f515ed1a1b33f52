"""The dual-form channel-Gram term equals the direct one (values and gradients), and so do the D-KD / SSD-KD losses."""

from __future__ import annotations

import pytest
import torch

from diffkd_study.methods.ssdkd.diverse import DiverseKDLoss, SSDKDLoss, crkd_loss
from diffkd_study.methods.ssdkd.losses import DiverseKDLossDual, SSDKDLossDual, crkd_loss_dual


def _rand(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", [(3, 6, 2, 2), (2, 5, 1, 3), (4, 3, 2, 2)])  # HW < C twice, HW >= C once
def test_crkd_dual_equals_direct_value_and_gradient(shape):
    fs, ft = _rand(0, *shape).requires_grad_(True), _rand(1, *shape)
    direct, dual = crkd_loss(fs, ft), crkd_loss_dual(fs, ft)
    assert float(dual.detach()) == pytest.approx(float(direct.detach()), rel=1e-12)
    (g_direct,) = torch.autograd.grad(direct, fs)
    (g_dual,) = torch.autograd.grad(dual, fs)
    assert torch.allclose(g_dual, g_direct, rtol=1e-9, atol=1e-14)


def test_crkd_dual_by_hand():
    # one instance, C = 2 channels, HW = 1 position: G = f f^T / 2
    fs = torch.tensor([[[[1.0]], [[2.0]]]], dtype=torch.float64)
    ft = torch.tensor([[[[0.0]], [[1.0]]]], dtype=torch.float64)
    # G_s = [[1, 2], [2, 4]] / 2, G_t = [[0, 0], [0, 1]] / 2; squared differences (1 + 4 + 4 + 9) / 4 = 4.5
    assert float(crkd_loss_dual(fs, ft)) == pytest.approx((4.5 / 4) ** 0.5, rel=1e-12)


def test_crkd_dual_is_float32_exact_enough_near_the_minimum():
    # student relations within 1e-4 of the teacher's: the float64 products keep the small difference
    ft = torch.rand(4, 64, 3, 3)
    fs = ft + 1e-4 * torch.randn(4, 64, 3, 3, generator=torch.Generator().manual_seed(0))
    assert float(crkd_loss_dual(fs, ft)) == pytest.approx(float(crkd_loss(fs.double(), ft.double())), rel=1e-4)
    assert crkd_loss_dual(fs, ft).dtype == torch.float32


def test_crkd_dual_rejects_mismatched_maps():
    with pytest.raises(ValueError, match="adapter must map"):
        crkd_loss_dual(torch.zeros(1, 4, 2, 2), torch.zeros(1, 5, 2, 2))


def _context(n, k=4, dim=5, channels=6):
    return {"student_logits": _rand(2, n, k), "teacher_logits": _rand(3, n, k),
            "student_embedding": _rand(4, n, dim), "teacher_embedding": _rand(5, n, dim),
            "student_feature": _rand(6, n, channels, 2, 2), "teacher_feature": _rand(7, n, channels, 2, 2)}


def test_diverse_kd_dual_matches_official_terms():
    context = {**_context(4), "target": torch.tensor([0, 3, 1, 2])}
    torch.manual_seed(0)
    direct = DiverseKDLoss(class_weights=[1.0, 2.0, 0.5, 3.0], student_channels=6, teacher_channels=6).double()
    dual = DiverseKDLossDual(class_weights=[1.0, 2.0, 0.5, 3.0], student_channels=6, teacher_channels=6).double()
    dual.load_state_dict(direct.state_dict())
    with torch.no_grad():
        a, b = direct.terms(**context), dual.terms(**context)
    assert set(a) == set(b) == {"wce", "kl", "rkd_dist", "rkd_angle", "crkd"}
    for name in a:
        assert float(b[name]) == pytest.approx(float(a[name]), rel=1e-10), name


def test_ssd_kd_dual_matches_official_terms():
    context = {**_context(8), "target": torch.tensor([1, 2])}
    torch.manual_seed(0)
    direct = SSDKDLoss(student_dim=5, teacher_dim=5, student_channels=6, teacher_channels=6).double()
    dual = SSDKDLossDual(student_dim=5, teacher_dim=5, student_channels=6, teacher_channels=6).double()
    dual.load_state_dict(direct.state_dict())
    with torch.no_grad():
        a, b = direct.terms(**context), dual.terms(**context)
    assert set(a) == set(b) == {"ce", "kd", "tf", "ss", "rkd_dist", "rkd_angle", "crkd"}
    for name in a:
        assert float(b[name]) == pytest.approx(float(a[name]), rel=1e-10), name
