"""BrEaST-Lesions-USG (Pawlowska et al., Sci Data 11:148, 2024; TCIA), breast ultrasound, Poland.

Official layout (TCIA download)::

    BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx     (first sheet: one row per case)
    BrEaST-Lesions_USG-images_and_masks/caseNNN.png
    BrEaST-Lesions_USG-images_and_masks/caseNNN_tumor.png  (lesion mask; absent for the 4 normal cases)
    BrEaST-Lesions_USG-images_and_masks/caseNNN_otherK.png (non-lesion structures: ignored)

``root`` may also be the images folder's parent with the images directly in it (``root/caseNNN.png``).
The clinical table is the newest ``BrEaST-Lesions-USG-clinical-data*.xlsx`` in ``root``.

Manifest decisions
------------------
* One image per patient: ``image_id`` = ``patient_id`` = the image stem (``case001``). Single center:
  ``center`` = ``dataset`` = ``breast-lesions-usg``.
* label = Classification (benign / malignant / normal; positive class malignant). The task is
  ``binary`` (malignant vs not), like BUS-BRA and BUSI, so the breast-ultrasound manifests combine;
  ``normal`` is a declared label that a study excludes (``--exclude-labels normal``) or counts as negative. The 4
  normal images are kept with label ``normal`` and no ``mask_path`` (the release has no tumor mask
  for them). ``boxes`` is the bounding box of the tumor mask (0-based ``[x, y, w, h]``).
* "not available", "not applicable" and blank cells are missing (empty), never 0.
* Conditions (official text as levels unless said): ``cond_age`` (numeric, years),
  ``cond_tissue_composition``, ``cond_shape``, ``cond_margin``, ``cond_echogenicity``,
  ``cond_posterior_features``, ``cond_halo``, ``cond_calcifications``, ``cond_skin_thickening``,
  ``cond_birads`` (1, 2, 3, 4a, 4b, 4c, 5; 1 only on the normal images), ``cond_verification``
  (``biopsy`` / ``follow-up``).
* Multi-valued fields (values joined by ``&`` in the release):

  - Margin: ``circumscribed`` or ``not circumscribed - A&B...``. ``cond_margin`` keeps the single most
    suspicious descriptor by the order spiculated > angular > microlobulated > indistinct >
    circumscribed (BI-RADS: a spiculated margin carries the highest positive predictive value); the
    raw text is kept in ``margin_raw``.
  - Tissue composition: ``lactating`` is a state, not a composition. ``cond_tissue_composition`` is the
    composition part (missing when only ``lactating`` is given); ``lactating`` (0/1) and
    ``tissue_composition_raw`` are metadata columns.
  - Signs, symptoms, interpretation and diagnosis (histology) are free multi-valued text and are kept
    verbatim as metadata (``signs``, ``symptoms``, ``interpretation``, ``histology``), not conditions.
* ``pixel_size_cm`` (official Pixel_size) is metadata.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from diffkd_study.data.builders import BUILDERS, BuildError, flag_near_duplicates_in_build
from diffkd_study.data.builders.bus_bra import mask_box
from diffkd_study.data.schema import ConditionSpec, Manifest, ManifestSchema, boxes_to_json

DATASET = "breast-lesions-usg"
IMAGE_DIR = "BrEaST-Lesions_USG-images_and_masks"
TABLE_GLOB = "BrEaST-Lesions-USG-clinical-data*.xlsx"
LABELS = ("benign", "malignant", "normal")
MISSING_TEXT = {"not available", "not applicable", "", "nan", "n/a", "na"}

TABLE_COLUMNS = (
    "CaseID", "Image_filename", "Mask_tumor_filename", "Pixel_size", "Age", "Tissue_composition", "Signs",
    "Symptoms", "Shape", "Margin", "Echogenicity", "Posterior_features", "Halo", "Calcifications",
    "Skin_thickening", "Interpretation", "BIRADS", "Verification", "Diagnosis", "Classification",
)

COMPOSITIONS = (
    "homogeneous: fat",
    "homogeneous: fibroglandular",
    "heterogeneous: predominantly fat",
    "heterogeneous: predominantly fibroglandular",
)
#: margin descriptors from the least to the most suspicious
MARGIN_ORDER = ("circumscribed", "indistinct", "microlobulated", "angular", "spiculated")
VERIFICATION = {"confirmed by biopsy": "biopsy", "confirmed by follow-up care": "follow-up"}

SIMPLE_CONDITIONS: dict[str, tuple[str, tuple[str, ...], str]] = {
    # cond column: (xlsx column, levels, description)
    "cond_shape": ("Shape", ("oval", "round", "irregular"), "BI-RADS shape"),
    "cond_echogenicity": (
        "Echogenicity",
        ("anechoic", "hyperechoic", "isoechoic", "hypoechoic", "heterogeneous", "complex cystic/solid"),
        "BI-RADS echo pattern",
    ),
    "cond_posterior_features": (
        "Posterior_features", ("no", "enhancement", "shadowing", "combined"), "BI-RADS posterior features"
    ),
    "cond_halo": ("Halo", ("no", "yes"), "echogenic halo"),
    "cond_calcifications": (
        "Calcifications", ("no", "in a mass", "intraductal", "indefinable"), "calcifications"
    ),
    "cond_skin_thickening": ("Skin_thickening", ("no", "yes"), "skin thickening"),
}
BIRADS_LEVELS = ("1", "2", "3", "4a", "4b", "4c", "5")

SOURCE = (
    "BrEaST-Lesions-USG (Poland), The Cancer Imaging Archive, 2024, clinical table "
    "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx. Licence: CC BY 4.0. Cite: Pawlowska A, et al. "
    "Curated benchmark dataset for ultrasound based breast lesion analysis. Sci Data 11:148, 2024 "
    "(and the TCIA collection BrEaST-Lesions-USG)."
)


class _Row:
    """Error context: the xlsx file and the spreadsheet row of one case."""

    def __init__(self, path: Path, index: int, case: Any) -> None:
        self.where = f"{path}: row {index + 2} (CaseID {case})"

    def fail(self, message: str) -> BuildError:
        return BuildError(f"{self.where}: {message}")


def _text(value: Any) -> str | None:
    """Cell -> stripped text, or None for a missing / not-available / not-applicable cell."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = re.sub(r"\s+", " ", str(value)).strip()
    return None if text.lower() in MISSING_TEXT else text


