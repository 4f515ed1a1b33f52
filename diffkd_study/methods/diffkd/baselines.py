"""Simple baselines fitted on the training split only, predicting the validation, test and external images.

They give the evaluation stages real prediction tables before any network is trained, and they stay
in the report as the yardstick a deep model has to beat.

* ``clinical``: logistic regression on the manifest's condition columns (``cond_*``). Categorical
  conditions are one-hot encoded on the levels seen in training, plus a missing indicator; a level
  never seen in training encodes as all zeros. Numeric conditions are standardised (training mean
  and SD), missing values set to the mean, plus a missing indicator. BI-RADS (``cond_birads``) is
  ordinal and encoded as one number (2, 3, 4, 4a = 4.25, 4b = 4.5, 4c = 4.75, 5, ...), so the
  sub-categories of one dataset map sensibly onto another's. With BI-RADS present (in the study
  configs, ``clinical_conditions: [cond_birads]``, its only input) this baseline is *the radiologists'
  BI-RADS (reading the same images)*, as the evaluation labels it (``evaluate.BIRADS_READING``): a
  radiologist's reading of the very images the networks classify, not an independent clinical covariate,
  so it is a reference reading to compare with, not information a model could add. Conditions that
  only re-state the center (one value per training center, different between centers, e.g. the
  scanner model) are left out: they cannot carry over to a new center.
* ``image_features``: logistic regression on hand-crafted features of the preprocessed image and its
  lesion mask (``IMAGE_FEATURES``), computed from the preprocessing cache. It needs a mask for every
  training and validation image and raises ``MissingMaskError`` otherwise (the stage then skips it and
  says why).
* ``box_geometry``: logistic regression on the lesion box's shape, size and crop position alone
  (:data:`~diffkd_study.methods.diffkd.box_geometry.BOX_FEATURES`, from the original mask files at native
  resolution; :mod:`~diffkd_study.methods.diffkd.box_geometry`): a shortcut audit, the reference every image
  model is shown beside. Its masks are needed as for ``image_features``. It is never *the* best baseline
  (:func:`best_by_validation` picks among the others), since it reads no pixels of the lesion.

A baseline is *not applicable* on a test set (the internal test split, or one external center) whose
images lack its inputs: for ``clinical`` when none of the conditions it uses is recorded for any image of
the set (a dataset that released no conditions), for ``image_features`` and ``box_geometry`` when an image
of the set has no mask. It then writes no prediction for that set, rather than one constant score for every image, and
``BaselineFit.not_applicable`` says why; the stage records it in ``summary.json`` next to the
prediction tables (``read_not_applicable``), where the evaluation finds the reason. Within a set that
records some of the conditions, missing values are encoded as described above and ``BaselineFit.notes``
counts them.

Model selection uses the validation split only: the ridge penalty ``C`` is chosen from ``C_GRID`` by
validation AUC (ties go to the stronger penalty). Test and external images are never looked at
before prediction. The fits are deterministic given ``seed``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from diffkd_study.data.schema import Manifest
from diffkd_study.methods.diffkd.box_geometry import BOX_GEOMETRY, DEFAULT_CROP_MARGIN, box_geometry_table
from diffkd_study.methods.diffkd.stage import BASELINE_MODELS
from diffkd_study.metrics.roc import roc_auc
from diffkd_study.predictions import (
    label_test_sets,
    ordered_test_sets,
    positive_labels,
    predictions_frame,
    write_predictions,
)

#: the baselines :func:`fit_baseline` knows: the list the ``baselines`` section accepts
BASELINES: tuple[str, ...] = BASELINE_MODELS
C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
IMAGE_FEATURES: dict[str, str] = {
    "lesion_mean": "mean lesion intensity (0-1)",
    "lesion_sd": "SD of the lesion intensity",
    "ring_contrast": "mean intensity of a ring around the lesion minus the lesion's",
    "posterior_difference": "mean intensity below the lesion minus beside it (shadowing < 0 < enhancement)",
    "area_fraction": "lesion area as a fraction of the image",
    "compactness": "perimeter^2 / area (4 pi for a disc; larger = less regular outline)",
    "height_width_ratio": "lesion height / width (> 1 = taller than wide)",
    "texture_energy": "mean squared difference between neighbouring lesion pixels",
}
#: the baselines that audit a shortcut rather than model the lesion: never chosen by :func:`best_by_validation`
REFERENCE_ONLY: tuple[str, ...] = (BOX_GEOMETRY,)
#: what each mask-based baseline is called in its messages
_MASK_USERS: dict[str, str] = {"image_features": "the image features need", BOX_GEOMETRY: "the box geometry needs"}


class BaselineError(ValueError):
    """A baseline cannot be fitted on this data (the message says why)."""


class MissingMaskError(BaselineError):
    """The image-feature baseline needs a lesion mask for every image."""


def birads_ordinal(value: Any) -> float:
    """BI-RADS category as a number: '3' -> 3, '4a' -> 4.25, '4b' -> 4.5, '4c' -> 4.75; NaN when missing."""
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip().lower()
    if not text:
        return math.nan
    match = re.fullmatch(r"(\d)(?:\.0)?([abc]?)", text)
    if match is None:
        raise BaselineError(f"BI-RADS value {value!r} is not a category like 3, 4, 4a or 5")
    return int(match.group(1)) + {"": 0.0, "a": 0.25, "b": 0.5, "c": 0.75}[match.group(2)]


ORDINAL_CONDITIONS: dict[str, Callable[[Any], float]] = {"cond_birads": birads_ordinal}


# ----------------------------------------------------------------------------------------------
# Clinical design matrix
# ----------------------------------------------------------------------------------------------


@dataclass
class ConditionEncoder:
    """One-hot / standardised encoding of condition columns, learnt on the training rows only."""

    categorical: dict[str, list[str]] = field(default_factory=dict)
    numeric: dict[str, tuple[float, float]] = field(default_factory=dict)
    ordinal: dict[str, tuple[float, float]] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)

    @classmethod
    def fit(cls, manifest: Manifest, train: pd.DataFrame, columns: Sequence[str] | None = None) -> ConditionEncoder:
        """Learn the encoding of ``columns`` (default: every ``cond_*`` column) from the training rows ``train``.

        Conditions never recorded in ``train`` are left out, and so (when ``columns`` is not given) are those that
        re-state the center; the reasons go to ``left_out``. Raises ``BaselineError`` for a column the manifest
        lacks.
        """
        specs = manifest.schema.conditions
        available = [c for c in manifest.condition_columns]
        chosen = list(columns) if columns else available
        unknown = [c for c in chosen if c not in available]
        if unknown:
            raise BaselineError(f"condition column(s) {unknown} are not in the manifest; it has {available}")
        enc = cls()
        for col in chosen:
            values = train[col]
            if values.isna().all():
                enc.left_out[col] = "never recorded in the training split"
                continue
            if not columns and _is_center_proxy(train, col):
                enc.left_out[col] = "re-states the center (one value per training center)"
                continue
            if col in ORDINAL_CONDITIONS:
                numbers = values.map(ORDINAL_CONDITIONS[col])
                enc.ordinal[col] = (float(numbers.mean()), float(numbers.std(ddof=0)) or 1.0)
            elif col in specs and specs[col].type == "numeric" or (col not in specs and _numeric(values)):
                numbers = pd.to_numeric(values, errors="coerce")
                enc.numeric[col] = (float(numbers.mean()), float(numbers.std(ddof=0)) or 1.0)
            else:
                enc.categorical[col] = sorted(values.dropna().astype(str).unique())
        if not (enc.categorical or enc.numeric or enc.ordinal):
            raise BaselineError("no condition column is recorded in the training split: the clinical baseline has no input")
        return enc

    @property
    def columns(self) -> list[str]:
        """The condition columns the encoding uses (those left out excluded)."""
        return [*self.ordinal, *self.numeric, *self.categorical]

    @property
    def feature_names(self) -> list[str]:
        """The names of the design-matrix columns, in the order of :meth:`transform`."""
        names = []
        for col, (_, _) in self.ordinal.items():
            names += [f"{col} (ordinal)", f"{col} missing"]
        for col in self.numeric:
            names += [f"{col} (standardised)", f"{col} missing"]
        for col, levels in self.categorical.items():
            names += [f"{col}={level}" for level in levels] + [f"{col} missing"]
        return names

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """The design matrix (n_rows, n_features) of ``df``: standardised ordinal and numeric values (0 when
        missing) and one-hot levels, each condition with a ``missing`` indicator column.
        """
        blocks = []
        for col, (mean, sd) in self.ordinal.items():
            numbers = df[col].map(ORDINAL_CONDITIONS[col]).astype(float)
            blocks += [((numbers - mean) / sd).fillna(0.0).to_numpy(), numbers.isna().to_numpy(float)]
        for col, (mean, sd) in self.numeric.items():
            numbers = pd.to_numeric(df[col], errors="coerce")
            blocks += [((numbers - mean) / sd).fillna(0.0).to_numpy(), numbers.isna().to_numpy(float)]
        for col, levels in self.categorical.items():
            text = df[col].map(lambda v: None if pd.isna(v) else str(v))
            blocks += [(text == level).to_numpy(float) for level in levels]
            blocks.append(text.isna().to_numpy(float))
        return np.column_stack(blocks)


def _numeric(values: pd.Series) -> bool:
    present = values.dropna()
    return bool(len(present)) and pd.to_numeric(present, errors="coerce").notna().all()


def _is_center_proxy(train: pd.DataFrame, col: str) -> bool:
    per_center = train.groupby("center")[col].nunique(dropna=True)
    return train["center"].nunique() > 1 and bool((per_center <= 1).all()) and train[col].nunique() > 1


# ----------------------------------------------------------------------------------------------
# Image features
# ----------------------------------------------------------------------------------------------


def lesion_features(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """``IMAGE_FEATURES`` of one grayscale image (uint8 or float in [0, 1]) and its mask; NaN for an empty mask."""
    img = np.asarray(image, dtype=float)
    if img.max(initial=0) > 1.0:
        img = img / 255.0
    m = np.asarray(mask) > 0
    if img.ndim != 2 or m.shape != img.shape:
        raise ValueError(f"image and mask must be 2-D of the same shape; got {img.shape} and {m.shape}")
    if not m.any():
        return dict.fromkeys(IMAGE_FEATURES, math.nan)
    size = max(img.shape)
    rows, cols = np.nonzero(m)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    height, width = bottom - top + 1, right - left + 1
    lesion = img[m]
    ring = ndimage.binary_dilation(m, iterations=max(2, round(0.05 * size))) & ~m
    ring_mean = img[ring].mean() if ring.any() else lesion.mean()
    band = slice(bottom + 1, min(img.shape[0], bottom + 1 + height))
    below = img[band, left : right + 1]
    half = max(1, width // 2)
    beside = np.concatenate([img[band, max(0, left - half) : left].ravel(),
                             img[band, right + 1 : right + 1 + half].ravel()])
    posterior = below.mean() - beside.mean() if below.size and beside.size else 0.0
    perimeter = int((m & ~ndimage.binary_erosion(m)).sum())
    dx = np.diff(img, axis=1)[m[:, 1:] & m[:, :-1]]
    dy = np.diff(img, axis=0)[m[1:, :] & m[:-1, :]]
    neighbours = np.concatenate([dx, dy])
    return {
        "lesion_mean": float(lesion.mean()),
        "lesion_sd": float(lesion.std()),
        "ring_contrast": float(ring_mean - lesion.mean()),
        "posterior_difference": float(posterior),
        "area_fraction": float(m.mean()),
        "compactness": float(perimeter**2 / m.sum()),
        "height_width_ratio": float(height / width),
        "texture_energy": float(np.mean(neighbours**2)) if neighbours.size else 0.0,
    }


def image_feature_table(
    manifest: Manifest, root: str | Path, *, image_size: int, cache_dir: str | Path | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """``IMAGE_FEATURES`` of every manifest image (index image_id), from the preprocessing cache at ``image_size``.

    Raises ``MissingMaskError`` naming the images without a mask that a fit would use: every image of a
    manifest without a split column, else those of the training and validation splits. Test and external
    images without a mask get NaN features (the baseline is not applicable on their test set).
    """
    from diffkd_study.data.cache import build_cache

    df = manifest.df
    require_masks(manifest, "the image-feature baseline")
    cache = build_cache(manifest, root, size=image_size, mode="L", cache_dir=cache_dir, progress=progress)
    ids = df["image_id"].astype(str).tolist()
    rows = []
    for image_id in ids:
        i = cache.index_of(image_id)
        rows.append(lesion_features(cache.images[i], cache.masks[i]))  # type: ignore[index]
    return pd.DataFrame(rows, index=pd.Index(ids, name="image_id"), columns=list(IMAGE_FEATURES))


def require_masks(manifest: Manifest, who: str) -> None:
    """Raise ``MissingMaskError`` (naming ``who`` needs them) unless every image a fit would use has a lesion
    mask: every image of a manifest without a split column, else those of the training and validation splits."""
    df = manifest.df
    if "mask_path" not in df.columns:
        raise MissingMaskError(f"{manifest.path}: the manifest has no mask_path column; {who} needs lesion masks")
    needed = df["split"].isin(["train", "val"]) if "split" in df.columns else pd.Series(True, index=df.index)
    absent = df.loc[~_has_mask(df) & needed, "image_id"]
    if len(absent):
        fitted = "" if "split" not in df.columns else " training or validation"
        raise MissingMaskError(f"{manifest.path}: {len(absent)} of {int(needed.sum())}{fitted} image(s) have no lesion "
                               f"mask, e.g. {list(absent.astype(str)[:5])}; {who} needs one for every{fitted} image")


def _has_mask(df: pd.DataFrame) -> pd.Series:
    if "mask_path" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["mask_path"].notna() & (df["mask_path"].astype(str).str.strip() != "")


# ----------------------------------------------------------------------------------------------
# Where a baseline applies
# ----------------------------------------------------------------------------------------------


def _condition_coverage(df: pd.DataFrame, columns: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Per test set of ``df``: not applicable (test set -> reason) when none of ``columns`` is recorded
    for any of its images; notes for columns a set never records and images that record none."""
    test_sets = label_test_sets(df)
    recorded = df[list(columns)].notna()
    not_applicable: dict[str, str] = {}
    notes: list[str] = []
    for test_set in ordered_test_sets(df):
        rows = recorded[(test_sets == test_set).to_numpy()]
        n = len(rows)
        if not rows.to_numpy().any():
            not_applicable[test_set] = (f"no condition it uses ({', '.join(columns)}) is recorded for any of the "
                                        f"{n} images of this test set")
            continue
        never = [c for c in columns if not rows[c].any()]
        if never:
            notes.append(f"{test_set}: {', '.join(never)} never recorded (encoded as missing for all {n} images)")
        bare = int((~rows.any(axis=1)).sum())
        if bare:
            notes.append(f"{test_set}: {bare} of {n} images record none of its conditions (scored as a case with "
                         "every condition missing)")
    return not_applicable, notes


