"""A tiny phantom cohort (12 images, 32 px) shared by the diffusion tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffkd_study.data.phantom import generate_phantom_cohort
from diffkd_study.data.schema import Manifest
from diffkd_study.methods.diffkd.diffusion.stage import DiffusionStageConfig
from diffkd_study.methods.diffkd.diffusion.train import TrainConfig
from diffkd_study.sections import parse_section

SMOKE_CONDITIONS = ("cond_birads", "cond_shape", "cond_age", "cond_lesion_size_mm")


def smoke_section(**keys) -> DiffusionStageConfig:
    """A ``diffusion`` section with ``profile: smoke`` and ``keys``, parsed as the study config parses it."""
    return parse_section({"profile": "smoke", **keys}, DiffusionStageConfig, "diffusion")


def smoke_config(**overrides) -> TrainConfig:
    """The smoke profile's training settings (TrainConfig's defaults, checkpoints every 3 steps) on
    :data:`SMOKE_CONDITIONS`, with ``overrides``."""
    return TrainConfig(**{"conditions": SMOKE_CONDITIONS, "checkpoint_every": 3, **overrides})


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, Path]:
    root = tmp_path_factory.mktemp("phantom") / "cohort"
    manifest = generate_phantom_cohort(root, n_per_center=4, image_size=32, progress=False)
    return manifest, root
