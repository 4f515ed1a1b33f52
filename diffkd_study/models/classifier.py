"""Classifier factory on timm, with offline weights and grayscale input.

Any timm model name works; timm is always called with ``pretrained=False`` and weights then come from a
source string of :mod:`diffkd_study.models.pretrained` (``none``, ``package:...``, ``file:...#sha256=...``).

Grayscale: pretrained RGB weights are adapted to ``in_chans=1`` by summing the first convolution's kernels
over the colour channels (timm's ``adapt_input_conv``). A gray image ``g`` then gives exactly the output
the RGB model gives for ``g`` repeated on three channels, provided the three channels are normalised
alike, which holds for the study's normalisation: mean = std = 0.5 on every channel
(:data:`INPUT_MEAN`, :data:`INPUT_STD`), the EfficientNet-Lite weights' own. Models trained from scratch
use it too, so a teacher and a student are fed the same tensor during distillation.

The classifier head is built by timm for ``num_classes``; a pretrained head is kept only when its shape
fits (e.g. 1000 ImageNet classes), otherwise the new head keeps timm's initialisation. Every other tensor
must load under ``strict=True``.

Defaults (measured by ``benchmarks/model_efficiency.py``: 2 classes, 1-channel input, batch 1, one
thread): the teacher is ``tf_efficientnet_lite2`` with its ImageNet weights; the student is ``lcnet_035``
(PP-LCNet x0.35, designed for CPUs) trained from scratch, the fastest of the timm networks tried with at
most 1/8 of the teacher's parameters. It has 1/13 of the parameters and 1/23 of the FLOPs. Its eager
PyTorch CPU latency is about 1/6 of the teacher's at 224 px but only about 1/4 at 128 px, where
per-operator overhead, not arithmetic, sets the student's time; under onnxruntime it is about 1/12 at both.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from timm.models import adapt_input_conv
from torch import nn

from diffkd_study.models.pretrained import LoadedWeights, load_weights, parse_weight_source

INPUT_MEAN = 0.5
INPUT_STD = 0.5

DEFAULT_TEACHER = "tf_efficientnet_lite2"
DEFAULT_TEACHER_WEIGHTS = "package:efficientnet-lite2"
DEFAULT_STUDENT = "lcnet_035"
DEFAULT_STUDENT_WEIGHTS = "none"  # no offline ImageNet weights exist for it


def _names(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def create_classifier(
    name: str,
    num_classes: int,
    in_chans: int = 1,
    pretrained: str = "none",
    drop_rate: float = 0.0,
) -> nn.Module:
    """A timm classifier for ``num_classes`` on ``in_chans``-channel input, weights from ``pretrained``.

    The model's ``pretrained_cfg`` records ``weights`` (the source string), ``weights_sha256``,
    ``in_chans``, ``num_classes`` and the input ``mean``/``std`` (one value per input channel).
    """
    source = parse_weight_source(pretrained)
    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r}; timm.list_models('pattern*') lists the names")
    if num_classes < 1 or in_chans < 1:
        raise ValueError(f"num_classes and in_chans must be >= 1 (got {num_classes}, {in_chans})")
    model = timm.create_model(
        name, pretrained=False, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate
    )
    weights = load_weights(source, name)
    if weights is not None:
        _load_adapted(model, weights, name)
    mean = INPUT_MEAN if weights is None or weights.mean is None else _channel_average(weights.mean)
    std = INPUT_STD if weights is None or weights.std is None else _channel_average(weights.std)
    model.pretrained_cfg = {
        **model.pretrained_cfg,
        "input_size": (in_chans, *model.pretrained_cfg["input_size"][1:]),
        "mean": (mean,) * in_chans,
        "std": (std,) * in_chans,
        "in_chans": in_chans,
        "num_classes": num_classes,
        "weights": str(source),
        "weights_sha256": None if weights is None else weights.sha256,
    }
    return model


def _channel_average(values: tuple[float, ...]) -> float:
    return sum(values) / len(values)


def _load_adapted(model: nn.Module, weights: LoadedWeights, name: str) -> None:
    """Adapt the first conv to the model's input channels, keep the new head if shapes differ, load strictly."""
    state = dict(weights.state_dict)
    target = model.state_dict()
    for conv in _names(model.pretrained_cfg.get("first_conv")):
        key = f"{conv}.weight"
        if key in state and key in target and state[key].shape[1] != target[key].shape[1]:
            state[key] = adapt_input_conv(target[key].shape[1], state[key], base_chans=state[key].shape[1])
    for head in _names(model.pretrained_cfg.get("classifier")):
        for key in (f"{head}.weight", f"{head}.bias"):
            if key in state and key in target and state[key].shape != target[key].shape:
                state[key] = target[key]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"weights {weights.source} ({weights.path}) do not fit timm model {name!r}: {err}"
        ) from err