def _mask_coverage(df: pd.DataFrame, users: str) -> dict[str, str]:
    """Test sets (-> reason) with an image that has no lesion mask; ``users`` says who needs one for every image
    (e.g. "the image features need")."""
    test_sets = label_test_sets(df)
    without = ~_has_mask(df)
    out = {}
    for test_set in ordered_test_sets(df):
        rows = (test_sets == test_set).to_numpy()
        if without[rows].any():
            out[test_set] = (f"{int(without[rows].sum())} of {int(rows.sum())} images of this test set have no lesion "
                             f"mask ({users} one for every image)")
    return out


# ----------------------------------------------------------------------------------------------
# Fitting
# ----------------------------------------------------------------------------------------------


@dataclass
class BaselineFit:
    """A fitted baseline: its predictions for val/test/external and how it was chosen.

    ``not_applicable`` maps each test set on which the baseline writes no predictions (its inputs are
    not recorded there) to the reason.
    """

    model: str
    predictions: pd.DataFrame
    penalty_c: float
    val_auc: float
    val_auc_by_c: dict[float, float]
    coefficients: pd.Series
    n_train: int
    notes: list[str] = field(default_factory=list)
    not_applicable: dict[str, str] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()  # the manifest columns it reads (clinical: the condition columns used)

    def summary(self) -> dict[str, Any]:
        """The fit for the records: model, validation AUC (per penalty C and chosen), sizes, inputs, notes."""
        return {"model": self.model, "val_auc": self.val_auc, "penalty_C": self.penalty_c,
                "val_auc_by_C": {str(k): v for k, v in self.val_auc_by_c.items()},
                "n_train": self.n_train, "n_features": int(self.coefficients.size), "inputs": list(self.inputs),
                "notes": self.notes, "not_applicable": self.not_applicable}


