"""Manifest builders for public releases, registered by their CLI name.

Each builder is ``build(root: Path) -> Manifest``: ``root`` is the release's own folder in its official
layout, and the manifest's ``image_path``/``mask_path`` are relative to it. A builder never writes into
the release and raises ``BuildError`` naming the file (and row) when the release is incomplete.

Near-duplicates across patients (:mod:`diffkd_study.data.duplicates`) are flagged by the builders of
HAM10000, BUSI, BUS-BRA and BrEaST-Lesions-USG through :func:`flag_near_duplicates_in_build`: a pair
adds the column ``duplicate_group`` and a warning listing the pairs (none in the BUS-BRA and BrEaST
releases, so their manifests have no such column). The mini-MIAS and BCS-DBT builders do not call it:
mammograms of different women correlate up to r = 0.989 at 32 x 32 pixels, too close to the 0.99
threshold for the rule to be trusted there, and the BCS-DBT slices are cross-validated by patient.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pandas as pd

from diffkd_study.data.duplicates import flag_near_duplicates
from diffkd_study.data.schema import Manifest
from diffkd_study.registry import Registry

BUILDERS: Registry = Registry("dataset builder")

_MODULES = ("bus_bra", "breast_lesions_usg", "busi", "ham10000", "mini_mias", "bcs_dbt_slices")


class BuildError(ValueError):
    """The release folder does not have the expected official layout or content."""


def read_release_csv(
    path: Path, columns: tuple[str, ...], *, release: str, empty_as_missing: bool = True
) -> pd.DataFrame:
    """Read an official CSV as text, columns stripped; ``BuildError`` naming the file when it is absent,
    unreadable, empty or lacks one of ``columns``. Empty cells are NaN unless ``empty_as_missing`` is
    False (then they stay ``""`` for builders that map them explicitly)."""
    if not path.is_file():
        raise BuildError(f"{path}: file not found (expected the official {release} layout)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""] if empty_as_missing else None)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise BuildError(f"{path}: not a readable CSV: {err}") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise BuildError(f"{path}: column(s) {missing} not found; columns are {list(df.columns)}")
    if df.empty:
        raise BuildError(f"{path}: no rows")
    return df


def flag_near_duplicates_in_build(manifest: Manifest, root: Path) -> Manifest:
    """``manifest`` with its near-duplicate images across patients labelled in ``duplicate_group`` (and listed
    in a warning) by :func:`diffkd_study.data.duplicates.flag_near_duplicates`; ``BuildError`` naming an image
    that does not decode."""
    try:
        return flag_near_duplicates(manifest, root)[0]
    except ValueError as err:
        raise BuildError(str(err)) from None


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")


def build_manifest(name: str, root: str | Path) -> Manifest:
    """Build the manifest of release ``name`` from its folder ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise BuildError(f"{root}: release folder not found (expected the official {name} layout)")
    return BUILDERS.get(name)(root)


_load_all()
