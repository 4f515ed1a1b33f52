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

Every path must stay inside the data root once symlinks are followed: an absolute path, a ``../`` path or a
symlink leading out of the root is an error (``path-outside-root``) unless the user allows it explicitly.

The CSV is read strictly: an empty file, a column named twice and a row with more or fewer fields than the
header are errors naming the file and line (line 1 is the header), never silently repaired.

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

import csv
import json
import math
from collections.abc import Mapping, Sequence
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
        """The spec as the schema YAML writes it (only the keys that are set)."""
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
    """The schema sidecar of a manifest: dataset, task, label set, positive class and declared conditions.

    Raises ``SchemaError`` at construction for an unknown task, an empty or repeated label set, a positive
    class outside it, or a condition that is not ``cond_*`` or has an invalid spec.
    """

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
        """The schema as the ``NAME.schema.yaml`` sidecar holds it."""
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
        """The schema from sidecar data; ``SchemaError`` prefixed with ``origin`` for an unknown or missing key
        or an invalid value.
        """
        known = {"dataset", "task", "label_set", "positive_class", "conditions", "source"}
        unknown = set(data) - known
        if unknown:
            raise SchemaError(f"{origin}: unknown key(s) {sorted(unknown)}; allowed: {sorted(known)}")
        for key in ("dataset", "label_set"):
            if key not in data:
                raise SchemaError(f"{origin}: required key {key!r} is missing")
        declared = data.get("conditions") or {}
        if not isinstance(declared, Mapping):
            raise SchemaError(
                f"{origin}: conditions must be a mapping of cond_* column -> spec, got {type(declared).__name__} "
                f"{declared!r}"
            )
        conditions = {name: _condition_spec(name, spec, origin) for name, spec in declared.items()}
        try:
            return cls(
                dataset=str(data["dataset"]),
                label_set=_names(data["label_set"], f"{origin}: label_set"),
                task=data.get("task", "binary"),
                positive_class=None if data.get("positive_class") is None else str(data["positive_class"]),
                conditions=conditions,
                source=data.get("source", ""),
            )
        except SchemaError as err:
            raise SchemaError(f"{origin}: {err}") from None

    def label_index(self, label: str) -> int:
        """Class index of ``label`` (its position in ``label_set``); ``ValueError`` when unknown."""
        return self.label_set.index(label)


def _names(value: Any, where: str) -> tuple[str, ...]:
    """A YAML list of names (strings or numbers) as strings. YAML reads ``yes``/``no`` as booleans and
    ``[a, [b]]`` as a nested list; neither is silently turned into a name."""
    if not isinstance(value, list) or not all(
        isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value
    ):
        raise SchemaError(f"{where} must be a list of names (text or numbers; quote yes/no), e.g. [benign, malignant], "
                          f"got {value!r}")
    return tuple(str(v) for v in value)


