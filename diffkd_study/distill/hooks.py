"""Intermediate features by module path, and the adapters that map student features onto the teacher's.

As in torchdistill, model code is never edited to expose features: :class:`FeatureHooks` registers
forward hooks on submodules addressed by their dotted path in ``model.named_modules()`` (``"layer4"``,
``"blocks.5"``, ``"features.18"``) and stores each module's output under a chosen name.

:class:`Adapter` is the regressor put on the student side of feature losses (FitNets hints, SSD-KD's
channel-relation term). It follows the ``ConvReg`` of RepDistiller / SSD-KD
(``experiment/my_models/my_model.py``): a convolution + BatchNorm (+ ReLU by default); a 1x1
convolution when the spatial sizes agree, and ConvReg's rules when they differ (see
:class:`Adapter`). :func:`build_adapter` infers the channel counts and sizes by one dry forward of
each model on a dummy input, as SSD-KD does with ``torch.randn(1, 3, 224, 224)``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "Adapter",
    "FeatureHooks",
    "build_adapter",
    "feature_shapes",
    "resolve_module",
]


def resolve_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path`` (``""`` is the model itself); a clear error names close matches."""
    modules = dict(model.named_modules())
    if path in modules:
        return modules[path]
    close = difflib.get_close_matches(path, [name for name in modules if name], n=5, cutoff=0.5)
    if close:
        hint = "close matches: " + ", ".join(repr(name) for name in close)
    else:
        top = [name for name, _ in model.named_children()]
        hint = "top-level children: " + ", ".join(repr(name) for name in top[:20])
    raise KeyError(f"{type(model).__name__} has no submodule {path!r}; {hint}")


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple | list):
        return type(value)(_detached(item) for item in value)
    if isinstance(value, Mapping):
        return {key: _detached(item) for key, item in value.items()}
    return value


