"""Knowledge-distillation losses, each an ``nn.Module`` registered by name in :data:`LOSSES`.

Conventions shared by every registered loss (the method packages register theirs from their own modules:
:mod:`~diffkd_study.methods.ssdkd.losses`, :mod:`~diffkd_study.methods.comoto.lesion`; importing
:mod:`diffkd_study.loss_catalog` fills the registry with all of them):

* ``forward`` returns a scalar tensor. Losses made of several parts subclass :class:`MultiTermLoss`:
  their ``terms(...)`` returns ``{part: weighted tensor}`` and ``forward`` is the sum, so
  :class:`~diffkd_study.distill.composite.CompositeLoss` can log every part (mdistiller: "report
  every term").
* Argument names are shared so a composite can route one context dict to every term:
  ``student_logits``, ``teacher_logits``, ``target``, ``student_feature``, ``teacher_feature``,
  ``student_embedding``, ``teacher_embedding``. A loss's ``forward`` (or ``terms``) parameters are
  therefore also what it needs hooked: ``student_feature`` asks for the ``feature`` hook of the student.
* Teacher inputs are detached inside every loss, so no gradient can reach a teacher even when the
  caller forgot ``torch.no_grad()``.
* Losses with trainable parts (adapters, projections) own them; put the loss's (or the composite's)
  parameters in the student optimiser.
* Diagnostics that are not losses (row counts, flags) go to ``last_stats`` (floats).

Declarations on every registered class (read by :func:`describe_loss` and
:func:`~diffkd_study.distill.distiller.build_objective`):

* ``description``: one line for report prose, a ``str.format`` template over the constructor's
  arguments (their defaults unless given), e.g. ``"T^2 KL (Hinton KD, T = {temperature})"``.
* ``uses_class_weights = True``: the loss is the supervised, class-weighted part of an objective; a
  stage's class weights are passed to it as ``class_weights``.
* ``needs_adapter = True``: the loss takes an ``adapter`` mapping the student's hooked ``feature`` map
  onto the teacher's, built from the two networks.

Registered here: ``ce`` (weighted cross-entropy), ``kd`` (Hinton et al. 2015), ``dkd`` (Zhao et al.,
CVPR 2022, as in mdistiller), ``fitnet`` (Romero et al., ICLR 2015, as in mdistiller/RepDistiller),
``at`` (Zagoruyko & Komodakis, ICLR 2017, as in the authors' code).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffkd_study.distill.hooks import Adapter
from diffkd_study.registry import Registry

__all__ = [
    "LOSSES",
    "AttentionTransferLoss",
    "CrossEntropyLoss",
    "DKDLoss",
    "FitNetLoss",
    "KDLoss",
    "MultiTermLoss",
    "as_class_weights",
    "attention_map",
    "class_row_weights",
    "describe_loss",
    "dkd_terms",
    "kd_loss",
    "softened_kl",
    "weighted_row_mean",
]

LOSSES: Registry[type[nn.Module]] = Registry("loss")


def describe_loss(loss_class: type[nn.Module], params: Mapping[str, Any] | None = None) -> str:
    """One line on what a registered loss computes: its ``description`` template filled with ``params``
    over the constructor's defaults (see the module notes).

    A class without a description, a parameter the constructor does not take, or a template naming
    one, is an error that names the class.
    """
    template = getattr(loss_class, "description", None)
    if not isinstance(template, str) or not template.strip():
        raise ValueError(f"loss class {loss_class.__name__} has no description (a one-line template)")
    signature = inspect.signature(loss_class)
    unknown = sorted(set(params or {}) - set(signature.parameters))
    if unknown:
        raise ValueError(f"{loss_class.__name__} takes no parameter(s) {unknown}; accepted arguments: {signature}")
    values = {
        name: parameter.default
        for name, parameter in signature.parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    values.update(params or {})
    try:
        return template.format(**values)
    except (KeyError, IndexError) as err:
        raise ValueError(f"the description of {loss_class.__name__} names {err}, which its constructor lacks") from None


class MultiTermLoss(nn.Module):
    """A loss made of named parts: subclasses implement ``terms``; ``forward`` sums them."""

    def __init__(self) -> None:
        super().__init__()
        self.last_stats: dict[str, float] = {}

    def terms(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """The named parts of the loss, ``{part: weighted scalar tensor}``; implemented by every subclass."""
        raise NotImplementedError

    def forward(self, *args, **kwargs) -> torch.Tensor:
        """The loss: the sum of :meth:`terms`, called with the same arguments."""
        parts = self.terms(*args, **kwargs)
        return torch.stack(list(parts.values())).sum()


def weighted_row_mean(values: torch.Tensor, row_weights: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i v_i / sum_i w_i``: the reduction of PyTorch's class-weighted cross-entropy, for any per-row loss."""
    if row_weights.shape != values.shape:
        raise ValueError(f"row weights of shape {tuple(row_weights.shape)} for {tuple(values.shape)} per-row values")
    weights = row_weights.to(device=values.device, dtype=values.dtype)
    total = weights.sum()
    if not bool(total > 0):
        raise ValueError("row weights sum to 0: every row of the batch has weight 0 (a class weight of 0?)")
    return (weights * values).sum() / total


