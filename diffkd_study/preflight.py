"""Preflight: a study config checked against the data's tables before the runner prepares any data.

A mistake should cost seconds, not the minutes of a data step and the stages before the one that
trips over it. Each check sits at the earliest point that has what it needs:

At load (:func:`diffkd_study.config.load_config`; reads the config file only)
    - the file: UTF-8 text, YAML with safe tags only (``!!python`` refused), each key once per mapping;
    - every key known, every value of its type and range; ``name`` folder-safe and not starting with ``.``;
    - ``stages`` given, non-empty, known, each once, in run order; every stage that runs finds what it
      reads among the earlier ones (``StageSpec.needs``; a ``reader_study`` without ``model`` needs
      ``baselines`` or the ``diffkd`` student);
    - ``data``: exactly one of ``phantom`` / ``manifests``; external data selected by ``center`` or
      ``dataset``; ``split.val_frac + split.test_frac < 1``; ``allow_paths_outside_root`` true/false;
    - ``reader_study``: readers simulated for the phantom cohort only, never with ``reads`` too.

Preflight (:func:`preflight`; reads each manifest's CSV columns and schema sidecar, never an image)
    - ``data.manifests``: every manifest and sidecar exists and can be read; ``--data-root`` is given and
      holds every dataset's ``root`` folder;
    - ``data.exclude_labels``: each label is in some manifest's label set;
    - ``data.external``: every value selects rows (after ``exclude_labels``), and rows are left to train on;
      for the phantom cohort, the centers its generator makes (``data.phantom.CENTERS``);
    - ``evaluation.subgroups`` (when ``evaluation`` runs): each is a column of some manifest or one the
      evaluation derives (``age_band`` from ``cond_age``); the default list asks only for what exists;
    - ``baselines.clinical_conditions`` (when the clinical baseline runs): each is a condition column;
    - ``reader_study.reads`` (when ``reader_study`` runs): the read table exists;
    - warnings (manifests only: the phantom records every condition at every center and has every mask),
      when ``baselines`` runs: the clinical baseline finds none of its conditions recorded in the internal
      data (it is skipped) or on an external center (not applicable there); the image-feature baseline
      finds internal images without a lesion mask (skipped) or external ones (not applicable there).

Later
    - data preparation (``diffkd_study.data.study``): every row against the schema and its image and mask
      files, ids, paths (``path-outside-root`` unless ``data.allow_paths_outside_root``), patients on both
      sides of the external selection, both classes in every split, leakage between splits;
    - each stage, at its start: its own inputs (weights files, synthetic set, models named in its section).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from diffkd_study.config import ManifestSource, StudyConfig
from diffkd_study.data.schema import CONDITION_PREFIX, ManifestSchema, read_schema, sidecar_path
from diffkd_study.methods.diffkd.stage import EvaluationConfig
from diffkd_study.sections import ConfigError

__all__ = ["DERIVED_SUBGROUPS", "preflight"]

#: Subgroup columns the evaluation derives (``eval.evaluate.add_subgroups``) -> the column it derives them from.
DERIVED_SUBGROUPS: dict[str, str] = {"age_band": "cond_age"}
# The row values preflight reads: external selection, label exclusion, baseline inputs.
_ROW_COLUMNS: tuple[str, ...] = ("center", "dataset", "label", "mask_path")


@dataclass
class _Cohort:
    """What is known of the study's data before it is prepared."""

    columns: set[str]  # every column some manifest has: CSV header or declared condition (study adds `split`)
    labels: set[str]  # the union of the label sets
    selectable: dict[str, set[str]]  # external column -> its values, after exclude_labels
    rows: pd.DataFrame | None  # _ROW_COLUMNS, cond_* and `source` of every kept row; None for the phantom

    @property
    def name(self) -> str:
        return "the phantom cohort" if self.rows is None else "the manifests"