class FeatureHooks:
    """Forward hooks that record the outputs of submodules addressed by dotted path.

    Args:
        model: the network to observe (not modified apart from the hooks).
        paths: ``{name: module_path}``, or a sequence of paths (each path is then its own name).
        detach: store detached outputs (for a frozen teacher); the default keeps the graph so a
            student's features carry gradients.

    ``features[name]`` holds the output of the module's most recent call (a module called twice in
    one forward keeps the second output). Use as a context manager, or call :meth:`close`, to
    remove the hooks::

        with FeatureHooks(student, {"hint": "blocks.5"}) as hooks:
            logits = student(x)
            hint = hooks.features["hint"]
    """

    def __init__(self, model: nn.Module, paths: Mapping[str, str] | Sequence[str], detach: bool = False):
        named = dict(paths) if isinstance(paths, Mapping) else {path: path for path in paths}
        if not named:
            raise ValueError("FeatureHooks needs at least one module path")
        modules = {name: resolve_module(model, path) for name, path in named.items()}
        self.model = model
        self.paths = named
        self.detach = detach
        self.features: dict[str, Any] = {}
        self._handles = [
            module.register_forward_hook(self._recorder(name)) for name, module in modules.items()
        ]

    def _recorder(self, name: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self.features[name] = _detached(output) if self.detach else output

        return hook

    def run(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Clear the stored features, call the model and return ``(output, features)``."""
        self.features.clear()
        output = self.model(*args, **kwargs)
        missing = [name for name in self.paths if name not in self.features]
        if missing:
            raise RuntimeError(
                f"the forward pass never called the hooked module(s) {', '.join(repr(self.paths[n]) for n in missing)}"
            )
        return output, dict(self.features)

    def clear(self) -> None:
        """Drop the stored features (the hooks stay in place)."""
        self.features.clear()

    def close(self) -> None:
        """Remove every hook and drop the stored features."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.features.clear()

    @property
    def active(self) -> bool:
        """True until :meth:`close` removed the hooks."""
        return bool(self._handles)

    def __enter__(self) -> FeatureHooks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Adapter(nn.Module):
    """Convolution + BatchNorm (+ ReLU) mapping a student feature map onto the teacher's shape.

    Args:
        in_channels: student channels.
        out_channels: teacher channels.
        use_relu: end with ReLU, as ConvReg does by default (teacher maps taken after an activation
            are non-negative); set False for pre-activation teacher features.
        student_size, teacher_size: spatial ``(H, W)`` of the two maps. When they differ the
            convolution follows ConvReg: a 3x3 stride-2 convolution when the student map is twice the
            teacher's, a 4x4 stride-2 transposed convolution when it is half, a ``(1 + sH - tH, 1 + sW - tW)``
            valid convolution when it is larger otherwise; anything else is an error. ``None`` (or
            equal sizes) gives a 1x1 convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        use_relu: bool = True,
        student_size: tuple[int, int] | None = None,
        teacher_size: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.conv = self._conv(in_channels, out_channels, student_size, teacher_size)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU() if use_relu else nn.Identity()

    @staticmethod
    def _conv(
        in_channels: int,
        out_channels: int,
        student_size: tuple[int, int] | None,
        teacher_size: tuple[int, int] | None,
    ) -> nn.Module:
        if student_size is None or teacher_size is None or tuple(student_size) == tuple(teacher_size):
            return nn.Conv2d(in_channels, out_channels, kernel_size=1)
        (s_h, s_w), (t_h, t_w) = student_size, teacher_size
        if s_h == 2 * t_h and s_w == 2 * t_w:
            return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1)
        if 2 * s_h == t_h and 2 * s_w == t_w:
            return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1)
        if s_h >= t_h and s_w >= t_w:
            return nn.Conv2d(in_channels, out_channels, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        raise ValueError(
            f"no adapter maps a student map of size {tuple(student_size)} onto a teacher map of size "
            f"{tuple(teacher_size)}; hook a student layer at least as large as the teacher's"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The student map ``x`` (B, in_channels, sH, sW) mapped to (B, out_channels, tH, tW)."""
        return self.relu(self.bn(self.conv(x)))


def feature_shapes(
    model: nn.Module, paths: Mapping[str, str], input_shape: Sequence[int] = (3, 224, 224)
) -> dict[str, torch.Size]:
    """Output shape of each hooked module for one dummy image of ``input_shape`` (C, H, W).

    The model runs once in eval mode without gradients; its training mode is restored afterwards.
    """
    was_training = model.training
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    model.eval()
    try:
        with FeatureHooks(model, paths, detach=True) as hooks, torch.no_grad():
            _, feats = hooks.run(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        model.train(was_training)
    shapes = {}
    for name, value in feats.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"module {paths[name]!r} returns {type(value).__name__}, not a tensor")
        shapes[name] = value.shape
    return shapes


def build_adapter(
    student: nn.Module,
    teacher: nn.Module,
    student_path: str,
    teacher_path: str,
    input_shape: Sequence[int] = (3, 224, 224),
    teacher_input_shape: Sequence[int] | None = None,
    use_relu: bool = True,
) -> Adapter:
    """An :class:`Adapter` from the student's ``student_path`` map to the teacher's ``teacher_path`` map.

    Channels and spatial sizes come from a dry forward of each model on a zero image of
    ``input_shape`` (``teacher_input_shape`` when the teacher sees another resolution).
    """
    s_shape = feature_shapes(student, {"s": student_path}, input_shape)["s"]
    t_shape = feature_shapes(teacher, {"t": teacher_path}, teacher_input_shape or input_shape)["t"]
    if len(s_shape) != 4 or len(t_shape) != 4:
        raise ValueError(
            f"adapters map 4-D feature maps; {student_path!r} gives {tuple(s_shape)} and {teacher_path!r} gives {tuple(t_shape)}"
        )
    adapter = Adapter(s_shape[1], t_shape[1], use_relu, tuple(s_shape[2:]), tuple(t_shape[2:]))
    parameter = next(student.parameters(), None)
    return adapter.to(parameter.device) if parameter is not None else adapter
