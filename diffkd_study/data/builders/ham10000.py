"""HAM10000 (dermoscopy; ViDIR Vienna and C. Rosendahl, Queensland): 10,015 images of 7,470 lesions, 7 classes.

Release layout (Harvard Dataverse, doi:10.7910/DVN/DBW86T)::

    HAM10000_metadata.csv                       lesion_id, image_id, dx, dx_type, age, sex, localization
    HAM10000_images_part_1/ISIC_xxxxxxx.jpg     (and HAM10000_images_part_2/)
    HAM10000_segmentations_lesion_tschandl/ISIC_xxxxxxx_segmentation.png   (separate download, optional)

Copies that keep all images in one ``images/`` folder and the masks in ``masks/`` are read as well: the
builder searches every known folder and records the path where each image actually lies.

Decisions
---------
* ``patient_id`` is ``lesion_id`` (several images per lesion; patients are not identified in the release),
  also kept as the metadata column ``lesion_id``.
* ``label`` is ``dx``; task multiclass over (akiec, bcc, bkl, df, mel, nv, vasc). ``positive_class`` mel is
  declared for one-vs-rest summaries only (melanoma vs. rest).
* ``cond_age``: numeric years (the release rounds to 5-year steps). An empty age is missing (NaN). Age 0
  (39 images, mostly nevi and vascular lesions of infants, with sex and site recorded) is kept as an age:
  it is the 0-year bin, not a missing-value code.
* ``cond_sex`` and ``cond_localization``: the release's ``unknown`` becomes missing (empty cell); the
  declared levels are the known values. ``cond_dx_type``: histo, follow_up, consensus, confocal.
* ``center``: the 7-column release has no centre column; newer ISIC exports add ``dataset``
  (vidir_modern, vidir_molemax, rosendahl, vienna_dias, ...), which is used when present. Otherwise
  every row has center ``ham10000``.
* A lesion mask that is absent leaves ``mask_path`` empty; the masks are an optional download.
* Rows are sorted by ``image_id``.
* Near-duplicates across lesions (:mod:`diffkd_study.data.duplicates`) share a ``duplicate_group`` label, so
  that a split keeps them together. The release has one such pair: ISIC_0025226 (HAM_0004919) and
  ISIC_0030074 (HAM_0000140), the same photograph with another colour balance (pHash distance 4 of 64,
  grey thumbnail r = 0.9986; same diagnosis, age, sex and site).

Licence CC BY-NC 4.0; cite Tschandl, Rosendahl & Kittler, Sci Data 5:180161 (2018); masks: Tschandl et al.,
Nat Med 26:1229 (2020).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from diffkd_study.data.builders import BUILDERS, BuildError, flag_near_duplicates_in_build, read_release_csv
from diffkd_study.data.schema import ConditionSpec, Manifest, ManifestSchema

DATASET = "ham10000"
METADATA = "HAM10000_metadata.csv"
IMAGE_DIRS: tuple[str, ...] = ("HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_images", "images")
MASK_DIRS: tuple[str, ...] = ("HAM10000_segmentations_lesion_tschandl", "masks")
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")
MASK_SUFFIX = "_segmentation.png"
LABELS: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
COLUMNS: tuple[str, ...] = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
DX_TYPES: tuple[str, ...] = ("histo", "follow_up", "consensus", "confocal")
SEXES: tuple[str, ...] = ("female", "male")
LOCALIZATIONS: tuple[str, ...] = (
    "abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand", "lower extremity",
    "neck", "scalp", "trunk", "upper extremity",
)
UNKNOWN = "unknown"

SOURCE = (
    "HAM10000 (Human Against Machine with 10000 training images), ViDIR Group, Medical University of Vienna, "
    "and C. Rosendahl, Queensland. Harvard Dataverse doi:10.7910/DVN/DBW86T "
    "(https://dataverse.harvard.edu/dataset.xhtml?persistentId=doi:10.7910/DVN/DBW86T). Licence CC BY-NC 4.0. "
    "Cite: Tschandl P, Rosendahl C, Kittler H. The HAM10000 dataset, a large collection of multi-source "
    "dermatoscopic images of common pigmented skin lesions. Sci Data 5:180161 (2018). Lesion masks: "
    "Tschandl P et al., Human-computer collaboration for skin cancer recognition, Nat Med 26:1229 (2020). "
    "patient_id = lesion_id; 'unknown' sex/localization and empty ages are missing; age 0 is kept."
)


def _index_files(root: Path, folders: tuple[str, ...], suffixes: tuple[str, ...]) -> dict[str, str]:
    """File name (lower-case) -> path relative to root, first folder wins."""
    found: dict[str, str] = {}
    for folder in folders:
        directory = root / folder
        if not directory.is_dir():
            continue
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_file() and entry.name.lower().endswith(suffixes):
                    found.setdefault(entry.name.lower(), f"{folder}/{entry.name}")
    return found


def _schema(centers: list[str]) -> ManifestSchema:
    return ManifestSchema(
        dataset=DATASET,
        task="multiclass",
        label_set=LABELS,
        positive_class="mel",
        conditions={
            "cond_age": ConditionSpec("numeric", unit="years", min=0, max=120,
                                      description="age in 5-year steps; empty = missing"),
            "cond_sex": ConditionSpec("categorical", levels=SEXES, description="'unknown' in the release = missing"),
            "cond_localization": ConditionSpec("categorical", levels=LOCALIZATIONS,
                                               description="anatomical site; 'unknown' in the release = missing"),
            "cond_dx_type": ConditionSpec("categorical", levels=DX_TYPES,
                                          description="how the diagnosis was confirmed"),
        },
        source=SOURCE + f" Centers: {', '.join(centers)}.",
    )


@BUILDERS.register(DATASET)
def build(root: Path) -> Manifest:
    """The manifest of the HAM10000 release in ``root``: its official layout is in the module
    docstring, the builder contract in :mod:`diffkd_study.data.builders`."""
    root = Path(root)
    meta_path = root / METADATA
    meta = read_release_csv(meta_path, COLUMNS, release="HAM10000", empty_as_missing=False)
    meta = meta.apply(lambda s: s.str.strip())

    images = _index_files(root, IMAGE_DIRS, IMAGE_SUFFIXES)
    if not images:
        raise BuildError(f"{root}: no images found in any of {list(IMAGE_DIRS)}")
    masks = _index_files(root, MASK_DIRS, (MASK_SUFFIX,))
    has_center = "dataset" in meta.columns

    rows = []
    seen: dict[str, int] = {}
    for i, rec in enumerate(meta.to_dict("records")):
        line = i + 2
        where = f"{meta_path}:{line}"
        image_id, dx = rec["image_id"], rec["dx"]
        if not image_id or not rec["lesion_id"]:
            raise BuildError(f"{where}: empty image_id or lesion_id")
        if image_id in seen:
            raise BuildError(f"{where}: image_id {image_id!r} also on line {seen[image_id]}")
        seen[image_id] = line
        if dx not in LABELS:
            raise BuildError(f"{where} [image_id={image_id}]: unknown dx {dx!r}; expected one of {list(LABELS)}")
        image_path = next((images[n] for n in (image_id.lower() + s for s in IMAGE_SUFFIXES) if n in images), None)
        if image_path is None:
            raise BuildError(f"{where} [image_id={image_id}]: image {image_id}.jpg not found in any of {list(IMAGE_DIRS)}")
        age_text = rec["age"]
        try:
            age = float(age_text) if age_text else np.nan
        except ValueError:
            raise BuildError(f"{where} [image_id={image_id}]: age {age_text!r} is not a number") from None
        sex = rec["sex"].lower()
        if sex not in (*SEXES, UNKNOWN, ""):
            raise BuildError(f"{where} [image_id={image_id}]: unknown sex {rec['sex']!r}")
        site = rec["localization"].lower()
        if site not in (*LOCALIZATIONS, UNKNOWN, ""):
            raise BuildError(f"{where} [image_id={image_id}]: unknown localization {rec['localization']!r}")
        dx_type = rec["dx_type"]
        if dx_type not in (*DX_TYPES, ""):
            raise BuildError(f"{where} [image_id={image_id}]: unknown dx_type {dx_type!r}")
        center = rec["dataset"] if has_center and rec["dataset"] else DATASET
        rows.append({
            "image_id": image_id,
            "patient_id": rec["lesion_id"],
            "dataset": DATASET,
            "center": center,
            "image_path": image_path,
            "mask_path": masks.get((image_id + MASK_SUFFIX).lower(), np.nan),
            "label": dx,
            "cond_age": age,
            "cond_sex": sex if sex in SEXES else np.nan,
            "cond_localization": site if site in LOCALIZATIONS else np.nan,
            "cond_dx_type": dx_type or np.nan,
            "lesion_id": rec["lesion_id"],
        })
    if not rows:
        raise BuildError(f"{meta_path}: no rows")
    df = pd.DataFrame(rows).sort_values("image_id", kind="stable").reset_index(drop=True)
    return flag_near_duplicates_in_build(Manifest(df=df, schema=_schema(sorted(df["center"].unique()))), root)
