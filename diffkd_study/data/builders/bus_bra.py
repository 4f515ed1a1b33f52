"""BUS-BRA (Gomez-Flores et al., Med Phys 51(4):3110, 2024, doi:10.1002/mp.16812), breast ultrasound, Brazil.

Official layout (Zenodo release)::

    bus_data.csv        ID, Case, Histology, Pathology, BIRADS, Device, Width, Height, Side, BBOX
    5-fold-cv.csv       ID, Pathology, kFold, valid_1..valid_5      (kFold = the image's test fold)
    10-fold-cv.csv      ID, Pathology, kFold, valid_1..valid_10
    Images/<ID>.png                 e.g. Images/bus_0001-l.png
    Masks/mask_<NNNN-s>.png         e.g. Masks/mask_0001-l.png (ID with ``bus_`` replaced by ``mask_``)

Manifest decisions
------------------
* ``image_id`` = ID, ``patient_id`` = Case (several images per patient), label = Pathology
  (benign / malignant, positive class malignant, task binary).
* ``center`` = the Device string: one hospital (INCA, Rio de Janeiro) with four scanners, so the scanner
  is the center key for leave-one-center-out experiments; ``site`` = ``INCA`` is a metadata column.
* Conditions: ``cond_birads`` (2, 3, 4, 5), ``cond_device`` (the four scanners), ``cond_side``
  (the official Side field: left, right, single; the ``-l``/``-r`` images of one case show the same
  lesion, so this is the image's position in the case, not necessarily the breast side). ``histology`` is metadata.
* Boxes: the official BBOX is ``[x + 1, y + 1, w - 1, h - 1]`` of the mask's 0-based inclusive bounding
  box (a 1-based corner, and an extent of ``max - min`` instead of ``max - min + 1``; checked on 1,874 of
  1,875 rows). The ``boxes`` column is therefore computed from the mask itself as a 0-based
  ``[x, y, w, h]`` with ``w = xmax - xmin + 1``, in the pixel frame of the actual file; the official
  string is kept verbatim in ``bbox_official``.
* Official folds: ``fold_5`` and ``fold_10`` are the ``kFold`` columns (test fold, 1-based,
  patient-level). The inner ``valid_k`` train/validation flags are not carried.
* ``width_official`` / ``height_official`` carry the table's Width/Height; a few rows differ from the
  image file (4 in the 2024 release); this is reported with a warning, not an error.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from diffkd_study.data.builders import BUILDERS, BuildError, flag_near_duplicates_in_build, read_release_csv
from diffkd_study.data.schema import ConditionSpec, Manifest, ManifestSchema, boxes_to_json

DATASET = "bus-bra"
SITE = "INCA"
LABELS = ("benign", "malignant")
BIRADS_LEVELS = ("2", "3", "4", "5")
DEVICES = (
    "GE Logiq 5 @10-12MHz",
    "GE Logiq 7 @10-14MHz",
    "Toshiba Aplio 300 @12-14 MHz",
    "U-Systems @10-14MHz",
)
SIDES = ("left", "right", "single")
TABLE_COLUMNS = ("ID", "Case", "Histology", "Pathology", "BIRADS", "Device", "Width", "Height", "Side", "BBOX")
FOLD_FILES = {"fold_5": "5-fold-cv.csv", "fold_10": "10-fold-cv.csv"}

SOURCE = (
    "BUS-BRA breast ultrasound dataset (INCA, Rio de Janeiro, Brazil; 4 scanners), Zenodo release. "
    "Licence: free use with citation (LICENSE.txt). Cite: Gomez-Flores W, Gregorio-Calas MJ, "
    "Coelho de Albuquerque Pereira W. BUS-BRA: A breast ultrasound dataset for assessing computer-aided "
    "diagnosis systems. Med Phys 51(4):3110-3123, 2024. doi:10.1002/mp.16812"
)


def mask_box(path: Path) -> tuple[tuple[int, int] | None, list[int] | None]:
    """(width, height) of a mask and the 0-based ``[x, y, w, h]`` box of its foreground (None if empty)."""
    try:
        with Image.open(path) as img:
            arr = np.asarray(img)
            size = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BuildError(f"{path}: mask does not decode ({type(err).__name__}: {err})") from None
    if arr.ndim == 3:
        arr = arr.any(axis=2)
    ys, xs = np.nonzero(arr)
    if len(xs) == 0:
        return size, None
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    return size, [x0, y0, x1 - x0 + 1, y1 - y0 + 1]


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file; ``BuildError`` naming the file when it does not decode."""
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BuildError(f"{path}: image does not decode ({type(err).__name__}: {err})") from None


def _mask_name(image_id: str) -> str:
    return "mask_" + image_id.removeprefix("bus_") + ".png"


def _check_levels(table: pd.DataFrame, column: str, levels: tuple[str, ...], path: Path) -> None:
    for index, value in table[column].items():
        if pd.isna(value) or value not in levels:
            raise BuildError(
                f"{path}: line {int(index) + 2} (ID {table.at[index, 'ID']}): {column}={value!r} "
                f"is not one of {list(levels)}"
            )


