"""The manifest: one CSV row per image plus a YAML sidecar that declares labels and conditions.

A manifest ``NAME.csv`` always travels with ``NAME.schema.yaml``. Paths in the CSV are relative to a
data root given at run time, so a manifest never contains a machine-specific path.

CSV columns
-----------
Required: ``image_id`` (unique), ``patient_id`` (the grouping unit for splits; ``lesion_id`` for
dermoscopy), ``dataset``, ``center``, ``image_path``, ``label`` (a name from the declared label set).

Optional: ``mask_path``; boxes, either as one ``boxes`` column holding a JSON list of ``[x, y, w, h]``
(pixels, top-left origin, several boxes per image) or as the four columns ``box_x, box_y, box_w,
box_h`` (one box per row); ``split`` (train/val/test/external); ``synthetic`` (0/1); condition
columns prefixed ``cond_``; any other column is carried along as metadata (e.g. official folds).

Missing values are explicit: an empty cell. They are read as missing (NaN), never as 0, and the
condition encoder gives them a learned "missing" value.

Sidecar (``NAME.schema.yaml``)
------------------------------
::

    dataset: bus-bra
    task: binary            # binary | multiclass | detection
    label_set: [benign, malignant]
    positive_class: malignant
    conditions:
      cond_birads: {type: categorical, levels: ["2", "3", "4", "5"], description: BI-RADS category}
      cond_age: {type: numeric, unit: years, min: 0, max: 120}
    source: ...             # free text: where the data came from, licence, citation
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from diffkd_study.io import atomic_path, sha256_bytes

REQUIRED_COLUMNS: tuple[str, ...] = ("image_id", "patient_id", "dataset", "center", "image_path", "label")
BOX_COLUMNS: tuple[str, ...] = ("box_x", "box_y", "box_w", "box_h")
OPTIONAL_COLUMNS: tuple[str, ...] = ("mask_path", "boxes", *BOX_COLUMNS, "split", "synthetic")
CONDITION_PREFIX = "cond_"
SPLITS: tuple[str, ...] = ("train", "val", "test", "external")
TASKS: tuple[str, ...] = ("binary", "multiclass", "detection")
CONDITION_TYPES: tuple[str, ...] = ("categorical", "numeric")


class SchemaError(ValueError):
    """The sidecar itself is malformed (not a problem of individual rows)."""


@dataclass(frozen=True)
class ConditionSpec:
    """One ``cond_*`` column: categorical with a closed set of levels, or numeric with a range."""

    type: str
    levels: tuple[str, ...] | None = None
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.levels is not None:
            out["levels"] = list(self.levels)
        for key in ("unit", "min", "max"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class ManifestSchema:
    dataset: str
    label_set: tuple[str, ...]
    task: str = "binary"
    positive_class: str | None = None
    conditions: Mapping[str, ConditionSpec] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise SchemaError(f"task {self.task!r} is not one of {TASKS}")
        if len(self.label_set) == 0:
            raise SchemaError("label_set is empty")
        if len(set(self.label_set)) != len(self.label_set):
            raise SchemaError(f"label_set has duplicates: {list(self.label_set)}")
        if self.positive_class is not None and self.positive_class not in self.label_set:
            raise SchemaError(
                f"positive_class {self.positive_class!r} is not in label_set {list(self.label_set)}"
            )
        for name, spec in self.conditions.items():
            if not name.startswith(CONDITION_PREFIX):
                raise SchemaError(f"condition {name!r} must start with {CONDITION_PREFIX!r}")
            if spec.type not in CONDITION_TYPES:
                raise SchemaError(f"condition {name!r}: type {spec.type!r} is not one of {CONDITION_TYPES}")
            if spec.type == "categorical" and not spec.levels:
                raise SchemaError(f"categorical condition {name!r} declares no levels")
            if spec.type == "numeric" and spec.levels:
                raise SchemaError(f"numeric condition {name!r} must not declare levels")

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "task": self.task,
            "label_set": list(self.label_set),
            "positive_class": self.positive_class,
            "conditions": {k: v.to_dict() for k, v in self.conditions.items()},
        }
        if self.source:
            out["source"] = self.source
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str = "<schema>") -> ManifestSchema:
        known = {"dataset", "task", "label_set", "positive_class", "conditions", "source"}
        unknown = set(data) - known
        if unknown:
            raise SchemaError(f"{origin}: unknown key(s) {sorted(unknown)}; allowed: {sorted(known)}")
        for key in ("dataset", "label_set"):
            if key not in data:
                raise SchemaError(f"{origin}: required key {key!r} is missing")
        conditions: dict[str, ConditionSpec] = {}
        for name, spec in (data.get("conditions") or {}).items():
            if not isinstance(spec, Mapping) or "type" not in spec:
                raise SchemaError(f"{origin}: condition {name!r} needs a mapping with a 'type'")
            allowed = {"type", "levels", "unit", "min", "max", "description"}
            if set(spec) - allowed:
                raise SchemaError(f"{origin}: condition {name!r} has unknown key(s) {sorted(set(spec) - allowed)}")
            levels = spec.get("levels")
            conditions[name] = ConditionSpec(
                type=spec["type"],
                levels=tuple(str(v) for v in levels) if levels is not None else None,
                unit=spec.get("unit"),
                min=spec.get("min"),
                max=spec.get("max"),
                description=spec.get("description", ""),
            )
        try:
            return cls(
                dataset=str(data["dataset"]),
                label_set=tuple(str(v) for v in data["label_set"]),
                task=data.get("task", "binary"),
                positive_class=None if data.get("positive_class") is None else str(data["positive_class"]),
                conditions=conditions,
                source=data.get("source", ""),
            )
        except SchemaError as err:
            raise SchemaError(f"{origin}: {err}") from None

    def label_index(self, label: str) -> int:
        return self.label_set.index(label)


def sidecar_path(manifest_path: str | Path) -> Path:
    """``data_manifests/bus-bra.csv`` -> ``data_manifests/bus-bra.schema.yaml``."""
    path = Path(manifest_path)
    return path.with_name(path.stem + ".schema.yaml")


@dataclass
class Manifest:
    """A loaded manifest: the table (all columns as read, missing cells as NaN) and its schema."""

    df: pd.DataFrame
    schema: ManifestSchema
    path: Path | None = None

    @property
    def condition_columns(self) -> list[str]:
        return [c for c in self.df.columns if c.startswith(CONDITION_PREFIX)]

    def csv_line(self, index: int) -> int:
        """CSV line number of a row (line 1 is the header), for error messages."""
        return int(self.df.index.get_loc(index)) + 2 if index in self.df.index else -1

    def sha256(self) -> str:
        """Content hash of the table and schema (independent of file paths and row order on disk)."""
        csv_bytes = self.df.to_csv(index=False, lineterminator="\n").encode()
        schema_bytes = yaml.safe_dump(self.schema.to_dict(), sort_keys=True).encode()
        return sha256_bytes(csv_bytes + b"\0" + schema_bytes)


def read_schema(path: str | Path) -> ManifestSchema:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: schema sidecar not found (every manifest CSV needs NAME.schema.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise SchemaError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, Mapping):
        raise SchemaError(f"{path}: expected a mapping at the top level")
    return ManifestSchema.from_dict(data, origin=str(path))


def read_manifest(path: str | Path, schema: ManifestSchema | None = None) -> Manifest:
    """Read a manifest CSV and its sidecar. All columns are read as text; empty cells become NaN.

    Numeric condition columns are converted to float; a value that is not a number is left as text so
    that validation can report it with its row (it is never coerced to 0 or silently dropped).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    schema = schema or read_schema(sidecar_path(path))
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise SchemaError(f"{path}: not a readable CSV: {err}") from None
    for name, spec in schema.conditions.items():
        if spec.type == "numeric" and name in df.columns:
            converted = pd.to_numeric(df[name], errors="coerce")
            if not (converted.isna() & df[name].notna()).any():
                df[name] = converted
    return Manifest(df=df, schema=schema, path=path)