def preflight(config: StudyConfig, *, project_root: str | Path = ".", data_root: str | Path | None = None) -> list[str]:
    """Check ``config`` against the manifests' tables; return warnings, raise :class:`ConfigError` on an error.

    ``project_root``: the folder relative manifest and read-table paths start from; ``data_root``: the
    ``--data-root`` folder that holds each manifest's dataset ``root`` (unused for the phantom cohort).
    Every message is one line that starts with the config file and names the key.
    """
    origin = config.source_path or "<config>"
    project_root = Path(project_root)
    cohort = _phantom_cohort() if config.data.phantom is not None else _manifest_cohort(
        config, origin, project_root, None if data_root is None else Path(data_root))
    unknown = [label for label in config.data.exclude_labels if label not in cohort.labels]
    if unknown:
        raise ConfigError(f"{origin}: data.exclude_labels: {', '.join(repr(v) for v in unknown)} "
                          f"{'is' if len(unknown) == 1 else 'are'} in no label set of {cohort.name} "
                          f"(labels: {', '.join(sorted(cohort.labels))})")
    _check_external(config, origin, cohort)
    if "evaluation" in config.stages:
        _check_subgroups(config.section("evaluation").subgroups, origin, cohort)
    baselines = config.section("baselines")
    if "baselines" in config.stages and "clinical" in baselines.models:
        conditions = sorted(c for c in cohort.columns if c.startswith(CONDITION_PREFIX))
        for name in baselines.clinical_conditions:
            if name not in cohort.columns:
                raise ConfigError(f"{origin}: baselines.clinical_conditions: {name!r} matches no column of "
                                  f"{cohort.name} (known: {', '.join(conditions) or 'none'})")
    reads_table = config.section("reader_study").reads
    if "reader_study" in config.stages and reads_table is not None:
        reads = Path(reads_table)
        path = reads if reads.is_absolute() else project_root / reads
        if not path.is_file():
            raise ConfigError(f"{origin}: reader_study.reads: read table {path} not found (a relative path is read "
                              "from the project root)")
    if cohort.rows is None or "baselines" not in config.stages:
        return []
    return _baseline_warnings(config, origin, cohort.rows)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _phantom_cohort() -> _Cohort:
    from diffkd_study.data.phantom import CENTERS, phantom_schema

    schema = phantom_schema()
    # The columns of generate_phantom_cohort's rows (a test compares them with a generated cohort).
    columns = {"image_id", "patient_id", "dataset", "center", "image_path", "mask_path", "label", "true_risk",
               *schema.conditions}
    return _Cohort(columns=columns, labels=set(schema.label_set),
                   selectable={"center": set(CENTERS), "dataset": {schema.dataset}}, rows=None)


def _read_source(
    source: ManifestSource, where: str, project_root: Path
) -> tuple[pd.DataFrame, ManifestSchema, set[str]]:
    """(rows of the columns preflight reads, schema, every column) of one manifest."""
    path = Path(source.path)
    path = path if path.is_absolute() else project_root / path
    if not path.is_file():
        raise ConfigError(f"{where}: manifest {path} not found (build it with `diffkd-study data build NAME "
                          f"--root DIR --out {source.path}`)")
    try:
        schema = read_schema(sidecar_path(path))
    except (OSError, ValueError) as err:  # a missing sidecar or a SchemaError (a ValueError): both name the sidecar
        raise ConfigError(f"{where}: {_one_line(err)}") from None
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
        wanted = [c for c in header if c in _ROW_COLUMNS or c.startswith(CONDITION_PREFIX)]
        rows = pd.read_csv(path, usecols=wanted, dtype=str, keep_default_na=False, na_values=[""])
    except ValueError as err:  # pandas' ParserError and EmptyDataError, and UnicodeDecodeError, are ValueErrors
        raise ConfigError(f"{where}: {path} is not a readable CSV: {_one_line(err)}") from None
    return rows.assign(source=source.path), schema, set(header) | set(schema.conditions)


def _manifest_cohort(config: StudyConfig, origin: str, project_root: Path, data_root: Path | None) -> _Cohort:
    sources = config.data.manifests
    if data_root is None:
        raise ConfigError(f"{origin}: data.manifests: the config reads manifests: pass --data-root DIR, the folder "
                          f"that holds {', '.join(repr(s.root) for s in sources)}")
    frames, labels, columns = [], set(), set()
    for i, source in enumerate(sources):
        where = f"{origin}: data.manifests[{i}]"
        if not (data_root / source.root).is_dir():
            raise ConfigError(f"{where}.root: {data_root / source.root} is not a folder (root {source.root!r} under "
                              f"--data-root {data_root})")
        rows, schema, header = _read_source(source, f"{where}.path", project_root)
        frames.append(rows)
        labels |= set(schema.label_set)
        columns |= header
    rows = pd.concat(frames, ignore_index=True, sort=False)
    rows = rows.reindex(columns=list(dict.fromkeys([*rows.columns, *_ROW_COLUMNS,
                                                    *sorted(c for c in columns if c.startswith(CONDITION_PREFIX))])))
    rows = rows[~rows["label"].isin(config.data.exclude_labels)].reset_index(drop=True)
    selectable = {column: set(rows[column].dropna()) for column in ("center", "dataset")}
    return _Cohort(columns=columns, labels=labels, selectable=selectable, rows=rows)


