"""Memory layouts of image batches and convolution weights, by name (a leaf: imports nothing of the package).

Every network of the package trains and is timed channels-last (NHWC, :data:`MEMORY_FORMAT`) by default: oneDNN's
CPU convolutions run 1.1-2.0x faster in it (``benchmarks/training_throughput.py`` prints the ratio per network),
and the numbers equal the contiguous (NCHW) ones to float rounding. Settings and records name a layout by a key
of :data:`MEMORY_FORMATS`; :func:`layout_name` turns a ``torch.memory_format`` back into that key.
"""

from __future__ import annotations

import torch

__all__ = ["MEMORY_FORMAT", "MEMORY_FORMATS", "layout_name"]

#: the layouts a setting can name, and their torch formats
MEMORY_FORMATS: dict[str, torch.memory_format] = {"channels_last": torch.channels_last,
                                                  "contiguous": torch.contiguous_format}
#: the default layout of training, sampling and latency measurement
MEMORY_FORMAT = torch.channels_last


def layout_name(memory_format: torch.memory_format) -> str:
    """``"channels_last"`` or ``"contiguous"`` for a ``torch.memory_format``; ``ValueError`` for another one."""
    for name, value in MEMORY_FORMATS.items():
        if memory_format == value:
            return name
    raise ValueError(f"memory_format must be torch.channels_last or torch.contiguous_format, got {memory_format}")
