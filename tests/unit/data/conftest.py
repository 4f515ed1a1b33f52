"""Tiny manifests for the data-layer tests: tables without files (splits) and cohorts with PNGs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffkd_study.data.schema import ConditionSpec, Manifest, ManifestSchema

BINARY_SCHEMA = ManifestSchema(
    dataset="tiny",
    label_set=("benign", "malignant", "normal"),
    positive_class="malignant",
    conditions={"cond_birads": ConditionSpec("categorical", levels=("2", "3", "4", "5"))},
)


def patient_table(
    n_patients: int,
    *,
    seed: int = 0,
    malignant_frac: float = 0.3,
    max_images: int = 4,
    mixed_frac: float = 0.1,
    centers: tuple[str, ...] = ("c1", "c2", "c3"),
    dataset: str = "tiny",
) -> pd.DataFrame:
    """A manifest table (no files): patients with 1..max_images images; some have both labels."""
    r = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = "malignant" if r.random() < malignant_frac else "benign"
        mixed = r.random() < mixed_frac
        for k in range(int(r.integers(1, max_images + 1))):
            rows.append({
                "image_id": f"{dataset}_p{p:03d}_{k}", "patient_id": f"p{p:03d}", "dataset": dataset,
                "center": centers[p % len(centers)], "image_path": f"img/p{p:03d}_{k}.png",
                "label": ("benign" if label == "malignant" else "malignant") if mixed and k % 2 else label,
                "cond_birads": str(2 + p % 4),
            })
    return pd.DataFrame(rows)


@pytest.fixture()
def table_manifest() -> Callable[..., Manifest]:
    def make(n_patients: int = 120, schema: ManifestSchema = BINARY_SCHEMA, **kwargs) -> Manifest:
        return Manifest(patient_table(n_patients, **kwargs), schema)

    return make


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture()
def make_cohort(tmp_path: Path) -> Callable[..., tuple[Manifest, Path]]:
    """Write ``n`` random images (w x h, grayscale or RGB) and masks for all but the last row, plus
    ``m.csv`` as the manifest path; returns (manifest, root)."""

    def make(n: int = 6, *, size: tuple[int, int] = (24, 18), rgb: bool = False, masks: bool = True,
             seed: int = 0, name: str = "cohort", schema: ManifestSchema = BINARY_SCHEMA) -> tuple[Manifest, Path]:
        root = tmp_path / name
        r = np.random.default_rng(seed)
        rows = []
        for i in range(n):
            shape = (size[1], size[0], 3) if rgb else (size[1], size[0])
            write_png(root / f"img/{i}.png", r.integers(0, 256, shape, dtype=np.uint8))
            row = {"image_id": f"im{i}", "patient_id": f"p{i // 2}", "dataset": schema.dataset, "center": "c1",
                   "image_path": f"img/{i}.png", "label": ["benign", "malignant"][i % 2],
                   "split": ["train", "train", "val", "val", "test", "test"][i % 6], "cond_birads": "3"}
            if masks:
                if i < n - 1:
                    mask = np.zeros((size[1], size[0]), np.uint8)
                    mask[size[1] // 4: size[1] // 2, size[0] // 3: size[0] // 2 + i % 3] = 255
                    write_png(root / f"msk/{i}.png", mask)
                    row["mask_path"] = f"msk/{i}.png"
                else:
                    row["mask_path"] = np.nan
            rows.append(row)
        return Manifest(pd.DataFrame(rows), schema, root / "m.csv"), root

    return make
