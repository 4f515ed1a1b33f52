"""Prepare a study's data from its config: phantom cohort or manifests -> split -> validated manifest.

The result lives in ``<run_dir>/data/``: ``study.csv`` (+ sidecar) with a ``split`` column,
``study.json`` (where the images are, the sha256 of every input manifest) and the validation report
(``validation.json``, ``validation.csv``). Later stages read only these files.

A cross-validation study (a config with ``cv``) writes the same files, its manifest holding every image once
with each internal image's test fold (:func:`diffkd_study.data.folds.assign_folds`); fold k's sub-study (the
config's ``fold`` set, its run folder ``runs/NAME/fold-k``) reads that manifest, not the sources, and writes
its own split (:func:`diffkd_study.data.folds.fold_split`) into ``runs/NAME/fold-k/data/``.

Every image must lie inside the data root (each manifest's rows inside its dataset folder, each dataset
folder inside ``--data-root``) unless the config sets ``data.allow_paths_outside_root: true``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from diffkd_study.data.folds import assign_folds, fold_folder, fold_split
from diffkd_study.data.schema import Manifest, path_outside_root, read_manifest, write_manifest
from diffkd_study.data.validate import ValidationReport, validate_manifest
from diffkd_study.io import sha256_file, write_json


class StudyDataConfig(Protocol):
    """What data preparation reads of a study config (:class:`diffkd_study.config.StudyConfig` has it): the
    name, the config file, the seed, the ``cv`` section and fold, and the ``data`` section (``phantom``,
    ``manifests``, ``external``, ``exclude_labels``, ``lesion_free_labels``, ``split``, ``allow_paths_outside_root``)."""

    name: str
    seed: int
    source_path: str | None
    cv: Any  # the ``cv`` section (folds, column, seed) or None
    fold: int | None  # fold k's sub-study, or None

    @property
    def data(self) -> Any:
        """The config's ``data`` section."""


class DataPreparationError(RuntimeError):
    """The study data cannot be prepared (missing manifest or root, or validation errors)."""


@dataclass
class StudyData:
    """The prepared study data: the split study manifest (``runs/NAME/data/study.csv``), the data root its
    paths are relative to, its validation report and the sha256 of the input files.
    """

    manifest_path: Path
    root: Path
    validation: ValidationReport
    inputs_sha256: dict[str, str]

    @property
    def manifest(self) -> Manifest:
        """The study manifest, read from ``manifest_path``."""
        return read_manifest(self.manifest_path)


def _phantom_manifest(config: StudyDataConfig, data_dir: Path, progress: bool) -> tuple[Manifest, Path]:
    from diffkd_study.data.phantom import generate_phantom_cohort

    assert config.data.phantom is not None
    params = {"n_per_center": config.data.phantom.n_per_center, "image_size": config.data.phantom.image_size,
              "seed": config.seed}
    cohort_dir = data_dir / "phantom"
    params_file = data_dir / "phantom.params.json"
    if (cohort_dir / "phantom.csv").is_file() and params_file.is_file() and json.loads(params_file.read_text()) == params:
        return read_manifest(cohort_dir / "phantom.csv"), cohort_dir
    manifest = generate_phantom_cohort(
        cohort_dir,
        n_per_center=params["n_per_center"],
        seed=config.seed,
        image_size=params["image_size"],
        progress=progress,
    )
    write_json(params_file, params)
    return manifest, cohort_dir


def _allow_outside_root(config: StudyDataConfig) -> bool:
    return bool(getattr(config.data, "allow_paths_outside_root", False))


def _manifests_from_sources(
    config: StudyDataConfig, data_root: Path | None, project_root: Path
) -> tuple[list[tuple[Manifest, str, Path]], dict[str, str]]:
    """Read every manifest the config names: (manifest, its root relative to data_root, absolute root)."""
    if data_root is None:
        raise DataPreparationError(
            f"config {config.source_path or config.name} reads manifests: pass --data-root DIR, the folder that "
            f"holds {', '.join(repr(s.root) for s in config.data.manifests)}"
        )
    parts: list[tuple[Manifest, str, Path]] = []
    hashes: dict[str, str] = {}
    for source in config.data.manifests:
        path = Path(source.path)
        if not path.is_absolute():
            path = project_root / path
        if not path.is_file():
            raise DataPreparationError(
                f"manifest {path} not found (build it with `diffkd-study data build NAME --root DIR --out {source.path}`)"
            )
        dataset_root = data_root / source.root
        if not dataset_root.is_dir():
            raise DataPreparationError(f"data root {dataset_root} for manifest {path} is not a directory")
        if not _allow_outside_root(config) and path_outside_root(data_root, source.root) is not None:
            raise DataPreparationError(
                f"data root {source.root!r} of manifest {path} leads to {dataset_root.resolve()}, outside the data "
                f"root {data_root.resolve()}; set data.allow_paths_outside_root: true to read it"
            )
        parts.append((read_manifest(path), source.root, dataset_root))
        hashes[str(source.path)] = sha256_file(path)
    return parts, hashes


