"""Patient-grouped K-fold cross-validation of the internal data, and the split of each fold's sub-study.

Folds (:func:`assign_folds`)
    Every internal patient gets one test fold in 1..K. Either an official fold column of the manifest
    (BUS-BRA's ``fold_5``: the 1-based test fold of each image, Gómez-Flores et al. 2024), or folds made
    here: scikit-learn's ``StratifiedGroupKFold`` (Pedregosa et al. 2011), shuffled with the seed, groups =
    patients, strata = labels, applied to the rows sorted by patient id so that the folds are a pure
    function of the manifest's content and the seed (not of its row order). The unit kept together is the
    splitter's (:func:`diffkd_study.data.splits.split_groups`: a patient, joined with the patients whose
    images are near-duplicates of its own); official folds that put one such unit into two folds move the
    whole unit to the fold of its key patient (logged). Both are checked (:func:`check_folds`): a unit in
    two folds, an internal image without a fold or a fold without any image is an error.

A fold's study (:func:`fold_split`)
    Fold k's internal patients are its ``test`` split; of the remaining internal patients a share
    ``val_frac / (1 - 1/K)`` is validation (so that validation is ``val_frac`` of all internal patients,
    as in a single split) and the rest training, by the same grouped stratified assignment as a single
    split (:func:`diffkd_study.data.splits.grouped_stratified_split`); external rows stay ``external``.

The cross-validation study's own manifest (``runs/NAME/data/study.csv``) holds every image once, its
internal rows with split ``test`` (each is a test image of exactly one fold) and the fold in
:data:`FOLD_COLUMN`; fold k's sub-study lives in ``runs/NAME/fold-k/`` (:func:`fold_folder`).
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd

from diffkd_study.data.schema import Manifest
from diffkd_study.data.splits import grouped_stratified_split, split_groups

logger = logging.getLogger(__name__)

__all__ = ["FOLD_COLUMN", "assign_folds", "check_folds", "fold_folder", "fold_number", "fold_split",
           "fold_val_fraction", "official_fold_column"]

#: The column of the cross-validation manifest that holds each internal image's test fold (1..K).
FOLD_COLUMN = "cv_fold"
EXTERNAL = "external"


def fold_folder(fold: int) -> str:
    """The folder of fold ``fold``'s sub-study under the study's run and report folders: ``fold-<k>``."""
    return f"fold-{int(fold)}"


def fold_val_fraction(val_frac: float, folds: int) -> float:
    """The share of a fold's non-test internal patients that is validation: ``val_frac / (1 - 1/K)``, so that
    validation is ``val_frac`` of all internal patients, as in a single split. Raises ``ValueError`` when that
    leaves no training patients."""
    share = val_frac / (1.0 - 1.0 / folds)
    if share >= 1.0:
        raise ValueError(f"val_frac {val_frac:g} with {folds} folds leaves no training data: the validation share "
                         f"of the non-test patients, val_frac / (1 - 1/K) = {share:.3g}, must be < 1")
    return share


def official_fold_column(df: pd.DataFrame, folds: int, column: str | None) -> str | None:
    """The manifest column that holds the official folds: ``column`` when given (it must exist), else
    ``fold_<K>`` when the manifest has it and every internal row has a value there, else None (folds are made)."""
    internal = df["split"] != EXTERNAL if "split" in df.columns else pd.Series(True, index=df.index)
    if column is not None:
        if column not in df.columns:
            raise ValueError(f"cv.column {column!r} is not a column of the manifest (columns: {list(df.columns)})")
        return column
    auto = f"fold_{folds}"
    if auto in df.columns:
        if df.loc[internal, auto].notna().all():
            return auto
        logger.info("column %s has empty cells for internal images: folds are made instead", auto)
    return None


def _official_folds(df: pd.DataFrame, column: str, folds: int, group_col: str) -> pd.Series:
    values = df[column]
    text = values.astype(str).str.strip().str.replace(r"\.0$", "", regex=True)
    bad = df.index[values.isna() | ~text.str.fullmatch(r"\d+")]
    if len(bad):
        raise ValueError(f"fold column {column!r}: image {df.at[bad[0], 'image_id']!r} has {df.at[bad[0], column]!r}, "
                         "not a fold number; every internal image needs one")
    numbers = text.astype(int)
    outside = sorted(set(numbers) - set(range(1, folds + 1)))
    if outside:
        raise ValueError(f"fold column {column!r} has fold number(s) {outside} outside 1..{folds} (cv.folds = {folds})")
    per_patient = numbers.groupby(df[group_col].astype(str)).nunique()
    if (per_patient > 1).any():
        patient = per_patient.index[per_patient > 1][0]
        raise ValueError(f"fold column {column!r} puts {group_col} {patient!r} in more than one fold")
    units = pd.Series(split_groups(df, group_col), index=df.index).astype(str)
    key_fold = numbers[df[group_col].astype(str) == units].groupby(units).first()
    moved = units[numbers != units.map(key_fold)]
    if len(moved):
        logger.warning("official folds split %d near-duplicate unit(s) (e.g. %s): each moved whole to its key "
                       "patient's fold", moved.nunique(), moved.iloc[0])
    return units.map(key_fold).astype(int)


def _made_folds(df: pd.DataFrame, folds: int, seed: int, group_col: str, stratify_col: str) -> pd.Series:
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = df[group_col].nunique()  # patients (near-duplicate units may join some)
    if n_groups < folds:
        raise ValueError(f"{folds} folds need at least {folds} internal patients; the data have {n_groups}")
    units = pd.Series(split_groups(df, group_col), index=df.index).astype(str)
    order = units.sort_values(kind="stable").index
    groups = units.loc[order].to_numpy()
    labels = df.loc[order, stratify_col].astype(str).to_numpy()
    out = pd.Series(0, index=df.index, dtype=int)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(order)), labels, groups), start=1):
        out.loc[order[test]] = k
    return out


def check_folds(df: pd.DataFrame, folds: int, group_col: str = "patient_id") -> None:
    """Check the folds of the internal rows of ``df`` (:data:`FOLD_COLUMN`): every internal image has a fold in
    1..K, no patient (nor near-duplicate unit, :func:`~diffkd_study.data.splits.split_groups`) is in two folds,
    so no patient is tested twice or trained on in its own test fold, and every fold holds at least one image.
    Raises ``ValueError`` naming the first problem."""
    internal = df.loc[df["split"] != EXTERNAL]
    values = pd.to_numeric(internal[FOLD_COLUMN], errors="coerce")
    if values.isna().any() or not values.isin(range(1, folds + 1)).all():
        raise ValueError(f"every internal image needs a fold in 1..{folds}; found {sorted(set(internal[FOLD_COLUMN]), key=str)}")
    units = pd.Series(split_groups(internal, group_col), index=internal.index).astype(str)
    per_unit = values.groupby(units).nunique()
    split = per_unit[per_unit > 1]
    if len(split):
        raise ValueError(f"{len(split)} patient(s) are in more than one fold, e.g. {group_col} {split.index[0]!r}: a "
                         "patient must be tested in exactly one fold")
    empty = sorted(set(range(1, folds + 1)) - set(values.astype(int)))
    if empty:
        raise ValueError(f"fold(s) {empty} hold no internal image; use fewer folds")
    if (df.loc[df["split"] == EXTERNAL, FOLD_COLUMN].notna()).any():
        raise ValueError("external images must not have a fold: they are tested by every fold's models")


def assign_folds(manifest: Manifest, folds: int, *, seed: int, column: str | None = None,
                 group_col: str = "patient_id", stratify_col: str = "label") -> Manifest:
    """The cross-validation manifest: :data:`FOLD_COLUMN` holds each internal image's test fold (1..K), internal
    rows get split ``test`` (each is tested in exactly one fold), external rows keep ``external`` and no fold.

    ``manifest`` has a ``split`` column (``external`` marks the external rows; any other value is internal).
    Folds come from the official column (:func:`official_fold_column`) or are made (the module docstring);
    they are checked with :func:`check_folds` before the manifest is returned.
    """
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    df = manifest.df.copy()
    internal = df["split"] != EXTERNAL
    if not internal.any():
        raise ValueError("no internal images to cross-validate: every row is external")
    source = official_fold_column(df, folds, column)
    part = df.loc[internal]
    values = (_official_folds(part, source, folds, group_col) if source is not None
              else _made_folds(part, folds, seed, group_col, stratify_col))
    df[FOLD_COLUMN] = pd.Series(pd.NA, index=df.index, dtype="Int64")
    df.loc[internal, FOLD_COLUMN] = values.astype(int).to_numpy()
    df.loc[internal, "split"] = "test"
    check_folds(df, folds, group_col)
    logger.info("folds from %s: %s", source or "StratifiedGroupKFold",
                df.loc[internal, FOLD_COLUMN].value_counts().sort_index().to_dict())
    return Manifest(df, manifest.schema, manifest.path)


def fold_split(manifest: Manifest, fold: int, folds: int, *, val_frac: float, seed: int,
               group_col: str = "patient_id", stratify_col: str = "label") -> Manifest:
    """Fold ``fold``'s study manifest from the cross-validation manifest (:func:`assign_folds`): the fold's
    internal images are ``test``, the other internal patients ``val`` (share :func:`fold_val_fraction`) or
    ``train`` (grouped, stratified, with ``seed``), external rows stay ``external``. Row order is kept."""
    if not 1 <= fold <= folds:
        raise ValueError(f"fold {fold} is not in 1..{folds}")
    df = manifest.df.reset_index(drop=True)
    check_folds(df, folds, group_col)
    internal = df["split"] != EXTERNAL
    number = pd.to_numeric(df[FOLD_COLUMN], errors="coerce")
    test = internal & (number == fold)
    rest = internal & ~test
    remaining = grouped_stratified_split(Manifest(df.loc[rest], manifest.schema), val_frac=fold_val_fraction(
        val_frac, folds), test_frac=0.0, seed=seed, group_col=group_col, stratify_col=stratify_col)
    split = df["split"].astype(object).copy()
    split[test] = "test"
    split[rest] = remaining.df["split"].to_numpy()
    out = df.assign(split=split)
    tested = set(out.loc[test, group_col].astype(str))
    assert tested.isdisjoint(out.loc[rest, group_col].astype(str)), "a test patient of the fold is also trained on"
    return Manifest(out, manifest.schema, manifest.path)


def fold_number(folder: str) -> int:
    """The fold number of a sub-study folder name (``fold-3`` -> 3); ``ValueError`` for another name."""
    match = re.fullmatch(r"fold-(\d+)", folder)
    if match is None:
        raise ValueError(f"{folder!r} is not a fold folder (fold-<k>)")
    return int(match.group(1))
