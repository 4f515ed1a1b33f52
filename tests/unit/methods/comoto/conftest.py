"""Tiny synthetic detection cohorts: grey noise with bright square lesions, written as PNGs with manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffkd_study.data.schema import Manifest, ManifestSchema, boxes_to_json, write_manifest

MAMMO_SCHEMA = ManifestSchema(dataset="mammo", task="detection", label_set=("normal", "benign", "malignant"),
                              positive_class="malignant")
DBT_SCHEMA = ManifestSchema(dataset="dbt", task="detection", label_set=("benign", "malignant"),
                            positive_class="malignant")


def _image(r: np.random.Generator, width: int, height: int, boxes: list[list[float]]) -> np.ndarray:
    pixels = r.normal(60, 12, (height, width)).clip(0, 255)
    for x, y, w, h in boxes:
        pixels[int(y): int(y + h), int(x): int(x + w)] = 220
    return pixels.astype(np.uint8)


def write_detection_cohort(
    folder: Path,
    *,
    kind: str,
    n_patients: int,
    images_per_patient: int = 2,
    size: tuple[int, int] = (72, 96),
    n_normal_patients: int = 0,
    unlocated: int = 0,
    seed: int = 0,
) -> Path:
    """A cohort under ``folder`` (images in ``img/``) and its manifest ``folder.csv`` next to it; returns the CSV.

    ``kind="dbt"``: labels benign/malignant and a ``scale`` column 0.5; ``kind="mammo"``: also
    ``n_normal_patients`` normal patients (no box) and ``unlocated`` lesion images without a box.
    """
    r = np.random.default_rng(seed)
    width, height = size
    rows = []
    for p in range(n_patients + n_normal_patients):
        for k in range(images_per_patient):
            image_id = f"{kind}{p:02d}_{k}"
            normal = p >= n_patients
            side = float(r.integers(10, 20))
            boxes = [] if normal else [[float(r.integers(2, width - side - 2)), float(r.integers(2, height - side - 2)),
                                        side, side]]
            label = "normal" if normal else ("malignant" if p % 2 else "benign")
            path = f"img/{image_id}.png"
            (folder / "img").mkdir(parents=True, exist_ok=True)
            Image.fromarray(_image(r, width, height, boxes)).save(folder / path)
            row = {"image_id": image_id, "patient_id": f"{kind}_p{p:02d}", "dataset": kind, "center": "c1",
                   "image_path": path, "label": label, "boxes": boxes_to_json(boxes)}
            if kind == "dbt":
                row["scale"] = "0.5"
            rows.append(row)
    for u in range(unlocated):
        image_id = f"{kind}_unlocated{u}"
        Image.fromarray(_image(r, width, height, [])).save(folder / f"img/{image_id}.png")
        rows.append({"image_id": image_id, "patient_id": f"{kind}_u{u}", "dataset": kind, "center": "c1",
                     "image_path": f"img/{image_id}.png", "label": "malignant", "boxes": "[]"})
    schema = DBT_SCHEMA if kind == "dbt" else MAMMO_SCHEMA
    csv = folder.with_suffix(".csv")
    write_manifest(Manifest(pd.DataFrame(rows), schema), csv)
    return csv


@pytest.fixture()
def cohorts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A DBT cohort (6 patients x 2 slices) and a mammography one (4 lesion + 2 normal patients, 1 unlocated)."""
    monkeypatch.setenv("DIFFKD_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    return {
        "dbt": write_detection_cohort(data / "dbt", kind="dbt", n_patients=6, seed=1),
        "mammo": write_detection_cohort(data / "mammo", kind="mammo", n_patients=4, n_normal_patients=2,
                                        size=(96, 96), unlocated=1, seed=2),
        "root": data,
    }