def _recorded_outputs(model: nn.Module, run: Any) -> tuple[Any, list[tuple[str, Any]]]:
    """``run()``'s result and every named submodule's output, in the order the modules finished."""
    outputs: list[tuple[str, Any]] = []
    handles = [
        module.register_forward_hook(lambda _m, _i, out, path=path: outputs.append((path, out)))
        for path, module in model.named_modules()
        if path
    ]
    try:
        result = run()
    finally:
        for handle in handles:
            handle.remove()
    return result, outputs


def _module_producing(outputs: list[tuple[str, Any]], tensor: torch.Tensor) -> str | None:
    """The module to hook for ``tensor``: the first module that returned it, or its outermost ancestor
    returning the very same object (``bn2`` rather than its inner ``bn2.act``; ``head.flatten`` rather than
    the pass-through ``head.drop`` after it, whose output in training would be the dropped-out copy)."""
    matches = [path for path, out in outputs if out is tensor]
    if not matches:
        return None
    first = matches[0]
    return min((p for p in matches if first == p or first.startswith(p + ".")), key=len)


def model_info(model: nn.Module) -> dict[str, Any]:
    """Sizes and the module paths a distiller hooks by default.

    ``last_stage``: the deepest backbone stage of timm's ``feature_info`` (its output: a feature map of
    ``last_stage_channels`` at stride ``last_stage_reduction``); ``features``: the module whose output
    is ``forward_features`` (the final feature map before pooling); ``embedding``: the module whose
    output is the pooled pre-logits vector of ``embedding_dim``; ``classifier``: the head.
    """
    stages = [
        {"module": f["module"], "channels": f["num_chs"], "reduction": f["reduction"]}
        for f in getattr(model, "feature_info", [])
    ]
    if not stages or not hasattr(model, "forward_features"):
        raise TypeError(f"{type(model).__name__} is not a timm classifier with feature_info")
    classifier = _names(model.pretrained_cfg.get("classifier"))[0]
    in_chans, height, width = model.pretrained_cfg["input_size"]
    probe = torch.zeros(1, in_chans, height, width)
    head_inputs: list[torch.Tensor] = []
    pre_hook = model.get_submodule(classifier).register_forward_pre_hook(
        lambda _m, args: head_inputs.append(args[0])
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            features, outputs = _recorded_outputs(model, lambda: model.forward_features(probe))
            features_module = _module_producing(outputs, features)
            _, outputs = _recorded_outputs(model, lambda: model(probe))
            embedding_module = _module_producing(outputs, head_inputs[-1])
    finally:
        pre_hook.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "architecture": model.pretrained_cfg.get("architecture", type(model).__name__),
        "params": params,
        "trainable_params": trainable,
        "in_chans": in_chans,
        "num_classes": model.num_classes,
        "input_size": (in_chans, height, width),
        "mean": model.pretrained_cfg.get("mean"),
        "std": model.pretrained_cfg.get("std"),
        "weights": model.pretrained_cfg.get("weights", "none"),
        "feature_stages": stages,
        "last_stage": stages[-1]["module"],
        "last_stage_channels": stages[-1]["channels"],
        "last_stage_reduction": stages[-1]["reduction"],
        "features": features_module,
        "feature_channels": model.num_features,
        "embedding": embedding_module,
        "embedding_dim": head_inputs[-1].shape[-1],
        "classifier": classifier,
    }