def _level(value: Any, levels: tuple[str, ...], column: str, row: _Row) -> str | None:
    text = _text(value)
    if text is None:
        return None
    if text.lower() not in levels:
        raise row.fail(f"{column}={text!r} is not one of {list(levels)}")
    return text.lower()


def _margin(value: Any, row: _Row) -> str | None:
    text = _text(value)
    if text is None:
        return None
    low = text.lower()
    if low == "circumscribed":
        return "circumscribed"
    parts = low.removeprefix("not circumscribed").strip().lstrip("-").strip()
    items = [p.strip() for p in parts.split("&") if p.strip()]
    if not items or any(p not in MARGIN_ORDER[1:] for p in items):
        raise row.fail(f"Margin={text!r}: expected 'circumscribed' or 'not circumscribed - A&B' with "
                       f"A, B in {list(MARGIN_ORDER[1:])}")
    return max(items, key=MARGIN_ORDER.index)


def _composition(value: Any, row: _Row) -> tuple[str | None, int | None]:
    text = _text(value)
    if text is None:
        return None, None
    items = [p.strip().lower() for p in text.split("&") if p.strip()]
    lactating = int("lactating" in items)
    rest = [p for p in items if p != "lactating"]
    if len(rest) > 1 or any(p not in COMPOSITIONS for p in rest):
        raise row.fail(f"Tissue_composition={text!r}: expected one of {list(COMPOSITIONS)} (optionally with "
                       "'lactating&')")
    return (rest[0] if rest else None), lactating


def _age(value: Any, row: _Row) -> float:
    text = _text(value)
    if text is None:
        return float("nan")
    try:
        age = float(text)
    except ValueError:
        raise row.fail(f"Age={text!r} is not a number") from None
    if not 0 <= age <= 120:
        raise row.fail(f"Age={text!r} is outside [0, 120]")
    return age


def _find_table(root: Path) -> Path:
    tables = sorted(p for p in root.glob(TABLE_GLOB) if not p.name.startswith("~$"))
    if not tables:
        raise BuildError(f"{root / 'BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx'}: clinical table not "
                         f"found (no {TABLE_GLOB} in {root})")
    return tables[-1]


