"""Every validation rule, each on a small manifest that breaks exactly that rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffkd_study.cli import main
from diffkd_study.data.schema import (
    ConditionSpec,
    Manifest,
    ManifestSchema,
    SchemaError,
    read_manifest,
    sidecar_path,
    write_manifest,
)
from diffkd_study.data.validate import RULES, validate_manifest

SCHEMA = ManifestSchema(
    dataset="tiny",
    label_set=("benign", "malignant", "normal"),
    positive_class="malignant",
    conditions={
        "cond_birads": ConditionSpec("categorical", levels=("3", "4a", "5")),
        "cond_age": ConditionSpec("numeric", unit="years", min=0, max=120),
    },
)


def _png(path: Path, value: int, size: tuple[int, int] = (20, 16), pattern: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0]), value, np.uint8)
    arr[pattern % size[1], :] = 255 - value  # makes images with different `pattern` differ in pixels
    Image.fromarray(arr).save(path)


def _mask(path: Path, size: tuple[int, int] = (20, 16), empty: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0]), np.uint8)
    if not empty:
        arr[4:10, 5:12] = 255
    Image.fromarray(arr).save(path)


@pytest.fixture()
def clean(tmp_path: Path) -> tuple[Manifest, Path]:
    """A valid manifest of 4 images (2 patients per split pair), masks and one box."""
    rows = []
    for i in range(4):
        _png(tmp_path / f"img/{i}.png", 60 + i, pattern=i)
        _mask(tmp_path / f"msk/{i}.png")
        rows.append({
            "image_id": f"im{i}", "patient_id": f"p{i // 2}", "dataset": "tiny", "center": "c1",
            "image_path": f"img/{i}.png", "label": "malignant" if i % 2 else "benign",
            "mask_path": f"msk/{i}.png", "boxes": json.dumps([[2, 3, 5, 6]]), "split": ["train", "test"][i // 2],
            "synthetic": "0", "cond_birads": "4a", "cond_age": 50.0 + i,
        })
    return Manifest(pd.DataFrame(rows), SCHEMA, tmp_path / "m.csv"), tmp_path


def _rules(manifest: Manifest, root: Path, severity: str = "error") -> set[str]:
    report = validate_manifest(manifest, root, workers=1)
    return {p.rule for p in report.problems if p.severity == severity}


def test_clean_manifest_has_no_problems(clean):
    manifest, root = clean
    report = validate_manifest(manifest, root)
    assert report.problems == []
    assert report.image_sizes["im0"] == (20, 16)


def test_missing_column_stops_early(clean):
    manifest, root = clean
    manifest.df = manifest.df.drop(columns=["patient_id"])
    report = validate_manifest(manifest, root)
    assert [p.rule for p in report.problems] == ["missing-column"]
    assert "patient_id" in report.problems[0].message


def test_undeclared_and_absent_condition_columns(clean):
    manifest, root = clean
    manifest.df["cond_shape"] = "oval"
    manifest.df = manifest.df.drop(columns=["cond_age"])
    messages = [p.message for p in validate_manifest(manifest, root).errors if p.rule == "unknown-column"]
    assert any("cond_shape" in m and "not declared" in m for m in messages)
    assert any("cond_age" in m and "no column" in m for m in messages)


def test_empty_required_value(clean):
    manifest, root = clean
    manifest.df.loc[1, "patient_id"] = np.nan
    errors = validate_manifest(manifest, root).errors
    assert [(p.rule, p.line, p.image_id) for p in errors] == [("empty-value", 3, "im1")]


def test_duplicate_image_id_names_both_lines(clean):
    manifest, root = clean
    manifest.df.loc[3, "image_id"] = "im0"
    problem = next(p for p in validate_manifest(manifest, root).errors if p.rule == "duplicate-image-id")
    assert problem.line == 5 and "line 2" in problem.message


def test_label_outside_set(clean):
    manifest, root = clean
    manifest.df.loc[2, "label"] = "cancer"
    problem = next(p for p in validate_manifest(manifest, root).errors if p.rule == "label-outside-set")
    assert problem.line == 4 and "'cancer'" in problem.message


def test_categorical_condition_outside_levels_and_missing_is_fine(clean):
    manifest, root = clean
    manifest.df.loc[0, "cond_birads"] = "4"  # 4 is not a declared level (4a is)
    manifest.df.loc[1, "cond_birads"] = np.nan  # missing is allowed
    errors = validate_manifest(manifest, root).errors
    assert [(p.rule, p.line) for p in errors] == [("condition-level", 2)]


@pytest.mark.parametrize("value, text", [("old", "not a number"), (130.0, "outside"), (-1.0, "outside")])
def test_numeric_condition_value(clean, value, text):
    manifest, root = clean
    manifest.df["cond_age"] = manifest.df["cond_age"].astype(object)
    manifest.df.loc[3, "cond_age"] = value
    problem = next(p for p in validate_manifest(manifest, root).errors if p.rule == "condition-value")
    assert problem.line == 5 and text in problem.message


def test_invalid_split_and_synthetic(clean):
    manifest, root = clean
    manifest.df.loc[0, "split"] = "training"
    manifest.df.loc[1, "synthetic"] = "yes"
    assert _rules(manifest, root) == {"invalid-split", "invalid-synthetic"}


def test_missing_image_and_mask_files(clean):
    manifest, root = clean
    (root / "img/1.png").unlink()
    (root / "msk/2.png").unlink()
    errors = [p for p in validate_manifest(manifest, root).errors]
    assert {(p.rule, p.line) for p in errors} == {("missing-file", 3), ("missing-file", 4)}
    assert any("img/1.png" in p.message for p in errors) and any("msk/2.png" in p.message for p in errors)


def test_missing_root(clean, tmp_path):
    manifest, _ = clean
    report = validate_manifest(manifest, tmp_path / "nowhere")
    assert report.rules_broken() == {"missing-file"} and "not a directory" in report.errors[0].message


def test_corrupt_image(clean):
    manifest, root = clean
    (root / "img/2.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    problem = next(p for p in validate_manifest(manifest, root).errors)
    assert (problem.rule, problem.line) == ("unreadable-image", 4) and "does not decode" in problem.message


def test_mask_size_mismatch(clean):
    manifest, root = clean
    _mask(root / "msk/0.png", size=(10, 8))
    problem = next(p for p in validate_manifest(manifest, root).errors)
    assert problem.rule == "mask-size" and "10x8" in problem.message and "20x16" in problem.message


def test_empty_mask_is_an_error_only_where_a_lesion_is_declared(clean):
    manifest, root = clean
    _mask(root / "msk/1.png", empty=True)
    _mask(root / "msk/0.png", empty=True)
    manifest.df.loc[0, "label"] = "normal"  # lesion-free label: an empty mask is expected
    errors = validate_manifest(manifest, root).errors
    assert [(p.rule, p.line) for p in errors] == [("empty-mask", 3)]


@pytest.mark.parametrize(
    "boxes, rule",
    [("[[1, 2, 3]]", "invalid-box"), ("not json", "invalid-box"), ("[[1, 1, 0, 4]]", "invalid-box"),
     ("[[15, 2, 10, 4]]", "box-outside-image"), ("[[1, -1, 3, 3]]", "box-outside-image")],
)
def test_boxes(clean, boxes, rule):
    manifest, root = clean
    manifest.df.loc[2, "boxes"] = boxes
    errors = validate_manifest(manifest, root).errors
    assert [(p.rule, p.line) for p in errors] == [(rule, 4)]


def test_box_columns_single_box(clean):
    manifest, root = clean
    manifest.df = manifest.df.drop(columns=["boxes"])
    manifest.df["box_x"], manifest.df["box_y"], manifest.df["box_w"], manifest.df["box_h"] = 1.0, 1.0, 30.0, 2.0
    errors = validate_manifest(manifest, root).errors
    assert {p.rule for p in errors} == {"box-outside-image"} and len(errors) == 4


def test_patient_leakage_lists_all_lines(clean):
    manifest, root = clean
    manifest.df.loc[2, "patient_id"] = "p0"  # p0 now in train (lines 2, 3) and test (line 4)
    problem = next(p for p in validate_manifest(manifest, root).errors)
    assert problem.rule == "patient-leakage" and "lines 2, 3, 4" in problem.message


def test_duplicate_pixels_across_splits_is_an_error(clean):
    manifest, root = clean
    _png(root / "img/3.png", 61, pattern=1)  # same pixels as img/1.png (train); img/3 is in test
    problem = next(p for p in validate_manifest(manifest, root).errors)
    assert problem.rule == "duplicate-pixels" and "different splits" in problem.message


def test_duplicate_pixels_with_different_labels_is_an_error(clean):
    manifest, root = clean
    _png(root / "img/1.png", 60, pattern=0)  # same as img/0.png, same split, other label
    problem = next(p for p in validate_manifest(manifest, root).errors)
    assert problem.rule == "duplicate-pixels" and "different labels" in problem.message


def test_duplicate_pixels_same_split_and_label_is_a_warning(clean):
    manifest, root = clean
    manifest.df.loc[1, "label"] = "benign"
    _png(root / "img/1.png", 60, pattern=0)
    report = validate_manifest(manifest, root)
    assert report.ok and [p.rule for p in report.warnings] == ["duplicate-pixels"]


def test_near_duplicate_pair_across_splits_is_one_error_naming_file_rows_and_rule(clean):
    manifest, root = clean
    manifest.df["duplicate_group"] = [np.nan, "im1", "im1", np.nan]  # im1 (p0, train) ~ im2 (p1, test)
    errors = validate_manifest(manifest, root, check_files=False).errors
    assert len(errors) == 1
    assert errors[0].format() == (
        f"{root / 'm.csv'}:3 [image_id=im1] error near-duplicate-leakage: near-duplicate images im1 (train, line 3), "
        "im2 (test, line 4) (duplicate_group 'im1') are in splits ['test', 'train']"
    )
    manifest.df.loc[2, "split"] = "train"  # im2 alone would leak its patient p1 instead
    manifest.df.loc[3, "split"] = "train"
    assert validate_manifest(manifest, root, check_files=False).ok


def test_every_rule_is_documented_and_tested():
    tested = {
        "missing-column", "unknown-column", "empty-value", "duplicate-image-id", "label-outside-set",
        "condition-level", "condition-value", "invalid-split", "invalid-synthetic", "missing-file",
        "unreadable-image", "mask-size", "empty-mask", "invalid-box", "box-outside-image", "patient-leakage",
        "near-duplicate-leakage", "duplicate-pixels",
        "path-outside-root", "high-bit-depth",  # tested in test_input_faults.py
    }
    assert set(RULES) == tested


def test_round_trip_keeps_missing_values_missing(clean, tmp_path):
    manifest, _ = clean
    manifest.df.loc[0, "cond_age"] = np.nan
    manifest.df.loc[1, "cond_birads"] = np.nan
    path = write_manifest(manifest, tmp_path / "out" / "m.csv")
    assert sidecar_path(path).is_file()
    back = read_manifest(path)
    assert np.isnan(back.df.loc[0, "cond_age"]) and back.df.loc[1, "cond_age"] == 51.0
    assert pd.isna(back.df.loc[1, "cond_birads"])
    assert ",," in path.read_text().splitlines()[1] or path.read_text().splitlines()[1].endswith(",")
    assert back.schema == manifest.schema
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_bad_sidecar_is_a_clear_error(tmp_path):
    (tmp_path / "m.csv").write_text("image_id\nx\n")
    (tmp_path / "m.schema.yaml").write_text("dataset: d\nlabel_set: [a, b]\npositive_class: c\n")
    with pytest.raises(SchemaError, match="positive_class 'c' is not in label_set"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "m.schema.yaml").write_text("dataset: d\nlabel_set: [a]\nconditions: {cond_x: {type: categorical}}\n")
    with pytest.raises(SchemaError, match="declares no levels"):
        read_manifest(tmp_path / "m.csv")


def test_cli_validate_one_line_per_problem_and_exit_code(clean, tmp_path, capsys):
    manifest, root = clean
    manifest.df.loc[0, "label"] = "cancer"
    manifest.df.loc[3, "split"] = "holdout"
    path = write_manifest(manifest, tmp_path / "bad.csv")
    assert main(["data", "validate", str(path), "--root", str(root), "--quiet"]) == 1
    out = capsys.readouterr().out.splitlines()
    problems = [line for line in out if " error " in line]
    assert len(problems) == 2
    assert problems[0].strip().startswith(f"{path}:2 [image_id=im0] error label-outside-set")
    assert f"{path}:5 [image_id=im3] error invalid-split" in problems[1]

    manifest.df.loc[0, "label"] = "benign"
    manifest.df.loc[3, "split"] = "test"
    path = write_manifest(manifest, tmp_path / "good.csv")
    assert main(["data", "validate", str(path), "--root", str(root), "--quiet"]) == 0


def test_cli_missing_manifest_is_exit_2(tmp_path, capsys):
    assert main(["data", "validate", str(tmp_path / "nope.csv"), "--root", str(tmp_path)]) == 2
    assert "nope.csv: manifest not found" in capsys.readouterr().err