def _format_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def write_manifest(manifest: Manifest, path: str | Path) -> Path:
    """Write CSV and sidecar atomically (temporary names, then rename). Returns the CSV path."""
    path = Path(path)
    df = manifest.df.copy()
    for column in df.columns:
        if column.startswith(CONDITION_PREFIX) or column in BOX_COLUMNS:
            df[column] = df[column].map(_format_cell)
    with atomic_path(sidecar_path(path)) as tmp_schema, atomic_path(path) as tmp_csv:
        tmp_schema.write_text(yaml.safe_dump(manifest.schema.to_dict(), sort_keys=False), encoding="utf-8")
        df.to_csv(tmp_csv, index=False, lineterminator="\n")
    manifest.path = path
    return path


def row_boxes(row: Mapping[str, Any]) -> list[tuple[float, float, float, float]]:
    """The boxes of one row as ``(x, y, w, h)`` tuples, from ``boxes`` (JSON) or ``box_*`` columns.

    Raises ``ValueError`` with the offending text when a box cannot be parsed.
    """
    boxes: list[tuple[float, float, float, float]] = []
    raw = row.get("boxes")
    if isinstance(raw, str) and raw.strip():
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as err:
            raise ValueError(f"boxes is not valid JSON ({err.msg}): {raw!r}") from None
        if not isinstance(parsed, list) or not all(
            isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b) for b in parsed
        ):
            raise ValueError(f"boxes must be a JSON list of [x, y, w, h] number lists: {raw!r}")
        boxes.extend(tuple(float(v) for v in b) for b in parsed)  # type: ignore[misc]
    values = [row.get(c) for c in BOX_COLUMNS]
    present = [v is not None and not (isinstance(v, float) and math.isnan(v)) and v != "" for v in values]
    if any(present):
        if not all(present):
            raise ValueError(f"box columns must be all set or all empty, got {dict(zip(BOX_COLUMNS, values, strict=True))}")
        try:
            boxes.append(tuple(float(v) for v in values))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"box columns are not numbers: {dict(zip(BOX_COLUMNS, values, strict=True))}") from None
    return boxes


def boxes_to_json(boxes: list[tuple[float, float, float, float]] | list[list[float]]) -> str:
    """Canonical JSON for the ``boxes`` column (integers where exact, 2 decimals otherwise)."""
    def num(v: float) -> float | int:
        v = float(v)
        return int(v) if v.is_integer() else round(v, 2)

    return json.dumps([[num(v) for v in box] for box in boxes], separators=(",", ":"))
