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
    stages: [data_audit, baselines, evaluation, reader_study]
    baselines: {models: [clinical, image_features]}
    evaluation: {bootstrap: 2000, band_resamples: 500}
    reader_study: {simulate: {n_junior: 4, n_senior: 4}}   # phantom only; real data: {reads: reads.csv}

``stages`` is required. Stages run in the order of ``KNOWN_STAGES`` (the stage registry,
:mod:`diffkd_study.stages`); each reads only what earlier stages wrote, and a config whose stages lack what
one of them reads (``StageSpec.needs``) is refused. Every stage's section is parsed by the one section parser
(:mod:`diffkd_study.sections`) into its dataclass, whose defaults are the only ones. What is checked here,
what against the data's tables before the run (:mod:`diffkd_study.preflight`) and what later is listed in
the docstring of :mod:`diffkd_study.preflight`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from diffkd_study.sections import (
    ConfigError,
    FieldError,
    _check_value,
    _expect,
    _number,
    _str_list,
    check_range,
    parse_section,
)
from diffkd_study.stages import KNOWN_STAGES, POOLED_STAGE, STAGES

DEFAULT_MANIFEST_IMAGE_SIZE = 224
#: The YAML key of data_audit's one setting (``DataAuditConfig.examples_per_group``): it is written in ``data``.
AUDIT_EXAMPLES_KEY = "audit_examples_per_group"
#: The stages whose section is a top-level YAML key named like the stage.
_TOP_LEVEL_SECTIONS: tuple[str, ...] = tuple(stage for stage in KNOWN_STAGES if stage != "data_audit")


@dataclass(frozen=True)
class ManifestSource:
    """One manifest of the study's data and the folder of its dataset."""

    path: str  # manifest CSV (relative to the project root or absolute)
    root: str = "."  # the dataset's folder, relative to --data-root (or absolute)


@dataclass(frozen=True)
class PhantomSource:
    """The built-in simulated cohort: patients per center and image size."""

    n_per_center: int = 60
    image_size: int = 128

    def __post_init__(self) -> None:
        check_range("n_per_center", self.n_per_center, 4)
        check_range("image_size", self.image_size, 32, 1024)


@dataclass(frozen=True)
class SplitConfig:
    """The shares of the internal data held out for validation and testing (patient-grouped)."""

    val_frac: float = 0.15
    test_frac: float = 0.2

    def __post_init__(self) -> None:
        check_range("val_frac", self.val_frac, 0.0, 0.5)
        check_range("test_frac", self.test_frac, 0.0, 0.5)
        if self.val_frac + self.test_frac >= 1.0:
            raise ValueError(f"val_frac + test_frac = {self.val_frac + self.test_frac:g} leaves no training data; "
                             "it must be < 1")


@dataclass(frozen=True)
class DataConfig:
    """The ``data`` section: where the images come from and how they are split.

    Exactly one of ``phantom`` (the built-in simulated cohort) or ``manifests`` is set. ``external`` maps
    ``center`` or ``dataset`` to the values held out as external test data; ``exclude_labels`` are dropped,
    ``lesion_free_labels`` may have empty masks; ``image_size`` is the study (training) resolution.
    """

    phantom: PhantomSource | None = None
    manifests: tuple[ManifestSource, ...] = ()
    external: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    exclude_labels: tuple[str, ...] = ()
    lesion_free_labels: tuple[str, ...] = ("normal",)
    split: SplitConfig = field(default_factory=SplitConfig)
    image_size: int | None = None  # study (training) resolution; default: the phantom's, else 224
    # true: manifest paths may leave their dataset's root (``..``, absolute paths); the data checks then
    # skip the ``path-outside-root`` rule
    allow_paths_outside_root: bool = False

    def __post_init__(self) -> None:
        if (self.phantom is None) == (not self.manifests):
            raise ValueError("needs exactly one of 'phantom' or 'manifests'")
        for column in self.external:
            if column not in {"center", "dataset"}:
                raise FieldError(f"external.{column}", "only 'center' or 'dataset' select external data")
        if self.image_size is not None:
            check_range("image_size", self.image_size, 32, 1024)

    @property
    def resolution(self) -> int:
        """The study resolution in pixels: ``image_size``, else the phantom's, else 224."""
        if self.image_size is not None:
            return self.image_size
        return self.phantom.image_size if self.phantom is not None else DEFAULT_MANIFEST_IMAGE_SIZE


