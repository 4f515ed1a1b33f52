"""The distillation task: a student learns from a frozen teacher through a :class:`CompositeLoss`.

``DistillationTask(student, teacher, loss, student_features=..., teacher_features=...)`` is a task for
:func:`diffkd_study.training.trainer.fit`: ``forward(batch)`` runs the teacher (eval mode, no gradients)
and the student on the same images and calls the loss with one context:

==========================  =====================================================================
``student_logits``          the student's logits (float32)
``teacher_logits``          the teacher's logits
``target``                  integer labels
``student_<name>``          the output of the student module hooked as ``name``
``teacher_<name>``          the output of the teacher module hooked as ``name`` (detached)
``student_lesions``         lesion masks ``(B, 1, H, W)`` when the data have them (LsKD on masks)
``student_image_size``      ``(H, W)`` of the input
==========================  =====================================================================

Features come from forward hooks by module path (:class:`~diffkd_study.distill.hooks.FeatureHooks`),
never by editing model code; :func:`default_feature_paths` gives the usual ones of a timm classifier
(``feature``: the last feature map, ``embedding``: the pooled pre-logits vector). The teacher stays
in eval mode whatever ``train()`` is called with (its BatchNorm statistics are not updated) and has
no trainable parameters; the loss's own parameters (adapters, projections) are trained with the
student.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from diffkd_study.distill.hooks import FeatureHooks

__all__ = ["DistillationTask", "default_feature_paths"]


def default_feature_paths(model: nn.Module) -> dict[str, str]:
    """``{"feature": <last feature map module>, "embedding": <pooled pre-logits module>}`` of a timm model."""
    from diffkd_study.models.classifier import model_info

    info = model_info(model)
    return {"feature": info["features"], "embedding": info["embedding"]}


class DistillationTask(nn.Module):
    def __init__(self, student: nn.Module, teacher: nn.Module, loss: nn.Module, *,
                 student_features: Mapping[str, str] | None = None,
                 teacher_features: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.model = student
        self.teacher = teacher
        self.loss = loss
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.teacher.eval()
        self._student_hooks = FeatureHooks(student, dict(student_features)) if student_features else None
        self._teacher_hooks = FeatureHooks(teacher, dict(teacher_features), detach=True) if teacher_features else None

    def train(self, mode: bool = True) -> DistillationTask:
        super().train(mode)
        self.teacher.eval()
        return self

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # the frozen teacher is an input, not a trained part: checkpoints hold the student and the loss
        state = super().state_dict(*args, **kwargs)
        return {k: v for k, v in state.items() if not k.startswith("teacher.")}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        own = {k: v for k, v in super().state_dict().items() if k.startswith("teacher.")}
        return super().load_state_dict({**own, **state_dict}, strict=strict, assign=assign)

    @staticmethod
    def _run(model: nn.Module, hooks: FeatureHooks | None, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        if hooks is None:
            return model(images), {}
        return hooks.run(images)

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        images = batch["images"]
        with torch.no_grad():
            teacher_logits, teacher_features = self._run(self.teacher, self._teacher_hooks, images)
        student_logits, student_features = self._run(self.model, self._student_hooks, images)
        context: dict[str, Any] = {
            "student_logits": student_logits.float(),
            "teacher_logits": teacher_logits.float(),
            "target": batch["target"],
            "student_image_size": batch.get("image_size", tuple(images.shape[-2:])),
            **{f"student_{name}": value for name, value in student_features.items()},
            **{f"teacher_{name}": value for name, value in teacher_features.items()},
        }
        if "masks" in batch:
            context["student_lesions"] = batch["masks"]
        return self.loss(context)
