"""mini-MIAS (digitised film mammography, UK): 322 images of 161 women, 119 located abnormalities.

Release layout (Pilot European Image Processing Archive, http://peipa.essex.ac.uk/info/mias.html)::

    Info.txt          one line per abnormality (or one NORM line): refnum tissue class [severity [x y radius]]
    Licence.txt
    mdbNNN.pgm        1024 x 1024 8-bit PGM (copies in PNG, at any resolution, are read as well)

Decisions
---------
* One row per image; ``boxes`` holds a JSON list with one ``[x, y, w, h]`` per located abnormality.
  ``Info.txt`` gives centre and radius in the 1024 x 1024 frame with the origin at the BOTTOM-left.
  With the actual image size W x H: ``cx = x * W / 1024``, ``cy = H - y * H / 1024``, ``r = radius * W / 1024``;
  the box is the circle's bounding box ``[cx - r, cy - r, 2r, 2r]`` clipped to the image (none of the 119
  circles of the release reaches past the 1024 frame, but a copy with a different size or padding may). ``boxes`` is ``[]`` for normal images (known: no lesion) and empty (missing) for an
  abnormal image none of whose abnormalities has coordinates (widely distributed calcifications, and mdb059);
  ``n_abnormalities`` and ``n_unlocated`` say how many abnormalities an image has and how many lack a box.
* ``label``: malignant if any abnormality is M, else benign if any is B, else normal. Task ``detection``.
* ``patient_id``: Info.txt note 1 says the films come in pairs of one woman (mdb001/mdb002, ...), so the
  patient is ``mias_pNNN`` with NNN = (refnum + 1) // 2; ``side`` is L for even, R for odd numbers.
* ``cond_tissue``: F (fatty), G (fatty-glandular), D (dense-glandular). ``cond_abnormality``: the class
  (CALC, CIRC, SPIC, MISC, ARCH, ASYM; NORM for normals), or ``mixed`` when an image has several classes.
* ``center`` is ``mias``. Rows are sorted by ``image_id``.

Licence: MIAS licence agreement (research use only; reference the database). Cite Suckling J et al., The
Mammographic Image Analysis Society digital mammogram database, Excerpta Medica Int Congr Ser 1069:375-378 (1994).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from diffkd_study.data.builders import BUILDERS, BuildError
from diffkd_study.data.schema import ConditionSpec, Manifest, ManifestSchema, boxes_to_json

DATASET = "mini-mias"
INFO = "Info.txt"
FRAME = 1024.0  # Info.txt coordinates are in the 1024 x 1024 frame
SUFFIXES: tuple[str, ...] = (".pgm", ".png")
TISSUES: tuple[str, ...] = ("F", "G", "D")
CLASSES: tuple[str, ...] = ("CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM")
NORMAL = "NORM"
MIXED = "mixed"
SEVERITIES = {"B": "benign", "M": "malignant"}
LABELS: tuple[str, ...] = ("normal", "benign", "malignant")
_LINE = re.compile(r"^(mdb\d{3})\s+(.*)$")

SOURCE = (
    "mini-MIAS: Mammographic Image Analysis Society MiniMammographic Database (200 micron, 1024x1024), "
    "distributed by the Pilot European Image Processing Archive (PEIPA), http://peipa.essex.ac.uk/info/mias.html. "
    "MIAS licence agreement: research use only, reference the database. Cite: Suckling J et al. (1994) "
    "The Mammographic Image Analysis Society Digital Mammogram Database. Excerpta Medica, International "
    "Congress Series 1069, pp 375-378. Boxes: bounding box of each Info.txt circle (y flipped from the "
    "bottom-left origin, scaled to the image size), clipped to the image; patient = film pair (Info.txt note 1)."
)

SCHEMA = ManifestSchema(
    dataset=DATASET,
    task="detection",
    label_set=LABELS,
    positive_class="malignant",
    conditions={
        "cond_tissue": ConditionSpec("categorical", levels=TISSUES,
                                     description="background tissue: F fatty, G fatty-glandular, D dense-glandular"),
        "cond_abnormality": ConditionSpec("categorical", levels=(*CLASSES, NORMAL, MIXED),
                                          description="abnormality class (NORM = normal; mixed = several classes)"),
    },
    source=SOURCE,
)


def _parse_info(path: Path) -> dict[str, list[dict]]:
    """refnum -> list of entries (one per Info.txt data line), in file order."""
    entries: dict[str, list[dict]] = {}
    for line_no, raw in enumerate(path.read_text(encoding="latin-1").splitlines(), start=1):
        match = _LINE.match(raw.strip())
        if not match:
            continue
        ref, rest = match.groups()
        where = f"{path}:{line_no} [{ref}]"
        tokens = rest.split()
        if len(tokens) < 2:
            raise BuildError(f"{where}: expected 'refnum tissue class [severity x y radius]', got {raw.strip()!r}")
        tissue, cls = tokens[0], tokens[1]
        if tissue not in TISSUES:
            raise BuildError(f"{where}: unknown background tissue {tissue!r}; expected one of {list(TISSUES)}")
        if cls not in (*CLASSES, NORMAL):
            raise BuildError(f"{where}: unknown abnormality class {cls!r}; expected one of {[*CLASSES, NORMAL]}")
        entry: dict = {"line": line_no, "tissue": tissue, "class": cls, "severity": None, "circle": None}
        if cls == NORMAL:
            if len(tokens) > 2:
                raise BuildError(f"{where}: a NORM line has extra fields {tokens[2:]}")
        else:
            if len(tokens) < 3 or tokens[2] not in SEVERITIES:
                found = tokens[2] if len(tokens) > 2 else "nothing"
                raise BuildError(f"{where}: abnormality {cls} needs severity B or M, found {found!r}")
            entry["severity"] = tokens[2]
            coords = tokens[3:]
            if coords and not coords[0].startswith("*"):  # '*NOTE 3*' = no coordinates
                if len(coords) != 3:
                    raise BuildError(f"{where}: expected x y radius, got {coords}")
                try:
                    x, y, r = (float(v) for v in coords)
                except ValueError:
                    raise BuildError(f"{where}: x y radius {coords} are not numbers") from None
                if r <= 0:
                    raise BuildError(f"{where}: radius {r:g} is not positive")
                entry["circle"] = (x, y, r)
        entries.setdefault(ref, []).append(entry)
    return entries


def circle_box(x: float, y: float, radius: float, width: int, height: int) -> list[float] | None:
    """Bounding box ``[x, y, w, h]`` (top-left origin, image pixels) of an Info.txt circle, clipped to the
    image; None when nothing of it lies inside. ``x, y, radius`` are in the 1024 frame, y from the bottom."""
    sx, sy = width / FRAME, height / FRAME
    cx, cy, r = x * sx, height - y * sy, radius * sx
    x0, y0 = max(0.0, cx - r), max(0.0, cy - r)
    x1, y1 = min(float(width), cx + r), min(float(height), cy + r)
    if x1 <= x0 or y1 <= y0:
        return None
    return [x0, y0, x1 - x0, y1 - y0]


@BUILDERS.register(DATASET)
def build(root: Path) -> Manifest:
    """The manifest of the mini-MIAS release in ``root``: its official layout is in the module
    docstring, the builder contract in :mod:`diffkd_study.data.builders`."""
    root = Path(root)
    info = root / INFO
    if not info.is_file():
        raise BuildError(f"{info}: Info.txt not found (expected the official mini-MIAS layout)")
    entries = _parse_info(info)
    if not entries:
        raise BuildError(f"{info}: no 'mdbNNN ...' lines found")

    rows = []
    for ref in sorted(entries):
        items = entries[ref]
        where = f"{info}:{items[0]['line']} [{ref}]"
        tissues = {e["tissue"] for e in items}
        if len(tissues) > 1:
            raise BuildError(f"{where}: conflicting background tissue {sorted(tissues)} on lines "
                             f"{[e['line'] for e in items]}")
        abnormal = [e for e in items if e["class"] != NORMAL]
        if abnormal and len(abnormal) != len(items):
            raise BuildError(f"{where}: listed both as NORM and with abnormalities (lines {[e['line'] for e in items]})")
        image = next((f"{ref}{s}" for s in SUFFIXES if (root / f"{ref}{s}").is_file()), None)
        if image is None:
            raise BuildError(f"{where}: image {ref}.pgm (or .png) not found in {root}")
        try:
            with Image.open(root / image) as img:
                width, height = img.size
        except (UnidentifiedImageError, OSError) as err:
            raise BuildError(f"{root / image}: does not decode ({err})") from None

        boxes = []
        n_unlocated = 0
        for e in abnormal:
            box = circle_box(*e["circle"], width, height) if e["circle"] else None
            if box is None:
                n_unlocated += 1
            else:
                boxes.append(box)
        severities = {e["severity"] for e in abnormal}
        label = "malignant" if "M" in severities else "benign" if "B" in severities else "normal"
        classes = sorted({e["class"] for e in abnormal})
        number = int(ref[3:])
        rows.append({
            "image_id": ref,
            "patient_id": f"mias_p{(number + 1) // 2:03d}",
            "dataset": DATASET,
            "center": "mias",
            "image_path": image,
            "label": label,
            "boxes": boxes_to_json(boxes) if boxes or not abnormal else np.nan,
            "cond_tissue": tissues.pop(),
            "cond_abnormality": NORMAL if not classes else classes[0] if len(classes) == 1 else MIXED,
            "side": "L" if number % 2 == 0 else "R",
            "n_abnormalities": str(len(abnormal)),
            "n_unlocated": str(n_unlocated),
        })
    return Manifest(df=pd.DataFrame(rows), schema=SCHEMA)
