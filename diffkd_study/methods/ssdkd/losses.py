"""The official D-KD and SSD-KD losses with the channel-Gram term computed through its dual form.

``crkd`` (SSD-KD's intra-instance relation) compares per-instance channel Gram matrices
``G = F F^T / (C H W)`` of size ``C x C``. With the teacher's last map at 112 px (``C = 1280`` channels
of 4 x 4 positions) ``G`` has 1.6 M entries per image and :func:`diffkd_study.methods.ssdkd.diverse.crkd_loss`
spends more time on them than the two networks spend on the whole batch. The same number follows from
``H W x H W`` products, because ``||A A^T||_F = ||A^T A||_F`` and ``<A A^T, B B^T> = ||A^T B||_F^2``:

    ``||G_s - G_t||_F^2 = (||F_s^T F_s||^2 + ||F_t^T F_t||^2 - 2 ||F_s^T F_t||^2) / (C H W)^2``

so ``crkd = sqrt(sum_n ||G_s,n - G_t,n||_F^2 / (N C^2))``. The three small products are formed in
float64 (the subtraction cancels when the student's relations approach the teacher's; float64 keeps
it exact to ~1e-12 relative) and the result is cast back; a rounding residue below 0 is clamped to 0.
When ``H W >= C`` the direct form is cheaper and is used. :class:`DiverseKDLossDual` and
:class:`SSDKDLossDual` are the registered ``d_kd`` / ``ssd_kd`` losses with only this term's
arithmetic changed; the tests check both against the direct classes (values and gradients).
"""

from __future__ import annotations

import torch

from diffkd_study.methods.ssdkd.diverse import (
    DiverseKDLoss,
    SSDKDLoss,
    crkd_loss,
)

__all__ = ["DiverseKDLossDual", "SSDKDLossDual", "crkd_loss_dual"]


def crkd_loss_dual(adapted_student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """``sqrt(MSE(G(F_s), G(F_t)))`` as :func:`~diffkd_study.methods.ssdkd.diverse.crkd_loss`, via ``HW x HW`` products."""
    student, teacher = adapted_student_feature, teacher_feature.detach()
    if student.ndim != 4 or student.shape != teacher.shape:
        raise ValueError(
            f"channel relations need two (N, C, H, W) maps of one shape; got student {tuple(student.shape)} and "
            f"teacher {tuple(teacher.shape)}: the adapter must map student channels onto teacher channels"
        )
    n, c, h, w = student.shape
    if h * w >= c:
        return crkd_loss(student, teacher)
    with torch.autocast(student.device.type, enabled=False):
        fs = student.reshape(n, c, h * w).double()
        ft = teacher.reshape(n, c, h * w).double()
        ks = torch.bmm(fs.transpose(1, 2), fs)
        kt = torch.bmm(ft.transpose(1, 2), ft)
        kst = torch.bmm(fs.transpose(1, 2), ft)
        squared = (ks.pow(2).sum() + kt.pow(2).sum() - 2 * kst.pow(2).sum()) / (c * h * w) ** 2
        mse = squared.clamp(min=0.0) / (n * c * c)
        return mse.sqrt().to(student.dtype)


class _DualGramRelations:
    """The D-KD family's Gram term through :func:`crkd_loss_dual` (see ``_RelationalMixin.gram_loss``)."""

    gram_loss = staticmethod(crkd_loss_dual)


class DiverseKDLossDual(_DualGramRelations, DiverseKDLoss):
    """:class:`~diffkd_study.methods.ssdkd.diverse.DiverseKDLoss` (official D-KD) with the dual-form Gram term."""


class SSDKDLossDual(_DualGramRelations, SSDKDLoss):
    """:class:`~diffkd_study.methods.ssdkd.diverse.SSDKDLoss` (official SSD-KD student objective) with the dual-form Gram term."""
