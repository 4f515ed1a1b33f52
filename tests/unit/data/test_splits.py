"""Patient-grouped stratified splits (near-duplicates kept together), external splits, combined manifests and the
split table."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diffkd_study.data.phantom import generate_phantom_cohort
from diffkd_study.data.schema import ConditionSpec, Manifest, ManifestSchema, read_manifest, write_manifest
from diffkd_study.data.splits import (
    combine_manifests,
    external_split,
    grouped_stratified_split,
    split_groups,
    split_table,
)
from diffkd_study.data.validate import validate_manifest

from .conftest import BINARY_SCHEMA


def _patients_per_split(manifest: Manifest) -> pd.Series:
    return manifest.df.groupby("patient_id")["split"].nunique()


# -- grouped stratified split ---------------------------------------------------------------------


def test_no_patient_is_in_two_splits_for_many_seeds(table_manifest):
    manifest = table_manifest(150, mixed_frac=0.3)  # mixed-label patients make leakage tempting
    for seed in range(40):
        split = grouped_stratified_split(manifest, val_frac=0.15, test_frac=0.2, seed=seed)
        assert (_patients_per_split(split) == 1).all(), seed
        assert set(split.df["split"]) == {"train", "val", "test"}
        assert len(split.df) == len(manifest.df)


def test_same_seed_same_split_and_row_order_does_not_matter(table_manifest):
    manifest = table_manifest(150)
    first = grouped_stratified_split(manifest, val_frac=0.15, test_frac=0.2, seed=7)
    again = grouped_stratified_split(manifest, val_frac=0.15, test_frac=0.2, seed=7)
    pd.testing.assert_frame_equal(first.df, again.df)

    shuffled = Manifest(manifest.df.sample(frac=1.0, random_state=1), manifest.schema)
    reordered = grouped_stratified_split(shuffled, val_frac=0.15, test_frac=0.2, seed=7)
    assert list(reordered.df["image_id"]) == list(shuffled.df["image_id"])  # row order is kept
    assert dict(zip(reordered.df["image_id"], reordered.df["split"], strict=True)) == dict(
        zip(first.df["image_id"], first.df["split"], strict=True)
    )

    other = grouped_stratified_split(manifest, val_frac=0.15, test_frac=0.2, seed=8)
    assert (other.df["split"] != first.df["split"]).any()


@pytest.mark.parametrize("val_frac,test_frac", [(0.15, 0.2), (0.1, 0.1), (0.25, 0.25)])
def test_fractions_are_honoured_per_label_and_for_patients(table_manifest, val_frac, test_frac):
    manifest = table_manifest(300, seed=3)
    targets = {"train": 1 - val_frac - test_frac, "val": val_frac, "test": test_frac}
    for seed in range(5):
        df = grouped_stratified_split(manifest, val_frac=val_frac, test_frac=test_frac, seed=seed).df
        for label in ("benign", "malignant"):
            of_label = df[df["label"] == label]
            for split, target in targets.items():
                assert (of_label["split"] == split).mean() == pytest.approx(target, abs=0.03), (label, split)
        patients = df.drop_duplicates("patient_id")["split"].value_counts(normalize=True)
        for split, target in targets.items():
            assert patients[split] == pytest.approx(target, abs=0.03), split


def test_zero_fraction_split_is_empty(table_manifest):
    split = grouped_stratified_split(table_manifest(40), val_frac=0.0, test_frac=0.25, seed=0)
    assert set(split.df["split"]) == {"train", "test"}


@pytest.mark.parametrize("val_frac,test_frac", [(-0.1, 0.2), (0.5, 0.5), (1.0, 0.0)])
def test_bad_fractions_raise(table_manifest, val_frac, test_frac):
    with pytest.raises(ValueError, match="frac"):
        grouped_stratified_split(table_manifest(10), val_frac=val_frac, test_frac=test_frac, seed=0)


def test_excluded_labels_are_dropped_logged_and_leave_the_label_set(table_manifest, caplog):
    manifest = table_manifest(60)
    manifest.df.loc[[0, 5, 9], "label"] = "normal"
    with caplog.at_level(logging.INFO, logger="diffkd_study.data.splits"):
        split = grouped_stratified_split(manifest, val_frac=0.2, test_frac=0.2, seed=0, exclude_labels=["normal"])
    assert len(split.df) == len(manifest.df) - 3
    assert "normal" not in set(split.df["label"])
    assert split.schema.label_set == ("benign", "malignant")
    assert "dropped 3 row(s)" in caplog.text
    assert manifest.schema.label_set == ("benign", "malignant", "normal")  # the input is untouched


def test_path_is_kept_only_while_line_numbers_still_hold(table_manifest, tmp_path):
    manifest = table_manifest(20)
    manifest.path = tmp_path / "m.csv"
    assert grouped_stratified_split(manifest, val_frac=0.2, test_frac=0.2, seed=0).path == manifest.path
    manifest.df.loc[0, "label"] = "normal"
    dropped = grouped_stratified_split(manifest, val_frac=0.2, test_frac=0.2, seed=0, exclude_labels=["normal"])
    assert dropped.path is None


def test_excluding_an_unknown_label_or_the_positive_class_raises(table_manifest):
    with pytest.raises(ValueError, match="nromal"):
        grouped_stratified_split(table_manifest(10), val_frac=0.2, test_frac=0.2, seed=0, exclude_labels=["nromal"])
    with pytest.raises(ValueError, match="positive class"):
        grouped_stratified_split(table_manifest(10), val_frac=0.2, test_frac=0.2, seed=0, exclude_labels=["malignant"])


def test_empty_patient_id_raises_with_its_line(table_manifest):
    manifest = table_manifest(10)
    manifest.df.loc[2, "patient_id"] = np.nan
    with pytest.raises(ValueError, match=r"patient_id.*line\(s\) 4"):
        grouped_stratified_split(manifest, val_frac=0.2, test_frac=0.2, seed=0)


def test_custom_group_column(table_manifest):
    manifest = table_manifest(60)
    manifest.df["lesion_id"] = manifest.df["patient_id"].str[:-1]  # 10 patients per lesion id
    split = grouped_stratified_split(manifest, val_frac=0.2, test_frac=0.2, seed=0, group_col="lesion_id")
    assert (split.df.groupby("lesion_id")["split"].nunique() == 1).all()


# -- external split -------------------------------------------------------------------------------


def test_external_split_puts_exactly_the_matching_rows_in_external(table_manifest):
    manifest = table_manifest(90)
    split = external_split(manifest, external={"center": ["c3"]}, val_frac=0.2, test_frac=0.2, seed=1)
    df = split.df
    assert set(df.loc[df["split"] == "external", "image_id"]) == set(manifest.df.loc[manifest.df["center"] == "c3", "image_id"])
    assert set(df.loc[df["center"] != "c3", "split"]) == {"train", "val", "test"}
    assert (_patients_per_split(split) == 1).all()
    assert list(df["image_id"]) == list(manifest.df["image_id"])


def test_external_selects_by_any_listed_column(table_manifest):
    manifest = table_manifest(60)
    manifest.df.loc[manifest.df["patient_id"] == "p000", "dataset"] = "other"  # p000 is in center c1
    split = external_split(manifest, external={"center": ["c3"], "dataset": ["other"]},
                           val_frac=0.2, test_frac=0.2, seed=0)
    external = split.df["split"] == "external"
    assert (external == ((manifest.df["center"] == "c3") | (manifest.df["dataset"] == "other"))).all()


def test_patient_on_both_sides_of_the_external_split_is_named(table_manifest):
    manifest = table_manifest(30)
    c3_image = manifest.df[manifest.df["patient_id"] == "p002"].iloc[[0]]  # p002 is a c3 patient ...
    extra = c3_image.assign(image_id="extra", center="c1")  # ... with one more image from c1
    manifest.df = pd.concat([manifest.df, extra], ignore_index=True)
    with pytest.raises(ValueError, match=r"1 patient_id\(s\).*'p002'"):
        external_split(manifest, external={"center": ["c3"]}, val_frac=0.2, test_frac=0.2, seed=0)


def test_external_value_or_column_that_matches_nothing_raises(table_manifest):
    with pytest.raises(ValueError, match=r"center_X.*match no row"):
        external_split(table_manifest(20), external={"center": ["center_X"]}, val_frac=0.2, test_frac=0.2, seed=0)
    with pytest.raises(ValueError, match="hospital"):
        external_split(table_manifest(20), external={"hospital": ["a"]}, val_frac=0.2, test_frac=0.2, seed=0)


def test_external_split_drops_excluded_labels(table_manifest):
    manifest = table_manifest(30)
    manifest.df.loc[0, "label"] = "normal"
    split = external_split(manifest, external={"center": ["c3"]}, val_frac=0.2, test_frac=0.2, seed=0,
                           exclude_labels=["normal"])
    assert len(split.df) == len(manifest.df) - 1
    assert split.schema.label_set == ("benign", "malignant")


# -- near-duplicates: split_groups ---------------------------------------------------------------

PROJECT = Path(__file__).resolve().parents[3]


def _split_digest(df: pd.DataFrame) -> str:
    return hashlib.sha256("\n".join(f"{i},{s}" for i, s in sorted(zip(df["image_id"], df["split"], strict=True)))
                          .encode()).hexdigest()


def test_split_groups_are_the_patients_when_no_image_is_flagged(table_manifest):
    df = table_manifest(30).df
    assert split_groups(df).tolist() == df["patient_id"].tolist()
    for empty in (np.nan, ""):
        assert split_groups(df.assign(duplicate_group=empty)).tolist() == df["patient_id"].tolist()


def test_split_groups_join_patients_through_duplicate_labels_transitively():
    df = pd.DataFrame({"patient_id": ["p3", "p3", "p1", "p2", "p4", "p5", "p6", "p7"],
                       "duplicate_group": [np.nan, "a", "a", np.nan, "b", "b", "c", "a"]})
    # p3 ~ p1 ~ p7 through label a (p3 by its second image), p4 ~ p5 through b; p2 and p6 stay alone
    assert split_groups(df).tolist() == ["p1", "p1", "p1", "p2", "p4", "p4", "p6", "p1"]
    df["lesion_id"] = ["l9", "l9", "l8", "l7", "l6", "l5", "l4", "l3"]  # any group column
    assert split_groups(df, "lesion_id").tolist() == ["l3", "l3", "l3", "l7", "l5", "l5", "l4", "l3"]
    with pytest.raises(ValueError, match="group column 'duplicate_group' has empty cells"):
        split_groups(df, "duplicate_group")


def test_flagged_pairs_and_their_patients_stay_in_one_split_for_every_seed(table_manifest):
    manifest = table_manifest(150, mixed_frac=0.3)
    r = np.random.default_rng(0)
    rows = r.choice(len(manifest.df), size=(15, 2), replace=False)  # 15 pairs of images, mostly of two patients
    manifest.df["duplicate_group"] = pd.Series(np.nan, index=manifest.df.index, dtype=object)
    for k, (a, b) in enumerate(rows):
        manifest.df.loc[[a, b], "duplicate_group"] = f"d{k}"
    assert manifest.df.loc[rows[:, 0], "patient_id"].to_numpy().tolist() != \
        manifest.df.loc[rows[:, 1], "patient_id"].to_numpy().tolist()
    for seed in range(20):
        split = grouped_stratified_split(manifest, val_frac=0.15, test_frac=0.2, seed=seed)
        assert (split.df.groupby("duplicate_group")["split"].nunique() == 1).all(), seed
        assert (_patients_per_split(split) == 1).all(), seed
        assert validate_manifest(split, ".", check_files=False).ok


def test_demo_and_busbra_study_splits_are_exactly_as_before_split_groups(tmp_path):
    """Digests of (image_id, split) computed with the code before near-duplicates were handled: the demo's
    phantom cohort (configs/demo.yaml; also runs/demo/data/study.csv) and the BUS-BRA study (configs/busbra*.yaml)."""
    phantom = generate_phantom_cohort(tmp_path / "phantom", n_per_center=80, seed=0, image_size=128, progress=False)
    demo = external_split(phantom, external={"center": ["center_C"]}, val_frac=0.15, test_frac=0.2, seed=0)
    assert _split_digest(demo.df) == "bf964365884353c9e559f5f03e4fe7202dcbf8f673e13ee1d2472577760bfbe3"
    parts = [(read_manifest(PROJECT / "data_manifests" / f"{name}.csv"), name) for name in ("bus-bra", "breast-lesions-usg")]
    combined = combine_manifests(parts)
    expected = "46a4102848b2ec3a3d6b01739b3a1f1a84d300009fc5168bc39b116aaecf6ec8"
    for column in (None, np.nan):  # no duplicate_group column, or one with only empty cells
        if column is not None:
            combined.df["duplicate_group"] = column
        busbra = external_split(combined, external={"dataset": ["breast-lesions-usg"]}, val_frac=0.15, test_frac=0.2,
                                seed=0, exclude_labels=["normal"])
        assert _split_digest(busbra.df) == expected
        assert busbra.df["split"].value_counts().to_dict() == {"train": 1220, "test": 375, "val": 280, "external": 252}


def test_ham10000_duplicate_pair_lands_in_one_split():
    manifest = read_manifest(PROJECT / "data_manifests" / "ham10000.csv")
    flagged = manifest.df[manifest.df["duplicate_group"].notna()]
    assert flagged["image_id"].tolist() == ["ISIC_0025226", "ISIC_0030074"]
    assert flagged["patient_id"].tolist() == ["HAM_0004919", "HAM_0000140"]
    split = grouped_stratified_split(manifest, val_frac=0.15, test_frac=0.15, seed=2021).df  # configs/ham10000_ssdkd
    assert split.loc[flagged.index, "split"].nunique() == 1  # before split_groups: val and train
    assert split.groupby("patient_id")["split"].nunique().max() == 1


def test_near_duplicates_across_the_external_boundary_are_refused(table_manifest):
    manifest = table_manifest(30)
    inside = manifest.df.index[manifest.df["center"] == "c1"][0]
    outside = manifest.df.index[manifest.df["center"] == "c3"][0]
    manifest.df["duplicate_group"] = pd.Series(np.nan, index=manifest.df.index, dtype=object)
    manifest.df.loc[[inside, outside], "duplicate_group"] = "d0"
    with pytest.raises(ValueError, match=r"1 patient_id\(s\) \(with the patients their near-duplicate images join"):
        external_split(manifest, external={"center": ["c3"]}, val_frac=0.2, test_frac=0.2, seed=0)


# -- combining manifests --------------------------------------------------------------------------

BUSBRA = ManifestSchema(
    dataset="bus-bra", label_set=("benign", "malignant"), positive_class="malignant",
    conditions={"cond_birads": ConditionSpec("categorical", levels=("2", "3", "4", "5")),
                "cond_device": ConditionSpec("categorical", levels=("GE", "Toshiba"))},
)
BREAST = ManifestSchema(
    dataset="breast-lesions-usg", label_set=("benign", "malignant", "normal"), positive_class="malignant",
    conditions={"cond_bi_rads": ConditionSpec("categorical", levels=("2", "3", "4a", "4b", "5")),
                "cond_age": ConditionSpec("numeric", unit="years", min=18, max=90)},
)


def _part(schema: ManifestSchema, ids: list[str], patients: list[str], **conditions) -> Manifest:
    df = pd.DataFrame({
        "image_id": ids, "patient_id": patients, "dataset": schema.dataset, "center": schema.dataset,
        "image_path": [f"Images/{i}.png" for i in ids],
        "mask_path": [f"Masks/{i}.png" if k else np.nan for k, i in enumerate(ids)],
        "label": [schema.label_set[k % len(schema.label_set)] for k in range(len(ids))],
        **conditions,
    })
    return Manifest(df, schema)


def test_combine_prefixes_paths_and_unions_labels_and_conditions():
    busbra = _part(BUSBRA, ["bus_0001-l", "bus_0001-r"], ["1", "1"], cond_birads=["4", "5"], cond_device=["GE", "GE"])
    breast = _part(BREAST, ["case001", "case002", "case003"], ["101", "102", "103"],
                   cond_bi_rads=["4a", "2", np.nan], cond_age=[50.0, np.nan, 61.0])
    combined = combine_manifests([(busbra, "bus-bra"), (breast, "./breast-lesions-usg/")],
                                 rename_conditions={"cond_bi_rads": "cond_birads"})
    df = combined.df
    assert list(df["image_path"]) == ["bus-bra/Images/bus_0001-l.png", "bus-bra/Images/bus_0001-r.png",
                                      "breast-lesions-usg/Images/case001.png", "breast-lesions-usg/Images/case002.png",
                                      "breast-lesions-usg/Images/case003.png"]
    assert df["mask_path"].isna().tolist() == [True, False, True, False, False]
    assert list(df["image_id"]) == ["bus_0001-l", "bus_0001-r", "case001", "case002", "case003"]  # no collision
    schema = combined.schema
    assert schema.label_set == ("benign", "malignant", "normal")
    assert schema.positive_class == "malignant"
    assert schema.dataset == "bus-bra+breast-lesions-usg"
    assert schema.conditions["cond_birads"].levels == ("2", "3", "4", "5", "4a", "4b")
    assert "cond_bi_rads" not in df.columns
    assert df["cond_birads"].tolist()[:4] == ["4", "5", "4a", "2"] and pd.isna(df["cond_birads"].iloc[4])
    assert df["cond_device"].iloc[2:].isna().all()  # BrEaST has no device condition
    assert df["cond_age"].iloc[:2].isna().all() and df["cond_age"].iloc[2] == 50.0


def test_combine_namespaces_colliding_ids_by_dataset():
    a = _part(BUSBRA, ["x1", "x2"], ["1", "2"])
    b = _part(dataclasses.replace(BREAST, conditions={}), ["x2", "y"], ["2", "3"])
    df = combine_manifests([(a, "a"), (b, "b")]).df
    assert list(df["image_id"]) == ["bus-bra:x1", "bus-bra:x2", "breast-lesions-usg:x2", "breast-lesions-usg:y"]
    assert list(df["patient_id"]) == ["bus-bra:1", "bus-bra:2", "breast-lesions-usg:2", "breast-lesions-usg:3"]
    # declared by a sidecar but a column in no part: present, and missing on every row
    assert df["cond_birads"].isna().all() and df["cond_device"].isna().all()


def test_only_the_colliding_column_is_namespaced():
    a = _part(BUSBRA, ["x1"], ["1"])
    b = _part(dataclasses.replace(BREAST, conditions={}), ["y1"], ["1"])
    df = combine_manifests([(a, "a"), (b, "b")]).df
    assert list(df["image_id"]) == ["x1", "y1"]
    assert list(df["patient_id"]) == ["bus-bra:1", "breast-lesions-usg:1"]


def test_same_dataset_in_two_parts_keeps_shared_patients():
    a = _part(BUSBRA, ["x1"], ["1"])
    b = _part(BUSBRA, ["x2"], ["1"])
    df = combine_manifests([(a, "a"), (b, "b")]).df
    assert list(df["patient_id"]) == ["1", "1"] and list(df["image_id"]) == ["x1", "x2"]
    with pytest.raises(ValueError, match="image_id 'bus-bra:x1'"):
        combine_manifests([(a, "a"), (a, "b")])


def test_duplicate_labels_of_different_datasets_are_never_joined():
    a = _part(BUSBRA, ["x1", "x2"], ["1", "2"])
    b = _part(dataclasses.replace(BREAST, conditions={}), ["y1", "y2"], ["1", "2"])
    c = _part(dataclasses.replace(BREAST, dataset="third", conditions={}), ["z1"], ["9"])
    a.df["duplicate_group"] = ["x1", "x1"]
    b.df["duplicate_group"] = ["x1", np.nan]  # the same label text in another dataset: another pair
    df = combine_manifests([(a, "a"), (b, "b"), (c, "c")]).df
    assert df["duplicate_group"].tolist()[:3] == ["bus-bra:x1", "bus-bra:x1", "breast-lesions-usg:x1"]
    assert df["duplicate_group"].iloc[3:].isna().all()  # empty, and absent in the third part
    assert split_groups(df).tolist() == ["bus-bra:1", "bus-bra:1", "breast-lesions-usg:1", "breast-lesions-usg:2",
                                         "third:9"]


def test_combine_rejects_conflicting_positive_class_task_and_condition_types():
    a = _part(BUSBRA, ["a1"], ["1"])
    other_positive = _part(dataclasses.replace(BUSBRA, dataset="o", positive_class="benign"), ["o1"], ["9"])
    with pytest.raises(ValueError, match="positive_class"):
        combine_manifests([(a, "a"), (other_positive, "o")])
    multiclass = _part(dataclasses.replace(BUSBRA, dataset="m", task="multiclass"), ["m1"], ["8"])
    with pytest.raises(ValueError, match="task"):
        combine_manifests([(a, "a"), (multiclass, "m")])
    numeric = dataclasses.replace(BUSBRA, dataset="n", conditions={"cond_birads": ConditionSpec("numeric")})
    with pytest.raises(ValueError, match="cond_birads.*categorical.*numeric"):
        combine_manifests([(a, "a"), (_part(numeric, ["n1"], ["7"]), "n")])
    months = dataclasses.replace(BREAST, dataset="k", conditions={"cond_age": ConditionSpec("numeric", unit="months")})
    with pytest.raises(ValueError, match="unit"):
        combine_manifests([(_part(BREAST, ["b1"], ["1"]), "b"), (_part(months, ["k1"], ["2"]), "k")])
    with pytest.raises(ValueError, match="cond_nope"):
        combine_manifests([(a, "a")], rename_conditions={"cond_nope": "cond_x"})


def test_combined_manifest_round_trips_and_validates_against_the_common_root(make_cohort, tmp_path):
    first, _ = make_cohort(4, name="first")
    second, _ = make_cohort(4, name="second", seed=1)
    second = Manifest(second.df.assign(dataset="second"), dataclasses.replace(second.schema, dataset="second"))
    combined = combine_manifests([(first, "first"), (second, "second")])
    assert combined.df["image_id"].is_unique and combined.df["image_path"].iloc[4] == "second/img/0.png"
    path = write_manifest(combined, tmp_path / "combined.csv")
    report = validate_manifest(read_manifest(path), tmp_path, workers=1)
    assert report.ok, report.format()


# -- split table ----------------------------------------------------------------------------------


def test_split_table_counts_images_labels_and_patients():
    df = pd.DataFrame({
        "image_id": list("abcdef"), "patient_id": ["p1", "p1", "p2", "p3", "p4", "p4"],
        "label": ["benign", "malignant", "benign", "benign", "malignant", "malignant"],
        "split": ["train", "train", "train", "test", "external", "external"],
    })
    table = split_table(Manifest(df, BINARY_SCHEMA))
    expected = pd.DataFrame(
        [[2, 1, 0, 3, 2], [1, 0, 0, 1, 1], [0, 2, 0, 2, 1], [3, 3, 0, 6, 4]],
        index=pd.Index(["train", "test", "external", "total"], name="split"),
        columns=["benign", "malignant", "normal", "images", "patients"],
    )
    pd.testing.assert_frame_equal(table, expected)


def test_split_table_on_a_real_split_adds_up(table_manifest):
    split = grouped_stratified_split(table_manifest(50), val_frac=0.2, test_frac=0.2, seed=0)
    table = split_table(split)
    assert table.loc["total", "images"] == len(split.df) == table.drop("total")["images"].sum()
    assert table.loc["total", "patients"] == table.drop("total")["patients"].sum() == 50
