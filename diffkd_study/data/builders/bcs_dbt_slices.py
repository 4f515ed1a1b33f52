"""BCS-DBT annotated slices (digital breast tomosynthesis, Duke): the 2-D slice of each training box.

The TCIA release (Breast-Cancer-Screening-DBT, doi:10.7937/e4wt-cd02) holds DICOM volumes plus
``BCS-DBT boxes-train-v2.csv``. This builder reads the derived slice export used by the study::

    slices.csv        file, PatientID, StudyUID, View, Slice, VolumeSlices, Class, X, Y, Width, Height, ...
    slices/*.jpg      one 8-bit image per annotated slice (official reader's laterality flip and window)

where X, Y, Width, Height are already in pixels of the stored image (top-left origin).

Decisions
---------
* One row per annotated slice (PatientID, StudyUID, View, Slice) with all its boxes in the JSON ``boxes``
  list (sorted). The export writes one file per box, so a slice with two boxes has two pixel-identical
  files (DBT-P01826 lcc slice 29); the builder checks that they are identical, uses the first file name
  and lists the others in ``duplicate_files``. Otherwise each copy would show an unlabelled lesion.
  ``n_boxes`` counts the boxes of the row.
* ``label``: ``cancer`` -> ``malignant``, ``benign`` -> ``benign`` (malignant if any box on the slice is
  cancer). Task ``detection``, positive class ``malignant``. There are no negative slices.
* ``patient_id`` = PatientID; ``center`` = ``duke``; ``cond_view`` = View (lcc, lmlo, rcc, rmlo). The release
  numbers repeated acquisitions of a view (lmlo1, lcc2, rcc1, rmlo1; 5 of the 110 slices); ``cond_view``
  drops that number, the metadata column ``view`` keeps the release's value.
* Metadata columns: ``study_uid``, ``view``, ``slice``, ``volume_slices`` (and ``scale`` when given).
* ``image_id`` is the file stem; rows are sorted by ``image_id``.

Licence CC BY-NC 4.0 plus the TCIA data usage policy. Cite Buda M et al., A data set and deep learning
algorithm for the detection of masses and architectural distortions in digital breast tomosynthesis
images, JAMA Netw Open 4(8):e2119100 (2021), and the TCIA collection doi:10.7937/e4wt-cd02.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from diffkd_study.data.builders import BUILDERS, BuildError, read_release_csv
from diffkd_study.data.schema import ConditionSpec, Manifest, ManifestSchema, boxes_to_json

DATASET = "bcs-dbt-slices"
TABLE = "slices.csv"
COLUMNS: tuple[str, ...] = ("file", "PatientID", "StudyUID", "View", "Slice", "VolumeSlices", "Class",
                            "X", "Y", "Width", "Height")
CLASS_TO_LABEL = {"benign": "benign", "cancer": "malignant"}
VIEWS: tuple[str, ...] = ("lcc", "lmlo", "rcc", "rmlo")
LABELS: tuple[str, ...] = ("benign", "malignant")
_VIEW = re.compile(r"\d+$")  # repeated acquisitions are numbered: lmlo1, lcc2, rmlo1

SOURCE = (
    "Breast-Cancer-Screening-DBT (BCS-DBT), Duke University, The Cancer Imaging Archive, doi:10.7937/e4wt-cd02 "
    "(https://www.cancerimagingarchive.net/collection/breast-cancer-screening-dbt/). Licence CC BY-NC 4.0 and the "
    "TCIA data usage policy. Cite: Buda M et al., JAMA Netw Open 4(8):e2119100 (2021). Derived export: the "
    "annotated slice of each training box as 8-bit JPEG (slices.csv); boxes in stored-image pixels; "
    "Class benign -> benign, cancer -> malignant."
)

SCHEMA = ManifestSchema(
    dataset=DATASET,
    task="detection",
    label_set=LABELS,
    positive_class="malignant",
    conditions={"cond_view": ConditionSpec("categorical", levels=VIEWS, description="laterality and view (repeat number dropped)")},
    source=SOURCE,
)


def _check_same_pixels(root: Path, files: list[str], table_path: Path, lines: dict[str, int]) -> None:
    """The export writes one file per box; files of the same slice must hold the same pixels."""
    reference = None
    for file in files:
        try:
            with Image.open(root / file) as img:
                pixels = np.asarray(img)
        except (UnidentifiedImageError, OSError) as err:
            raise BuildError(f"{table_path}:{lines[file]}: image {root / file} does not decode ({err})") from None
        if reference is None:
            reference = pixels
        elif pixels.shape != reference.shape or not np.array_equal(pixels, reference):
            raise BuildError(f"{table_path}:{lines[file]}: {file} and {files[0]} (line {lines[files[0]]}) "
                             "are listed for the same patient/study/view/slice but hold different pixels")


def _number(value: str, what: str, where: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise BuildError(f"{where}: {what} {value!r} is not a number")
    return number


@BUILDERS.register(DATASET)
def build(root: Path) -> Manifest:
    """The manifest of the BCS-DBT slice export release in ``root``: its official layout is in the module
    docstring, the builder contract in :mod:`diffkd_study.data.builders`."""
    root = Path(root)
    table_path = root / TABLE
    table = read_release_csv(table_path, COLUMNS, release="BCS-DBT slice export", empty_as_missing=False)
    table = table.apply(lambda s: s.str.strip())
    has_scale = "scale" in table.columns

    slices: dict[tuple[str, ...], dict] = {}
    for i, rec in enumerate(table.to_dict("records")):
        where = f"{table_path}:{i + 2}"
        file = rec["file"]
        if not file:
            raise BuildError(f"{where}: empty file name")
        if rec["Class"].lower() not in CLASS_TO_LABEL:
            raise BuildError(f"{where} [{file}]: unknown Class {rec['Class']!r}; expected one of {list(CLASS_TO_LABEL)}")
        view = rec["View"].lower()
        if _VIEW.sub("", view) not in VIEWS:
            raise BuildError(f"{where} [{file}]: unknown View {rec['View']!r}; expected one of {list(VIEWS)}")
        if not rec["PatientID"]:
            raise BuildError(f"{where} [{file}]: empty PatientID")
        box = [_number(rec[c], c, f"{where} [{file}]") for c in ("X", "Y", "Width", "Height")]
        if box[2] <= 0 or box[3] <= 0:
            raise BuildError(f"{where} [{file}]: box {box} has a non-positive width or height")
        for column in ("Slice", "VolumeSlices"):
            _number(rec[column], column, f"{where} [{file}]")
        if not (root / file).is_file():
            raise BuildError(f"{where}: image {root / file} not found")
        key = (rec["PatientID"], rec["StudyUID"], view, rec["Slice"])
        entry = slices.setdefault(key, {"files": {}, "boxes": [], "classes": set(), "line": i + 2,
                                        "volume_slices": rec["VolumeSlices"],
                                        "scale": rec["scale"] if has_scale else None})
        if entry["volume_slices"] != rec["VolumeSlices"]:
            raise BuildError(f"{where} [{file}]: VolumeSlices {rec['VolumeSlices']} differs from line "
                             f"{entry['line']} ({entry['volume_slices']}) for the same slice")
        entry["files"].setdefault(file, i + 2)
        entry["boxes"].append(box)
        entry["classes"].add(rec["Class"].lower())

    rows = []
    for (patient, study, view, slice_), entry in slices.items():
        files = sorted(entry["files"])
        if len(files) > 1:
            _check_same_pixels(root, files, table_path, entry["files"])
        rows.append({
            "image_id": Path(files[0]).stem,
            "patient_id": patient,
            "dataset": DATASET,
            "center": "duke",
            "image_path": files[0],
            "label": "malignant" if "cancer" in entry["classes"] else "benign",
            "boxes": boxes_to_json(sorted(entry["boxes"])),
            "cond_view": _VIEW.sub("", view),
            "study_uid": study,
            "view": view,
            "slice": slice_,
            "volume_slices": entry["volume_slices"],
            **({"scale": entry["scale"]} if has_scale else {}),
            "n_boxes": str(len(entry["boxes"])),
            "duplicate_files": ";".join(files[1:]) or np.nan,
        })
    df = pd.DataFrame(rows)
    if df["image_id"].duplicated().any():
        dup = sorted(df.loc[df["image_id"].duplicated(), "image_id"])
        raise BuildError(f"{table_path}: image file stems are not unique: {dup[:5]}")
    df = df.sort_values("image_id", kind="stable").reset_index(drop=True)
    return Manifest(df=df, schema=SCHEMA)
