"""Prepare a study's data from its config: phantom cohort or manifests -> split -> validated manifest.

The result lives in ``<run_dir>/data/``: ``study.csv`` (+ sidecar) with a ``split`` column,
``study.json`` (where the images are, the sha256 of every input manifest) and the validation report
(``validation.json``, ``validation.csv``). Later stages read only these files.

Every image must lie inside the data root (each manifest's rows inside its dataset folder, each dataset
folder inside ``--data-root``) unless the config sets ``data.allow_paths_outside_root: true``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from diffkd_study.data.schema import Manifest, path_outside_root, read_manifest, write_manifest
from diffkd_study.data.validate import ValidationReport, validate_manifest
from diffkd_study.io import sha256_file, write_json


class StudyDataConfig(Protocol):
    """What data preparation reads of a study config (:class:`diffkd_study.config.StudyConfig` has it): the
    name, the config file, the seed and the ``data`` section (``phantom``, ``manifests``, ``external``,
    ``exclude_labels``, ``lesion_free_labels``, ``split``, ``allow_paths_outside_root``)."""

    name: str
    seed: int
    source_path: str | None

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
    """Build, split and validate the study manifest; raise ``DataPreparationError`` on any error."""
    from diffkd_study.data.splits import combine_manifests, external_split, grouped_stratified_split

    run_dir = Path(run_dir)
    data_dir = run_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    project_root = Path(project_root)
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
    if config.data.external:
        study = external_split(
            manifest,
            external={k: list(v) for k, v in config.data.external.items()},
            val_frac=split.val_frac,
            test_frac=split.test_frac,
            seed=config.seed,
            exclude_labels=config.data.exclude_labels,
        )
    else:
        study = grouped_stratified_split(
            manifest, val_frac=split.val_frac, test_frac=split.test_frac, seed=config.seed,
            exclude_labels=config.data.exclude_labels,
        )

    # Pass 2: the split study manifest (leakage across splits, duplicates across splits).
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