def prepare_study_data(
    config: StudyDataConfig,
    run_dir: str | Path,
    *,
    data_root: str | Path | None = None,
    project_root: str | Path = ".",
    progress: bool = True,
) -> StudyData:
    """Build, split and validate the study manifest; raise ``DataPreparationError`` on any error.

    A cross-validation study's manifest gets its folds instead of a split, and a fold's sub-study splits that
    manifest (the module docstring).
    """
    from diffkd_study.data.splits import combine_manifests, external_split, grouped_stratified_split

    run_dir = Path(run_dir)
    data_dir = run_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    project_root = Path(project_root)
    if config.fold is not None:
        return _prepare_fold(config, run_dir, progress)
    if config.data.phantom is not None:
        manifest, root = _phantom_manifest(config, data_dir, progress)
        sources = [(manifest, ".", root)]
        inputs: dict[str, str] = {}
    else:
        sources, inputs = _manifests_from_sources(
            config, None if data_root is None else Path(data_root), project_root
        )
    # Pass 1: each input manifest against its own files, so that problems name the user's file and line.
    for source_manifest, _, source_root in sources:
        first = validate_manifest(
            source_manifest, source_root, lesion_free_labels=config.data.lesion_free_labels, progress=progress,
            allow_outside_root=_allow_outside_root(config),
        )
        if not first.ok:
            raise DataPreparationError(first.format())
    if len(sources) == 1:
        manifest, root = sources[0][0], sources[0][2]
    else:
        manifest = combine_manifests([(m, rel) for m, rel, _ in sources])
        root = Path(data_root)  # type: ignore[arg-type]

    split = config.data.split
    # a cross-validation study splits nothing here (every internal row "train", then its fold)
    val_frac, test_frac = (0.0, 0.0) if config.cv is not None else (split.val_frac, split.test_frac)
    try:
        if config.data.external:
            study = external_split(
                manifest,
                external={k: list(v) for k, v in config.data.external.items()},
                val_frac=val_frac,
                test_frac=test_frac,
                seed=config.seed,
                exclude_labels=config.data.exclude_labels,
            )
        else:
            study = grouped_stratified_split(
                manifest, val_frac=val_frac, test_frac=test_frac, seed=config.seed,
                exclude_labels=config.data.exclude_labels,
            )
        if config.cv is not None:
            study = assign_folds(study, config.cv.folds, column=config.cv.column,
                                 seed=config.seed if config.cv.seed is None else config.cv.seed)
    except ValueError as err:
        if config.cv is None:
            raise
        raise DataPreparationError(f"cross-validation folds: {err}") from None
    return _write_study(study, root, data_dir, inputs, config, progress)


def _prepare_fold(config: StudyDataConfig, run_dir: Path, progress: bool) -> StudyData:
    """Fold ``config.fold``'s study data from the cross-validation study's manifest in ``run_dir.parent``."""
    if run_dir.name != fold_folder(config.fold):
        raise DataPreparationError(f"fold {config.fold}'s run folder must be {fold_folder(config.fold)}, got {run_dir}")
    parent = run_dir.parent / "data"
    if not (parent / "study.json").is_file():
        raise DataPreparationError(f"fold {config.fold}: the cross-validation study's data ({parent}) are not prepared")
    record = json.loads((parent / "study.json").read_text(encoding="utf-8"))
    folds = read_manifest(parent / record["manifest"])
    try:
        study = fold_split(folds, config.fold, config.cv.folds, val_frac=config.data.split.val_frac, seed=config.seed)
    except ValueError as err:
        raise DataPreparationError(f"fold {config.fold}: {err}") from None
    inputs = {**record["inputs_sha256"], "cross-validation study.csv": record["inputs_sha256"]["study.csv"]}
    return _write_study(study, Path(record["root"]), run_dir / "data", inputs, config, progress)


def _write_study(study: Manifest, root: Path, data_dir: Path, inputs: dict[str, str], config: StudyDataConfig,
                 progress: bool) -> StudyData:
    """Write the study manifest, validate it (pass 2: leakage and duplicates across splits) and record it."""
    study_path = write_manifest(study, data_dir / "study.csv")
    study.path = study_path
    report = validate_manifest(
        study, root, lesion_free_labels=config.data.lesion_free_labels, progress=progress,
        allow_outside_root=_allow_outside_root(config),
    )
    write_json(data_dir / "validation.json", _report_json(report))
    report.to_frame().to_csv(data_dir / "validation.csv", index=False)
    inputs["study.csv"] = sha256_file(study_path)
    write_json(
        data_dir / "study.json",
        {"manifest": study_path.name, "root": str(Path(root).resolve()), "inputs_sha256": inputs,
         "manifest_content_sha256": study.sha256()},
    )
    if not report.ok:
        raise DataPreparationError(report.format())
    return StudyData(manifest_path=study_path, root=Path(root), validation=report, inputs_sha256=inputs)


def _report_json(report: ValidationReport) -> dict[str, Any]:
    return {
        "manifest": report.manifest,
        "n_rows": report.n_rows,
        "n_errors": len(report.errors),
        "n_warnings": len(report.warnings),
        "problems": [p.__dict__ for p in report.problems],
        "image_sizes": {k: list(v) for k, v in report.image_sizes.items()},
        "image_modes": dict(report.image_modes),
    }