def _condition_spec(name: Any, spec: Any, origin: str) -> ConditionSpec:
    """One entry of the sidecar's ``conditions``, type-checked so that a typo is a one-line error here and
    not a traceback during validation."""
    if not isinstance(name, str):
        raise SchemaError(f"{origin}: conditions: column name {name!r} must be a string starting with {CONDITION_PREFIX!r}")
    where = f"{origin}: condition {name!r}"
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise SchemaError(f"{where} needs a mapping with a 'type'")
    allowed = {"type", "levels", "unit", "min", "max", "description"}
    if set(spec) - allowed:
        raise SchemaError(f"{where} has unknown key(s) {sorted(set(spec) - allowed, key=str)}")
    bounds = {key: spec.get(key) for key in ("min", "max")}
    for key, value in bounds.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise SchemaError(f"{where}: {key} must be a number, got {value!r}")
    if None not in bounds.values() and bounds["min"] > bounds["max"]:
        raise SchemaError(f"{where}: min {bounds['min']} is greater than max {bounds['max']}")
    for key in ("unit", "description"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise SchemaError(f"{where}: {key} must be text, got {spec[key]!r}")
    levels = spec.get("levels")
    return ConditionSpec(
        type=spec["type"],
        levels=None if levels is None else _names(levels, f"{where}: levels"),
        unit=spec.get("unit"),
        min=bounds["min"],
        max=bounds["max"],
        description=spec.get("description") or "",
    )


def sidecar_path(manifest_path: str | Path) -> Path:
    """``data_manifests/bus-bra.csv`` -> ``data_manifests/bus-bra.schema.yaml``."""
    path = Path(manifest_path)
    return path.with_name(path.stem + ".schema.yaml")


#: How a user allows files outside the data root, for every message that refuses one.
OUTSIDE_ROOT_REMEDY = (
    "to read it anyway pass --allow-outside-root (allow_outside_root=True in Python) or set "
    "data.allow_paths_outside_root: true in the study config"
)


def path_outside_root(root: Path, value: str) -> Path | None:
    """Where a manifest path really leads when that is outside ``root`` (an absolute path, ``..``, or a symlink
    leading out), else None. Both sides are resolved, so a symlink cannot hide where a file is and a root that
    is itself a symlink still contains its files."""
    try:
        resolved = (root / value).resolve()
    except (OSError, RuntimeError, ValueError):
        return None  # a symlink loop or a NUL byte: nothing can be read there, and the reader says so
    return None if resolved.is_relative_to(root.resolve()) else resolved


def format_lines(lines: Sequence[int], limit: int = 10) -> str:
    """``2, 3, 5``, or past ``limit`` the first ``limit`` lines and ``and 120 more``: keeps a message one line."""
    shown = ", ".join(str(line) for line in lines[:limit])
    return shown if len(lines) <= limit else f"{shown} and {len(lines) - limit} more"


@dataclass
class Manifest:
    """A loaded manifest: the table (all columns as read, missing cells as NaN) and its schema."""

    df: pd.DataFrame
    schema: ManifestSchema
    path: Path | None = None

    @property
    def condition_columns(self) -> list[str]:
        """The table's ``cond_*`` columns, in table order."""
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
    """Read and check a ``NAME.schema.yaml`` sidecar.

    Raises ``FileNotFoundError`` when it is absent and ``SchemaError`` (naming the file) when it is not UTF-8
    YAML holding a valid schema mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: schema sidecar not found (every manifest CSV needs NAME.schema.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise SchemaError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    except UnicodeDecodeError as err:
        raise SchemaError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
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
    _check_csv_shape(path)
    try:
        # index_col=False: never take the first columns as an index (the shape check has refused such rows)
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], index_col=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise SchemaError(f"{path}: not a readable CSV: {' '.join(str(err).split())}") from None
    for name, spec in schema.conditions.items():
        if spec.type == "numeric" and name in df.columns:
            converted = pd.to_numeric(df[name], errors="coerce")
            if not (converted.isna() & df[name].notna()).any():
                df[name] = converted
    return Manifest(df=df, schema=schema, path=path)


def _check_csv_shape(path: Path) -> None:
    """Refuse what pandas would silently repair: an empty file, a column named twice (read as ``label.1``), a
    row with fewer fields (padded with empty cells) or more (when every row has them, the first columns
    quietly become the index). One error, naming the file and the first bad line; blank lines are skipped
    as pandas skips them, and a quoted value may span lines (its row is numbered by its first line)."""
    if path.stat().st_size == 0:
        raise SchemaError(f"{path}: the file is empty (0 bytes); a manifest starts with a header line of column names")
    line = 0
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next((fields for fields in reader if fields), None)
            if header is None:
                raise SchemaError(f"{path}: the file has no header line (it holds only blank lines)")
            line = reader.line_num
            first_column: dict[str, int] = {}
            for column, name in enumerate(header, start=1):
                if name in first_column:
                    raise SchemaError(
                        f"{path}:{line}: column {name!r} appears twice in the header (columns {first_column[name]} "
                        f"and {column}); rename or remove one"
                    )
                first_column[name] = column
            wrong: list[tuple[int, int]] = []  # (line, number of fields)
            line = reader.line_num + 1
            for fields in reader:
                if fields and len(fields) != len(header):
                    wrong.append((line, len(fields)))
                line = reader.line_num + 1
    except csv.Error as err:
        raise SchemaError(f"{path}:{line}: not a readable CSV: {err}") from None
    except UnicodeDecodeError as err:
        raise SchemaError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if wrong:
        line, n_fields = wrong[0]
        hint = ("a short row: an empty cell still needs its comma" if n_fields < len(header)
                else "more fields than columns: quote a value that contains a comma")
        more = f"; {len(wrong)} rows like this (lines {format_lines([w[0] for w in wrong])})" if len(wrong) > 1 else ""
        raise SchemaError(f"{path}:{line}: {n_fields} fields but the header has {len(header)} ({hint}){more}")


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
