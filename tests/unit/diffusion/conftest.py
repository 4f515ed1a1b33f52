"""A tiny phantom cohort (12 images, 32 px) shared by the diffusion tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffkd_study.data.phantom import generate_phantom_cohort
from diffkd_study.data.schema import Manifest

SMOKE_CONDITIONS = ("cond_birads", "cond_shape", "cond_age", "cond_lesion_size_mm")


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, Path]:
    root = tmp_path_factory.mktemp("phantom") / "cohort"
    manifest = generate_phantom_cohort(root, n_per_center=4, image_size=32, progress=False)
    return manifest, root