@BUILDERS.register(DATASET)
def build(root: Path) -> Manifest:
    """The manifest of the BUS-BRA release in ``root``: its official layout is in the module
    docstring, the builder contract in :mod:`diffkd_study.data.builders`."""
    root = Path(root)
    table_path = root / "bus_data.csv"
    table = read_release_csv(table_path, TABLE_COLUMNS, release=DATASET)
    for column in TABLE_COLUMNS:
        table[column] = table[column].str.strip()
    for column in ("ID", "Case", "Pathology"):
        empty = table.index[table[column].isna()]
        if len(empty):
            raise BuildError(f"{table_path}: line {int(empty[0]) + 2}: column {column!r} is empty")
    duplicated = table.index[table["ID"].duplicated()]
    if len(duplicated):
        raise BuildError(f"{table_path}: line {int(duplicated[0]) + 2}: duplicate ID {table.at[duplicated[0], 'ID']}")
    table["Pathology"] = table["Pathology"].str.lower()
    table["Side"] = table["Side"].str.lower()
    _check_levels(table, "Pathology", LABELS, table_path)
    _check_levels(table, "BIRADS", BIRADS_LEVELS, table_path)
    _check_levels(table, "Device", DEVICES, table_path)
    _check_levels(table, "Side", SIDES, table_path)

    folds: dict[str, dict[str, str]] = {}
    ids = set(table["ID"])
    for column, name in FOLD_FILES.items():
        fold_path = root / name
        fold = read_release_csv(fold_path, ("ID", "kFold"), release=DATASET)
        fold["ID"] = fold["ID"].str.strip()
        if set(fold["ID"]) != ids:
            extra = sorted(set(fold["ID"]) - ids)[:5]
            absent = sorted(ids - set(fold["ID"]))[:5]
            raise BuildError(f"{fold_path}: IDs differ from bus_data.csv (extra {extra}, absent {absent})")
        bad = fold.index[~fold["kFold"].fillna("").str.fullmatch(r"\d+")]
        if len(bad):
            raise BuildError(f"{fold_path}: line {int(bad[0]) + 2}: kFold={fold.at[bad[0], 'kFold']!r} is not a fold number")
        folds[column] = dict(zip(fold["ID"], fold["kFold"].astype(int).astype(str), strict=True))

    rows = []
    mismatched: list[str] = []
    no_box: list[str] = []
    for index, rec in table.iterrows():
        image_id = rec["ID"]
        line = f"{table_path}: line {int(index) + 2} (ID {image_id})"
        image_rel = f"Images/{image_id}.png"
        mask_rel = f"Masks/{_mask_name(image_id)}"
        if not (root / image_rel).is_file():
            raise BuildError(f"{line}: image {root / image_rel} not found")
        if not (root / mask_rel).is_file():
            raise BuildError(f"{line}: mask {root / mask_rel} not found")
        size = image_size(root / image_rel)
        _, box = mask_box(root / mask_rel)
        if box is None:
            no_box.append(image_id)
        if (str(size[0]), str(size[1])) != (rec["Width"], rec["Height"]):
            mismatched.append(f"{image_id} (table {rec['Width']}x{rec['Height']}, file {size[0]}x{size[1]})")
        rows.append({
            "image_id": image_id,
            "patient_id": str(int(rec["Case"])) if rec["Case"].isdigit() else rec["Case"],
            "dataset": DATASET,
            "center": rec["Device"],
            "image_path": image_rel,
            "mask_path": mask_rel,
            "label": rec["Pathology"],
            "boxes": boxes_to_json([box]) if box is not None else np.nan,
            "cond_birads": rec["BIRADS"],
            "cond_device": rec["Device"],
            "cond_side": rec["Side"],
            "site": SITE,
            "histology": rec["Histology"],
            "fold_5": folds["fold_5"][image_id],
            "fold_10": folds["fold_10"][image_id],
            "bbox_official": json.dumps(json.loads(rec["BBOX"]), separators=(",", ":"))
            if isinstance(rec["BBOX"], str) and rec["BBOX"].startswith("[") else rec["BBOX"],
            "width_official": rec["Width"],
            "height_official": rec["Height"],
        })
    if mismatched:
        warnings.warn(
            f"{table_path}: {len(mismatched)} row(s) list a Width/Height that differs from the image file "
            f"(the file is used): {', '.join(mismatched)}",
            stacklevel=2,
        )
    if no_box:
        warnings.warn(f"{DATASET}: {len(no_box)} mask(s) are empty, no box: {', '.join(no_box[:10])}", stacklevel=2)

    df = pd.DataFrame(rows).sort_values("image_id", kind="mergesort").reset_index(drop=True)
    schema = ManifestSchema(
        dataset=DATASET,
        task="binary",
        label_set=LABELS,
        positive_class="malignant",
        conditions={
            "cond_birads": ConditionSpec("categorical", levels=BIRADS_LEVELS, description="BI-RADS category"),
            "cond_device": ConditionSpec("categorical", levels=DEVICES, description="ultrasound scanner (= center)"),
            "cond_side": ConditionSpec(
                "categorical", levels=SIDES,
                description="official Side field: left/right image of a two-image case, or single",
            ),
        },
        source=SOURCE,
    )
    return flag_near_duplicates_in_build(Manifest(df=df, schema=schema), root)
