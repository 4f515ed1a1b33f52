"""Process-group set-up for ``torchrun`` / ``accelerate launch`` (environment variables ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).

NCCL when the processes train on CUDA, gloo on CPU (what the CPU test of the distributed path uses).
Without those variables nothing is initialised and training runs in one process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

__all__ = ["distributed_session", "init_from_env"]


def init_from_env(device: str = "auto") -> bool:
    """Initialise the default process group from the launcher's environment; True when distributed."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return False
    if torch.distributed.is_initialized():
        return True
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


@contextlib.contextmanager
def distributed_session(device: str = "auto") -> Iterator[bool]:
    """``init_from_env`` for the duration of a block, then the process group is destroyed."""
    started = init_from_env(device)
    try:
        yield started
    finally:
        if started and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
