"""SSD-KD (Wang et al., Medical Image Analysis 84:102693, 2023) and its D-KD loss, as the official code computes them.

Source read: ``enkiwang/Portable-Skin-Lesion-Diagnosis`` at b8bf301 (``experiment/isic/kd_losses/ssd_kd.py``,
``experiment/isic/isic_ssd_kd.py``), whose self-supervision branch is a copy of SSKD's ``student.py``.
The official computation and its defaults are in ``docs/methods/ssdkd.md`` §3.5 (D-KD) and §3.6 (SSD-KD),
the official constructor crash and the changed lambdas in §3.8 items 1 and 2, and the deliberate
departures (the DR fix, ``reduction='batchmean'``, stable row sorting, 0 for an empty KL row selection,
teacher tensors detached, adapter and heads owned by the loss) in §3.9. The rotation-batch layout, the
projection heads and the error-level row selection are in :mod:`diffkd_study.methods.ssdkd.rotation`;
the independent augmentation of each rotated copy belongs to the data, not to the losses
(:mod:`~diffkd_study.methods.ssdkd.tasks`).

Losses registered here (RKD itself, a published standard, is :mod:`diffkd_study.distill.relational`)
    ``crkd`` (channel-Gram relation),
    ``diverse_kd`` (the D-KD objective, "Diverse KD"), ``ssd_dr`` (the DR term), ``ssd_kd`` (the full
    SSD-KD student objective), ``ssd_teacher_ss`` (stage A). Defaults are the official ones: D-KD
    lambda 0.5, T 5, lambda_rkd 1, w_dist 25, w_angle 50, lambda_crkd 1000; SSD-KD ce 0.1, kd 0.9,
    tf 2.7, ss 10, DR weight (``_hr_w``) 1, T_kd = T_tf = 4, tau_ss = 0.5, ratio_tf 1.0, ratio_ss 0.75.

The channel-Gram term through its dual form
    ``crkd`` (SSD-KD's intra-instance relation) compares per-instance channel Gram matrices
    ``G = F F^T / (C H W)`` of size ``C x C``. With the teacher's last map at 112 px (``C = 1280``
    channels of 4 x 4 positions) ``G`` has 1.6 M entries per image, more work than the two networks do
    on the whole batch. The same number follows from ``H W x H W`` products, because
    ``||A A^T||_F = ||A^T A||_F`` and ``<A A^T, B B^T> = ||A^T B||_F^2``:

        ``||G_s - G_t||_F^2 = (||F_s^T F_s||^2 + ||F_t^T F_t||^2 - 2 ||F_s^T F_t||^2) / (C H W)^2``

    so ``crkd = sqrt(sum_n ||G_s,n - G_t,n||_F^2 / (N C^2))``. :func:`crkd_loss` forms the three small
    products in float64 (the subtraction cancels when the student's relations approach the teacher's;
    float64 keeps it exact to ~1e-12 relative), casts the result back and clamps a rounding residue
    below 0 to 0. When ``H W >= C`` the direct Gram form is cheaper and is used. The tests check the
    two forms against each other (values and gradients).

Not in the official code, off by default: ``kd_class_weighting=True`` averages the per-row KLs of the
softened-output terms (D-KD's ``kl``; SSD-KD's ``kd`` and ``tf``) with the WCE class weight of each
row's label instead of a plain batch mean (why: §3.9, "Optional class weighting of the KD terms").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from diffkd_study.distill.losses import (
    LOSSES,
    AdaptedFeatureLoss,
    MultiTermLoss,
    as_class_weights,
    class_row_weights,
    make_adapter,
    softened_kl,
)
from diffkd_study.distill.relational import rkd_angle_loss, rkd_distance_loss
from diffkd_study.methods.ssdkd.rotation import (
    ProjectionHead,
    error_level_selection,
    layout_indices,
    rotation_batch_size,
    rotation_targets,
    similarity_matrix,
    source_targets,
)

__all__ = [
    "ChannelRelationLoss",
    "DiverseKDLoss",
    "DualRelationalLoss",
    "SSDKDLoss",
    "TeacherSSHeadLoss",
    "channel_gram",
    "crkd_loss",
]


def _selected_kl(
    student: torch.Tensor,
    teacher: torch.Tensor,
    index: torch.Tensor,
    temperature: float,
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``T**2 KL`` over the rows ``index`` (batch mean, or weighted by ``row_weights[index]``); 0 for no row."""
    if index.numel() == 0:
        return student.sum() * 0.0
    rows = None if row_weights is None else row_weights[index]
    return softened_kl(student[index], teacher[index], temperature, rows) * temperature**2



