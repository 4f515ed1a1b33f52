"""Manifest builders for public releases, registered by their CLI name.

Each builder is ``build(root: Path) -> Manifest``: ``root`` is the release's own folder in its official
layout, and the manifest's ``image_path``/``mask_path`` are relative to it. A builder never writes into
the release and raises ``BuildError`` naming the file (and row) when the release is incomplete.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from diffkd_study.data.schema import Manifest
from diffkd_study.registry import Registry

BUILDERS: Registry = Registry("dataset builder")

_MODULES = ("bus_bra", "breast_lesions_usg", "busi", "ham10000", "mini_mias", "bcs_dbt_slices")


class BuildError(ValueError):
    """The release folder does not have the expected official layout or content."""


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")


def build_manifest(name: str, root: str | Path) -> Manifest:
    """Build the manifest of release ``name`` from its folder ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise BuildError(f"{root}: release folder not found (expected the official {name} layout)")
    return BUILDERS.get(name)(root)


_load_all()
