"""Patient-grouped, label-stratified splits; center/dataset-external splits; combined manifests.

The rule every function here keeps: a patient (``patient_id``, or ``lesion_id`` for dermoscopy) is in
exactly one split. Splits are a pure function of the manifest content and the seed, so the same
config gives the same split on every machine, whatever the row order on disk.

Method of :func:`grouped_stratified_split` (a deterministic greedy assignment, in the spirit of
scikit-learn's ``StratifiedGroupKFold`` but with arbitrary fractions instead of k equal folds):

1. Each patient becomes a vector of image counts per label.
2. Patients are visited in a seeded random order (a permutation of the sorted ids, so the row order of
   the CSV does not matter). Visiting the largest patients first, as bin packing would, was tried and
   rejected: they all land in the largest split, which then holds the multi-image patients while val
   and test hold the single-image ones (and the fractions are worse: 6 points off instead of < 1).
3. Each split has a target count per label, ``fraction x label total``, and a target number of
   patients, ``fraction x patients``. Each patient goes to the split where it most reduces the squared
   deviation from those targets, each deviation divided by its total so that a rare class weighs as
   much as a common one (and the patient count as much as a label). Ties go to train, then val, then
   test.

The fractions are honoured to within about one patient per label and split; a split with fraction 0
receives nobody.

Near-duplicates: the unit a split keeps together is given by :func:`split_groups`, the one function every
split here uses (and K-fold splits elsewhere): the patient group, joined with every other patient that
shares a ``duplicate_group`` label (a near-duplicate image, :mod:`diffkd_study.data.duplicates`). The
joined group is visited at the turn of its first patient in the seeded order, so joining two patients
moves no other patient's turn; the greedy's later choices still change, as they do for any change of the
groups (HAM10000, one joined pair: 2,293 of 10,015 images change split, mostly between val and test, with
the class mix of every split unchanged to within one image). Without that column, or with only empty
cells, the groups are the patients themselves and the split is exactly the one made before the column
existed.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from diffkd_study.data.schema import (
    CONDITION_PREFIX,
    SPLITS,
    ConditionSpec,
    Manifest,
    ManifestSchema,
)
from diffkd_study.repro import rng

logger = logging.getLogger(__name__)

#: Optional manifest column (carried as metadata by the schema): images that are near-duplicates of an image
#: of another patient share a label, empty otherwise; written by :mod:`diffkd_study.data.duplicates`, and
#: every split keeps each label's patients together (:func:`split_groups`).
DUPLICATE_GROUP_COLUMN = "duplicate_group"

INTERNAL_SPLITS: tuple[str, ...] = ("train", "val", "test")
PATH_COLUMNS: tuple[str, ...] = ("image_path", "mask_path")
ID_COLUMNS: tuple[str, ...] = ("image_id", "patient_id")


# -- grouped stratified split ---------------------------------------------------------------------


def _check_fractions(val_frac: float, test_frac: float) -> dict[str, float]:
    for name, value in (("val_frac", val_frac), ("test_frac", test_frac)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
    if val_frac + test_frac >= 1.0:
        raise ValueError(f"val_frac + test_frac must be < 1 (train needs data), got {val_frac} + {test_frac}")
    return {"train": 1.0 - val_frac - test_frac, "val": val_frac, "test": test_frac}


def _where(manifest: Manifest, rows: pd.Index) -> str:
    """``file:line`` of the first few rows, for error messages."""
    name = str(manifest.path) if manifest.path is not None else "<manifest>"
    lines = [str(manifest.csv_line(i)) for i in list(rows)[:5]]
    more = f" (+{len(rows) - 5} more)" if len(rows) > 5 else ""
    return f"{name}: line(s) {', '.join(lines)}{more}"


def _require_column(manifest: Manifest, column: str, role: str) -> None:
    if column not in manifest.df.columns:
        raise ValueError(f"{role} column {column!r} is not in the manifest (columns: {list(manifest.df.columns)})")
    missing = manifest.df.index[manifest.df[column].isna()]
    if len(missing):
        raise ValueError(f"{role} column {column!r} has empty cells at {_where(manifest, missing)}")


def _drop_labels(manifest: Manifest, exclude_labels: Iterable[str]) -> Manifest:
    """Drop rows whose label is excluded and remove those labels from the schema's label set."""
    exclude = tuple(exclude_labels)
    if not exclude:
        return manifest
    schema = manifest.schema
    unknown = [label for label in exclude if label not in schema.label_set]
    if unknown:
        raise ValueError(f"exclude_labels {unknown} are not in the label set {list(schema.label_set)}")
    if schema.positive_class in exclude:
        raise ValueError(f"cannot exclude the positive class {schema.positive_class!r}")
    drop = manifest.df["label"].isin(exclude)
    counts = manifest.df.loc[drop, "label"].value_counts()
    logger.info(
        "dropped %d row(s) with excluded label(s) %s: %s",
        int(drop.sum()), list(exclude), {str(k): int(v) for k, v in counts.items()},
    )
    kept_labels = tuple(label for label in schema.label_set if label not in exclude)
    # Once rows are gone, CSV line numbers no longer point into the original file: drop the path.
    path = None if drop.any() else manifest.path
    return Manifest(manifest.df.loc[~drop].copy(), dataclasses.replace(schema, label_set=kept_labels), path)


