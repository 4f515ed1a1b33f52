"""The diffusion model in the classifier's domain: lesion crops with masks in their coordinates, the real label mix."""

from __future__ import annotations

import numpy as np
import pytest

from diffkd_study.config import parse_config
from diffkd_study.methods.diffkd.diffusion.stage import DiffusionStageConfig
from diffkd_study.methods.diffkd.diffusion.train import build_model, load_training_data
from diffkd_study.methods.diffkd.diffusion.workflow import prior_counts, resolve_class_counts
from diffkd_study.sections import ConfigError

from .conftest import smoke_config


def test_the_prior_mix_follows_the_real_training_proportions_and_sums_exactly():
    assert prior_counts({"benign": 825, "malignant": 395}, 400) == {"benign": 270, "malignant": 130}
    assert prior_counts({"benign": 825, "malignant": 395}, 1220) == {"benign": 825, "malignant": 395}
    assert sum(prior_counts({"a": 1, "b": 1, "c": 1}, 10).values()) == 10


def test_the_section_defaults_to_the_prior_mix_with_as_many_images_as_real_ones(phantom_cohort):
    manifest = phantom_cohort[0]
    section = DiffusionStageConfig()
    train = manifest.df[manifest.df["split"] == "train"] if "split" in manifest.df.columns else manifest.df
    counts = resolve_class_counts(manifest, label_mix=section.label_mix, n_synthetic=section.n_synthetic)
    assert counts == train["label"].value_counts().to_dict()  # the real counts, so the real prior
    assert resolve_class_counts(manifest, label_mix="balanced") == dict.fromkeys(counts, max(counts.values()))
    with pytest.raises(ValueError, match="n_per_class is the balanced mix's count"):
        DiffusionStageConfig(n_per_class=5)


def test_lesion_domain_training_data_are_the_crops_with_masks_in_their_coordinates(phantom_cohort):
    manifest, root = phantom_cohort
    config = smoke_config(crop="lesion", mask_conditioning=True)
    model = build_model(manifest, config)
    frames = load_training_data(manifest, model, root=root, image_size=32, split=None)
    crops = load_training_data(manifest, model, root=root, image_size=32, split=None, crop="lesion")
    assert crops.images.shape == frames.images.shape
    for mask in crops.masks[:, 0].numpy():
        ys, xs = np.nonzero(mask)
        if xs.size == 0:
            continue
        longer = max(xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min())
        assert longer / 32 == pytest.approx(1 / 1.5, abs=0.1)  # the box fills 1 / (1 + 2 x 0.25) of the square
    assert not np.array_equal(frames.masks.numpy(), crops.masks.numpy())


def _raw(**sections):
    return {"name": "t", "data": {"phantom": {"n_per_center": 8, "image_size": 64}},
            "stages": ["diffusion", "teacher", "student"], **sections}


def test_crop_auto_follows_the_teacher_and_links_the_resize_chain():
    lesion = parse_config(_raw(teacher={"crop": "lesion"}, student={"crop": "lesion"}))
    assert lesion.section("diffusion").crop == "lesion"
    assert lesion.section("teacher").via == lesion.section("student").via == 64  # the diffusion resolution
    whole = parse_config(_raw())
    assert whole.section("diffusion").crop == "none" and whole.section("teacher").via == 0
    with pytest.raises(ConfigError, match=r"student.crop: the diffusion model makes lesion crops"):
        parse_config(_raw(teacher={"crop": "lesion"}))
    with pytest.raises(ConfigError, match=r"teacher.via: 32 differs from diffusion_image_size 64"):
        parse_config(_raw(teacher={"crop": "lesion", "via": 32}, student={"crop": "lesion"}))
