"""The channel-Gram term (dual form when HW < C) equals the direct Gram form (values and gradients).

The direct form is kept here only, as the reference: the library computes ``crkd`` one way
(:func:`~diffkd_study.methods.ssdkd.losses.crkd_loss`), which every D-KD / SSD-KD loss calls.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffkd_study.methods.ssdkd.losses import channel_gram, crkd_loss


def _crkd_direct(adapted_student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """The official computation: ``sqrt(MSE(G(F_s), G(F_t)))`` over the C x C Gram matrices themselves."""
    return F.mse_loss(channel_gram(adapted_student_feature), channel_gram(teacher_feature.detach())).sqrt()


def _rand(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", [(3, 6, 2, 2), (2, 5, 1, 3), (4, 3, 2, 2)])  # HW < C twice, HW >= C once
def test_crkd_dual_equals_direct_value_and_gradient(shape):
    fs, ft = _rand(0, *shape).requires_grad_(True), _rand(1, *shape)
    direct, dual = _crkd_direct(fs, ft), crkd_loss(fs, ft)
    assert float(dual.detach()) == pytest.approx(float(direct.detach()), rel=1e-12)
    (g_direct,) = torch.autograd.grad(direct, fs)
    (g_dual,) = torch.autograd.grad(dual, fs)
    assert torch.allclose(g_dual, g_direct, rtol=1e-9, atol=1e-14)


def test_crkd_dual_by_hand():
    # one instance, C = 2 channels, HW = 1 position: G = f f^T / 2
    fs = torch.tensor([[[[1.0]], [[2.0]]]], dtype=torch.float64)
    ft = torch.tensor([[[[0.0]], [[1.0]]]], dtype=torch.float64)
    # G_s = [[1, 2], [2, 4]] / 2, G_t = [[0, 0], [0, 1]] / 2; squared differences (1 + 4 + 4 + 9) / 4 = 4.5
    assert float(crkd_loss(fs, ft)) == pytest.approx((4.5 / 4) ** 0.5, rel=1e-12)


def test_crkd_dual_is_float32_exact_enough_near_the_minimum():
    # student relations within 1e-4 of the teacher's: the float64 products keep the small difference
    ft = torch.rand(4, 64, 3, 3)
    fs = ft + 1e-4 * torch.randn(4, 64, 3, 3, generator=torch.Generator().manual_seed(0))
    assert float(crkd_loss(fs, ft)) == pytest.approx(float(_crkd_direct(fs.double(), ft.double())), rel=1e-4)
    assert crkd_loss(fs, ft).dtype == torch.float32


def test_crkd_dual_rejects_mismatched_maps():
    with pytest.raises(ValueError, match="adapter must map"):
        crkd_loss(torch.zeros(1, 4, 2, 2), torch.zeros(1, 5, 2, 2))


def test_crkd_of_maps_of_different_sizes_compares_the_gram_matrices_directly():
    # G is C x C whatever H x W, so the relation of a 2x2 map to a 3x3 map of the same channels is defined
    fs, ft = _rand(2, 2, 3, 2, 2), _rand(3, 2, 3, 3, 3)
    assert float(crkd_loss(fs, ft)) == pytest.approx(float(_crkd_direct(fs, ft)), rel=1e-12)
