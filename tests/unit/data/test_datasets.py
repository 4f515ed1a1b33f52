"""ManifestDataset: cache and disk give identical samples; labels, splits, masks, transforms."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.transforms import v2

from diffkd_study.data.cache import build_cache
from diffkd_study.data.datasets import ManifestDataset
from diffkd_study.data.schema import Manifest

from .conftest import BINARY_SCHEMA


@pytest.mark.parametrize("mode,resize_mode,size", [("L", "stretch", 16), ("RGB", "pad", (12, 20)), ("L", "pad", 9)])
def test_cache_and_disk_give_identical_samples(make_cohort, tmp_path, mode, resize_mode, size):
    manifest, root = make_cohort(6, rgb=mode == "RGB")
    cache = build_cache(manifest, root, size=size, mode=mode, resize_mode=resize_mode, cache_dir=tmp_path / "c",
                        progress=False)
    cached = ManifestDataset(manifest, cache=cache)
    disk = ManifestDataset(manifest, root, size=size, mode=mode, resize_mode=resize_mode)
    assert len(cached) == len(disk) == 6
    channels = 3 if mode == "RGB" else 1
    height, width = (size, size) if isinstance(size, int) else size
    for i in range(6):
        a, b = cached[i], disk[i]
        assert a.keys() == b.keys()
        assert torch.equal(a["image"], b["image"])
        assert a["image"].shape == (channels, height, width) and a["image"].dtype == torch.float32
        assert 0.0 <= float(a["image"].min()) and float(a["image"].max()) <= 1.0
        assert (a["label"], a["image_id"], a["index"]) == (b["label"], b["image_id"], b["index"]) == (
            i % 2, f"im{i}", i)
        if i < 5:
            assert torch.equal(a["mask"], b["mask"]) and a["mask"].shape == (1, height, width)
            assert set(a["mask"].unique().tolist()) == {0.0, 1.0}
        else:
            assert "mask" not in a  # the cohort's last row has no mask


def test_image_values_are_the_file_bytes_divided_by_255(make_cohort):
    manifest, root = make_cohort(2, size=(8, 8))  # same size: resizing is the identity
    sample = ManifestDataset(manifest, root, size=8)[1]
    pixels = np.array(Image.open(root / "img/1.png"))
    assert torch.equal(sample["image"][0], torch.from_numpy(pixels).float() / 255)


def test_split_selects_rows_and_labels_follow_the_label_set_order(make_cohort, tmp_path):
    schema = dataclasses.replace(BINARY_SCHEMA, label_set=("malignant", "benign", "normal"))
    manifest, root = make_cohort(6, schema=schema)
    cache = build_cache(manifest, root, size=8, cache_dir=tmp_path, progress=False)
    val = ManifestDataset(manifest, cache=cache, split="val")
    assert val.image_ids == ["im2", "im3"] and len(val) == 2
    assert val.label_map == {"malignant": 0, "benign": 1, "normal": 2}
    assert val.labels.tolist() == [1, 0]  # im2 benign, im3 malignant
    assert [val[i]["label"] for i in range(2)] == [1, 0]
    assert val[1]["index"] == 1 and val[-1]["image_id"] == "im3"
    assert val.df.iloc[1]["image_id"] == "im3"
    with pytest.raises(IndexError):
        val[2]
    with pytest.raises(ValueError, match="split must be one of"):
        ManifestDataset(manifest, cache=cache, split="validation")


def test_label_outside_the_label_set_names_the_row(make_cohort):
    manifest, root = make_cohort(3)
    manifest.df.loc[1, "label"] = "maligant"
    with pytest.raises(ValueError, match=r"m\.csv:3 \[image_id=im1\]: label 'maligant'"):
        ManifestDataset(manifest, root, size=8)


def test_preprocessing_must_agree_with_the_cache_and_disk_needs_root_and_size(make_cohort, tmp_path):
    manifest, root = make_cohort(2)
    cache = build_cache(manifest, root, size=8, cache_dir=tmp_path, progress=False)
    assert ManifestDataset(manifest, cache=cache, size=8, mode="L").preprocessing == cache.preprocessing
    with pytest.raises(ValueError, match="size=.*asked"):
        ManifestDataset(manifest, cache=cache, size=16)
    with pytest.raises(ValueError, match="mode='RGB' asked"):
        ManifestDataset(manifest, cache=cache, mode="RGB")
    with pytest.raises(ValueError, match="needs root"):
        ManifestDataset(manifest, root)
    with pytest.raises(ValueError, match="needs root"):
        ManifestDataset(manifest, size=8)


def test_cache_from_another_manifest_is_rejected(make_cohort, tmp_path):
    manifest, root = make_cohort(4)
    cache = build_cache(Manifest(manifest.df.iloc[:2], manifest.schema), root, size=8, cache_dir=tmp_path,
                        progress=False)
    with pytest.raises(KeyError, match=r"2 image_id\(s\) are not in the cache"):
        ManifestDataset(manifest, cache=cache)
    moved = Manifest(manifest.df.iloc[:2].assign(image_path=["img/0.png", "img/3.png"]), manifest.schema,
                     manifest.path)
    with pytest.raises(ValueError, match=r"m\.csv:3 \[image_id=im1\]: the row names image 'img/3.png'"):
        ManifestDataset(moved, cache=cache)


def test_a_v2_transform_moves_the_mask_with_the_image(make_cohort):
    manifest, root = make_cohort(2)
    plain = ManifestDataset(manifest, root, size=12)[0]
    flipped = ManifestDataset(manifest, root, size=12, transform=v2.RandomHorizontalFlip(p=1.0))[0]
    assert isinstance(plain["image"], tv_tensors.Image) and isinstance(plain["mask"], tv_tensors.Mask)
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    assert torch.equal(flipped["mask"], plain["mask"].flip(-1))
    assert not torch.equal(flipped["mask"], plain["mask"])  # the mask is not symmetric
    assert flipped["label"] == plain["label"] and flipped["image_id"] == plain["image_id"]


def test_dataloader_batches_from_the_cache(make_cohort, tmp_path):
    manifest, root = make_cohort(6, masks=False)
    cache = build_cache(manifest, root, size=8, cache_dir=tmp_path, progress=False)
    batches = list(DataLoader(ManifestDataset(manifest, cache=cache), batch_size=4))
    assert [b["image"].shape for b in batches] == [(4, 1, 8, 8), (2, 1, 8, 8)]
    assert batches[0]["label"].tolist() == [0, 1, 0, 1]
    assert batches[1]["image_id"] == ["im4", "im5"] and batches[1]["index"].tolist() == [4, 5]
