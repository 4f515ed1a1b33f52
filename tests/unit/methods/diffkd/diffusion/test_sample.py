from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from diffkd_study.data.cache import Preprocessing, load_mask
from diffkd_study.data.schema import read_manifest
from diffkd_study.methods.diffkd.diffusion.sample import (
    SAMPLERS,
    draw_conditions,
    generate_synthetic,
    make_sampler,
    sample_images,
)
from diffkd_study.methods.diffkd.diffusion.train import checkpoint_sha256, load_model, train_diffusion

from .conftest import SMOKE_CONDITIONS, smoke_config


@pytest.fixture(scope="module")
def checkpoint(phantom_cohort, tmp_path_factory):
    manifest, root = phantom_cohort
    config = smoke_config(mask_conditioning=True, max_steps=2)
    return train_diffusion(manifest, tmp_path_factory.mktemp("ckpt"), config, root=root, progress=False).checkpoint


def _images(folder):
    return [np.asarray(Image.open(folder / "images" / f"syn_{i:05d}.png")) for i in range(3)]


def test_same_seed_gives_identical_images(phantom_cohort, checkpoint, tmp_path):
    manifest, root = phantom_cohort
    kwargs = dict(root=root, n=3, sampler="ddim", steps=3, guidance_scale=2.0, batch_size=2, progress=False)
    generate_synthetic(checkpoint, manifest, tmp_path / "a", seed=7, **kwargs)
    generate_synthetic(checkpoint, manifest, tmp_path / "b", seed=7, **kwargs)
    generate_synthetic(checkpoint, manifest, tmp_path / "c", seed=8, **kwargs)
    a, b, c = (_images(tmp_path / x) for x in "abc")
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert a[0].dtype == np.uint8 and a[0].shape == (32, 32)


def test_channels_last_sampling_matches_contiguous(phantom_cohort, checkpoint):
    manifest, _ = phantom_cohort
    model, config = load_model(checkpoint)
    rows = draw_conditions(manifest, n=3, seed=0)
    conditions = model.encoder.encode_rows(rows, has_mask=np.ones(3, dtype=bool))
    masks = torch.zeros(3, 1, 32, 32)
    masks[:, :, 8:20, 10:24] = 1.0
    images = {fmt: sample_images(model, config["noise_scheduler"], conditions, masks, image_size=32, sampler="ddim",
                                 steps=3, guidance_scale=2.0, seed=3, batch_size=2, progress=False, memory_format=fmt)
              for fmt in (torch.contiguous_format, torch.channels_last)}
    a, b = (x.astype(int) for x in images.values())
    assert np.abs(a - b).max() <= 1  # float rounding may move a pixel by one grey level
    assert inspect.signature(sample_images).parameters["memory_format"].default == torch.channels_last


def test_mask_conditioned_sample_keeps_the_mask_and_writes_a_manifest(phantom_cohort, checkpoint, tmp_path):
    manifest, root = phantom_cohort
    out = generate_synthetic(checkpoint, manifest, tmp_path / "syn", root=root, per_class={"benign": 2, "malignant": 1},
                             sampler="dpmsolver++", steps=2, guidance_scale=3.0, seed=1, progress=False)
    df = read_manifest(tmp_path / "syn" / "synthetic.csv").df
    assert df["label"].tolist() == ["benign", "benign", "malignant"]
    assert set(df["synthetic"]) == {"1"} and set(df["sampler"]) == {"dpmsolver++"}
    assert set(df["checkpoint_sha256"]) == {checkpoint_sha256(checkpoint)}
    # the study's schema (every declared condition); the ones the model does not use stay empty
    assert set(out.schema.conditions) == set(manifest.schema.conditions) <= set(df.columns)
    assert df[[c for c in manifest.schema.conditions if c not in SMOKE_CONDITIONS]].isna().all().all()
    source = manifest.df.set_index("image_id")
    prep = Preprocessing.make(32)
    for _, row in df.iterrows():
        written = np.asarray(Image.open(tmp_path / "syn" / row["mask_path"]))
        conditioning = load_mask(root / source.loc[row["source_image_id"], "mask_path"], prep)
        assert np.array_equal(written > 0, conditioning > 0)
        for column in ("cond_birads", "cond_shape"):
            assert str(row[column]) == str(source.loc[row["source_image_id"], column]) or (
                pd.isna(row[column]) and pd.isna(source.loc[row["source_image_id"], column]))


def test_ddpm_sampler_and_user_table(phantom_cohort, checkpoint, tmp_path):
    manifest, root = phantom_cohort
    table = manifest.df.iloc[:2][["image_id", "label", "mask_path", *SMOKE_CONDITIONS]]
    out = generate_synthetic(checkpoint, manifest, tmp_path / "t", root=root, table=table, sampler="ddpm", steps=2,
                             guidance_scale=1.0, progress=False)
    assert out.df["source_image_id"].tolist() == table["image_id"].tolist()


def test_draw_conditions_and_sampler_errors(phantom_cohort):
    manifest, _ = phantom_cohort
    drawn = draw_conditions(manifest, n=20, seed=3)
    assert len(drawn) == 20 and set(drawn["image_id"]) <= set(manifest.df["image_id"])
    assert drawn.equals(draw_conditions(manifest, n=20, seed=3))
    with pytest.raises(ValueError, match="exactly one"):
        draw_conditions(manifest)
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("euler", {"num_train_timesteps": 1000}, 10)
    assert SAMPLERS == ("ddpm", "ddim", "dpmsolver++")
