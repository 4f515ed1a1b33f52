"""BUSI, Breast Ultrasound Images (Al-Dhabyani et al., Data in Brief 28:104863, 2020), Cairo, Egypt.

Official layout (Kaggle / author download)::

    Dataset_BUSI_with_GT/benign/benign (1).png
    Dataset_BUSI_with_GT/benign/benign (1)_mask.png
    Dataset_BUSI_with_GT/benign/benign (1)_mask_1.png      (a second lesion, when there is one)
    Dataset_BUSI_with_GT/malignant/malignant (1).png ...
    Dataset_BUSI_with_GT/normal/normal (1).png ...          (normal masks are all background)

``root`` is either the folder that contains ``Dataset_BUSI_with_GT`` or that folder itself.

Manifest decisions
------------------
* ``image_id`` = the image file's stem (``benign (1)``); label = the class folder (benign / malignant /
  normal; positive class malignant; task ``binary`` like the other breast-ultrasound manifests, with
  ``normal`` a declared label to exclude or count as negative). ``center`` = ``dataset`` = ``busi``.
* BUSI has no patient identifiers: each image is its own group (``patient_id`` = ``image_id``), so
  images of one patient may fall into different splits. A warning says so.
* Several masks per image: ``mask_path`` is the first mask (``NAME_mask.png``) and ``mask_paths`` a JSON
  list of all of them in order (``_mask``, ``_mask_1``, ``_mask_2``, ...). Merging them is the loader's
  job; the validator checks only ``mask_path``. ``boxes`` holds one box per non-empty mask (0-based
  ``[x, y, w, h]``); normal images have no box.
* Exact duplicates (identical decoded pixel arrays, any folder): ``duplicate_of`` names the
  ``image_id`` of the first occurrence in manifest order; a warning lists them. They are not removed
  (the validator reports them; a study decides). Near-duplicates (and these exact ones) share a
  ``duplicate_group`` label (:mod:`diffkd_study.data.duplicates`), so that a split keeps them together.
* Rows are sorted by class folder, then the number in the file name, then the name.
* No clinical conditions are released.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from diffkd_study.data.builders import BUILDERS, BuildError, flag_near_duplicates_in_build
from diffkd_study.data.builders.bus_bra import mask_box
from diffkd_study.data.schema import Manifest, ManifestSchema, boxes_to_json

DATASET = "busi"
FOLDER = "Dataset_BUSI_with_GT"
LABELS = ("benign", "malignant", "normal")
_MASK = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<k>\d+))?$", re.IGNORECASE)
_NUMBER = re.compile(r"\((\d+)\)")

SOURCE = (
    "BUSI, Dataset of breast ultrasound images (Baheya Hospital, Cairo, Egypt; 600 women, 2018), "
    "Dataset_BUSI_with_GT. Licence: CC0 1.0 as distributed by the authors (check the download page). "
    "Cite: Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. Dataset of breast ultrasound images. "
    "Data in Brief 28:104863, 2020. doi:10.1016/j.dib.2019.104863"
)


def _base(root: Path) -> tuple[Path, str]:
    """The Dataset_BUSI_with_GT folder and its path relative to root ('' when root is that folder)."""
    if (root / FOLDER).is_dir():
        return root / FOLDER, FOLDER
    if all((root / label).is_dir() for label in LABELS) or root.name == FOLDER:
        return root, ""
    raise BuildError(f"{root / FOLDER}: folder not found (root must contain {FOLDER} or be that folder)")


def _pixel_hash(path: Path) -> str:
    try:
        with Image.open(path) as img:
            arr = np.ascontiguousarray(np.asarray(img))
            digest = hashlib.sha256(f"{img.mode}{img.size}".encode())
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BuildError(f"{path}: image does not decode ({type(err).__name__}: {err})") from None
    digest.update(arr.tobytes())
    return digest.hexdigest()


def _sort_key(label: str, stem: str) -> tuple[int, int, str]:
    match = _NUMBER.search(stem)
    return LABELS.index(label), int(match.group(1)) if match else -1, stem


@BUILDERS.register(DATASET)
def build(root: Path) -> Manifest:
    """The manifest of the BUSI release in ``root``: its official layout is in the module
    docstring, the builder contract in :mod:`diffkd_study.data.builders`."""
    root = Path(root)
    base, prefix = _base(root)

    def rel(label: str, name: str) -> str:
        return "/".join(p for p in (prefix, label, name) if p)

    records = []
    for label in LABELS:
        folder = base / label
        if not folder.is_dir():
            raise BuildError(f"{folder}: class folder not found (incomplete {DATASET} release?)")
        images: dict[str, Path] = {}
        masks: dict[str, list[tuple[int, str]]] = {}
        for path in folder.iterdir():
            if not path.is_file() or path.suffix.lower() != ".png":
                continue
            match = _MASK.match(path.stem)
            if match:
                k = int(match.group("k")) if match.group("k") else 0
                masks.setdefault(match.group("stem"), []).append((k, path.name))
            else:
                images[path.stem] = path
        orphans = sorted(set(masks) - set(images))
        if orphans:
            raise BuildError(f"{folder / masks[orphans[0]][0][1]}: mask without an image {orphans[0]}.png")
        for stem, path in images.items():
            if stem not in masks:
                raise BuildError(f"{path}: no mask {stem}_mask.png next to the image")
            names = [name for _, name in sorted(masks[stem])]
            boxes = []
            for name in names:
                _, box = mask_box(folder / name)
                if box is not None:
                    boxes.append(box)
            records.append({
                "image_id": stem,
                "patient_id": stem,
                "dataset": DATASET,
                "center": DATASET,
                "image_path": rel(label, path.name),
                "mask_path": rel(label, names[0]),
                "label": label,
                "boxes": boxes_to_json(boxes) if boxes else np.nan,
                "mask_paths": json.dumps([rel(label, n) for n in names]),
                "_hash": _pixel_hash(path),
                "_key": _sort_key(label, stem),
            })
    if not records:
        raise BuildError(f"{base}: no images found")

    df = pd.DataFrame(records).sort_values("_key", kind="mergesort").reset_index(drop=True)
    duplicated = df.index[df["image_id"].duplicated()]
    if len(duplicated):
        raise BuildError(f"{base}: image name {df.at[duplicated[0], 'image_id']!r} occurs in two class folders")
    first = df.groupby("_hash", sort=False)["image_id"].transform("first")
    df["duplicate_of"] = first.where(first != df["image_id"], np.nan)
    df = df.drop(columns=["_hash", "_key"])

    warnings.warn(
        f"{DATASET}: the release has no patient identifiers; each image is its own group (patient_id = "
        "image_id), so images of one patient may end up in different splits",
        stacklevel=2,
    )
    dups = df[df["duplicate_of"].notna()]
    if len(dups):
        pairs = ", ".join(f"{a} = {b}" for a, b in zip(dups["image_id"], dups["duplicate_of"], strict=True))
        warnings.warn(f"{DATASET}: {len(dups)} image(s) duplicate an earlier one pixel for pixel: {pairs}",
                      stacklevel=2)

    schema = ManifestSchema(
        dataset=DATASET,
        task="binary",
        label_set=LABELS,
        positive_class="malignant",
        conditions={},
        source=SOURCE,
    )
    return flag_near_duplicates_in_build(Manifest(df=df, schema=schema), root)
