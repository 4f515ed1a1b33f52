"""Batch augmentation: seeded, geometry moves the mask, ultrasound never flips vertically."""

from __future__ import annotations

import pytest
import torch

from diffkd_study.training.augment import Augmentation, augmentation


def _batch(n: int = 6):
    x = torch.zeros(n, 1, 16, 16)
    x[:, :, :4, :] = 1.0  # bright near-field band at the top
    x[:, :, :, :3] += 0.5  # brighter left edge
    mask = torch.zeros(n, 1, 16, 16)
    mask[:, :, 6:10, 1:5] = 1
    return x.clamp(0, 1), mask


def test_same_generator_seed_same_output():
    x, m = _batch()
    aug = augmentation("ultrasound")
    a = aug(x, m, generator=torch.Generator().manual_seed(4))
    b = aug(x, m, generator=torch.Generator().manual_seed(4))
    c = aug(x, m, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_none_is_identity():
    x, m = _batch()
    y, n = augmentation("none")(x, m, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, y) and torch.equal(m, n)


def test_flip_moves_image_and_mask_together():
    x, m = _batch(32)
    y, n = Augmentation(hflip=0.5)(x, m, generator=torch.Generator().manual_seed(1))
    flipped = y[:, 0, 8, 15] > y[:, 0, 8, 0]
    assert 0 < flipped.sum() < 32
    assert torch.equal(n[flipped], m[flipped].flip(-1)) and torch.equal(n[~flipped], m[~flipped])


def test_ultrasound_keeps_depth_direction_and_values_in_range():
    x, m = _batch(64)
    y, n = augmentation("ultrasound")(x, m, generator=torch.Generator().manual_seed(2))
    assert y.min() >= 0 and y.max() <= 1
    assert (y[:, 0, 1, 4:12].mean(1) > y[:, 0, 14, 4:12].mean(1)).all()  # near field stays on top
    assert set(n.unique().tolist()) <= {0.0, 1.0}


def test_unknown_preset_and_bad_shape():
    with pytest.raises(ValueError, match="unknown augmentation"):
        augmentation("mri")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        augmentation("none")(torch.zeros(3, 4, 4), generator=torch.Generator())
