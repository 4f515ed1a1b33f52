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

:func:`build_objective` turns a :func:`~diffkd_study.distill.composite.build_loss` recipe into the loss
and the hooks it needs, from what each registered loss declares: the context keys its call reads
(``student_feature`` -> hook the student's ``feature``), ``needs_adapter`` (an adapter from the
student's ``feature`` map onto the teacher's, built here) and ``uses_class_weights`` (the stage's class
weights), so a stage writes its objective as data and never an ``if`` per loss.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from diffkd_study.distill.composite import CompositeLoss, build_loss, loss_inputs, term_class
from diffkd_study.distill.hooks import FeatureHooks, build_adapter

__all__ = ["DistillationTask", "Objective", "build_objective", "default_feature_paths", "objective_inputs"]


def default_feature_paths(model: nn.Module) -> dict[str, str]:
    """``{"feature": <last feature map module>, "embedding": <pooled pre-logits module>}`` of a timm model."""
    from diffkd_study.models.classifier import model_info

    info = model_info(model)
    return {"feature": info["features"], "embedding": info["embedding"]}


# context entries DistillationTask.forward provides itself; every other ``student_<name>`` is a hook
_TASK_INPUTS = ("logits", "image_size", "lesions")


def objective_inputs(recipe: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The context keys the terms of a ``build_loss`` recipe read (``teacher_logits``, ``student_feature``, ...)."""
    return {key for name, spec in recipe.items()
            for key in loss_inputs(term_class(name, spec), spec.get("inputs"))}


@dataclass
class Objective:
    """A recipe built for one student/teacher pair: the loss and the modules to hook on each network
    (``{name: module path}``, empty when the loss reads logits only)."""

    loss: CompositeLoss
    student_features: dict[str, str]
    teacher_features: dict[str, str]


def build_objective(
    recipe: Mapping[str, Mapping[str, Any]],
    student: nn.Module,
    teacher: nn.Module | None,
    *,
    input_shape: Sequence[int],
    class_weights: Sequence[float] | None = None,
    extra_params: Mapping[str, Mapping[str, Any]] | None = None,
) -> Objective:
    """The :class:`~diffkd_study.distill.composite.CompositeLoss` of ``recipe`` and the features it reads.

    ``class_weights`` go to every term whose loss ``uses_class_weights`` (unless its ``params`` set
    them); a term whose loss ``needs_adapter`` gets an adapter from the student's ``feature`` map to the
    teacher's (a dry forward on ``input_shape`` = (C, H, W)), with the term's ``use_relu`` parameter
    (its constructor's default when not given), unless ``extra_params`` give one or ``params`` give
    channel counts; hooks come from :func:`default_feature_paths` for
    every ``student_<name>`` / ``teacher_<name>`` input. Adapters are built in term order before the
    loss (whose terms are built in order), so the random draws follow the recipe.
    """
    keys = objective_inputs(recipe)
    if teacher is None and any(k.startswith("teacher_") for k in keys):
        raise ValueError("the objective reads the teacher's outputs; no teacher was given")
    paths: dict[str, dict[str, str]] = {}

    def hooked(side: str, model: nn.Module, names: Sequence[str]) -> dict[str, str]:
        if not names:
            return {}
        if side not in paths:  # model_info probes the network: only when something is hooked
            paths[side] = default_feature_paths(model)
        missing = sorted(set(names) - set(paths[side]))
        if missing:
            raise ValueError(f"the objective reads {side} output(s) {missing}; hookable by default: {sorted(paths[side])}")
        return {name: path for name, path in paths[side].items() if name in names}

    terms: dict[str, dict[str, Any]] = {}
    extra = {name: dict(values) for name, values in (extra_params or {}).items()}
    for name, spec in recipe.items():
        loss_class = term_class(name, spec)
        params = dict(spec.get("params") or {})
        if getattr(loss_class, "uses_class_weights", False):
            params.setdefault("class_weights", class_weights)
        ready = "adapter" in extra.get(name, {}) or "student_channels" in params  # given, or built by the loss
        if getattr(loss_class, "needs_adapter", False) and not ready:
            use_relu = params.get("use_relu", inspect.signature(loss_class).parameters["use_relu"].default)
            adapter = build_adapter(student, teacher, hooked("student", student, ["feature"])["feature"],
                                    hooked("teacher", teacher, ["feature"])["feature"],
                                    input_shape=tuple(input_shape), use_relu=use_relu)
            extra.setdefault(name, {})["adapter"] = adapter
        terms[name] = {**spec, "params": params}
    loss = build_loss(terms, extra)
    needed = {side: [k.removeprefix(f"{side}_") for k in keys
                     if k.startswith(f"{side}_") and k.removeprefix(f"{side}_") not in _TASK_INPUTS]
              for side in ("student", "teacher")}
    return Objective(loss, hooked("student", student, needed["student"]), hooked("teacher", teacher, needed["teacher"]))


class DistillationTask(nn.Module):
    """Trainer task that distils a frozen ``teacher`` into ``student`` with ``loss`` (a :class:`CompositeLoss`).

    ``forward(batch)`` runs the teacher without gradients and the student on ``batch["images"]``, records the
    hooked features (``student_features`` / ``teacher_features``: ``{name: module path}``) and calls ``loss`` with
    the context ``student_logits``, ``teacher_logits``, ``target``, ``student_image_size``, ``student_<name>``,
    ``teacher_<name>`` (and ``student_lesions`` when the batch has ``masks``); it returns ``(total, terms)``.
    ``model`` is the student (the deployable network); the teacher's parameters are frozen and it stays in
    eval mode, and checkpoints (``state_dict``) hold the student and the loss only.
    """

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
        """Set the training mode of the student and the loss; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The state of the student and the loss (their trainable parts); the frozen teacher is left out."""
        # the frozen teacher is an input, not a trained part: checkpoints hold the student and the loss
        state = super().state_dict(*args, **kwargs)
        return {k: v for k, v in state.items() if not k.startswith("teacher.")}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load a :meth:`state_dict` (without the teacher); the current teacher's weights are kept."""
        own = {k: v for k, v in super().state_dict().items() if k.startswith("teacher.")}
        return super().load_state_dict({**own, **state_dict}, strict=strict, assign=assign)

    @staticmethod
    def _run(model: nn.Module, hooks: FeatureHooks | None, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        if hooks is None:
            return model(images), {}
        return hooks.run(images)

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """``(total loss, {term: value})`` of one batch (see the class docstring for the loss context)."""
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
