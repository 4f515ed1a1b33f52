"""The compute device of a stage, from the ``device`` setting every section carries.

One rule for every stage (classifier training, diffusion, SSD-KD, CoMoTo): ``auto`` is the first CUDA device
when torch sees one, else the CPU; any other value is what it names (``cpu``, ``cuda``, ``cuda:N``, or a
:class:`torch.device`), checked here so that a machine without the asked-for GPU stops the stage at once with
a clear error rather than at the first tensor moved.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["DEVICES", "check_device_name", "resolve_device"]

#: The device settings a section accepts (plus ``cuda:N``, a GPU by its index).
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
_CUDA_INDEX = re.compile(r"cuda:\d+")


def check_device_name(name: str) -> None:
    """``ValueError`` unless ``name`` is one of :data:`DEVICES` or ``cuda:N``: the check a section makes when a
    config is read (light: no torch import); whether that GPU exists is :func:`resolve_device`'s check."""
    if name not in DEVICES and not _CUDA_INDEX.fullmatch(str(name)):
        raise ValueError(f"device must be one of {list(DEVICES)} or cuda:N, got {name!r}")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The :class:`torch.device` that ``name`` means on this machine.

    ``"auto"`` gives ``cuda`` when CUDA is available, else ``cpu``; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or a
    ``torch.device``) are returned as devices after a check: a CUDA device on a machine where torch sees no
    CUDA, or a ``cuda:N`` whose index is not among the visible GPUs, raises :class:`RuntimeError` naming the
    remedy; a malformed name raises torch's own :class:`RuntimeError`. Nothing is logged.
    """
    import torch

    if isinstance(name, str) and name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {str(name)!r} asked for but CUDA is not available on this machine; "
                               "use 'cpu' or 'auto'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {str(name)!r} asked for but torch sees {torch.cuda.device_count()} CUDA "
                               f"device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return device
