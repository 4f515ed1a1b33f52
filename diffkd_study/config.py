"""Typed study configuration: YAML -> dataclasses, validated with errors that name the key.

A study config names the data (the built-in phantom cohort, or manifests under a data root), how to
split it (patient-grouped train/val/test plus external centers or datasets), the seed and the
stages to run. Example (``configs/demo.yaml``)::

    name: demo
    seed: 0
    data:
      phantom: {n_per_center: 60, image_size: 128}
      external: {center: [center_C]}
      split: {val_frac: 0.15, test_frac: 0.2}
    stages: [data_audit]
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

KNOWN_STAGES: tuple[str, ...] = ("data_audit",)
STAGE_NOTEBOOKS: dict[str, str] = {"data_audit": "00_data_audit"}


class ConfigError(ValueError):
    """A study config is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class ManifestSource:
    path: str  # manifest CSV (relative to the project root or absolute)
    root: str = "."  # the dataset's folder, relative to --data-root (or absolute)


@dataclass(frozen=True)
class PhantomSource:
    n_per_center: int = 60
    image_size: int = 128


@dataclass(frozen=True)
class SplitConfig:
    val_frac: float = 0.15
    test_frac: float = 0.2


@dataclass(frozen=True)
class DataConfig:
    phantom: PhantomSource | None = None
    manifests: tuple[ManifestSource, ...] = ()
    external: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    exclude_labels: tuple[str, ...] = ()
    lesion_free_labels: tuple[str, ...] = ("normal",)
    split: SplitConfig = field(default_factory=SplitConfig)
    audit_examples_per_group: int = 4


@dataclass(frozen=True)
class StudyConfig:
    name: str
    data: DataConfig
    seed: int = 0
    stages: tuple[str, ...] = ("data_audit",)
    description: str = ""
    source_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        def convert(value: Any) -> Any:
            if hasattr(value, "__dataclass_fields__"):
                return {f.name: convert(getattr(value, f.name)) for f in fields(value)}
            if isinstance(value, Mapping):
                return {k: convert(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [convert(v) for v in value]
            return value

        out = convert(self)
        out.pop("source_path", None)
        return out


def _expect(mapping: Any, where: str, allowed: set[str], required: set[str] = frozenset()) -> Mapping[str, Any]:
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    unknown = set(mapping) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    missing = set(required) - set(mapping)
    if missing:
        raise ConfigError(f"{where}: required key(s) {sorted(missing)} missing")
    return mapping


def _number(value: Any, where: str, kind: type, low: float | None = None, high: float | None = None) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{where}: {value!r} is outside [{low}, {high}]")
    return kind(value)


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(str(v) for v in value)


def parse_config(raw: Any, origin: str = "<config>") -> StudyConfig:
    top = _expect(raw, origin, {"name", "seed", "data", "stages", "description"}, {"name", "data"})
    name = top["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"{origin}: name must be a folder-safe string (letters, digits, _ . -), got {name!r}")
    seed = _number(top.get("seed", 0), f"{origin}: seed", int, 0)

    data_raw = _expect(
        top["data"],
        f"{origin}: data",
        {"phantom", "manifests", "external", "exclude_labels", "lesion_free_labels", "split", "audit_examples_per_group"},
    )
    phantom = None
    if "phantom" in data_raw:
        p = _expect(data_raw["phantom"] or {}, f"{origin}: data.phantom", {"n_per_center", "image_size"})
        phantom = PhantomSource(
            n_per_center=_number(p.get("n_per_center", 60), f"{origin}: data.phantom.n_per_center", int, 4),
            image_size=_number(p.get("image_size", 128), f"{origin}: data.phantom.image_size", int, 32, 1024),
        )
    manifests = []
    for i, item in enumerate(data_raw.get("manifests") or []):
        m = _expect(item, f"{origin}: data.manifests[{i}]", {"path", "root"}, {"path"})
        manifests.append(ManifestSource(path=str(m["path"]), root=str(m.get("root", "."))))
    if (phantom is None) == (not manifests):
        raise ConfigError(f"{origin}: data needs exactly one of 'phantom' or 'manifests'")
    external_raw = data_raw.get("external") or {}
    if not isinstance(external_raw, Mapping):
        raise ConfigError(f"{origin}: data.external: expected a mapping column -> list of values")
    external = {str(k): _str_list(v, f"{origin}: data.external.{k}") for k, v in external_raw.items()}
    for column in external:
        if column not in {"center", "dataset"}:
            raise ConfigError(f"{origin}: data.external.{column}: only 'center' or 'dataset' select external data")
    split_raw = _expect(data_raw.get("split") or {}, f"{origin}: data.split", {"val_frac", "test_frac"})
    split = SplitConfig(
        val_frac=_number(split_raw.get("val_frac", 0.15), f"{origin}: data.split.val_frac", float, 0.0, 0.5),
        test_frac=_number(split_raw.get("test_frac", 0.2), f"{origin}: data.split.test_frac", float, 0.0, 0.5),
    )
    data = DataConfig(
        phantom=phantom,
        manifests=tuple(manifests),
        external=external,
        exclude_labels=_str_list(data_raw.get("exclude_labels", []), f"{origin}: data.exclude_labels"),
        lesion_free_labels=_str_list(
            data_raw.get("lesion_free_labels", ["normal"]), f"{origin}: data.lesion_free_labels"
        ),
        split=split,
        audit_examples_per_group=_number(
            data_raw.get("audit_examples_per_group", 4), f"{origin}: data.audit_examples_per_group", int, 1, 32
        ),
    )
    stages = _str_list(top.get("stages", ["data_audit"]), f"{origin}: stages")
    for stage in stages:
        if stage not in KNOWN_STAGES:
            raise ConfigError(f"{origin}: stages: unknown stage {stage!r}; known: {list(KNOWN_STAGES)}")
    return StudyConfig(
        name=name,
        data=data,
        seed=seed,
        stages=stages,
        description=str(top.get("description", "")),
        source_path=None if origin == "<config>" else origin,
    )


def load_config(path: str | Path) -> StudyConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_config(raw, origin=str(path))