def _fit_logistic(
    x: np.ndarray, y: np.ndarray, split: np.ndarray, names: list[str], seed: int
) -> tuple[Any, float, dict[float, float]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, val = split == "train", split == "val"
    for part, rows in (("training", train), ("validation", val)):
        if len(np.unique(y[rows])) < 2:
            raise BaselineError(f"the {part} split needs both classes; it has {int(y[rows].sum())} positive of {int(rows.sum())}")
    scores: dict[float, float] = {}
    fitted = {}
    for c in C_GRID:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, random_state=seed))
        model.fit(x[train], y[train])
        fitted[c] = model
        scores[c] = roc_auc(y[val], model.predict_proba(x[val])[:, 1])
    best = max(C_GRID, key=lambda c: (round(scores[c], 12), -c))
    return fitted[best], best, scores


def fit_baseline(
    name: str,
    manifest: Manifest,
    *,
    root: str | Path | None = None,
    clinical_conditions: Sequence[str] | None = None,
    image_size: int = 128,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = False,
    crop_margin: float = DEFAULT_CROP_MARGIN,
) -> BaselineFit:
    """Fit baseline ``name`` (``BASELINES``) on the training split; predict val, test and external rows,
    except those of the test sets it is not applicable on (``BaselineFit.not_applicable``). ``image_size`` is
    the image features' resolution, ``crop_margin`` the box geometry's lesion-window margin."""
    if name not in BASELINES:
        raise BaselineError(f"unknown baseline {name!r}; known: {list(BASELINES)}")
    df = manifest.df.reset_index(drop=True)
    if "split" not in df.columns:
        raise BaselineError(f"{manifest.path}: the manifest has no split column (use the study manifest)")
    split = df["split"].astype(str).to_numpy()
    y = positive_labels(manifest).to_numpy()
    notes: list[str] = []
    if name == "clinical":
        encoder = ConditionEncoder.fit(manifest, df[df["split"] == "train"], clinical_conditions)
        x, names = encoder.transform(df), encoder.feature_names
        notes += [f"{col} left out: {why}" for col, why in encoder.left_out.items()]
        not_applicable, coverage = _condition_coverage(df, encoder.columns)
        notes += coverage
        inputs = tuple(encoder.columns)
    else:
        if root is None:
            raise BaselineError(f"the {name} baseline needs the data root of the images")
        if name == BOX_GEOMETRY:
            require_masks(manifest, "the box-geometry baseline")
            features = box_geometry_table(manifest, root, margin=crop_margin, progress=progress)
            where = ""
        else:
            features = image_feature_table(manifest, root, image_size=image_size, cache_dir=cache_dir,
                                           progress=progress)
            where = f" at {image_size} px"
        not_applicable = _mask_coverage(df, _MASK_USERS[name])
        empty = features.isna().any(axis=1).to_numpy() & _has_mask(df).to_numpy()
        if empty.any():
            notes.append(f"{int(empty.sum())} image(s) whose mask is empty{where} get the training median features")
        medians = features[split == "train"].median()
        x, names = features.fillna(medians).to_numpy(), list(features.columns)
        inputs = ("image_path", "mask_path")
    model, c, by_c = _fit_logistic(x, y, split, names, seed)
    evaluated = (split != "train") & ~label_test_sets(df).isin(list(not_applicable)).to_numpy()
    scores = pd.Series(model.predict_proba(x[evaluated])[:, 1], index=df.loc[evaluated, "image_id"].astype(str))
    predictions = predictions_frame(manifest, scores, model=name, seed=seed)
    coefficients = pd.Series(model[-1].coef_[0], index=names, name="coefficient (per SD)")
    return BaselineFit(name, predictions, c, by_c[c], by_c, coefficients, int((split == "train").sum()), notes,
                       not_applicable, inputs)