@dataclass(frozen=True)
class CVConfig:
    """The ``cv`` section: patient-grouped K-fold cross-validation of the study's stages (:mod:`diffkd_study.cvrun`).

    ``folds`` (K >= 2) is required. ``column``: a manifest column holding official test folds (1-based, e.g.
    BUS-BRA's ``fold_5``); when null and the manifest has ``fold_<K>`` (filled for every internal image) that
    column is used, else patient-grouped stratified folds are made with ``seed`` (null: the study seed).
    """

    folds: int
    column: str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        check_range("folds", self.folds, 2, 50)
        if self.seed is not None:
            check_range("seed", self.seed, 0)


@dataclass(frozen=True)
class StudyConfig:
    """A parsed study config: name, data, seed, the stages to run and every stage's section.

    Built by :func:`parse_config` / :func:`load_config`, never by hand in a run; ``stage_params`` holds one
    parsed section per known stage (its defaults when the YAML has none), read with :meth:`section`.
    """

    name: str
    data: DataConfig
    seed: int = 0
    stages: tuple[str, ...] = ("data_audit",)
    description: str = ""
    # stage name -> its section (an instance of STAGES[stage].section), for every known stage
    stage_params: Mapping[str, Any] = field(default_factory=dict)
    source_path: str | None = None
    cv: CVConfig | None = None  # the ``cv`` section: a cross-validation study
    fold: int | None = None  # set by the cross-validation driver for fold k's sub-study, never by a YAML

    def section(self, stage: str) -> Any:
        """The parsed section of ``stage`` (its defaults when the YAML has none)."""
        return self.stage_params[stage]

    def skip_reason(self, stage: str) -> str | None:
        """Why the runner skips ``stage`` (its section's ``skip_reason()``), or None when it runs."""
        reason = getattr(self.section(stage), "skip_reason", None)
        return reason() if reason is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The config as plain YAML-ready data, in the layout of the YAML file.

        Sections become top-level keys again, data_audit's one setting goes back into ``data``, and
        ``source_path`` is left out, so ``parse_config(config.to_dict())`` gives the same config (without its
    ``source_path``) for every config that :func:`parse_config` returns (a fold's sub-study adds ``fold``).
        """
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
        for key in ("cv", "fold"):  # a plain study has neither; a fold's sub-study records its fold
            if out[key] is None:
                out.pop(key)
        sections = out.pop("stage_params")
        if "data_audit" in sections:
            out["data"][AUDIT_EXAMPLES_KEY] = sections.pop("data_audit")["examples_per_group"]
        out.update(sections)
        return out


def parse_config(raw: Any, origin: str = "<config>") -> StudyConfig:
    """Validate already-loaded YAML data into a :class:`StudyConfig`.

    Args:
        raw: the mapping read from a study config (``name``, ``data``, ``stages`` and the stage sections).
        origin: the file name (or ``"<config>"``) that every error message starts with; a file name is
            kept as ``source_path``.

    Raises:
        ConfigError: naming the key, for an unknown or missing key, a value of the wrong type or range,
            stages that are unknown, repeated, out of order or lacking what they read, or reader simulation
            without the phantom cohort.
    """
    top = _expect(raw, origin, {"name", "seed", "data", "stages", "description", "cv", *_TOP_LEVEL_SECTIONS},
                  {"name", "data"})
    name = top["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"{origin}: name must be a folder-safe string (letters, digits, _ . -), got {name!r}")
    if name.startswith("."):
        raise ConfigError(f"{origin}: name must not start with '.', got {name!r}: the run writes runs/NAME and "
                          "reports/NAME, and a name like '..' would write outside them")
    seed = _number(top.get("seed", StudyConfig.seed), f"{origin}: seed", int, 0)
    data_raw = _expect(top["data"], f"{origin}: data", {f.name for f in fields(DataConfig)} | {AUDIT_EXAMPLES_KEY})
    data = _parse_data(data_raw, origin)
    if "stages" not in top:
        raise ConfigError(f"{origin}: stages: required; list the stages to run, in the order {list(KNOWN_STAGES)}")
    stages = _str_list(top["stages"], f"{origin}: stages")
    if not stages:
        raise ConfigError(f"{origin}: stages: the list is empty; name at least one of {list(KNOWN_STAGES)}")
    for stage in stages:
        if stage not in KNOWN_STAGES:
            raise ConfigError(f"{origin}: stages: unknown stage {stage!r}; known: {list(KNOWN_STAGES)}")
    if len(set(stages)) != len(stages) or list(stages) != sorted(stages, key=KNOWN_STAGES.index):
        raise ConfigError(f"{origin}: stages: list each stage once, in the order {list(KNOWN_STAGES)} "
                          f"(a stage reads what the earlier ones wrote); got {list(stages)}")
    if POOLED_STAGE in stages:
        raise ConfigError(f"{origin}: stages: {POOLED_STAGE!r} is not listed: it runs by itself after the folds of a "
                          "study with a cv section (cv: {folds: K})")
    cv = _parse_cv(top, data, origin)
    sections = {name: parse_section(top.get(name), STAGES[name].section, f"{origin}: {name}")
                for name in _TOP_LEVEL_SECTIONS}
    sections["data_audit"] = _parse_audit(data_raw, origin)
    _link_synthesis_domain(sections, stages, top, origin)
    reader_study = sections["reader_study"]
    if reader_study.simulate is not None and data.phantom is None:
        raise ConfigError(f"{origin}: reader_study.simulate: readers are simulated only for the phantom cohort; for "
                          "real data give reader_study.reads (a read table of real readers) or leave the stage out")
    config = StudyConfig(
        name=name,
        data=data,
        seed=seed,
        stages=stages,
        description=str(top.get("description", StudyConfig.description)),
        stage_params={stage: sections[stage] for stage in KNOWN_STAGES},
        source_path=None if origin == "<config>" else origin,
        cv=cv,
    )
    _check_needs(config, origin)
    return config


def _link_synthesis_domain(sections: dict[str, Any], stages: list[str], top: Mapping[str, Any], origin: str) -> None:
    """``diffusion.crop: auto`` (the default) becomes ``lesion`` when the teacher crops the lesion (with its margin),
    else ``none``. With a diffusion stage making lesion crops, the classifier stages take them as their own input: the
    same ``crop: lesion`` and margin, and ``via`` (unset: set here) equal to the diffusion resolution, so real
    and synthetic crops share one resize chain. A contradicting value is a ``ConfigError`` naming it."""
    diffusion = sections["diffusion"]
    if diffusion.crop == "auto":  # the classifier's own input: lesion crops when the teacher crops the lesion
        lesion = sections["teacher"].crop == "lesion"
        given_margin = isinstance(top.get("diffusion"), Mapping) and "crop_margin" in top["diffusion"]
        diffusion = replace(diffusion, crop="lesion" if lesion else "none", crop_margin=(
            diffusion.crop_margin if given_margin or not lesion else sections["teacher"].crop_margin))
        sections["diffusion"] = diffusion
    if "diffusion" not in stages or diffusion.crop != "lesion":
        return
    for stage in (s for s in ("teacher", "student") if s in stages):
        section = sections[stage]
        if section.crop != "lesion" or section.crop_margin != diffusion.crop_margin:
            raise ConfigError(f"{origin}: {stage}.crop: the diffusion model makes lesion crops (diffusion.crop: lesion, "
                              f"crop_margin {diffusion.crop_margin:g}); set crop: lesion and crop_margin "
                              f"{diffusion.crop_margin:g} here (now {section.crop}, {section.crop_margin:g}), or "
                              "diffusion.crop: none for whole-frame synthesis")
        given = isinstance(top.get(stage), Mapping) and "via" in top[stage]
        if given and section.via != diffusion.diffusion_image_size:
            raise ConfigError(f"{origin}: {stage}.via: {section.via} differs from diffusion_image_size "
                              f"{diffusion.diffusion_image_size}: real and synthetic crops must share one resize chain")
        sections[stage] = replace(section, via=diffusion.diffusion_image_size)


def _parse_data(data_raw: Mapping[str, Any], origin: str) -> DataConfig:
    """The ``data`` section (its keys already checked) by the one section parser; ``phantom:`` with no value
    is the phantom cohort with its defaults, and data_audit's key is left to :func:`_parse_audit`."""
    raw = {key: value for key, value in data_raw.items() if key != AUDIT_EXAMPLES_KEY}
    if "phantom" in raw and raw["phantom"] is None:
        raw["phantom"] = {}
    return parse_section(raw, DataConfig, f"{origin}: data")


def _parse_cv(top: Mapping[str, Any], data: DataConfig, origin: str) -> CVConfig | None:
    """The ``cv`` section (None when the YAML has none); the validation share of a fold's non-test patients,
    ``val_frac / (1 - 1/K)``, must leave training data."""
    if "cv" not in top:
        return None
    from diffkd_study.data.folds import fold_val_fraction

    cv = parse_section(top["cv"], CVConfig, f"{origin}: cv")
    try:
        fold_val_fraction(data.split.val_frac, cv.folds)
    except ValueError as err:
        raise ConfigError(f"{origin}: cv.folds: {err}; lower data.split.val_frac or use more folds") from None
    return cv


def _parse_audit(data_raw: Mapping[str, Any], origin: str) -> Any:
    """data_audit's section, from its one key in ``data``."""
    cls = STAGES["data_audit"].section
    where = f"{origin}: data.{AUDIT_EXAMPLES_KEY}"
    if AUDIT_EXAMPLES_KEY not in data_raw:
        return cls()
    try:
        return cls(examples_per_group=_check_value(data_raw[AUDIT_EXAMPLES_KEY], int, where))
    except FieldError as err:
        raise ConfigError(f"{where}: {err.message}") from None


def _check_needs(config: StudyConfig, origin: str) -> None:
    """Every stage that runs finds what it reads (``StageSpec.needs``) among the earlier stages of the config.

    A stage the runner skips (``reader_study`` without reads) reads nothing. ``stages`` is already in run
    order, and every need names earlier stages, so being listed is being earlier.
    """
    listed = set(config.stages)
    running = [s for s in config.stages if not config.skip_reason(s)]
    for stage in running:
        for need in STAGES[stage].needs:
            if listed.isdisjoint(need.stages):
                wanted = (f"one of [{', '.join(need.stages)}]" if len(need.stages) > 1 else repr(need.stages[0]))
                raise ConfigError(f"{origin}: stages: {stage!r} needs {wanted} (it reads {need.reads})")
    if "reader_study" in running and config.section("reader_study").model is None and "baselines" not in listed \
            and not ("student" in listed and "diffkd" in config.section("student").variants):
        raise ConfigError(f"{origin}: stages: 'reader_study' without reader_study.model compares the readers with "
                          "the DiffKD student (student variant 'diffkd') or else the best baseline: add 'baselines' "
                          "to stages or name reader_study.model")


class _DuplicateKeyError(yaml.YAMLError):
    """A key given twice in one YAML mapping."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no ``!!python`` tags) that refuses a key given twice in one mapping.

    Plain YAML keeps the last value silently; a study config with two ``seed:`` lines is a mistake.
    Keys brought in by a merge (``<<: *base``) may be overridden, as YAML intends.
    """

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    seen = key in first_line
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                line = key_node.start_mark.line + 1
                if seen:
                    raise _DuplicateKeyError(f"duplicate key {key!r} at line {line} (first at line "
                                             f"{first_line[key]}); YAML would keep only the last value: give each "
                                             "key once")
                first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (PyYAML's own text spans several lines)."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        mark = err.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        context = f"{err.context}: " if err.context else ""
        return f"{context}{err.problem}{where}"
    return " ".join(str(err).split())


def load_config(path: str | Path) -> StudyConfig:
    """Read a study config file (UTF-8 YAML, safe tags only, each key once) and parse it (:func:`parse_config`).

    Raises ``ConfigError`` naming the file when it is missing, not UTF-8, not valid YAML (with line and
    column), gives a key twice in one mapping, or fails :func:`parse_config`'s checks.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start} cannot be decoded); save it as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: safe tags only
    except _DuplicateKeyError as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(err)}") from None
    return parse_config(raw, origin=str(path))
