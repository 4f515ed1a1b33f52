"""Prediction-table contract: round trip, and every rule broken names the file, line and rule."""

from __future__ import annotations

import pandas as pd
import pytest

from diffkd_study.data.schema import Manifest, ManifestSchema
from diffkd_study.predictions import (
    PREDICTION_COLUMNS,
    PredictionError,
    label_test_sets,
    ordered_test_sets,
    predictions_frame,
    read_predictions,
    validate_predictions,
    write_predictions,
)


@pytest.fixture()
def manifest() -> Manifest:
    df = pd.DataFrame({
        "image_id": ["a", "b", "c", "d", "e"],
        "patient_id": ["p1", "p2", "p3", "p4", "p5"],
        "dataset": "toy",
        "center": ["A", "A", "A", "B", "A"],
        "image_path": [f"{i}.png" for i in "abcde"],
        "label": ["malignant", "benign", "malignant", "benign", "benign"],
        "split": ["val", "test", "test", "external", "train"],
    })
    schema = ManifestSchema(dataset="toy", label_set=("benign", "malignant"), positive_class="malignant")
    return Manifest(df, schema)


def _table(manifest: Manifest) -> pd.DataFrame:
    scores = pd.Series([0.9, 0.2, 0.7, 0.4], index=["a", "b", "c", "d"])
    return predictions_frame(manifest, scores, model="m1", seed=3)


def test_round_trip_and_test_sets(tmp_path, manifest):
    path = write_predictions(_table(manifest), tmp_path / "m1.csv", manifest=manifest)
    table = read_predictions(path, manifest=manifest)
    assert list(table.columns) == list(PREDICTION_COLUMNS)
    assert table["y_true"].tolist() == [1, 0, 1, 0] and table["seed"].tolist() == [3] * 4
    assert table["y_score"].tolist() == [0.9, 0.2, 0.7, 0.4]
    assert label_test_sets(table).fillna("-").tolist() == ["-", "internal test", "internal test", "external: B"]
    assert ordered_test_sets(table) == ["internal test", "external: B"]
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


@pytest.mark.parametrize(
    "edit, rule, line",
    [
        (lambda t: t.drop(columns=["seed"]), "missing-column", None),
        (lambda t: t.assign(y_score=[0.9, 1.2, 0.7, 0.4]), "score-outside-unit-interval", 3),
        (lambda t: t.assign(y_true=[1, 2, 1, 0]), "label-not-binary", 3),
        (lambda t: pd.concat([t, t.iloc[[2]]], ignore_index=True), "duplicate-prediction", 6),
        (lambda t: t.assign(image_id=["a", "b", "zz", "d"]), "unknown-image", 4),
        (lambda t: t.assign(split=["val", "test", "train", "external"]), "train-leakage", 4),
        (lambda t: t.assign(y_true=[1, 0, 0, 0]), "manifest-mismatch", 4),
        (lambda t: t.assign(split=["val", "test", "holdout", "external"]), "unknown-split", 4),
        (lambda t: t.assign(y_score=[0.9, None, 0.7, 0.4]), "empty-value", 3),
    ],
)
def test_read_names_file_line_and_rule(tmp_path, manifest, edit, rule, line):
    path = tmp_path / "bad.csv"
    edit(_table(manifest)).to_csv(path, index=False)
    with pytest.raises(PredictionError) as info:
        read_predictions(path, manifest=manifest)
    assert rule in info.value.rules_broken
    expected = f"{path}:{line} {rule}" if line else f"{path} {rule}"
    assert expected in str(info.value)


def test_training_image_scored_under_another_split_is_leakage(manifest):
    table = _table(manifest)
    table.loc[0, ["image_id", "patient_id"]] = ["e", "p5"]  # e is a training image
    with pytest.raises(PredictionError) as info:
        validate_predictions(table, manifest=manifest)
    assert "train-leakage" in info.value.rules_broken and "training image" in str(info.value)


def test_duplicates_across_files_are_errors(tmp_path, manifest):
    a = write_predictions(_table(manifest), tmp_path / "a.csv")
    b = write_predictions(_table(manifest), tmp_path / "b.csv")
    with pytest.raises(PredictionError, match="duplicate-prediction"):
        read_predictions([a, b])


def test_write_refuses_bad_table_and_leaves_nothing(tmp_path, manifest):
    with pytest.raises(PredictionError):
        write_predictions(_table(manifest).assign(y_score=-1.0), tmp_path / "m.csv", manifest=manifest)
    assert not list(tmp_path.iterdir())
