"""data_manifests/README.md lists the sha256 of every committed manifest; they must stay true."""

from __future__ import annotations

import re
from pathlib import Path

from diffkd_study.data.schema import read_manifest
from diffkd_study.io import sha256_file

MANIFESTS = Path(__file__).resolve().parents[3] / "data_manifests"


def test_readme_checksums_match_committed_manifests():
    text = (MANIFESTS / "README.md").read_text()
    listed = dict((name, digest) for digest, name in re.findall(r"^\s+([0-9a-f]{64})\s+(\S+\.csv)$", text, re.M))
    on_disk = {p.name: sha256_file(p) for p in MANIFESTS.glob("*.csv")}
    assert listed == on_disk


def test_every_manifest_has_a_sidecar_and_loads():
    for csv in MANIFESTS.glob("*.csv"):
        manifest = read_manifest(csv)
        assert len(manifest.df) > 0 and manifest.df["image_id"].is_unique, csv.name
