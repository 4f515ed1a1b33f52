"""Stratified subsample of training lesions: exact counts, whole lesions, seeded, order-free, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diffkd_study.data.schema import read_manifest
from diffkd_study.data.splits import grouped_stratified_split
from diffkd_study.methods.ssdkd.data import lesion_subsample

PROJECT = Path(__file__).resolve().parents[4]


def _rows():
    # class a: 5 lesions (lesion a0 has 3 images), class b: 2 lesions, class c: 1 lesion
    lesions = ["a0", "a0", "a0", "a1", "a2", "a3", "a4", "b0", "b1", "b1", "c0"]
    labels = [name[0] for name in lesions]
    return labels, lesions


@pytest.mark.parametrize("fraction, per_class", [(0.4, {"a": 2, "b": 1, "c": 1}), (0.5, {"a": 2, "b": 1, "c": 1}),
                                                 (0.7, {"a": 4, "b": 1, "c": 1}), (1.0, {"a": 5, "b": 2, "c": 1})])
def test_lesion_counts_per_class(fraction, per_class):
    # round(fraction * n) lesions, at least 1: 0.4 * 5 = 2, 0.5 * 5 = 2.5 -> 2 (banker's), 0.7 * 5 = 3.5 -> 4
    labels, lesions = _rows()
    keep = lesion_subsample(labels, lesions, fraction, seed=0)
    kept = pd.DataFrame({"label": labels, "lesion": lesions})[keep]
    assert kept.groupby("label")["lesion"].nunique().to_dict() == per_class
    # every image of a kept lesion is kept
    for lesion in set(kept["lesion"]):
        assert keep[[i for i, name in enumerate(lesions) if name == lesion]].all()


def test_subsample_is_seeded_and_independent_of_row_order():
    labels, lesions = _rows()
    keep = lesion_subsample(labels, lesions, 0.4, seed=5)
    assert np.array_equal(keep, lesion_subsample(labels, lesions, 0.4, seed=5))
    order = np.random.default_rng(1).permutation(len(labels))
    shuffled = lesion_subsample([labels[i] for i in order], [lesions[i] for i in order], 0.4, seed=5)
    assert {lesions[i] for i in order[shuffled]} == {lesions[i] for i in np.flatnonzero(keep)}
    seeds = {frozenset(np.array(lesions)[lesion_subsample(labels, lesions, 0.4, seed=s)]) for s in range(10)}
    assert len(seeds) > 1


def test_subsample_errors():
    with pytest.raises(ValueError, match="fraction"):
        lesion_subsample(["a"], ["l"], 0.0, seed=0)
    with pytest.raises(ValueError, match="lesion 'l1' has images with different labels"):
        lesion_subsample(["a", "a", "b"], ["l0", "l1", "l1"], 0.5, seed=0)


def test_ham10000_manifest_split_and_subsample_keep_lesions_whole_and_the_class_mix():
    """On the committed HAM10000 manifest (no images needed): the config's split and 40% subsample."""
    manifest = read_manifest(PROJECT / "data_manifests" / "ham10000.csv")
    split = grouped_stratified_split(manifest, val_frac=0.15, test_frac=0.15, seed=2021).df
    assert split.groupby("patient_id")["split"].nunique().max() == 1  # a lesion is in one split only
    train = split[split["split"] == "train"]
    keep = lesion_subsample(train["label"].tolist(), train["patient_id"].tolist(), 0.4, seed=2021)
    before = train.groupby("label")["patient_id"].nunique()
    after = train[keep].groupby("label")["patient_id"].nunique()
    assert (after == (before * 0.4).round().astype(int)).all()
    assert 0.35 < keep.mean() < 0.45
