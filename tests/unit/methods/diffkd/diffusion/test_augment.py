from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diffkd_study.data.schema import Manifest, ManifestSchema, read_manifest
from diffkd_study.methods.diffkd.diffusion.augment import (
    AugmentParams,
    augment_image,
    classic_augmentation,
    flagged_summary,
    write_augmentation_manifest,
)


def _image(seed: int = 0, shape=(16, 16)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_identity_parameters_leave_the_image_unchanged():
    image = _image()
    assert np.array_equal(augment_image(image, AugmentParams()), image)
    rgb = _image(1, (16, 16, 3))
    assert np.array_equal(augment_image(rgb, AugmentParams()), rgb)


def test_flip_and_brightness_are_exact():
    image = _image()
    assert np.array_equal(augment_image(image, AugmentParams(flip=True)), image[:, ::-1])
    doubled = augment_image(np.full((4, 4), 100, np.uint8), AugmentParams(brightness=1.1))
    assert (doubled == 110).all()
    # an integer translation without rotation or scaling moves the pixels and fills with 0
    shifted = augment_image(image, AugmentParams(translate=(2, 0)))
    assert np.array_equal(shifted[:, 2:], image[:, :-2]) and (shifted[:, :2] == 0).all()


def test_classic_augmentation_is_seeded():
    images = np.stack([_image(i) for i in range(5)])
    a, sources_a = classic_augmentation(images, 7, seed=1)
    b, sources_b = classic_augmentation(images, 7, seed=1)
    c, _ = classic_augmentation(images, 7, seed=2)
    assert a.shape == (7, 16, 16) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(sources_a, sources_b) and not np.array_equal(a, c)
    assert set(sources_a) <= set(range(5))
    with pytest.raises(ValueError, match="uint8"):
        classic_augmentation(images.astype(np.float32), 2)


def test_augmentation_manifest_leaves_out_the_flagged_rows(tmp_path):
    schema = ManifestSchema(dataset="x", label_set=("benign", "malignant"))
    df = pd.DataFrame({"image_id": ["s0", "s1", "s2"], "patient_id": ["s0", "s1", "s2"], "dataset": "x",
                       "center": "synthetic", "image_path": [f"images/s{i}.png" for i in range(3)],
                       "label": ["benign", "malignant", "benign"], "split": "train", "synthetic": "1"})
    synthetic = Manifest(df, schema)
    out = write_augmentation_manifest(synthetic, ["s1"], tmp_path)
    assert out.df["image_id"].tolist() == ["s0", "s2"]
    written = read_manifest(tmp_path / "augmentation.csv")
    assert written.df["image_path"].tolist() == ["images/s0.png", "images/s2.png"]
    assert written.schema == schema
    everything = write_augmentation_manifest(synthetic, ["s1"], tmp_path, exclude_flagged=False)
    assert len(everything.df) == 3
    with pytest.raises(ValueError, match="not rows of the synthetic manifest"):
        write_augmentation_manifest(synthetic, ["s9"], tmp_path)


def test_flagged_summary_counts_per_label():
    table = flagged_summary(pd.Series([True, False, False, True, False]),
                            pd.Series(["benign", "benign", "malignant", "malignant", "malignant"]))
    assert table.to_dict(orient="index") == {"benign": {"generated": 2, "flagged": 1, "kept": 1},
                                             "malignant": {"generated": 3, "flagged": 1, "kept": 2}}