def class_row_weights(class_weights: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The weight of every row's true class (``class_weights[target]``), for :func:`weighted_row_mean`."""
    return class_weights.to(target.device)[target]


def softened_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``KL(softmax(t/T) || softmax(s/T))`` over dim 1, summed and divided by ``len(student_logits)``.

    This is ``KLDivLoss(reduction='batchmean')`` (= ``size_average=False`` divided by the batch), with
    no ``T**2`` factor. The teacher is detached. With ``row_weights`` (one per row) the per-row KLs
    are averaged as weighted cross-entropy averages its rows (:func:`weighted_row_mean`).
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits.detach() / temperature, dim=1)
    if row_weights is None:
        return F.kl_div(log_p_student, p_teacher, reduction="batchmean")
    return weighted_row_mean(F.kl_div(log_p_student, p_teacher, reduction="none").sum(1), row_weights)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hinton KD: ``T**2 * KL(softmax(t/T) || softmax(s/T))``, batch mean (mdistiller's ``kd_loss``)."""
    return softened_kl(student_logits, teacher_logits, temperature, row_weights) * temperature**2


def as_class_weights(class_weights: Sequence[float] | torch.Tensor | None) -> torch.Tensor | None:
    """Per-class weights as a float32 tensor for a loss buffer (``None`` stays ``None``)."""
    return None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)


def _kd_row_weights(
    class_weights: torch.Tensor | None, target: torch.Tensor | None, loss: str
) -> torch.Tensor | None:
    if class_weights is None:
        return None
    if target is None:
        raise ValueError(f"{loss} with class_weights weights every row by its true class: pass target")
    return class_row_weights(class_weights, target)