# ------------------------------------------------------------------------------ relational terms
def channel_gram(feature: torch.Tensor) -> torch.Tensor:
    """Per-instance channel Gram matrix ``F F^T / (C H W)`` of a (N, C, H, W) map: (N, C, C)."""
    if feature.ndim != 4:
        raise ValueError(f"channel Gram matrices need (N, C, H, W) maps; got {tuple(feature.shape)}")
    n, c, h, w = feature.shape
    flat = feature.reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)




def crkd_loss(adapted_student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """Intra-instance channel relation: ``sqrt(MSE(G(F_s_adapted), G(F_t)))`` (RMSE over all entries of
    the per-instance channel Gram matrices), through the dual form when both maps have one shape and
    ``H W < C`` (module notes), else directly (the Gram matrices of maps of different sizes still compare).

    As in the official code there is no epsilon under the square root, so its gradient is not
    finite when the two Gram matrices are exactly equal.
    """
    student, teacher = adapted_student_feature, teacher_feature.detach()
    if student.ndim != 4 or teacher.ndim != 4 or student.shape[:2] != teacher.shape[:2]:
        raise ValueError(
            f"channel relations need two (N, C, H, W) maps of the same N and C; got student {tuple(student.shape)} "
            f"and teacher {tuple(teacher.shape)}: the adapter must map student channels onto teacher channels"
        )
    n, c, h, w = student.shape
    if student.shape != teacher.shape or h * w >= c:
        return F.mse_loss(channel_gram(student), channel_gram(teacher)).sqrt()
    with torch.autocast(student.device.type, enabled=False):
        fs = student.reshape(n, c, h * w).double()
        ft = teacher.reshape(n, c, h * w).double()
        ks = torch.bmm(fs.transpose(1, 2), fs)
        kt = torch.bmm(ft.transpose(1, 2), ft)
        kst = torch.bmm(fs.transpose(1, 2), ft)
        squared = (ks.pow(2).sum() + kt.pow(2).sum() - 2 * kst.pow(2).sum()) / (c * h * w) ** 2
        mse = squared.clamp(min=0.0) / (n * c * c)
        return mse.sqrt().to(student.dtype)


# ------------------------------------------------------------------------------- loss modules
@LOSSES.register("crkd")
class ChannelRelationLoss(AdaptedFeatureLoss):
    """SSD-KD's intra-instance relation ``weight * sqrt(MSE(G(adapter(F_s)), G(F_t)))``.

    Args:
        student_channels, teacher_channels: build a 1x1 ConvReg-style adapter (or pass ``adapter``).
        use_relu: ReLU at the end of the built adapter (default True, as ConvReg).
        adapter: a ready adapter module.
        weight: multiplier (default 1.0; the official lambda_crkd is 1000, see ``diverse_kd``).
    """

    description = "channel-relation KD (RMSE of the channel Gram matrices of the adapted student and teacher maps)"

    def forward(self, student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
        """``weight * crkd_loss(adapter(student_feature), teacher_feature)`` (see :func:`crkd_loss`)."""
        return self.weight * crkd_loss(self.adapter(student_feature), teacher_feature)


class _RelationalMixin(MultiTermLoss):
    """The DR part shared by D-KD, DR and SSD-KD: ``lambda_rkd (w_dist L_dist + w_angle L_angle) + lambda_crkd L_CRKD``."""

    needs_adapter = True

    def _init_relational(
        self,
        lambd_rkd: float,
        w_dist: float,
        w_angle: float,
        lambd_crkd: float,
        adapter: nn.Module | None,
        student_channels: int | None,
        teacher_channels: int | None,
        use_relu: bool,
    ) -> None:
        self.lambd_rkd = lambd_rkd
        self.w_dist = w_dist
        self.w_angle = w_angle
        self.lambd_crkd = lambd_crkd
        self.adapter = make_adapter(adapter, student_channels, teacher_channels, use_relu)

    def _relational_terms(
        self,
        student_embedding: torch.Tensor,
        teacher_embedding: torch.Tensor,
        student_feature: torch.Tensor,
        teacher_feature: torch.Tensor,
        scale: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        return {
            "rkd_dist": scale
            * self.lambd_rkd
            * self.w_dist
            * rkd_distance_loss(student_embedding, teacher_embedding),
            "rkd_angle": scale
            * self.lambd_rkd
            * self.w_angle
            * rkd_angle_loss(student_embedding, teacher_embedding),
            "crkd": scale * self.lambd_crkd * crkd_loss(self.adapter(student_feature), teacher_feature),
        }


def _kd_weights_checked(kd_class_weighting: bool, class_weights: torch.Tensor | None) -> bool:
    if kd_class_weighting and class_weights is None:
        raise ValueError("kd_class_weighting weights the KD rows by the WCE class weights: pass class_weights")
    return bool(kd_class_weighting)


def _wce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    return F.cross_entropy(logits, target, weight=None if weights is None else weights.to(logits.dtype))


@LOSSES.register("diverse_kd")
class DiverseKDLoss(_RelationalMixin):
    """D-KD (``D_KD.forward``): ``(1-lambd) WCE + lambd T**2 KL + lambd_rkd (w_dist L_dist + w_angle L_angle) + lambd_crkd L_CRKD``.

    Terms: ``wce``, ``kl``, ``rkd_dist``, ``rkd_angle``, ``crkd`` (each with its weight).
    Embeddings are the pooled features (``avg_pool``, (N, d) or (N, d, 1, 1)); features are the last
    conv maps (student ``features[18]``, teacher ``layer4`` in the official models).

    Args:
        class_weights: WCE class weights (``diffkd_study.training.data.class_weights``, ``frequency``;
            ``None`` for plain CE).
        lambd: 0.5. temperature: 5.0. lambd_rkd: 1.0. w_dist: 25. w_angle: 50. lambd_crkd: 1000.
        adapter / student_channels / teacher_channels / use_relu: the ConvReg on the student map.
        kd_class_weighting: ``False`` (official): the KL is a batch mean. ``True`` (not in the official
            code): the per-row KLs are averaged with the class weight of each row's label, as the WCE
            averages its rows, so the KD term sees the same class balance as the WCE term.
    """

    description = ("D-KD (Diverse KD): (1 - {lambd}) x WCE + {lambd} x T^2 KL (T = {temperature}) + {lambd_rkd} x RKD "
                   "({w_dist} x distance + {w_angle} x angle) + {lambd_crkd} x channel-Gram relation")
    uses_class_weights = True

    def __init__(
        self,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        lambd: float = 0.5,
        temperature: float = 5.0,
        lambd_rkd: float = 1.0,
        w_dist: float = 25.0,
        w_angle: float = 50.0,
        lambd_crkd: float = 1000.0,
        adapter: nn.Module | None = None,
        student_channels: int | None = None,
        teacher_channels: int | None = None,
        use_relu: bool = True,
        kd_class_weighting: bool = False,
    ):
        super().__init__()
        self.register_buffer("class_weights", as_class_weights(class_weights))
        self.kd_class_weighting = _kd_weights_checked(kd_class_weighting, self.class_weights)
        self.lambd = lambd
        self.temperature = temperature
        self._init_relational(
            lambd_rkd, w_dist, w_angle, lambd_crkd, adapter, student_channels, teacher_channels, use_relu
        )

    def terms(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        target: torch.Tensor,
        student_embedding: torch.Tensor,
        teacher_embedding: torch.Tensor,
        student_feature: torch.Tensor,
        teacher_feature: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """D-KD's terms: ``wce`` ((1 - lambda) WCE), ``kl`` (lambda T**2 KL of the softened outputs) and the
        relational ``rkd_dist``, ``rkd_angle``, ``crkd``.
        """
        t = self.temperature
        rows = class_row_weights(self.class_weights, target) if self.kd_class_weighting else None
        return {
            "wce": (1 - self.lambd) * _wce(student_logits, target, self.class_weights),
            "kl": self.lambd * t * t * softened_kl(student_logits, teacher_logits, t, rows),
            **self._relational_terms(student_embedding, teacher_embedding, student_feature, teacher_feature),
        }


@LOSSES.register("ssd_dr")
class DualRelationalLoss(_RelationalMixin):
    """SSD-KD's DR term (``class DR``): ``lambd_rkd (w_dist L_dist + w_angle L_angle) + lambd_crkd L_CRKD``.

    The official constructor crashes (docs/methods/ssdkd.md §3.8 item 1); this is the intended computation.
    Terms ``rkd_dist``, ``rkd_angle``, ``crkd``. Arguments as :class:`DiverseKDLoss`.
    """

    description = ("SSD-KD's dual relation: {lambd_rkd} x RKD ({w_dist} x distance + {w_angle} x angle) + "
                   "{lambd_crkd} x channel-Gram relation")

    def __init__(
        self,
        lambd_rkd: float = 1.0,
        w_dist: float = 25.0,
        w_angle: float = 50.0,
        lambd_crkd: float = 1000.0,
        adapter: nn.Module | None = None,
        student_channels: int | None = None,
        teacher_channels: int | None = None,
        use_relu: bool = True,
    ):
        super().__init__()
        self._init_relational(
            lambd_rkd, w_dist, w_angle, lambd_crkd, adapter, student_channels, teacher_channels, use_relu
        )

    def terms(
        self,
        student_embedding: torch.Tensor,
        teacher_embedding: torch.Tensor,
        student_feature: torch.Tensor,
        teacher_feature: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The DR terms ``rkd_dist``, ``rkd_angle`` (on the pooled embeddings) and ``crkd`` (on the adapted maps)."""
        return self._relational_terms(student_embedding, teacher_embedding, student_feature, teacher_feature)


def _head(head: nn.Module | None, dim: int | None, role: str) -> nn.Module | None:
    if head is not None and dim is not None:
        raise ValueError(f"give either a {role} head module or {role}_dim, not both")
    if head is not None:
        return head
    return None if dim is None else ProjectionHead(dim)


@LOSSES.register("ssd_teacher_ss")
class TeacherSSHeadLoss(nn.Module):
    """Stage A of SSD-KD: the teacher's SS head on frozen-backbone embeddings, ``CE(S, source index)``.

    ``forward(teacher_embedding)`` takes the 4B pooled teacher embeddings in rotation layout
    (computed under ``torch.no_grad``; the backbone is not trained). ``last_stats["ss_accuracy"]`` is
    the fraction of rotated rows whose most similar original is their source.

    Args:
        dim: embedding size (builds a :class:`ProjectionHead`), or
        head: a ready head. After this stage pass the head to :class:`SSDKDLoss` (``teacher_head``).
    """

    description = ("SSD-KD stage A: cross-entropy of each rotated copy's cosine similarities to the originals "
                   "(teacher self-supervision head) against its source image")

    def __init__(self, dim: int | None = None, head: nn.Module | None = None):
        super().__init__()
        built = _head(head, dim, "teacher")
        if built is None:
            raise ValueError("TeacherSSHeadLoss needs dim or head")
        self.head = built
        self.last_stats: dict[str, float] = {}

    def forward(self, teacher_embedding: torch.Tensor) -> torch.Tensor:
        """``CE(S, source index)`` of the 4B teacher embeddings in rotation layout; sets
        ``last_stats["ss_accuracy"]``."""
        batch = rotation_batch_size(teacher_embedding.shape[0])
        similarity = similarity_matrix(self.head(teacher_embedding.detach().flatten(1)))
        source = source_targets(batch, similarity.device)
        self.last_stats = {"ss_accuracy": float((similarity.argmax(1) == source).float().mean())}
        return F.cross_entropy(similarity, source)


@LOSSES.register("ssd_kd")
class SSDKDLoss(_RelationalMixin):
    """The SSD-KD student objective (``isic_ssd_kd.py``, stage B) on a rotation-layout batch of 4B rows.

    ``ce_weight * WCE(z_s[nor], y)`` (term ``ce``)
    ``+ kd_weight * T_kd**2 KL(z_t[nor] || z_s[nor])`` (``kd``)
    ``+ tf_weight * T_tf**2 KL(z_t[aug] || z_s[aug])`` on rows ``I_tf`` (``tf``)
    ``+ ss_weight * tau**2 KL(S_t || S_s)`` on rows ``I_ss`` (``ss``)
    ``+ dr_weight * DR`` over all 4B rows (``rkd_dist``, ``rkd_angle``, ``crkd``).

    ``I_tf``: error-level selection of the rotated rows by the teacher's softened class scores
    (ratio_tf); ``I_ss``: the same on the teacher similarity matrix against the source index
    (ratio_ss). ``S_s`` uses the student head (trained with the student); ``S_t`` the frozen teacher
    head from stage A. The DR term uses the pooled embeddings (not the projections) and the adapted
    student feature map, as ``DR.forward`` does.

    Inputs of ``terms``/``forward``: logits (4B, K), ``target`` (B,) labels of the originals,
    pooled embeddings (4B, d), last conv maps (4B, C, H, W). ``last_stats``: ``n_tf_rows``,
    ``n_ss_rows`` (rows distilled), ``teacher_tf_accuracy``, ``teacher_ss_accuracy``,
    ``student_ss_accuracy``.

    Args:
        student_dim / student_head: the student projection head (built from the dim, or given).
        teacher_dim / teacher_head: the teacher head (frozen here: ``requires_grad_(False)``, kept in
            eval mode); load stage-A weights into ``loss.teacher_head`` or pass the trained module.
        class_weights: WCE weights (``None``: plain CE).
        ce_weight 0.1, kd_weight 0.9, tf_weight 2.7, ss_weight 10.0, dr_weight 1.0 (``_hr_w``).
        kd_temperature 4.0, tf_temperature 4.0, ss_temperature 0.5.
        ratio_tf 1.0, ratio_ss 0.75: share of teacher-wrong rows kept.
        lambd_rkd 1.0, w_dist 25, w_angle 50, lambd_crkd 1000: the DR weights.
        adapter / student_channels / teacher_channels / use_relu: the ConvReg for CRKD.
        kd_class_weighting: ``False`` (official): ``kd`` and ``tf`` are batch means. ``True`` (not in
            the official code): their per-row KLs are averaged with the class weight of each row's
            label (a rotated row has its original's label), as the ``ce`` term averages its rows.

    ``rotation_layout = True`` declares that the loss reads 4-rotation batches (a task builds them) and
    needs ``student_dim`` (or a head) and stage A's ``teacher_head``.
    """

    description = ("SSD-KD: {ce_weight} x WCE + {kd_weight} x T^2 KL (T = {kd_temperature}) + {tf_weight} x T^2 KL "
                   "of the rotated copies (T = {tf_temperature}, teacher-wrong rows kept: {ratio_tf}) + {ss_weight} x "
                   "self-supervised similarity KD (tau = {ss_temperature}, kept: {ratio_ss}) + {dr_weight} x "
                   "({lambd_rkd} x RKD + {lambd_crkd} x channel-Gram relation)")
    uses_class_weights = True
    rotation_layout = True

    def __init__(
        self,
        student_dim: int | None = None,
        teacher_dim: int | None = None,
        student_head: nn.Module | None = None,
        teacher_head: nn.Module | None = None,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        tf_weight: float = 2.7,
        ss_weight: float = 10.0,
        dr_weight: float = 1.0,
        kd_temperature: float = 4.0,
        tf_temperature: float = 4.0,
        ss_temperature: float = 0.5,
        ratio_tf: float = 1.0,
        ratio_ss: float = 0.75,
        lambd_rkd: float = 1.0,
        w_dist: float = 25.0,
        w_angle: float = 50.0,
        lambd_crkd: float = 1000.0,
        adapter: nn.Module | None = None,
        student_channels: int | None = None,
        teacher_channels: int | None = None,
        use_relu: bool = True,
        kd_class_weighting: bool = False,
    ):
        super().__init__()
        self.student_head = _head(student_head, student_dim, "student")
        self.teacher_head = _head(teacher_head, teacher_dim, "teacher")
        if self.student_head is None or self.teacher_head is None:
            raise ValueError(
                "SSDKDLoss needs both projection heads (student_dim/student_head and teacher_dim/teacher_head)"
            )
        self.teacher_head.requires_grad_(False)
        self.teacher_head.eval()
        self.register_buffer("class_weights", as_class_weights(class_weights))
        self.kd_class_weighting = _kd_weights_checked(kd_class_weighting, self.class_weights)
        self.ce_weight, self.kd_weight, self.tf_weight = ce_weight, kd_weight, tf_weight
        self.ss_weight, self.dr_weight = ss_weight, dr_weight
        self.kd_temperature, self.tf_temperature, self.ss_temperature = (
            kd_temperature,
            tf_temperature,
            ss_temperature,
        )
        self.ratio_tf, self.ratio_ss = ratio_tf, ratio_ss
        self._init_relational(
            lambd_rkd, w_dist, w_angle, lambd_crkd, adapter, student_channels, teacher_channels, use_relu
        )

    def train(self, mode: bool = True) -> SSDKDLoss:
        """Set the training mode of the loss's trainable parts; the frozen teacher head stays in eval mode."""
        super().train(mode)
        self.teacher_head.eval()
        return self

    def terms(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        target: torch.Tensor,
        student_embedding: torch.Tensor,
        teacher_embedding: torch.Tensor,
        student_feature: torch.Tensor,
        teacher_feature: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The terms ``ce``, ``kd``, ``tf``, ``ss``, ``rkd_dist``, ``rkd_angle``, ``crkd`` of one 4B-row batch
        (see the class)."""
        n_rows = student_logits.shape[0]
        batch = rotation_batch_size(n_rows, target)
        nor_index, aug_index = layout_indices(n_rows, student_logits.device)
        teacher_logits = teacher_logits.detach()

        aug_target = rotation_targets(target)
        aug_teacher_scores = F.softmax(teacher_logits[aug_index] / self.tf_temperature, dim=1)
        tf_rows = error_level_selection(aug_teacher_scores, aug_target, self.ratio_tf)
        nor_weights = aug_weights = None
        if self.kd_class_weighting:
            nor_weights = class_row_weights(self.class_weights, target)
            aug_weights = class_row_weights(self.class_weights, aug_target)

        student_rep = self.student_head(student_embedding.flatten(1))
        with torch.no_grad():
            teacher_rep = self.teacher_head(teacher_embedding.detach().flatten(1))
        student_simi = similarity_matrix(student_rep)
        teacher_simi = similarity_matrix(teacher_rep)
        source = source_targets(batch, student_logits.device)
        ss_rows = error_level_selection(teacher_simi, source, self.ratio_ss)

        self.last_stats = {
            "n_tf_rows": float(tf_rows.index.numel()),
            "n_ss_rows": float(ss_rows.index.numel()),
            "teacher_tf_accuracy": tf_rows.n_correct / (3 * batch),
            "teacher_ss_accuracy": ss_rows.n_correct / (3 * batch),
            "student_ss_accuracy": float((student_simi.argmax(1) == source).float().mean()),
        }
        return {
            "ce": self.ce_weight * _wce(student_logits[nor_index], target, self.class_weights),
            "kd": self.kd_weight
            * self.kd_temperature**2
            * softened_kl(student_logits[nor_index], teacher_logits[nor_index], self.kd_temperature, nor_weights),
            "tf": self.tf_weight
            * _selected_kl(
                student_logits[aug_index], teacher_logits[aug_index], tf_rows.index, self.tf_temperature, aug_weights
            ),
            "ss": self.ss_weight
            * _selected_kl(student_simi, teacher_simi, ss_rows.index, self.ss_temperature),
            **self._relational_terms(
                student_embedding, teacher_embedding, student_feature, teacher_feature, scale=self.dr_weight
            ),
        }
