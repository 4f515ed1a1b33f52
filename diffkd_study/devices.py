"""The compute device of a stage, from the ``device`` setting every section carries.

One rule for every stage (classifier training, diffusion, SSD-KD, CoMoTo): ``auto`` is the first CUDA device
when torch sees one, else the CPU; any other value is what it names (``cpu``, ``cuda``, ``cuda:N``, or a
:class:`torch.device`), checked here so that a machine without the asked-for GPU stops the stage at once with
a clear error rather than at the first tensor moved.
"""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The :class:`torch.device` that ``name`` means on this machine.

    ``"auto"`` gives ``cuda`` when CUDA is available, else ``cpu``; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or a
    ``torch.device``) are returned as devices after a check: a CUDA device on a machine where torch sees no
    CUDA, or a ``cuda:N`` whose index is not among the visible GPUs, raises :class:`RuntimeError` naming the
    remedy; a malformed name raises torch's own :class:`RuntimeError`. Nothing is logged.
    """
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