def _check_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise ValueError(
            "student and teacher logits must both be (batch, classes); got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )


@LOSSES.register("ce")
class CrossEntropyLoss(nn.Module):
    """Cross-entropy on the student logits, optionally class-weighted.

    Args:
        class_weights: one weight per class (``None``: unweighted). With weights the mean is
            ``sum_i w[y_i] * nll_i / sum_i w[y_i]`` (PyTorch's ``weight=`` semantics, SSD-KD's WCE).
        label_smoothing: as in ``F.cross_entropy`` (default 0).
    """

    description = "cross-entropy"
    uses_class_weights = True

    def __init__(
        self, class_weights: Sequence[float] | torch.Tensor | None = None, label_smoothing: float = 0.0
    ):
        super().__init__()
        self.register_buffer("class_weights", as_class_weights(class_weights))
        self.label_smoothing = label_smoothing

    def forward(self, student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of ``student_logits`` (B, K) against integer ``target`` (B,), class-weighted when set."""
        weight = None if self.class_weights is None else self.class_weights.to(student_logits.dtype)
        return F.cross_entropy(student_logits, target, weight=weight, label_smoothing=self.label_smoothing)


@LOSSES.register("kd")
class KDLoss(nn.Module):
    """Hinton et al. (2015) distillation of softened outputs.

    ``weight * T**2 * KL(softmax(z_t/T) || softmax(z_s/T))`` with ``batchmean`` reduction.

    Args:
        temperature: softening temperature T (default 4.0, mdistiller's CIFAR setting).
        weight: multiplier (default 1.0; mdistiller uses 0.9 with CE weight 0.1).
        class_weights: ``None`` (default, Hinton's batch mean) or one weight per class: the per-row
            KLs are then averaged with the weight of each row's true class, as weighted cross-entropy
            averages its rows (``forward`` needs ``target``).
    """

    description = "T^2 KL (Hinton KD, T = {temperature})"

    def __init__(
        self,
        temperature: float = 4.0,
        weight: float = 1.0,
        class_weights: Sequence[float] | torch.Tensor | None = None,
    ):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        self.temperature = temperature
        self.weight = weight
        self.register_buffer("class_weights", as_class_weights(class_weights))

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``weight * T**2 * KL`` of the softened outputs, batch mean; ``target`` is needed only with class weights.

        Raises ``ValueError`` when the two logit tensors are not both (batch, classes) of one shape.
        """
        _check_logits(student_logits, teacher_logits)
        rows = _kd_row_weights(self.class_weights, target, "KDLoss")
        return self.weight * kd_loss(student_logits, teacher_logits, self.temperature, rows)


def dkd_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
    row_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD) of decoupled KD, each ``T**2 * KL`` with batch-mean reduction (with
    ``row_weights``, one per row: the weighted mean of the per-row KLs, :func:`weighted_row_mean`).

    TCKD compares the binary distributions ``[p_target, 1 - p_target]``; NCKD compares the
    distributions over the non-target classes only (mdistiller masks the target logit with -1000).
    """
    _check_logits(student_logits, teacher_logits)
    teacher_logits = teacher_logits.detach()
    gt_mask = F.one_hot(target, student_logits.shape[1]).to(torch.bool)
    p_student = F.softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)

    def binary(p: torch.Tensor) -> torch.Tensor:
        p_target = (p * gt_mask).sum(1, keepdim=True)
        return torch.cat([p_target, (p * ~gt_mask).sum(1, keepdim=True)], dim=1)

    masked_student = student_logits / temperature - 1000.0 * gt_mask
    masked_teacher = teacher_logits / temperature - 1000.0 * gt_mask
    tckd_rows = F.kl_div(torch.log(binary(p_student)), binary(p_teacher), reduction="none").sum(1)
    nckd_rows = F.kl_div(F.log_softmax(masked_student, dim=1), F.softmax(masked_teacher, dim=1),
                         reduction="none").sum(1)
    if row_weights is None:
        tckd, nckd = tckd_rows.mean(), nckd_rows.mean()
    else:
        tckd, nckd = weighted_row_mean(tckd_rows, row_weights), weighted_row_mean(nckd_rows, row_weights)
    return tckd * temperature**2, nckd * temperature**2


@LOSSES.register("dkd")
class DKDLoss(MultiTermLoss):
    """Decoupled KD (Zhao et al., CVPR 2022), as in mdistiller's ``DKD`` distiller.

    ``warmup * (alpha * TCKD + beta * NCKD)`` with ``warmup = min(epoch / warmup_epochs, 1)``.
    Terms: ``tckd``, ``nckd`` (both weighted and warmed up).

    Args:
        alpha: TCKD weight (default 1.0, mdistiller CIFAR).
        beta: NCKD weight (default 8.0, mdistiller CIFAR; 0.5 for ImageNet).
        temperature: T (default 4.0; 1.0 for ImageNet).
        warmup_epochs: linear warm-up length in epochs (default 20); it applies only when
            ``epoch`` is passed to ``forward`` (without it the factor is 1).
        class_weights: ``None`` (default, mdistiller's batch mean) or one weight per class: both
            KLs are then averaged with the weight of each row's true class (as weighted cross-entropy).
    """

    description = "decoupled KD ({alpha} x TCKD + {beta} x NCKD, T = {temperature})"

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        warmup_epochs: float = 20,
        class_weights: Sequence[float] | torch.Tensor | None = None,
    ):
        super().__init__()
        self.register_buffer("class_weights", as_class_weights(class_weights))
        self.alpha = alpha
        self.beta = beta
        self.temperature = temperature
        self.warmup_epochs = warmup_epochs

    def terms(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        target: torch.Tensor,
        epoch: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """``{"tckd": alpha * TCKD, "nckd": beta * NCKD}``, both scaled by the warm-up factor.

        With ``epoch`` and ``warmup_epochs > 0`` the factor is ``min(epoch / warmup_epochs, 1)`` (recorded in
        ``last_stats["warmup"]``), else 1.
        """
        rows = _kd_row_weights(self.class_weights, target, "DKDLoss")
        tckd, nckd = dkd_terms(student_logits, teacher_logits, target, self.temperature, rows)
        factor = 1.0
        if epoch is not None and self.warmup_epochs > 0:
            factor = min(float(epoch) / self.warmup_epochs, 1.0)
        self.last_stats = {"warmup": factor}
        return {"tckd": factor * self.alpha * tckd, "nckd": factor * self.beta * nckd}


def make_adapter(
    adapter: nn.Module | None,
    student_channels: int | None,
    teacher_channels: int | None,
    use_relu: bool,
) -> nn.Module:
    """The given adapter, a 1x1 :class:`Adapter` built from channel counts, or the identity."""
    if adapter is not None:
        if student_channels is not None or teacher_channels is not None:
            raise ValueError("give either an adapter module or student/teacher channel counts, not both")
        return adapter
    if (student_channels is None) != (teacher_channels is None):
        raise ValueError("student_channels and teacher_channels must be given together")
    if student_channels is None:
        return nn.Identity()
    return Adapter(student_channels, teacher_channels, use_relu=use_relu)


class AdaptedFeatureLoss(nn.Module):
    """Base of the losses that compare an adapted student map with a teacher map: holds the adapter
    (built from channels, given ready, or identity) and the weight."""

    needs_adapter = True

    def __init__(
        self,
        student_channels: int | None = None,
        teacher_channels: int | None = None,
        use_relu: bool = True,
        adapter: nn.Module | None = None,
        weight: float = 1.0,
    ):
        super().__init__()
        self.adapter = make_adapter(adapter, student_channels, teacher_channels, use_relu)
        self.weight = weight


@LOSSES.register("fitnet")
class FitNetLoss(AdaptedFeatureLoss):
    """FitNets hint loss: ``weight * MSE(adapter(F_s), F_t)`` (mean over all elements).

    Args:
        student_channels, teacher_channels: build a 1x1 :class:`Adapter` (conv + BN + ReLU, as
            mdistiller's ``ConvReg``); for maps of different sizes pass an ``adapter`` from
            :func:`~diffkd_study.distill.hooks.build_adapter` instead.
        use_relu: ReLU at the end of the built adapter (default True, ConvReg's default).
        adapter: a ready adapter module (trained with the student).
        weight: multiplier (default 1.0; mdistiller's CIFAR FitNet uses 100).

    Without channels or adapter the student map is compared as is (identity adapter).
    """

    description = "FitNets feature hint (MSE of the adapted student map to the teacher's)"

    def forward(self, student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
        """``weight * MSE(adapter(student_feature), teacher_feature)`` over all elements, teacher detached.

        Raises ``ValueError`` when the adapted student map does not have the teacher map's shape.
        """
        adapted = self.adapter(student_feature)
        if adapted.shape != teacher_feature.shape:
            raise ValueError(
                f"adapted student feature {tuple(adapted.shape)} does not match teacher feature "
                f"{tuple(teacher_feature.shape)}; configure the adapter (student/teacher channels or build_adapter)"
            )
        return self.weight * F.mse_loss(adapted, teacher_feature.detach())


def attention_map(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Zagoruyko's spatial attention: ``sum_c |A_c|**p`` per position, flattened and L2-normalised, (B, HW)."""
    if feature.ndim != 4:
        raise ValueError(f"attention maps need (B, C, H, W) features; got {tuple(feature.shape)}")
    return F.normalize(feature.abs().pow(p).sum(1).flatten(1), dim=1)


@LOSSES.register("at")
class AttentionTransferLoss(nn.Module):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017), as in the authors' code.

    For each layer pair, ``Q = vec(sum_c |A_c|**p) / ||vec(sum_c |A_c|**p)||_2`` and the loss is
    ``beta / 2 * sum_layers mean_{b, positions} (Q_s - Q_t)**2``.

    The paper writes ``beta/2 * sum_j || Q_s^j - Q_t^j ||_p`` and sets "beta = 10**3 divided by the
    number of elements in the attention map and the batch size"; the authors' code
    (szagoruyko/attention-transfer ``utils.at_loss``) realises that normalisation with a mean over
    batch and positions of the squared difference, which is what this computes. (mdistiller
    multiplies the same mean by 1000 without the 1/2.) When the spatial sizes of a pair differ, the
    larger map is average-pooled to the smaller size (mdistiller).

    Args:
        p: exponent of the attention map (default 2).
        beta: weight (default 1000).

    ``forward`` takes one feature map per side or sequences of maps (one per layer pair).
    """

    description = "attention transfer (beta = {beta}, p = {p})"

    def __init__(self, p: float = 2.0, beta: float = 1000.0):
        super().__init__()
        self.p = p
        self.beta = beta

    def forward(
        self,
        student_feature: torch.Tensor | Sequence[torch.Tensor],
        teacher_feature: torch.Tensor | Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """``beta / 2 * sum over layer pairs of mean (Q_s - Q_t)**2``, one map or a sequence of maps per side.

        Raises ``ValueError`` when the two sides hold different numbers of maps (or none).
        """
        student_maps = (
            [student_feature] if isinstance(student_feature, torch.Tensor) else list(student_feature)
        )
        teacher_maps = (
            [teacher_feature] if isinstance(teacher_feature, torch.Tensor) else list(teacher_feature)
        )
        if len(student_maps) != len(teacher_maps) or not student_maps:
            raise ValueError(
                f"attention transfer needs as many student as teacher maps; got {len(student_maps)} and {len(teacher_maps)}"
            )
        total = student_maps[0].new_zeros(())
        for f_s, f_t in zip(student_maps, teacher_maps, strict=True):
            f_t = f_t.detach()
            s_size, t_size = tuple(f_s.shape[2:]), tuple(f_t.shape[2:])
            if s_size != t_size:
                if f_s.shape[2] > f_t.shape[2]:
                    f_s = F.adaptive_avg_pool2d(f_s, t_size)
                else:
                    f_t = F.adaptive_avg_pool2d(f_t, s_size)
            total = total + (attention_map(f_s, self.p) - attention_map(f_t, self.p)).pow(2).mean()
        return self.beta / 2 * total

