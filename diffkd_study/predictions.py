"""Prediction tables: the contract between the stages that make predictions and the evaluation stages.

One CSV per model under ``runs/NAME/predictions/<model>.csv``, one row per (model, seed, image):

=============  ==============================================================================
image_id       the manifest's image_id (must exist in the study manifest)
patient_id     the manifest's patient_id
dataset        the manifest's dataset
center         the manifest's center
split          ``val``, ``test`` or ``external`` (never ``train``: training rows are leakage)
y_true         1 when the image's label is the schema's ``positive_class``, else 0
y_score        the predicted probability of the positive class, in [0, 1]
model          the model's name (file-name safe)
seed           the training seed (an integer)
=============  ==============================================================================

``validate_predictions`` collects every broken rule (``RULES``), each naming the file and line (or
table row), and raises one ``PredictionError``; ``write_predictions`` validates before writing (to a
temporary name, then renamed) and ``read_predictions`` after reading. Given the study manifest,
image_ids must be known, and ``y_true``, ``split``, ``patient_id``, ``dataset`` and ``center``
must agree with it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from diffkd_study.data.schema import Manifest
from diffkd_study.io import atomic_path

PREDICTION_COLUMNS: tuple[str, ...] = (
    "image_id", "patient_id", "dataset", "center", "split", "y_true", "y_score", "model", "seed",
)
EVALUATION_SPLITS: tuple[str, ...] = ("val", "test", "external")
INTERNAL_TEST = "internal test"
MODEL_NAME = re.compile(r"[A-Za-z0-9_.+-]+")

RULES: dict[str, str] = {
    "missing-column": "a prediction table needs the columns " + ", ".join(PREDICTION_COLUMNS),
    "empty-value": "no cell of the required columns may be empty",
    "score-outside-unit-interval": "y_score is a probability: a finite number in [0, 1]",
    "label-not-binary": "y_true must be 0 or 1 (1 = the schema's positive class)",
    "seed-not-integer": "seed must be an integer",
    "bad-model-name": "model must be a file-name-safe name (letters, digits, _ . + -)",
    "unknown-split": "split must be val, test or external",
    "train-leakage": "training rows must not appear in a prediction table (they would be evaluated on seen data)",
    "duplicate-prediction": "each (model, seed, image_id) appears once",
    "unknown-image": "every image_id must exist in the study manifest",
    "manifest-mismatch": "y_true, split, patient_id, dataset and center must agree with the study manifest",
}

_MAX_LISTED = 25


@dataclass(frozen=True)
class PredictionProblem:
    """One broken rule of a prediction table: the rule name, where (file and line, or row) and the message."""

    rule: str
    where: str
    message: str

    def format(self) -> str:
        """The problem on one line: ``where rule: message``."""
        return f"{self.where} {self.rule}: {self.message}"


class PredictionError(ValueError):
    """A prediction table breaks one or more rules; ``problems`` lists every one."""

    def __init__(self, source: str, problems: Sequence[PredictionProblem]) -> None:
        self.source = source
        self.problems = list(problems)
        listed = [p.format() for p in self.problems[:_MAX_LISTED]]
        if len(self.problems) > _MAX_LISTED:
            listed.append(f"... and {len(self.problems) - _MAX_LISTED} more")
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n  " + "\n  ".join(listed))

    @property
    def rules_broken(self) -> set[str]:
        """The names of the rules broken."""
        return {p.rule for p in self.problems}


def _locator(df: pd.DataFrame, source: str, from_file: bool):
    if from_file:
        positions = {label: i for i, label in enumerate(df.index)}
        return lambda label: f"{source}:{positions[label] + 2}"  # line 1 is the header
    return lambda label: f"{source} row {label!r}"


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def positive_labels(manifest: Manifest) -> pd.Series:
    """y_true (0/1) per image_id from the manifest's labels and its schema's positive class."""
    positive = manifest.schema.positive_class
    if positive is None:
        raise ValueError(f"{manifest.path}: the schema declares no positive_class; binary evaluation needs one")
    return pd.Series((manifest.df["label"] == positive).astype(int).to_numpy(),
                     index=manifest.df["image_id"].astype(str), name="y_true")


def validate_predictions(
    df: pd.DataFrame, *, manifest: Manifest | None = None, source: str = "prediction table", from_file: bool = False
) -> pd.DataFrame:
    """Check every rule (``RULES``) and return the table with normalised types; raise ``PredictionError``."""
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise PredictionError(source, [PredictionProblem(
            "missing-column", source, f"missing column(s) {missing}; found {list(df.columns)}")])
    where = _locator(df, source, from_file)
    out = df.copy()
    for col in ("image_id", "patient_id", "dataset", "center", "split", "model"):
        out[col] = df[col].map(_text)
    score = pd.to_numeric(df["y_score"], errors="coerce")
    label = pd.to_numeric(df["y_true"], errors="coerce")
    seed = pd.to_numeric(df["seed"], errors="coerce")
    problems: list[PredictionProblem] = []
    text_cols = ["image_id", "patient_id", "dataset", "center", "split", "model"]
    for row in df.index:
        empty = [c for c in text_cols if out.at[row, c] is None]
        empty += [c for c in ("y_true", "y_score", "seed") if _text(df.at[row, c]) is None]
        if empty:
            problems.append(PredictionProblem("empty-value", where(row), f"empty {', '.join(empty)}"))
            continue
        who = f"(image_id {out.at[row, 'image_id']!r})"
        if not (np.isfinite(score[row]) and 0.0 <= score[row] <= 1.0):
            problems.append(PredictionProblem(
                "score-outside-unit-interval", where(row), f"y_score {df.at[row, 'y_score']!r} is not in [0, 1] {who}"))
        if label[row] not in (0, 1):
            problems.append(PredictionProblem(
                "label-not-binary", where(row), f"y_true {df.at[row, 'y_true']!r} is not 0 or 1 {who}"))
        if not (np.isfinite(seed[row]) and float(seed[row]).is_integer()):
            problems.append(PredictionProblem(
                "seed-not-integer", where(row), f"seed {df.at[row, 'seed']!r} is not an integer {who}"))
        if not MODEL_NAME.fullmatch(out.at[row, "model"]):
            problems.append(PredictionProblem(
                "bad-model-name", where(row), f"model {out.at[row, 'model']!r} is not file-name safe {who}"))
        split = out.at[row, "split"]
        if split == "train":
            problems.append(PredictionProblem(
                "train-leakage", where(row), f"a training image is in the prediction table {who}"))
        elif split not in EVALUATION_SPLITS:
            problems.append(PredictionProblem(
                "unknown-split", where(row), f"split {split!r} is not one of {list(EVALUATION_SPLITS)} {who}"))
    keys = out[["model", "seed", "image_id"]].assign(seed=seed)
    complete = keys.notna().all(axis=1)
    duplicated = complete & keys.duplicated(keep="first")
    for row in df.index[duplicated]:
        problems.append(PredictionProblem(
            "duplicate-prediction", where(row),
            f"model {out.at[row, 'model']!r}, seed {df.at[row, 'seed']}, image_id {out.at[row, 'image_id']!r} appears again"))
    if manifest is not None:
        problems += _against_manifest(out, label, manifest, where)
    if problems:
        raise PredictionError(source, problems)
    out["y_true"] = label.astype(int)
    out["y_score"] = score.astype(float)
    out["seed"] = seed.astype(int)
    return out[list(PREDICTION_COLUMNS) + [c for c in out.columns if c not in PREDICTION_COLUMNS]]


def _against_manifest(out: pd.DataFrame, label: pd.Series, manifest: Manifest, where) -> list[PredictionProblem]:
    reference = manifest.df.assign(image_id=manifest.df["image_id"].astype(str)).set_index("image_id")
    truth = positive_labels(manifest)
    name = manifest.path or "the study manifest"
    problems = []
    for row in out.index:
        image_id = out.at[row, "image_id"]
        if image_id is None:
            continue
        if image_id not in reference.index:
            problems.append(PredictionProblem("unknown-image", where(row), f"image_id {image_id!r} is not in {name}"))
            continue
        known = reference.loc[image_id]
        if "split" in reference.columns and known["split"] == "train" and out.at[row, "split"] != "train":
            problems.append(PredictionProblem(
                "train-leakage", where(row), f"image_id {image_id!r} is a training image in {name}"))
            continue
        disagree = [
            f"{col} {out.at[row, col]!r} (manifest: {str(known[col])!r})"
            for col in ("split", "patient_id", "dataset", "center")
            if col in reference.columns and out.at[row, col] is not None and out.at[row, col] != str(known[col])
        ]
        if label[row] in (0, 1) and int(label[row]) != int(truth[image_id]):
            disagree.append(f"y_true {int(label[row])} (manifest label {known['label']!r})")
        if disagree:
            problems.append(PredictionProblem(
                "manifest-mismatch", where(row), f"image_id {image_id!r}: " + "; ".join(disagree)))
    return problems


def write_predictions(df: pd.DataFrame, path: str | os.PathLike[str], *, manifest: Manifest | None = None) -> Path:
    """Validate and write a prediction table (temporary name, then renamed); return the path."""
    path = Path(path)
    table = validate_predictions(df, manifest=manifest, source=str(path))
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.8g")
    return path


def read_predictions(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, manifest: Manifest | None = None
) -> pd.DataFrame:
    """Read and validate one or more prediction CSVs (problems name ``file:line``); concatenate them.

    Duplicates across files (the same model, seed and image in two files) are errors too.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise FileNotFoundError("no prediction tables given")
    frames = []
    for item in items:
        item = Path(item)
        if not item.is_file():
            raise FileNotFoundError(f"prediction table {item} not found")
        raw = pd.read_csv(item, dtype=str, keep_default_na=False, na_values=[""])
        frames.append(validate_predictions(raw, manifest=manifest, source=str(item), from_file=True))
    table = pd.concat(frames, ignore_index=True)
    if len(items) > 1:
        validate_predictions(table, source=" + ".join(str(i) for i in items))
    return table