def _external_mask(config: StudyConfig, rows: pd.DataFrame) -> pd.Series:
    is_external = pd.Series(False, index=rows.index)
    for column, values in config.data.external.items():
        is_external |= rows[column].isin(values)
    return is_external


def _check_external(config: StudyConfig, origin: str, cohort: _Cohort) -> None:
    after = " after data.exclude_labels" if config.data.exclude_labels else ""
    for column, values in config.data.external.items():
        present = cohort.selectable[column]
        unmatched = [v for v in values if v not in present]
        if unmatched:
            verb = "matches" if len(unmatched) == 1 else "match"
            raise ConfigError(f"{origin}: data.external.{column}: {', '.join(repr(v) for v in unmatched)} {verb} no "
                              f"row of {cohort.name}{after} (known: {', '.join(sorted(present))})")
    if not config.data.external:
        return
    if cohort.rows is None:  # the phantom: one dataset, every center
        everything = any(set(config.data.external.get(c, ())) >= vs for c, vs in cohort.selectable.items())
    else:
        everything = bool(_external_mask(config, cohort.rows).all())
    if everything:
        selection = ", ".join(f"{c}={v}" for c, values in config.data.external.items() for v in values)
        raise ConfigError(f"{origin}: data.external: every row is selected as external data ({selection}): "
                          "nothing is left to train on")


def _check_subgroups(subgroups: Sequence[str], origin: str, cohort: _Cohort) -> None:
    known = cohort.columns | {"split"} | {d for d, source in DERIVED_SUBGROUPS.items() if source in cohort.columns}
    if tuple(subgroups) == EvaluationConfig().subgroups:
        return  # the default list: the evaluation reports those of its subgroups the data records
    for name in subgroups:
        if name not in known:
            raise ConfigError(f"{origin}: evaluation.subgroups: {name!r} matches no column of "
                              f"{cohort.name} (known: {', '.join(sorted(known))})")


def _baseline_warnings(config: StudyConfig, origin: str, rows: pd.DataFrame) -> list[str]:
    """What ``eval.baselines`` will find missing. The internal rows stand in for the training and validation
    splits (not drawn yet); each external center is a test set of its own, as in the evaluation."""
    from diffkd_study.methods.diffkd.baselines import (
        _is_center_proxy,  # the rule ConditionEncoder.fit applies
    )

    warnings = []
    is_external = _external_mask(config, rows)
    internal, external = rows[~is_external], rows[is_external]
    test_sets = [(f"external set center={center}", part) for center, part in external.groupby("center", sort=True)]
    baselines = config.section("baselines")
    if "clinical" in baselines.models:
        named = baselines.clinical_conditions
        chosen = list(named) or [c for c in rows.columns if c.startswith(CONDITION_PREFIX)]
        inputs = [c for c in chosen if internal[c].notna().any() and (named or not _is_center_proxy(internal, c))]
        if not inputs:
            warnings.append(f"{origin}: baseline 'clinical' has no inputs: none of "
                            f"{', '.join(chosen) or 'the condition columns (none)'} is recorded in the internal "
                            "(training) data: it will be skipped")
        else:
            warnings += [f"{origin}: baseline 'clinical' has no inputs on {test_set} ({', '.join(inputs)} all "
                         "missing): it will be reported as not applicable there"
                         for test_set, part in test_sets if part[inputs].isna().all().all()]
    for mask_baseline in (m for m in ("image_features", "box_geometry") if m in baselines.models):
        no_mask = rows["mask_path"].isna() | (rows["mask_path"].astype(str).str.strip() == "")
        if no_mask[~is_external].any():
            counts = rows.loc[no_mask & ~is_external, "source"].value_counts(sort=False)
            warnings.append(f"{origin}: baseline {mask_baseline!r} needs a lesion mask for every training and "
                            f"validation image, but {int(counts.sum())} of {len(internal)} internal images have none "
                            f"({', '.join(f'{source}: {n}' for source, n in counts.items())}): it will be skipped "
                            "unless they all fall in the test split")
        warnings += [f"{origin}: baseline {mask_baseline!r} has no inputs on {test_set} "
                     f"({int(no_mask[part.index].sum())} of {len(part)} images have no lesion mask): it will be "
                     "reported as not applicable there" for test_set, part in test_sets if no_mask[part.index].any()]
    return warnings
