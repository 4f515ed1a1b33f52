"""Patient-grouped K-fold assignment (official fold column or made folds) and each fold's split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diffkd_study.data.folds import (
    FOLD_COLUMN,
    assign_folds,
    check_folds,
    fold_folder,
    fold_number,
    fold_split,
    fold_val_fraction,
    official_fold_column,
)
from diffkd_study.data.schema import Manifest, ManifestSchema
from diffkd_study.data.splits import DUPLICATE_GROUP_COLUMN

SCHEMA = ManifestSchema(dataset="t", label_set=("benign", "malignant"), task="binary",
                        positive_class="malignant")


def _manifest(n_patients: int = 30, images: int = 2, n_external: int = 6, seed: int = 0) -> Manifest:
    gen = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients + n_external):
        label = "malignant" if gen.random() < 0.4 else "benign"
        for i in range(images):
            rows.append({"image_id": f"p{p}-{i}", "patient_id": f"p{p}", "label": label,
                         "split": "external" if p >= n_patients else "train"})
    return Manifest(pd.DataFrame(rows), SCHEMA)


def test_made_folds_keep_patients_together_and_test_everyone_once():
    out = assign_folds(_manifest(), 3, seed=1).df
    internal = out[out["split"] != "external"]
    assert set(internal["split"]) == {"test"} and out.loc[out["split"] == "external", FOLD_COLUMN].isna().all()
    assert internal.groupby("patient_id")[FOLD_COLUMN].nunique().max() == 1
    sizes = internal.groupby(FOLD_COLUMN)["patient_id"].nunique()
    assert sorted(sizes.index) == [1, 2, 3] and sizes.sum() == 30 and sizes.max() - sizes.min() <= 2


def test_made_folds_do_not_depend_on_the_row_order():
    manifest = _manifest()
    shuffled = Manifest(manifest.df.sample(frac=1.0, random_state=3).reset_index(drop=True), SCHEMA)
    a = assign_folds(manifest, 3, seed=5).df.set_index("image_id")[FOLD_COLUMN]
    b = assign_folds(shuffled, 3, seed=5).df.set_index("image_id")[FOLD_COLUMN]
    assert a.sort_index().equals(b.sort_index())
    c = assign_folds(manifest, 3, seed=6).df.set_index("image_id")[FOLD_COLUMN]
    assert not a.sort_index().equals(c.sort_index())  # the seed matters


def test_an_official_fold_column_is_used_when_present():
    df = _manifest(n_patients=10, n_external=2).df
    df["fold_2"] = np.where(df["split"] == "external", np.nan, (df["patient_id"].str[1:].astype(int) % 2) + 1)
    manifest = Manifest(df, SCHEMA)
    assert official_fold_column(df, 2, None) == "fold_2" and official_fold_column(df, 3, None) is None
    out = assign_folds(manifest, 2, seed=0).df
    internal = out[out["split"] != "external"]
    assert (internal[FOLD_COLUMN].astype(int) == internal["fold_2"].astype(int)).all()


def test_bad_official_folds_are_refused():
    df = _manifest(n_patients=6, n_external=0).df
    df["fold_2"] = [1, 2] * (len(df) // 2)  # each patient's two images in different folds
    with pytest.raises(ValueError, match="more than one fold"):
        assign_folds(Manifest(df, SCHEMA), 2, seed=0)
    df["fold_2"] = 3
    with pytest.raises(ValueError, match=r"outside 1\.\.2"):
        assign_folds(Manifest(df, SCHEMA), 2, seed=0, column="fold_2")
    with pytest.raises(ValueError, match="not a column"):
        assign_folds(Manifest(df, SCHEMA), 2, seed=0, column="nope")


def test_near_duplicate_patients_stay_in_one_fold():
    df = _manifest(n_patients=12, n_external=0).df
    df[DUPLICATE_GROUP_COLUMN] = np.where(df["patient_id"].isin(["p1", "p2"]), "dup-a", "")
    made = assign_folds(Manifest(df, SCHEMA), 3, seed=0).df
    assert made.loc[made["patient_id"].isin(["p1", "p2"]), FOLD_COLUMN].nunique() == 1
    df["fold_3"] = df["patient_id"].str[1:].astype(int) % 3 + 1  # p1 -> 2, p2 -> 3: the official folds split them
    official = assign_folds(Manifest(df, SCHEMA), 3, seed=0).df
    assert set(official.loc[official["patient_id"].isin(["p1", "p2"]), FOLD_COLUMN]) == {2}  # p1's fold (the key)
    bad = official.copy()
    bad.loc[bad["patient_id"] == "p2", FOLD_COLUMN] = 3
    with pytest.raises(ValueError, match="more than one fold"):
        check_folds(bad, 3)


def test_check_folds_finds_an_empty_fold_and_an_external_fold():
    df = assign_folds(_manifest(), 3, seed=0).df
    check_folds(df, 3)
    with pytest.raises(ValueError, match=r"fold\(s\) \[4\] hold no internal image"):
        check_folds(df, 4)
    bad = df.copy()
    bad.loc[bad["split"] == "external", FOLD_COLUMN] = 1
    with pytest.raises(ValueError, match="external images must not have a fold"):
        check_folds(bad, 3)


def test_fold_split_tests_the_fold_and_splits_the_rest():
    folds = assign_folds(_manifest(n_patients=40), 4, seed=0)
    seen = []
    for k in range(1, 5):
        df = fold_split(folds, k, 4, val_frac=0.15, seed=0).df
        test = df[df["split"] == "test"]
        assert set(test[FOLD_COLUMN].astype(int)) == {k}
        assert set(df.loc[df["split"] == "external", "image_id"]) == set(
            folds.df.loc[folds.df["split"] == "external", "image_id"])
        rest = df[df["split"].isin(["train", "val"])]
        assert not set(test["patient_id"]) & set(rest["patient_id"])
        val_share = rest.loc[rest["split"] == "val", "patient_id"].nunique() / rest["patient_id"].nunique()
        assert abs(val_share - 0.15 / 0.75) < 0.1  # val_frac rescaled to the non-test share
        seen += test["patient_id"].unique().tolist()
    assert sorted(seen) == sorted(folds.df.loc[folds.df["split"] != "external", "patient_id"].unique())


def test_val_fraction_and_folder_names():
    assert fold_val_fraction(0.15, 5) == pytest.approx(0.1875)
    with pytest.raises(ValueError, match="leaves no training data"):
        fold_val_fraction(0.5, 2)
    assert fold_folder(3) == "fold-3" and fold_number("fold-3") == 3
    with pytest.raises(ValueError):
        fold_number("fold-x")
