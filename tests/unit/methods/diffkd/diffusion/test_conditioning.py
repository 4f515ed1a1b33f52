from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from diffkd_study.data.schema import ConditionSpec, Manifest, ManifestSchema
from diffkd_study.methods.diffkd.diffusion.conditioning import (
    ConditionDrop,
    ConditionDropout,
    ConditionEncoder,
    ConditionError,
    EncoderSpec,
    NumericStats,
)
from diffkd_study.methods.diffkd.diffusion.unet import create_conditional_unet

SCHEMA = ManifestSchema(
    dataset="tiny",
    label_set=("benign", "malignant"),
    conditions={
        "cond_birads": ConditionSpec("categorical", levels=("2", "3", "4", "5")),
        "cond_age": ConditionSpec("numeric", unit="years"),
        "cond_size": ConditionSpec("numeric", unit="mm"),
    },
)


def manifest() -> Manifest:
    df = pd.DataFrame({
        "image_id": ["a", "b", "c", "d"],
        "label": ["benign", "malignant", "benign", "malignant"],
        "cond_birads": ["3", np.nan, "4", "5"],
        "cond_age": [40.0, 60.0, np.nan, 50.0],
        "cond_size": [10.0, 20.0, 30.0, np.nan],
        "split": ["train", "train", "train", "val"],
    })
    return Manifest(df, SCHEMA)


def encoder(mask: bool = False) -> ConditionEncoder:
    torch.manual_seed(0)
    return ConditionEncoder.from_manifest(manifest(), ["cond_birads", "cond_age", "cond_size"], 16, mask=mask)


def test_normalisation_statistics_come_from_the_train_split_only():
    spec = encoder().spec
    assert spec.numeric["cond_age"] == NumericStats(mean=50.0, sd=float(np.std([40.0, 60.0], ddof=1)))
    assert spec.numeric["cond_size"] == NumericStats(mean=20.0, sd=10.0)  # row d (val) is ignored
    assert spec.categorical == {"cond_birads": ["2", "3", "4", "5"]}


def test_missing_values_get_the_missing_index_and_flag():
    enc = encoder()
    batch = enc.encode_rows(manifest().df)
    assert batch.label.tolist() == [0, 1, 0, 1]
    assert batch.categorical[:, 0].tolist() == [1, 4, 2, 3]  # 4 = len(levels): missing
    assert batch.numeric_missing.tolist() == [[False, False], [False, False], [True, False], [False, True]]
    assert batch.numeric[2, 0] == 0 and batch.numeric[3, 1] == 0
    assert batch.numeric[0, 1] == pytest.approx(-1.0)
    out = enc(batch)
    assert out.shape == (4, 16) and torch.isfinite(out).all()
    # the learned missing value is used: changing it changes exactly the rows with a missing number
    with torch.no_grad():
        enc.numeric_missing_value[0] += 1.0
    changed = (enc(batch) - out).abs().sum(dim=1) > 0
    assert changed.tolist() == [False, False, True, False]


def test_unseen_level_names_column_value_and_known_levels():
    df = manifest().df.copy()
    df.loc[1, "cond_birads"] = "6"
    with pytest.raises(ConditionError, match=r"b: column 'cond_birads' has value '6'.*\['2', '3', '4', '5'\]"):
        encoder().encode_rows(df)


def test_unknown_condition_name_is_a_clear_error():
    with pytest.raises(ConditionError, match=r"unknown condition\(s\) \['cond_density'\].*cond_age"):
        ConditionEncoder.from_manifest(manifest(), ["cond_density"], 16)


def test_numbers_read_as_floats_match_string_levels():
    df = manifest().df.copy()
    df["cond_birads"] = [3.0, np.nan, 4.0, 5.0]
    assert encoder().encode_rows(df).categorical[:, 0].tolist() == [1, 4, 2, 3]


def test_dropout_p1_nulls_everything_and_p0_nothing():
    enc = encoder(mask=True)
    batch = enc.encode_rows(manifest().df, has_mask=[True] * 4)
    names = enc.categorical_names
    g = torch.Generator().manual_seed(0)
    all_drop = ConditionDropout(label=1, categorical=1, numeric=1, mask=1).sample(4, names, g)
    assert all(t.all() for t in (all_drop.label, all_drop.categorical, all_drop.numeric, all_drop.mask))
    no_drop = ConditionDropout(label=0, categorical=0, numeric=0, mask=0).sample(4, names, g)
    assert not any(t.any() for t in (no_drop.label, no_drop.categorical, no_drop.numeric, no_drop.mask))
    # with every part nulled, the vector no longer depends on the row: all rows give the null vector
    null = enc(batch, all_drop)
    assert torch.equal(null, null[:1].expand_as(null))
    assert torch.equal(null, enc(batch, ConditionDrop.all(4, len(names))))
    kept = enc(batch, no_drop)
    assert not torch.equal(kept[0], kept[1])


def test_categorical_dropout_per_condition():
    g = torch.Generator().manual_seed(0)
    drop = ConditionDropout(categorical={"cond_a": 1.0, "cond_b": 0.0}).sample(5, ["cond_a", "cond_b"], g)
    assert drop.categorical[:, 0].all() and not drop.categorical[:, 1].any()


def test_encoder_state_round_trips_through_json():
    enc = encoder(mask=True)
    spec = EncoderSpec.from_dict(enc.config())
    assert spec == enc.spec
    copy = ConditionEncoder(spec)
    copy.load_state_dict(enc.state_dict())
    batch = enc.encode_rows(manifest().df)
    assert torch.equal(copy(batch), enc(batch))


def test_conditional_unet_predicts_only_image_channels_with_a_mask_channel():
    model = create_conditional_unet("smoke", encoder(mask=True).spec)
    assert model.unet.config.in_channels == 2 and model.unet.config.out_channels == 1
    batch = model.encoder.encode_rows(manifest().df, has_mask=[True] * 4)
    x = torch.randn(4, 1, 32, 32)
    out = model(x, torch.tensor([1, 10, 100, 999]), batch, mask=torch.ones(4, 1, 32, 32))
    assert out.shape == (4, 1, 32, 32)