def split_groups(df: pd.DataFrame, group_col: str = "patient_id") -> np.ndarray:
    """The unit a split keeps together, one key per row: ``group_col`` joined through ``duplicate_group``.

    Two rows belong to one unit when they share a ``group_col`` value or a non-empty ``duplicate_group``
    label (near-duplicate images of different patients, :mod:`diffkd_study.data.duplicates`), directly or
    through other rows (connected components, union-find). A unit's key is the smallest of its
    ``group_col`` values (compared as text), so a patient without near-duplicates keeps its own value.
    Without a ``duplicate_group`` column, or with only empty cells, this is ``df[group_col]`` unchanged.
    """
    groups = df[group_col].to_numpy()
    if DUPLICATE_GROUP_COLUMN not in df.columns:
        return groups
    labels = df[DUPLICATE_GROUP_COLUMN]
    flagged = (labels.notna() & (labels.astype(str) != "")).to_numpy()
    if not flagged.any():
        return groups
    codes, values = pd.factorize(pd.Series(groups, dtype=object))
    if (codes < 0).any():
        raise ValueError(f"group column {group_col!r} has empty cells")
    parent = list(range(len(values)))

    def find(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    label_codes = pd.factorize(labels[flagged].astype(str))[0]
    for _, members in pd.Series(codes[flagged]).groupby(label_codes):
        roots = {find(int(c)) for c in members}
        smallest = min(roots, key=lambda c: str(values[c]))  # a root is always the smallest value of its unit
        for root in roots:
            parent[root] = smallest
    return np.array([values[find(int(c))] for c in codes], dtype=object)


def _assign_groups(groups: np.ndarray, labels: np.ndarray, fractions: Mapping[str, float], seed: int,
                   units: np.ndarray | None = None) -> dict[Any, str]:
    """Greedy grouped stratified assignment (see the module docstring). Returns group -> split.

    ``units`` (default: the groups) are what the seeded permutation orders; a group of several units (the
    patients :func:`split_groups` joins) is visited at the turn of its first unit.
    """
    group_ids = sorted(pd.unique(groups), key=str)
    label_ids = sorted(pd.unique(labels), key=str)
    table = pd.crosstab(pd.Series(groups, name="g"), pd.Series(labels, name="l")).reindex(
        index=group_ids, columns=label_ids, fill_value=0
    )
    images = table.to_numpy(dtype=float)
    units = groups if units is None else units
    unit_ids = sorted(pd.unique(units), key=str)
    permutation = rng(seed).permutation(len(unit_ids))
    turn = {unit_ids[u]: position for position, u in enumerate(permutation)}
    first_turn: dict[Any, int] = {}
    for group, unit in zip(groups, units, strict=True):
        first_turn[group] = min(first_turn.get(group, len(unit_ids)), turn[unit])
    order = sorted(range(len(group_ids)), key=lambda g: first_turn[group_ids[g]])
    # One more column counts patients, so that each split also gets its share of patients.
    counts = np.hstack([images, np.ones((len(group_ids), 1))])

    splits = [s for s in INTERNAL_SPLITS if fractions[s] > 0]
    weights = 1.0 / counts.sum(axis=0)
    targets = np.array([[fractions[s]] for s in splits]) * counts.sum(axis=0)[None, :]
    current = np.zeros_like(targets)
    assignment: dict[Any, str] = {}
    for g in order:
        before = ((current - targets) * weights) ** 2
        after = ((current + counts[g] - targets) * weights) ** 2
        best = int(np.argmin((after - before).sum(axis=1)))
        current[best] += counts[g]
        assignment[group_ids[g]] = splits[best]
    return assignment


def _set_split(df: pd.DataFrame, values: pd.Series | np.ndarray | str) -> pd.DataFrame:
    df = df.copy()
    df["split"] = values
    return df


def grouped_stratified_split(
    manifest: Manifest,
    *,
    val_frac: float,
    test_frac: float,
    seed: int,
    group_col: str = "patient_id",
    stratify_col: str = "label",
    exclude_labels: Sequence[str] = (),
) -> Manifest:
    """Assign ``split`` in {train, val, test}: grouped by ``group_col`` joined through ``duplicate_group``
    (:func:`split_groups`), stratified by ``stratify_col``.

    Rows whose label is in ``exclude_labels`` are dropped (the count is logged at INFO) and those labels
    leave the schema's label set, so a classifier trained on the result sees only the kept classes.
    An existing ``split`` column is overwritten. Row order is kept and the index reset; the result keeps
    the input's ``path`` (for error messages naming CSV lines) only when no row was dropped.
    """
    fractions = _check_fractions(val_frac, test_frac)
    _require_column(manifest, group_col, "group")
    _require_column(manifest, stratify_col, "stratify")
    manifest = _drop_labels(manifest, exclude_labels)
    df = manifest.df.reset_index(drop=True)
    if df.empty:
        raise ValueError("the manifest has no rows to split")
    groups = split_groups(df, group_col)
    assignment = _assign_groups(groups, df[stratify_col].to_numpy(), fractions, seed, units=df[group_col].to_numpy())
    return Manifest(_set_split(df, pd.Series(groups, index=df.index).map(assignment)), manifest.schema, manifest.path)


# -- external split -------------------------------------------------------------------------------


def external_split(
    manifest: Manifest,
    *,
    external: Mapping[str, Sequence[str]],
    val_frac: float,
    test_frac: float,
    seed: int,
    group_col: str = "patient_id",
    stratify_col: str = "label",
    exclude_labels: Sequence[str] = (),
) -> Manifest:
    """Rows matching ``external`` go to split ``external``; the rest get a grouped stratified split.

    ``external`` maps a column to the values that select external rows, e.g. ``{"center": ["center_C"]}``
    or ``{"dataset": ["breast-lesions-usg"]}``; a row is external when any listed column has one of its
    values. A value that selects no row is an error (usually a typo), and so is a patient with rows on
    both sides, or patients joined by a near-duplicate image (:func:`split_groups`) on both sides: the
    external test would not be external for them.
    """
    if not external:
        raise ValueError("external is empty: name a column and the values that select the external rows")
    _check_fractions(val_frac, test_frac)  # fail before any work
    _require_column(manifest, group_col, "group")
    manifest = _drop_labels(manifest, exclude_labels)
    df = manifest.df.reset_index(drop=True)
    is_external = pd.Series(False, index=df.index)
    for column, values in external.items():
        if column not in df.columns:
            raise ValueError(f"external column {column!r} is not in the manifest (columns: {list(df.columns)})")
        values = [str(v) for v in values]
        present = set(df[column].dropna().astype(str))
        unmatched = [v for v in values if v not in present]
        if unmatched:
            raise ValueError(
                f"external {column} value(s) {unmatched} match no row; values present: {sorted(present)}"
            )
        is_external |= df[column].astype(str).isin(values)
    if not (~is_external).any():
        raise ValueError(f"every row matches external={dict(external)}: nothing is left to train on")

    units = pd.Series(split_groups(df, group_col), index=df.index)
    both = sorted(set(units[is_external]) & set(units[~is_external]), key=str)
    if both:
        shown = ", ".join(repr(p) for p in both[:10]) + (f" (+{len(both) - 10} more)" if len(both) > 10 else "")
        joined = " (with the patients their near-duplicate images join, column duplicate_group)" if any(
            len(set(df.loc[units == u, group_col])) > 1 for u in both) else ""
        raise ValueError(
            f"{len(both)} {group_col}(s){joined} have rows both in the external part ({dict(external)}) and in "
            f"the internal part: {shown}; a patient must be on one side only"
        )
    internal = grouped_stratified_split(
        Manifest(df.loc[~is_external], manifest.schema, manifest.path),
        val_frac=val_frac, test_frac=test_frac, seed=seed, group_col=group_col, stratify_col=stratify_col,
    )
    split = pd.Series("external", index=df.index, dtype=object)
    split[~is_external] = internal.df["split"].to_numpy()
    return Manifest(_set_split(df, split), manifest.schema, manifest.path)


# -- combining manifests --------------------------------------------------------------------------


def _merge_conditions(
    parts: Sequence[tuple[str, Mapping[str, ConditionSpec]]],
) -> dict[str, ConditionSpec]:
    merged: dict[str, ConditionSpec] = {}
    first_seen: dict[str, str] = {}
    for dataset, conditions in parts:
        for name, spec in conditions.items():
            if name not in merged:
                merged[name], first_seen[name] = spec, dataset
                continue
            old = merged[name]
            if old.type != spec.type:
                raise ValueError(
                    f"condition {name!r} is {old.type} in {first_seen[name]!r} but {spec.type} in {dataset!r}; "
                    f"rename one of them (rename_conditions) or fix the sidecar"
                )
            if old.type == "categorical":
                levels = tuple(old.levels or ()) + tuple(v for v in spec.levels or () if v not in (old.levels or ()))
                merged[name] = dataclasses.replace(old, levels=levels, description=old.description or spec.description)
            else:
                if old.unit != spec.unit:
                    raise ValueError(
                        f"numeric condition {name!r} has unit {old.unit!r} in {first_seen[name]!r} but "
                        f"{spec.unit!r} in {dataset!r}; convert one of them before combining"
                    )
                low = None if old.min is None or spec.min is None else min(old.min, spec.min)
                high = None if old.max is None or spec.max is None else max(old.max, spec.max)
                merged[name] = dataclasses.replace(
                    old, min=low, max=high, description=old.description or spec.description
                )
    return merged


def _prefix_path(folder: str, value: Any) -> Any:
    if not isinstance(value, str) or not value:
        return value
    return posixpath.normpath(posixpath.join(folder.replace("\\", "/"), value))


def _namespace_ids(frames: list[pd.DataFrame], datasets: list[str]) -> None:
    """Prefix ``image_id`` / ``patient_id`` with ``dataset:`` in every part when two parts share a value.

    A ``patient_id`` shared by two parts of the *same* dataset (e.g. one dataset given per center) is the
    same patient and is left alone; an ``image_id`` must never be shared. ``duplicate_group`` labels are
    treated like ``patient_id`` (in the parts that have the column), so that near-duplicates of different
    datasets are never joined by a shared label.
    """
    for column in (*ID_COLUMNS, DUPLICATE_GROUP_COLUMN):
        owner: dict[str, str] = {}
        collide = False
        for frame, dataset in zip(frames, datasets, strict=True):
            if column not in frame.columns:
                continue
            for value in frame[column].dropna().astype(str).unique():
                if value in owner and (column == "image_id" or owner[value] != dataset):
                    collide = True
                owner.setdefault(value, dataset)
        if not collide:
            continue
        for frame, dataset in zip(frames, datasets, strict=True):
            if column in frame.columns:
                frame[column] = frame[column].map(lambda v, d=dataset: v if pd.isna(v) else f"{d}:{v}")
        values = pd.concat([f[column] for f in frames if column in f.columns])
        if column == "image_id" and values.duplicated().any():
            raise ValueError(
                f"image_id {values[values.duplicated()].iloc[0]!r} occurs in two parts of the same dataset; "
                f"give the parts distinct dataset names"
            )
        logger.info("namespaced %s by dataset: some values occur in more than one part", column)


def combine_manifests(
    parts: Sequence[tuple[Manifest, str]],
    *,
    rename_conditions: Mapping[str, str] | None = None,
    dataset: str | None = None,
) -> Manifest:
    """One multi-center manifest from several, each with its folder relative to a common data root.

    - Paths: ``image_path`` / ``mask_path`` get the part's folder in front
      (``("bus-bra", ...)`` turns ``Images/x.png`` into ``bus-bra/Images/x.png``).
    - Ids: when an ``image_id`` or ``patient_id`` value occurs in two parts, that column is prefixed
      with the part's dataset name in every part (``bus-bra:bus_0001-l``), so ids stay unique and no two
      patients from different datasets are merged into one.
    - Labels: the label set is the union (in order of first appearance); ``task`` and
      ``positive_class`` must agree across parts.
    - Conditions: the union of the declared conditions. A categorical condition gets the union of the
      levels; a numeric one the widest [min, max] (units must agree). A condition a part lacks is
      missing (NaN) for that part's rows. A condition declared categorical in one part and numeric in
      another is an error.
    - ``rename_conditions`` maps a condition name to the name it takes in the combined manifest
      (``{"cond_bi_rads": "cond_birads"}``), applied to every part that has it, so that conditions
      named differently by their builders merge.
    """
    if not parts:
        raise ValueError("combine_manifests needs at least one part")
    rename = dict(rename_conditions or {})
    for old, new in rename.items():
        if not (old.startswith(CONDITION_PREFIX) and new.startswith(CONDITION_PREFIX)):
            raise ValueError(f"rename_conditions {old!r} -> {new!r}: both names must start with {CONDITION_PREFIX!r}")
    unused = set(rename) - {c for m, _ in parts for c in m.schema.conditions}
    if unused:
        raise ValueError(f"rename_conditions names condition(s) {sorted(unused)} that no part declares")

    schemas = [m.schema for m, _ in parts]
    names = [s.dataset for s in schemas]
    for attribute in ("task", "positive_class"):
        values = {s.dataset: getattr(s, attribute) for s in schemas}
        if len(set(values.values())) > 1:
            raise ValueError(f"the parts disagree on {attribute}: {values}; they cannot be combined")

    frames: list[pd.DataFrame] = []
    conditions: list[tuple[str, dict[str, ConditionSpec]]] = []
    for (manifest, folder), schema in zip(parts, schemas, strict=True):
        mapping = {old: new for old, new in rename.items() if old in schema.conditions}
        renamed = [mapping.get(c, c) for c in schema.conditions]
        if len(set(renamed)) != len(renamed):
            raise ValueError(f"rename_conditions {mapping} gives two conditions of {schema.dataset!r} the same name")
        frame = manifest.df.rename(columns=mapping).copy()
        for column in PATH_COLUMNS:
            if column in frame.columns:
                frame[column] = frame[column].map(lambda v, f=folder: _prefix_path(f, v))
        frames.append(frame)
        conditions.append((schema.dataset, {mapping.get(k, k): v for k, v in schema.conditions.items()}))
    _namespace_ids(frames, names)

    label_set: list[str] = []
    for schema in schemas:
        label_set.extend(label for label in schema.label_set if label not in label_set)
    combined_schema = ManifestSchema(
        dataset=dataset or "+".join(dict.fromkeys(names)),
        label_set=tuple(label_set),
        task=schemas[0].task,
        positive_class=schemas[0].positive_class,
        conditions=_merge_conditions(conditions),
        source="\n".join(f"{s.dataset}: {s.source}" for s in schemas if s.source),
    )
    df = pd.concat(frames, ignore_index=True, sort=False)
    for name in combined_schema.conditions:
        if name not in df.columns:  # declared by a sidecar but a column in no part: missing everywhere
            df[name] = np.nan
    return Manifest(df, combined_schema, None)


# -- reporting ------------------------------------------------------------------------------------


def split_table(manifest: Manifest) -> pd.DataFrame:
    """Images per split x label, plus images and patients per split and a ``total`` row."""
    df = manifest.df
    if "split" not in df.columns:
        raise ValueError("the manifest has no split column; split it first")
    present = [s for s in SPLITS if (df["split"] == s).any()]
    other = sorted(set(df["split"].dropna()) - set(SPLITS))
    order = present + other + (["(none)"] if df["split"].isna().any() else [])
    split = df["split"].fillna("(none)")
    labels = list(manifest.schema.label_set) + sorted(set(df["label"].dropna()) - set(manifest.schema.label_set))
    table = pd.crosstab(split, df["label"]).reindex(index=order, columns=labels, fill_value=0)
    table["images"] = table.sum(axis=1)
    table["patients"] = df.groupby(split)["patient_id"].nunique().reindex(order).fillna(0).astype(int)
    table.loc["total"] = [*table[labels].sum().tolist(), len(df), df["patient_id"].nunique()]
    table.index.name = "split"
    table.columns.name = None
    return table.astype(int)