def run_baselines(
    manifest: Manifest,
    out_dir: str | Path,
    *,
    models: Sequence[str] = BASELINES,
    root: str | Path | None = None,
    clinical_conditions: Sequence[str] | None = None,
    image_size: int = 128,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = False,
    crop_margin: float = DEFAULT_CROP_MARGIN,
) -> tuple[dict[str, BaselineFit], dict[str, str]]:
    """Fit every baseline in ``models`` and write ``out_dir/<model>.csv``; return (fits, skipped with reasons).

    A baseline that cannot be fitted on this data (``BaselineError``, e.g. no masks) is skipped with
    its reason; any other error propagates. A fitted baseline writes no rows for the test sets it is not
    applicable on (``BaselineFit.not_applicable``).
    """
    out_dir = Path(out_dir)
    fits: dict[str, BaselineFit] = {}
    skipped: dict[str, str] = {}
    for name in models:
        try:
            fit = fit_baseline(name, manifest, root=root, clinical_conditions=clinical_conditions,
                               image_size=image_size, cache_dir=cache_dir, seed=seed, progress=progress,
                               crop_margin=crop_margin)
        except BaselineError as err:
            skipped[name] = str(err)
            continue
        write_predictions(fit.predictions, out_dir / f"{name}.csv", manifest=manifest)
        fits[name] = fit
    return fits, skipped