def predictions_frame(
    manifest: Manifest, scores: pd.Series, *, model: str, seed: int
) -> pd.DataFrame:
    """A prediction table from the study manifest and ``scores`` (probabilities indexed by image_id)."""
    df = manifest.df.assign(image_id=manifest.df["image_id"].astype(str)).set_index("image_id")
    ids = [str(i) for i in scores.index]
    absent = [i for i in ids if i not in df.index]
    if absent:
        raise ValueError(f"{len(absent)} scored image_id(s) are not in the manifest, e.g. {absent[:5]}")
    rows = df.loc[ids]
    return pd.DataFrame({
        "image_id": ids,
        "patient_id": rows["patient_id"].astype(str).to_numpy(),
        "dataset": rows["dataset"].astype(str).to_numpy(),
        "center": rows["center"].astype(str).to_numpy(),
        "split": rows["split"].astype(str).to_numpy(),
        "y_true": positive_labels(manifest).loc[ids].to_numpy(),
        "y_score": np.asarray(scores, dtype=float),
        "model": model,
        "seed": int(seed),
    })


def label_test_sets(pred: pd.DataFrame) -> pd.Series:
    """The test set of every row: ``internal test`` (split test), ``external: <center>``, else NaN (val)."""
    external = "external: " + pred["center"].astype(str)
    return pd.Series(
        np.where(pred["split"] == "test", INTERNAL_TEST, np.where(pred["split"] == "external", external, None)),
        index=pred.index, name="test_set",
    )


def ordered_test_sets(pred: pd.DataFrame) -> list[str]:
    """Test sets in report order: the internal test set first, then the external centers by name."""
    names = label_test_sets(pred).dropna().unique().tolist()
    return sorted(names, key=lambda n: (n != INTERNAL_TEST, n))


__all__ = [
    "EVALUATION_SPLITS", "INTERNAL_TEST", "PREDICTION_COLUMNS", "RULES", "PredictionError", "PredictionProblem",
    "ordered_test_sets", "positive_labels", "predictions_frame", "read_predictions", "label_test_sets",
    "validate_predictions", "write_predictions",
]