def _read_table(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_excel(path, sheet_name=0, dtype=object)
    except Exception as err:  # openpyxl raises many exception types for a damaged file
        raise BuildError(f"{path}: not a readable xlsx: {type(err).__name__}: {err}") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise BuildError(f"{path}: missing column(s) {missing}; columns are {list(table.columns)}")
    return table.reset_index(drop=True)


@BUILDERS.register(DATASET)
def build(root: Path) -> Manifest:
    """The manifest of the BrEaST-Lesions-USG release in ``root``: its official layout is in the module
    docstring, the builder contract in :mod:`diffkd_study.data.builders`."""
    root = Path(root)
    table_path = _find_table(root)
    table = _read_table(table_path)
    image_dir = IMAGE_DIR if (root / IMAGE_DIR).is_dir() else ""

    def rel(name: str) -> str:
        return f"{image_dir}/{name}" if image_dir else name

    rows = []
    seen: set[str] = set()
    for index, rec in table.iterrows():
        row = _Row(table_path, int(index), rec["CaseID"])
        image_name = _text(rec["Image_filename"])
        if image_name is None:
            raise row.fail("Image_filename is empty")
        image_id = Path(image_name).stem
        if image_id in seen:
            raise row.fail(f"duplicate Image_filename {image_name!r}")
        seen.add(image_id)
        label = _text(rec["Classification"])
        if label is None or label.lower() not in LABELS:
            raise row.fail(f"Classification={label!r} is not one of {list(LABELS)}")
        label = label.lower()
        image_rel = rel(image_name)
        if not (root / image_rel).is_file():
            raise row.fail(f"image {root / image_rel} not found")

        mask_name = _text(rec["Mask_tumor_filename"])
        mask_rel: str | float = np.nan
        boxes: str | float = np.nan
        if mask_name is None and label != "normal":
            raise row.fail(f"label {label!r} but Mask_tumor_filename is empty")
        if mask_name is not None:
            if "&" in mask_name:
                raise row.fail(f"Mask_tumor_filename={mask_name!r}: expected one mask")
            mask_rel = rel(mask_name)
            if not (root / mask_rel).is_file():
                raise row.fail(f"tumor mask {root / mask_rel} not found")
            _, box = mask_box(root / mask_rel)
            if box is not None:
                boxes = boxes_to_json([box])

        composition, lactating = _composition(rec["Tissue_composition"], row)
        birads = _text(rec["BIRADS"])
        if birads is not None:
            birads = birads.lower()
            if birads not in BIRADS_LEVELS:
                raise row.fail(f"BIRADS={birads!r} is not one of {list(BIRADS_LEVELS)}")
        verification = _text(rec["Verification"])
        if verification is not None:
            if verification.lower() not in VERIFICATION:
                raise row.fail(f"Verification={verification!r} is not one of {list(VERIFICATION)}")
            verification = VERIFICATION[verification.lower()]
        pixel_size = _text(rec["Pixel_size"])

        out: dict[str, Any] = {
            "image_id": image_id,
            "patient_id": image_id,
            "dataset": DATASET,
            "center": DATASET,
            "image_path": image_rel,
            "mask_path": mask_rel,
            "label": label,
            "boxes": boxes,
            "cond_age": _age(rec["Age"], row),
            "cond_tissue_composition": composition,
            "cond_margin": _margin(rec["Margin"], row),
            "cond_birads": birads,
            "cond_verification": verification,
        }
        for column, (source, levels, _) in SIMPLE_CONDITIONS.items():
            out[column] = _level(rec[source], levels, source, row)
        out.update({
            "case_id": _text(rec["CaseID"]),
            "lactating": lactating,
            "tissue_composition_raw": _text(rec["Tissue_composition"]),
            "margin_raw": _text(rec["Margin"]),
            "signs": _text(rec["Signs"]),
            "symptoms": _text(rec["Symptoms"]),
            "interpretation": _text(rec["Interpretation"]),
            "histology": _text(rec["Diagnosis"]),
            "pixel_size_cm": pixel_size,
        })
        rows.append(out)

    if not rows:
        raise BuildError(f"{table_path}: the clinical table has no rows")
    df = pd.DataFrame(rows)
    df["lactating"] = df["lactating"].astype("Int64")
    df = df.sort_values("image_id", kind="mergesort").reset_index(drop=True)
    ordered = [
        "cond_age", "cond_tissue_composition", "cond_shape", "cond_margin", "cond_echogenicity", "cond_posterior_features", "cond_halo",
        "cond_calcifications", "cond_skin_thickening", "cond_birads", "cond_verification",
    ]
    front = ["image_id", "patient_id", "dataset", "center", "image_path", "mask_path", "label", "boxes"]
    df = df[front + ordered + [c for c in df.columns if c not in front and c not in ordered]]

    conditions: dict[str, ConditionSpec] = {
        "cond_age": ConditionSpec("numeric", unit="years", min=0, max=120, description="age of the patient"),
        "cond_tissue_composition": ConditionSpec(
            "categorical", levels=COMPOSITIONS, description="breast tissue composition (without 'lactating')"
        ),
        "cond_shape": ConditionSpec("categorical", levels=SIMPLE_CONDITIONS["cond_shape"][1],
                                    description=SIMPLE_CONDITIONS["cond_shape"][2]),
        "cond_margin": ConditionSpec(
            "categorical", levels=MARGIN_ORDER,
            description="BI-RADS margin, most suspicious descriptor (spiculated > angular > microlobulated > "
                        "indistinct > circumscribed)",
        ),
    }
    for column in ("cond_echogenicity", "cond_posterior_features", "cond_halo", "cond_calcifications",
                   "cond_skin_thickening"):
        _, levels, description = SIMPLE_CONDITIONS[column]
        conditions[column] = ConditionSpec("categorical", levels=levels, description=description)
    conditions["cond_birads"] = ConditionSpec(
        "categorical", levels=BIRADS_LEVELS, description="BI-RADS category (1 = the normal images)"
    )
    conditions["cond_verification"] = ConditionSpec(
        "categorical", levels=tuple(VERIFICATION.values()), description="how the label was confirmed"
    )
    schema = ManifestSchema(
        dataset=DATASET,
        task="binary",
        label_set=LABELS,
        positive_class="malignant",
        conditions=conditions,
        source=SOURCE + f" Built from {table_path.name}.",
    )
    return flag_near_duplicates_in_build(Manifest(df=df, schema=schema), root)