SUMMARY_FILE = "summary.json"


def read_not_applicable(predictions_dir: str | Path) -> dict[str, dict[str, str]]:
    """model -> {test set -> reason} for the pairs the baselines stage found not applicable (its
    ``summary.json`` in ``predictions_dir``); empty when that stage has not run."""
    path = Path(predictions_dir) / SUMMARY_FILE
    if not path.is_file():
        return {}
    return {str(m): dict(pairs) for m, pairs in json.loads(path.read_text(encoding="utf-8")).get("not_applicable", {}).items()}


def read_baseline_inputs(predictions_dir: str | Path) -> dict[str, list[str]]:
    """model -> the manifest columns the baseline read (``inputs`` of each fit in the baselines stage's
    ``summary.json`` in ``predictions_dir``); empty when that stage has not run."""
    path = Path(predictions_dir) / SUMMARY_FILE
    if not path.is_file():
        return {}
    fits = json.loads(path.read_text(encoding="utf-8")).get("models", {})
    return {str(m): list(fit.get("inputs", [])) for m, fit in fits.items()}


def best_by_validation(fits: Mapping[str, BaselineFit]) -> str:
    """The model with the highest validation AUC (first listed on a tie) among those that model the lesion
    (not :data:`REFERENCE_ONLY`); a reference-only one only when nothing else was fitted."""
    if not fits:
        raise BaselineError("no baseline could be fitted")
    candidates = [name for name in fits if name not in REFERENCE_ONLY] or list(fits)
    return max(candidates, key=lambda name: fits[name].val_auc)


__all__ = [
    "BASELINES", "C_GRID", "IMAGE_FEATURES", "SUMMARY_FILE", "BaselineError", "BaselineFit", "ConditionEncoder",
    "MissingMaskError", "REFERENCE_ONLY", "best_by_validation", "birads_ordinal", "fit_baseline", "image_feature_table", "lesion_features",
    "read_baseline_inputs", "read_not_applicable", "require_masks", "run_baselines",
]
