"""Stage A: rotation embeddings of the frozen teacher, seeded batches, SS-head training, resume."""

from __future__ import annotations

import copy
import inspect
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffkd_study.methods.ssdkd.ss_head import SSHeadConfig, rotation_embeddings, ss_batches, train_ss_head
from diffkd_study.models.classifier import create_classifier
from diffkd_study.training.data import ImageTensors

SIZE = 32


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return create_classifier("tf_efficientnet_lite0", 3, 3, "none").eval()


def _images(n, seed):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, SIZE, SIZE, generator=g) * 255).to(torch.uint8)
    return ImageTensors(images=images, labels=torch.randint(0, 3, (n,), generator=g),
                        image_ids=[f"i{seed}_{k}" for k in range(n)])


def test_rotation_embeddings_are_the_pooled_embeddings_of_each_rotation(teacher):
    data = _images(3, 0)
    embeddings = rotation_embeddings(teacher, data, "global_pool", augment="none", seed=0, batch_images=2)
    assert embeddings.shape == (3, 4, 1280)
    x = (data.images.float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        for k in range(4):
            direct = teacher.forward_head(teacher.forward_features(torch.rot90(x, k, dims=(-2, -1))), pre_logits=True)
            assert torch.allclose(embeddings[:, k], direct, atol=1e-5)


def test_channels_last_embeddings_match_contiguous(teacher):
    data = _images(4, 3)
    embeddings = {fmt: rotation_embeddings(copy.deepcopy(teacher), data, "global_pool", augment="dermoscopy", seed=5,
                                           batch_images=4, memory_format=fmt)
                  for fmt in (torch.contiguous_format, torch.channels_last)}
    contiguous, channels_last = embeddings.values()
    assert torch.allclose(channels_last, contiguous, rtol=1e-4, atol=1e-5)
    assert inspect.signature(rotation_embeddings).parameters["memory_format"].default == torch.channels_last  # the adopted default


def test_ss_batches_are_seeded_permutations_without_singletons():
    batches = ss_batches(9, 4, seed=1, epoch=0)
    assert [len(b) for b in batches] == [4, 4]  # the last batch of 1 image is dropped
    assert len(set(np.concatenate(batches).tolist())) == 8
    assert all(np.array_equal(a, b) for a, b in zip(batches, ss_batches(9, 4, seed=1, epoch=0), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, ss_batches(9, 4, seed=1, epoch=1), strict=True))
    assert [b.tolist() for b in ss_batches(6, 3, seed=0, epoch=0, shuffle=False)] == [[0, 1, 2], [3, 4, 5]]


def test_milestones_follow_the_official_schedule():
    assert SSHeadConfig(epochs=60).milestones == [30, 45]
    assert SSHeadConfig(epochs=10).milestones == [5, 8]


def test_train_ss_head_keeps_the_best_epoch_and_reloads(teacher, tmp_path):
    train, val = _images(12, 1), _images(6, 2)
    config = SSHeadConfig(epochs=3, lr=0.05, batch_images=4, views=2, augment="dermoscopy", seed=0,
                          embed_batch_images=6)
    result = train_ss_head(teacher, "global_pool", train, val, config, tmp_path, progress=False)
    assert [h["view"] for h in result.history] == [0, 1, 0]
    losses = [h["val_ss_loss"] for h in result.history]
    assert result.best_epoch == int(np.argmin(losses)) + 1 and result.best_val_loss == min(losses)
    assert not any(p.requires_grad for p in result.head.parameters()) and not result.head.training
    stored = load_file(tmp_path / "head.safetensors")
    assert all(torch.equal(stored[k], v) for k, v in result.head.state_dict().items())
    record = json.loads((tmp_path / "ss_head.json").read_text())
    assert record["n_train_images"] == 12 and record["dim"] == 1280 and record["memory_format"] == "channels_last"
    again = train_ss_head(teacher, "global_pool", train, val, config, tmp_path, progress=False)
    assert again.loaded and again.best_epoch == result.best_epoch
    assert all(torch.equal(a, b) for a, b in zip(again.head.state_dict().values(),
                                                 result.head.state_dict().values(), strict=True))
    changed = train_ss_head(teacher, "global_pool", train, val, SSHeadConfig(**{**config.__dict__, "epochs": 2}),
                            tmp_path, progress=False)
    assert not changed.loaded and len(changed.history) == 2
