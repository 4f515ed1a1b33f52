"""Tiny in-memory image sets for the trainer tests (no files, no phantom)."""

from __future__ import annotations

import pytest
import torch

from diffkd_study.training.data import ImageTensors


def toy_set(n: int = 24, size: int = 16, seed: int = 0, synthetic: int = 0) -> ImageTensors:
    """Class 1 images are brighter in the centre: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.randint(0, 120, (n, 1, size, size), generator=g, dtype=torch.uint8)
    c = size // 4
    images[labels == 1, :, c:-c, c:-c] += 100
    masks = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    masks[:, :, c:-c, c:-c] = 1
    flags = torch.zeros(n, dtype=torch.bool)
    if synthetic:
        flags[-synthetic:] = True
    return ImageTensors(images=images, labels=labels, image_ids=[f"img{i}" for i in range(n)], masks=masks,
                        synthetic=flags, classes=("benign", "malignant"))


class TinyNet(torch.nn.Module):
    """A conv net without BatchNorm or dropout (so data-parallel and single-process runs agree exactly)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 2)
        self.pretrained_cfg = {"mean": (0.5,), "std": (0.5,)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture
def toy():
    return toy_set()
