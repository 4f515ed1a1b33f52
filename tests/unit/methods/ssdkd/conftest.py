"""A tiny synthetic dermoscopy cohort: RGB JPEG-free PNGs of a skin-coloured background with a lesion whose
colour depends on its class, several images per lesion, and a HAM10000-like manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from diffkd_study.data.schema import Manifest, ManifestSchema, write_manifest

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
SCHEMA = ManifestSchema(dataset="tinyderm", task="multiclass", label_set=CLASSES, positive_class="mel")
COLOURS = np.array([[200, 80, 80], [80, 200, 80], [80, 80, 200], [200, 200, 60], [40, 20, 20], [140, 90, 60],
                    [200, 40, 200]], dtype=float)


def _image(r: np.random.Generator, label: int, width: int, height: int) -> np.ndarray:
    skin = np.array([225, 180, 160], dtype=float) + r.normal(0, 6, 3)
    pixels = np.broadcast_to(skin, (height, width, 3)) + r.normal(0, 8, (height, width, 3))
    yy, xx = np.mgrid[:height, :width]
    cy, cx = height / 2 + r.normal(0, 2), width / 2 + r.normal(0, 2)
    radius = min(width, height) * r.uniform(0.2, 0.35)
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
    pixels[inside] = COLOURS[label] + r.normal(0, 10, (int(inside.sum()), 3))
    return pixels.clip(0, 255).astype(np.uint8)


def write_dermoscopy_cohort(folder: Path, *, lesions_per_class: int = 4, images_per_lesion: int = 2,
                            size: tuple[int, int] = (40, 30), seed: int = 0) -> Path:
    """Images under ``folder/images`` and the manifest ``folder.csv`` (+ schema sidecar); returns the CSV."""
    r = np.random.default_rng(seed)
    width, height = size
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for c, label in enumerate(CLASSES):
        for lesion in range(lesions_per_class):
            lesion_id = f"LES_{c}{lesion:03d}"
            for k in range(images_per_lesion):
                image_id = f"IMG_{c}{lesion:03d}{k}"
                path = f"images/{image_id}.png"
                Image.fromarray(_image(r, c, width, height)).save(folder / path)
                rows.append({"image_id": image_id, "patient_id": lesion_id, "dataset": "tinyderm",
                             "center": "tinyderm", "image_path": path, "label": label})
    csv = folder.with_suffix(".csv")
    write_manifest(Manifest(pd.DataFrame(rows), SCHEMA), csv)
    return csv
