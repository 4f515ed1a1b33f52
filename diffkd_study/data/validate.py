"""Manifest validation: every rule has a name, and every problem names the file, CSV line and rule.

Errors make ``diffkd-study data validate`` exit non-zero; warnings are listed separately. Images are
opened by :func:`diffkd_study.data.cache.open_image`, the decoder the cache and the datasets use, so what
validates is what trains; the report keeps every image's size and Pillow mode (``image_sizes``,
``image_modes``).

Rules (errors unless marked warning):

========================  =====================================================================
missing-column            a required column is absent (nothing else is checked then)
unknown-column            a ``cond_*`` column is not declared in the sidecar, or a declared one is absent
empty-value               a required cell is empty
duplicate-image-id        the same ``image_id`` on two rows
label-outside-set         ``label`` is not in the declared ``label_set``
condition-level           a categorical condition value outside its declared levels
condition-value           a numeric condition that is not a number or lies outside [min, max]
invalid-split             ``split`` not one of train/val/test/external
invalid-synthetic         ``synthetic`` not 0 or 1
path-outside-root         ``image_path`` / ``mask_path`` leads outside the data root (absolute, ``../``, or a
                          symlink leading out; checked on the resolved path, and such a file is not read);
                          ``allow_outside_root=True`` permits it
missing-file              ``image_path`` / ``mask_path`` does not exist under the data root
unreadable-image          the file exists but does not decode as an image (including one over Pillow's
                          decompression-bomb limit, named with its pixel count, and pixel values outside
                          the range its bit depth allows)
high-bit-depth            (warning) images deeper than 8 bits (16-bit, 32-bit integer or float), one warning
                          per Pillow mode naming its value range and how it is mapped to 8 bits
mask-size                 the mask's width x height differs from the image's
empty-mask                the mask has no foreground although the row declares a lesion
invalid-box               a box that does not parse, or has a non-positive width/height
box-outside-image         a box that extends outside the image
patient-leakage           one ``patient_id`` in more than one split
near-duplicate-leakage    one ``duplicate_group`` label (near-duplicate images of different patients, flagged
                          by :mod:`diffkd_study.data.duplicates`) in more than one split
duplicate-pixels          two rows with identical pixels in different splits or with different
                          labels (an error); in the same split with the same label (a warning)
========================  =====================================================================

A row "declares a lesion" when it has a ``mask_path`` and its label is not one of the labels passed
as ``lesion_free_labels`` (``normal`` by default).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import UnidentifiedImageError

from diffkd_study.data.cache import HIGH_BIT_MODES, eight_bit_rule, open_image, to_8bit
from diffkd_study.data.schema import (
    CONDITION_PREFIX,
    OUTSIDE_ROOT_REMEDY,
    REQUIRED_COLUMNS,
    SPLITS,
    Manifest,
    format_lines,
    path_outside_root,
    row_boxes,
)
from diffkd_study.data.splits import DUPLICATE_GROUP_COLUMN

RULES: dict[str, str] = {
    "missing-column": "the manifest must have the columns " + ", ".join(REQUIRED_COLUMNS),
    "unknown-column": "cond_* columns and the sidecar's declared conditions must match",
    "empty-value": "required columns must not have empty cells",
    "duplicate-image-id": "image_id must be unique",
    "label-outside-set": "label must be one of the declared label_set",
    "condition-level": "categorical condition values must be declared levels (empty = missing)",
    "condition-value": "numeric conditions must be numbers within the declared [min, max]",
    "invalid-split": "split must be one of " + "/".join(SPLITS),
    "invalid-synthetic": "synthetic must be 0 or 1",
    "path-outside-root": "image_path and mask_path must stay inside the data root once symlinks are followed",
    "missing-file": "image_path and mask_path must exist under the data root",
    "unreadable-image": "image and mask files must decode",
    "mask-size": "a mask must have the same width x height as its image",
    "empty-mask": "a mask must have foreground pixels where a lesion is declared",
    "invalid-box": "boxes must parse as [x, y, w, h] with w > 0 and h > 0",
    "box-outside-image": "boxes must lie inside the image",
    "patient-leakage": "a patient must not appear in more than one split",
    "near-duplicate-leakage": "images flagged as near-duplicates (duplicate_group) must be in one split",
    "duplicate-pixels": "identical images must not appear in different splits or with different labels",
    "high-bit-depth": "images deeper than 8 bits are mapped to 8 bits by their bit depth (a warning)",
}

DEFAULT_LESION_FREE_LABELS: tuple[str, ...] = ("normal",)


@dataclass(frozen=True)
class Problem:
    """One broken rule: severity (``error`` or ``warning``), rule name, message, and where (file, CSV line,
    image_id)."""

    severity: str  # "error" | "warning"
    rule: str
    message: str
    file: str
    line: int | None = None  # CSV line (1 = header); None for manifest-wide problems
    image_id: str | None = None

    def format(self) -> str:
        """The problem on one line: ``file:line [image_id=...] severity rule: message``."""
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        who = f" [image_id={self.image_id}]" if self.image_id else ""
        return f"{where}{who} {self.severity} {self.rule}: {self.message}"


@dataclass
class ValidationReport:
    """The outcome of validating a manifest: its problems, and the size and mode of every image read."""

    manifest: str
    n_rows: int
    problems: list[Problem] = field(default_factory=list)
    image_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # image_id -> (w, h)
    image_modes: dict[str, str] = field(default_factory=dict)  # image_id -> Pillow mode ("L", "RGB", "I;16", ...)

    @property
    def errors(self) -> list[Problem]:
        """The problems of severity ``error``."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        """The problems of severity ``warning``."""
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def rules_broken(self) -> set[str]:
        """The names of the rules with at least one error."""
        return {p.rule for p in self.errors}

    def summary(self) -> str:
        """One line: manifest, row count and the numbers of errors and warnings."""
        return f"{self.manifest}: {self.n_rows} rows, {len(self.errors)} error(s), {len(self.warnings)} warning(s)"

    def format(self) -> str:
        """The summary line, then every error and every warning, one per line."""
        lines = [self.summary()]
        if self.errors:
            lines.append("errors:")
            lines.extend("  " + p.format() for p in self.errors)
        if self.warnings:
            lines.append("warnings:")
            lines.extend("  " + p.format() for p in self.warnings)
        return "\n".join(lines)

    def to_frame(self) -> pd.DataFrame:
        """The problems as a table: severity, rule, line, image_id, message."""
        return pd.DataFrame(
            [
                {"severity": p.severity, "rule": p.rule, "line": p.line, "image_id": p.image_id, "message": p.message}
                for p in self.problems
            ],
            columns=["severity", "rule", "line", "image_id", "message"],
        )


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value == ""


@dataclass
class _ImageInfo:
    size: tuple[int, int] | None = None
    pixel_hash: str | None = None
    error: str | None = None  # "empty", "outside", "missing" or why it does not decode
    foreground: bool | None = None
    mode: str | None = None
    value_range: tuple[float, float] | None = None  # images deeper than 8 bits only
    resolved: Path | None = None  # where a path outside the root leads


def _inspect_image(path: Path, mask: bool) -> _ImageInfo:
    """Size and mode; an image's pixel hash (and value range past 8 bits), a mask's foreground."""
    if not path.is_file():
        return _ImageInfo(error="missing")
    try:
        img = open_image(path)
        arr = np.asarray(img)
        info = _ImageInfo(size=img.size, mode=img.mode)
        if mask:
            info.foreground = bool(np.any(arr))
            return info
        to_8bit(img)  # refuses values its bit depth does not allow, as the cache will
        if img.mode in HIGH_BIT_MODES and arr.size:
            info.value_range = (float(arr.min()), float(arr.max()))
        digest = hashlib.sha256(f"{img.mode}{img.size}".encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
        info.pixel_hash = digest.hexdigest()
        return info
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return _ImageInfo(error=f"does not decode ({type(err).__name__}: {err})")


class _Collector:
    def __init__(self, manifest: Manifest, file: str) -> None:
        self.manifest = manifest
        self.file = file
        self.problems: list[Problem] = []

    def add(self, severity: str, rule: str, message: str, index: Any = None) -> None:
        line = None
        image_id = None
        if index is not None:
            line = self.manifest.csv_line(index)
            value = self.manifest.df.at[index, "image_id"] if "image_id" in self.manifest.df.columns else None
            image_id = None if _is_missing(value) else str(value)
        self.problems.append(Problem(severity, rule, message, self.file, line, image_id))

    def error(self, rule: str, message: str, index: Any = None) -> None:
        self.add("error", rule, message, index)

    def warning(self, rule: str, message: str, index: Any = None) -> None:
        self.add("warning", rule, message, index)


def validate_manifest(
    manifest: Manifest,
    root: str | Path,
    *,
    check_files: bool = True,
    lesion_free_labels: Sequence[str] = DEFAULT_LESION_FREE_LABELS,
    workers: int = 4,
    progress: bool = False,
    allow_outside_root: bool = False,
) -> ValidationReport:
    """Check a manifest against its schema and the files under ``root``; never raises for bad rows.

    A file outside ``root`` is an error (``path-outside-root``) and is not read, unless ``allow_outside_root``.
    """
    root = Path(root)
    df = manifest.df
    file = str(manifest.path) if manifest.path else "<manifest>"
    out = _Collector(manifest, file)
    report = ValidationReport(manifest=file, n_rows=len(df))

    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        out.error("missing-column", f"required column(s) {missing} not found; columns are {list(df.columns)}")
        report.problems = out.problems
        return report

    _check_columns_and_values(manifest, out)
    _check_splits(manifest, out)
    if check_files:
        if not root.is_dir():
            out.error("missing-file", f"data root {root} is not a directory")
        else:
            _check_files(manifest, root, out, report, lesion_free_labels, workers, progress, allow_outside_root)
    report.problems = out.problems
    return report


def _check_columns_and_values(manifest: Manifest, out: _Collector) -> None:
    df, schema = manifest.df, manifest.schema
    for column in REQUIRED_COLUMNS:
        for index in df.index[df[column].isna()]:
            out.error("empty-value", f"column {column!r} is empty", index)

    for index in df.index[df["image_id"].duplicated(keep="first") & df["image_id"].notna()]:
        first = df.index[df["image_id"] == df.at[index, "image_id"]][0]
        out.error("duplicate-image-id", f"image_id also on line {manifest.csv_line(first)}", index)

    allowed = set(schema.label_set)
    for index in df.index[df["label"].notna() & ~df["label"].isin(allowed)]:
        out.error(
            "label-outside-set", f"label {df.at[index, 'label']!r} is not in {list(schema.label_set)}", index
        )

    declared = set(schema.conditions)
    present = {c for c in df.columns if c.startswith(CONDITION_PREFIX)}
    for column in sorted(present - declared):
        out.error("unknown-column", f"column {column!r} is not declared in the schema sidecar")
    for column in sorted(declared - present):
        out.error("unknown-column", f"declared condition {column!r} has no column in the CSV")

    for column in sorted(present & declared):
        spec = schema.conditions[column]
        values = df[column]
        if spec.type == "categorical":
            levels = set(spec.levels or ())
            bad = values.notna() & ~values.astype(str).isin(levels)
            for index in df.index[bad]:
                out.error(
                    "condition-level",
                    f"{column}={values[index]!r} is not a declared level {list(spec.levels or ())}",
                    index,
                )
        else:
            numeric = pd.to_numeric(values, errors="coerce")
            for index in df.index[numeric.isna() & values.notna()]:
                out.error("condition-value", f"{column}={values[index]!r} is not a number", index)
            low = -math.inf if spec.min is None else spec.min
            high = math.inf if spec.max is None else spec.max
            for index in df.index[(numeric < low) | (numeric > high)]:
                out.error("condition-value", f"{column}={numeric[index]:g} is outside [{spec.min}, {spec.max}]", index)

    if "split" in df.columns:
        for index in df.index[df["split"].notna() & ~df["split"].isin(SPLITS)]:
            out.error("invalid-split", f"split {df.at[index, 'split']!r} is not one of {list(SPLITS)}", index)
    if "synthetic" in df.columns:
        for index in df.index[df["synthetic"].notna() & ~df["synthetic"].astype(str).isin({"0", "1"})]:
            out.error("invalid-synthetic", f"synthetic {df.at[index, 'synthetic']!r} is not 0 or 1", index)


def _check_splits(manifest: Manifest, out: _Collector) -> None:
    df = manifest.df
    if "split" not in df.columns:
        return
    assigned = df[df["split"].isin(SPLITS) & df["patient_id"].notna()]
    splits_per_patient = assigned.groupby("patient_id")["split"].agg(lambda s: sorted(set(s)))
    for patient, splits in splits_per_patient.items():
        if len(splits) > 1:
            rows = assigned.index[assigned["patient_id"] == patient]
            lines = ", ".join(str(manifest.csv_line(i)) for i in rows)
            out.error(
                "patient-leakage", f"patient {patient!r} is in splits {splits} (lines {lines})", rows[0]
            )
    if DUPLICATE_GROUP_COLUMN not in df.columns:
        return
    flagged = df[df["split"].isin(SPLITS) & df[DUPLICATE_GROUP_COLUMN].notna()]
    for group, rows in flagged.groupby(DUPLICATE_GROUP_COLUMN, sort=True).groups.items():
        splits = sorted(set(df.loc[rows, "split"]))
        if len(splits) > 1:
            images = ", ".join(f"{df.at[i, 'image_id']} ({df.at[i, 'split']}, line {manifest.csv_line(i)})" for i in rows)
            out.error("near-duplicate-leakage",
                      f"near-duplicate images {images} (duplicate_group {group!r}) are in splits {splits}", rows[0])


def _check_files(
    manifest: Manifest,
    root: Path,
    out: _Collector,
    report: ValidationReport,
    lesion_free_labels: Sequence[str],
    workers: int,
    progress: bool,
    allow_outside_root: bool,
) -> None:
    df = manifest.df
    has_masks = "mask_path" in df.columns
    rows = list(df.index)

    def inspect(value: str, mask: bool) -> _ImageInfo:
        outside = None if allow_outside_root else path_outside_root(root, value)
        if outside is not None:
            return _ImageInfo(error="outside", resolved=outside)
        return _inspect_image(root / value, mask)

    def job(index: Any) -> tuple[Any, _ImageInfo, _ImageInfo | None]:
        image_path = df.at[index, "image_path"]
        image = _ImageInfo(error="empty") if _is_missing(image_path) else inspect(image_path, mask=False)
        mask = None
        if has_masks and not _is_missing(df.at[index, "mask_path"]):
            mask = inspect(df.at[index, "mask_path"], mask=True)
        return index, image, mask

    results: Iterable[tuple[Any, _ImageInfo, _ImageInfo | None]]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(job, rows)
        if progress:
            from diffkd_study.progress import progress_bar

            results = progress_bar(results, total=len(rows), desc="validate images", unit="img")
        collected = list(results)

    def outside(column: str, info: _ImageInfo, index: Any) -> None:
        out.error("path-outside-root", f"{column} {df.at[index, column]!r} leads to {info.resolved}, outside the "
                  f"data root {root.resolve()}; {OUTSIDE_ROOT_REMEDY}", index)

    hashes: dict[str, list[Any]] = defaultdict(list)
    deep: dict[str, list[tuple[Any, tuple[float, float]]]] = defaultdict(list)  # mode -> (row, value range)
    for index, image, mask in collected:
        label = df.at[index, "label"]
        if image.error == "outside":
            outside("image_path", image, index)
        elif image.error == "missing":
            out.error("missing-file", f"image {root / df.at[index, 'image_path']} does not exist", index)
        elif image.error and image.error != "empty":
            out.error("unreadable-image", f"image {df.at[index, 'image_path']} {image.error}", index)
        if image.size is not None:
            report.image_sizes[str(df.at[index, "image_id"])] = image.size
        if image.mode is not None:
            report.image_modes[str(df.at[index, "image_id"])] = image.mode
            if image.value_range is not None:
                deep[image.mode].append((index, image.value_range))
        if image.pixel_hash is not None:
            hashes[image.pixel_hash].append(index)

        if mask is not None:
            mask_path = df.at[index, "mask_path"]
            if mask.error == "outside":
                outside("mask_path", mask, index)
            elif mask.error == "missing":
                out.error("missing-file", f"mask {root / mask_path} does not exist", index)
            elif mask.error:
                out.error("unreadable-image", f"mask {mask_path} {mask.error}", index)
            else:
                if image.size is not None and mask.size != image.size:
                    out.error(
                        "mask-size",
                        f"mask {mask_path} is {mask.size[0]}x{mask.size[1]} but the image is "
                        f"{image.size[0]}x{image.size[1]}",
                        index,
                    )
                if not mask.foreground and label not in lesion_free_labels:
                    out.error("empty-mask", f"mask {mask_path} is empty but label {label!r} declares a lesion", index)

        try:
            boxes = row_boxes(df.loc[index].to_dict())
        except ValueError as err:
            out.error("invalid-box", str(err), index)
            continue
        for x, y, w, h in boxes:
            if w <= 0 or h <= 0:
                out.error("invalid-box", f"box [{x:g}, {y:g}, {w:g}, {h:g}] has a non-positive size", index)
            elif image.size is not None:
                width, height = image.size
                if x < 0 or y < 0 or x + w > width or y + h > height:
                    out.error(
                        "box-outside-image",
                        f"box [{x:g}, {y:g}, {w:g}, {h:g}] extends outside the {width}x{height} image",
                        index,
                    )

    for mode, found in deep.items():
        low, high = min(r[0] for _, r in found), max(r[1] for _, r in found)
        lines = format_lines([manifest.csv_line(i) for i, _ in found])
        out.warning(
            "high-bit-depth",
            f"{len(found)} image(s) have mode {mode} ({HIGH_BIT_MODES[mode]}, values {low:g}..{high:g}); they are "
            f"mapped to 8 bits by {eight_bit_rule(mode)} (lines {lines})",
            found[0][0],
        )

    has_split = "split" in df.columns
    for indices in hashes.values():
        if len(indices) < 2:
            continue
        ids = [str(df.at[i, "image_id"]) for i in indices]
        labels = {str(df.at[i, "label"]) for i in indices}
        splits = {str(df.at[i, "split"]) for i in indices} if has_split else set()
        lines = ", ".join(str(manifest.csv_line(i)) for i in indices)
        text = f"identical pixels in {len(indices)} rows {ids} (lines {lines})"
        if len(labels) > 1:
            out.error("duplicate-pixels", f"{text} with different labels {sorted(labels)}", indices[0])
        elif len(splits) > 1:
            out.error("duplicate-pixels", f"{text} in different splits {sorted(splits)}", indices[0])
        else:
            out.warning("duplicate-pixels", text, indices[0])
