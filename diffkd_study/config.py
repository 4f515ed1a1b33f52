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

``stages`` is required. Stages run in the order of ``KNOWN_STAGES``; each reads only what earlier stages
wrote, and a config whose stages lack what one of them reads (``StageSpec.needs``) is refused. What is
checked here, what against the data's tables before the run (:mod:`diffkd_study.preflight`) and what later
is listed in the docstring of :mod:`diffkd_study.preflight`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from diffkd_study.methods.comoto.stage import ComotoStageConfig
from diffkd_study.methods.diffkd.diffusion.stage import DiffusionStageConfig, SyntheticQualityStageConfig
from diffkd_study.methods.ssdkd.stage import SSDKDStageConfig
from diffkd_study.summary import SummaryStageConfig
from diffkd_study.methods.diffkd.stage import StudentStageConfig, TeacherStageConfig


@dataclass(frozen=True)
class Need:
    """One of ``stages`` must run before the stage that has this need, because ``reads`` says so."""

    stages: tuple[str, ...]
    reads: str  # completes "it reads ...", for the error message


@dataclass(frozen=True)
class StageSpec:
    """A stage: its notebook and, for stages configured by a section of their own, the section's dataclass.

    The section (the YAML key named like the stage) is parsed by :func:`parse_section` into an instance
    of ``section``; every field becomes a notebook parameter of the same name (tuples as lists).
    ``baselines``, ``evaluation`` and ``reader_study`` keep their hand-written parsers (``section=None``).
    ``needs``: what the stage reads from earlier stages of the same run; :func:`parse_config` refuses a
    config whose ``stages`` lack every alternative of a need.
    """

    notebook: str
    section: type | None = None
    needs: tuple[Need, ...] = ()


#: The stages that write prediction tables into runs/NAME/predictions.
PREDICTING_STAGES: tuple[str, ...] = ("baselines", "teacher", "student")


def _stage_table() -> dict[str, StageSpec]:
    # Stage parameter dataclasses live in light modules (no torch import), one per area.
    predictions = Need(PREDICTING_STAGES, "their predictions")
    return {
        "data_audit": StageSpec("00_data_audit"),
        "diffusion": StageSpec("10_diffusion", DiffusionStageConfig),
        "synthetic_quality": StageSpec("20_synthetic_quality", SyntheticQualityStageConfig,
                                       (Need(("diffusion",), "the synthetic images and the diffusion checkpoint"),)),
        "teacher": StageSpec("30_teacher", TeacherStageConfig),
        "student": StageSpec("40_student", StudentStageConfig,
                             (Need(("teacher",), "the teachers' training records and checkpoints"),)),
        "baselines": StageSpec("45_baselines"),
        "evaluation": StageSpec("50_evaluation", needs=(predictions,)),
        "reader_study": StageSpec("60_reader_study",
                                  needs=(Need(PREDICTING_STAGES, "the predictions of the model it compares"),)),
        "ssdkd_dermoscopy": StageSpec("70_ssdkd_dermoscopy", SSDKDStageConfig),
        "summary": StageSpec("90_summary", SummaryStageConfig, (predictions,)),
        "comoto_dbt": StageSpec("80_comoto_dbt", ComotoStageConfig),
    }


STAGES: dict[str, StageSpec] = _stage_table()
#: The order stages run in (each reads only what earlier stages wrote): by notebook number.
KNOWN_STAGES: tuple[str, ...] = tuple(sorted(STAGES, key=lambda s: STAGES[s].notebook))
STAGE_NOTEBOOKS: dict[str, str] = {name: spec.notebook for name, spec in STAGES.items()}

BASELINE_MODELS: tuple[str, ...] = ("clinical", "image_features")  # diffkd_study.methods.diffkd.baselines.BASELINES
DEFAULT_MANIFEST_IMAGE_SIZE = 224


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
class BaselinesConfig:
    models: tuple[str, ...] = BASELINE_MODELS
    clinical_conditions: tuple[str, ...] = ()  # empty: every condition recorded in the training split


@dataclass(frozen=True)
class EvaluationConfig:
    models: tuple[str, ...] = ()  # empty: every prediction table in runs/NAME/predictions
    bootstrap: int = 2000  # resamples of the bootstrap AUC intervals (sensitivity analysis to DeLong)
    band_resamples: int = 500  # resamples of the pointwise ROC bands
    subgroups: tuple[str, ...] = ("center", "cond_birads", "age_band")
    sensitivity_target: float = 0.9
    specificity_target: float = 0.9
    efficiency_runs: int = 30
    efficiency_threads: int = 1


@dataclass(frozen=True)
class ReaderSimulation:
    n_junior: int = 4
    n_senior: int = 4


@dataclass(frozen=True)
class ReaderStudyConfig:
    simulate: ReaderSimulation | None = None  # simulated readers: phantom cohort only
    reads: str | None = None  # a read table (CSV) of real readers, relative to the project root or absolute
    model: str | None = None  # the model compared with the readers; default: best baseline by validation AUC

    def skip_reason(self) -> str | None:
        if self.simulate is None and self.reads is None:
            return ("no read table given (reader_study.reads): the reader study needs real readers' reads "
                    "for this data; readers are simulated only for the phantom cohort")
        return None


@dataclass(frozen=True)
class DataConfig:
    phantom: PhantomSource | None = None
    manifests: tuple[ManifestSource, ...] = ()
    external: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    exclude_labels: tuple[str, ...] = ()
    lesion_free_labels: tuple[str, ...] = ("normal",)
    split: SplitConfig = field(default_factory=SplitConfig)
    audit_examples_per_group: int = 4
    image_size: int | None = None  # study (training) resolution; default: the phantom's, else 224
    # true: manifest paths may leave their dataset's root (``..``, absolute paths); the data checks then
    # skip the ``path-outside-root`` rule
    allow_paths_outside_root: bool = False

    @property
    def resolution(self) -> int:
        if self.image_size is not None:
            return self.image_size
        return self.phantom.image_size if self.phantom is not None else DEFAULT_MANIFEST_IMAGE_SIZE


@dataclass(frozen=True)
class StudyConfig:
    name: str
    data: DataConfig
    seed: int = 0
    stages: tuple[str, ...] = ("data_audit",)
    description: str = ""
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    reader_study: ReaderStudyConfig = field(default_factory=ReaderStudyConfig)
    # stage name -> its section (an instance of STAGES[stage].section), for every stage that has one
    stage_params: Mapping[str, Any] = field(default_factory=dict)
    source_path: str | None = None

    def section(self, stage: str) -> Any:
        """The parsed section of ``stage`` (its defaults when the YAML has none)."""
        return self.stage_params[stage]

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
        out.update(out.pop("stage_params"))
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
    sectioned = {name for name, spec in STAGES.items() if spec.section is not None}
    top = _expect(
        raw, origin,
        {"name", "seed", "data", "stages", "description", "baselines", "evaluation", "reader_study"} | sectioned,
        {"name", "data"},
    )
    name = top["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"{origin}: name must be a folder-safe string (letters, digits, _ . -), got {name!r}")
    if name.startswith("."):
        raise ConfigError(f"{origin}: name must not start with '.', got {name!r}: the run writes runs/NAME and "
                          "reports/NAME, and a name like '..' would write outside them")
    seed = _number(top.get("seed", 0), f"{origin}: seed", int, 0)

    data_raw = _expect(
        top["data"],
        f"{origin}: data",
        {"phantom", "manifests", "external", "exclude_labels", "lesion_free_labels", "split", "audit_examples_per_group",
         "image_size", "allow_paths_outside_root"},
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
    if split.val_frac + split.test_frac >= 1.0:
        raise ConfigError(f"{origin}: data.split: val_frac + test_frac = {split.val_frac + split.test_frac:g} leaves "
                          "no training data; it must be < 1")
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
        image_size=None if data_raw.get("image_size") is None
        else _number(data_raw["image_size"], f"{origin}: data.image_size", int, 32, 1024),
        allow_paths_outside_root=_check_value(data_raw.get("allow_paths_outside_root", False), bool,
                                              f"{origin}: data.allow_paths_outside_root"),
    )
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
    config = StudyConfig(
        name=name,
        data=data,
        seed=seed,
        stages=stages,
        description=str(top.get("description", "")),
        baselines=_parse_baselines(top.get("baselines"), origin),
        evaluation=_parse_evaluation(top.get("evaluation"), origin),
        reader_study=_parse_reader_study(top.get("reader_study"), origin, phantom=phantom is not None),
        stage_params={name: parse_section(top.get(name), STAGES[name].section, f"{origin}: {name}")
                      for name in sorted(sectioned, key=KNOWN_STAGES.index)},
        source_path=None if origin == "<config>" else origin,
    )
    _check_needs(config, origin)
    return config


def _check_needs(config: StudyConfig, origin: str) -> None:
    """Every stage that runs finds what it reads (``StageSpec.needs``) among the earlier stages of the config.

    A stage the runner skips (``reader_study`` without reads) reads nothing. ``stages`` is already in run
    order, and every need names earlier stages, so being listed is being earlier.
    """
    listed = set(config.stages)
    running = [s for s in config.stages if not (s == "reader_study" and config.reader_study.skip_reason())]
    for stage in running:
        for need in STAGES[stage].needs:
            if listed.isdisjoint(need.stages):
                wanted = (f"one of [{', '.join(need.stages)}]" if len(need.stages) > 1 else repr(need.stages[0]))
                raise ConfigError(f"{origin}: stages: {stage!r} needs {wanted} (it reads {need.reads})")
    if "reader_study" in running and config.reader_study.model is None and "baselines" not in listed and not (
            "student" in listed and "diffkd" in config.section("student").variants):
        raise ConfigError(f"{origin}: stages: 'reader_study' without reader_study.model compares the readers with "
                          "the DiffKD student (student variant 'diffkd') or else the best baseline: add 'baselines' "
                          "to stages or name reader_study.model")


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` (from YAML) checked against the type annotation ``hint``; tuples from lists."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(f"{where}: a value is required")
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _check_value(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {hint}")
    if origin is tuple:
        args = typing.get_args(hint)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and args[0] is str:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_check_value(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint in (int, float):
        return _number(value, where, hint)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if dataclasses.is_dataclass(hint):
        return parse_section(value, hint, where)
    raise TypeError(f"{where}: unsupported field type {hint!r} in a stage section")  # a programming error


def parse_section(raw: Any, cls: type, where: str) -> Any:
    """A stage section (a YAML mapping) as an instance of the dataclass ``cls``.

    Unknown keys, wrong types and the dataclass's own ``__post_init__`` checks (``ValueError``) all
    become a :class:`ConfigError` that names the file and the key; missing keys take the defaults.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    mapping = _expect(raw or {}, where, names)
    values = {name: _check_value(value, hints[name], f"{where}.{name}") for name, value in mapping.items()}
    try:
        return cls(**values)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


def _parse_baselines(raw: Any, origin: str) -> BaselinesConfig:
    b = _expect(raw or {}, f"{origin}: baselines", {"models", "clinical_conditions"})
    models = _str_list(b.get("models", list(BASELINE_MODELS)), f"{origin}: baselines.models")
    for model in models:
        if model not in BASELINE_MODELS:
            raise ConfigError(f"{origin}: baselines.models: unknown baseline {model!r}; known: {list(BASELINE_MODELS)}")
    if not models:
        raise ConfigError(f"{origin}: baselines.models: name at least one baseline")
    conditions = _str_list(b.get("clinical_conditions", []), f"{origin}: baselines.clinical_conditions")
    bad = [c for c in conditions if not c.startswith("cond_")]
    if bad:
        raise ConfigError(f"{origin}: baselines.clinical_conditions: {bad} are not condition columns (cond_*)")
    return BaselinesConfig(models=models, clinical_conditions=conditions)


def _parse_evaluation(raw: Any, origin: str) -> EvaluationConfig:
    where = f"{origin}: evaluation"
    e = _expect(raw or {}, where, {f.name for f in fields(EvaluationConfig)})
    d = EvaluationConfig()
    return EvaluationConfig(
        models=_str_list(e.get("models", []), f"{where}.models"),
        bootstrap=_number(e.get("bootstrap", d.bootstrap), f"{where}.bootstrap", int, 100, 100_000),
        band_resamples=_number(e.get("band_resamples", d.band_resamples), f"{where}.band_resamples", int, 100, 100_000),
        subgroups=_str_list(e.get("subgroups", list(d.subgroups)), f"{where}.subgroups"),
        sensitivity_target=_number(e.get("sensitivity_target", d.sensitivity_target), f"{where}.sensitivity_target",
                                   float, 0.5, 1.0),
        specificity_target=_number(e.get("specificity_target", d.specificity_target), f"{where}.specificity_target",
                                   float, 0.5, 1.0),
        efficiency_runs=_number(e.get("efficiency_runs", d.efficiency_runs), f"{where}.efficiency_runs", int, 2, 1000),
        efficiency_threads=_number(e.get("efficiency_threads", d.efficiency_threads), f"{where}.efficiency_threads",
                                   int, 1, 256),
    )


def _parse_reader_study(raw: Any, origin: str, *, phantom: bool) -> ReaderStudyConfig:
    where = f"{origin}: reader_study"
    r = {k: v for k, v in _expect(raw or {}, where, {"simulate", "reads", "model"}).items() if v is not None}
    if "simulate" in r and "reads" in r:
        raise ConfigError(f"{where}: give either 'simulate' (phantom cohort) or 'reads' (a read table), not both")
    simulate = None
    if "simulate" in r:
        if not phantom:
            raise ConfigError(f"{where}.simulate: readers are simulated only for the phantom cohort; for real "
                              "data give reader_study.reads (a read table of real readers) or leave the stage out")
        s = _expect(r["simulate"] or {}, f"{where}.simulate", {"n_junior", "n_senior"})
        simulate = ReaderSimulation(
            n_junior=_number(s.get("n_junior", 4), f"{where}.simulate.n_junior", int, 1, 50),
            n_senior=_number(s.get("n_senior", 4), f"{where}.simulate.n_senior", int, 1, 50),
        )
        if simulate.n_junior + simulate.n_senior < 2:
            raise ConfigError(f"{where}.simulate: the ORH analysis needs at least 2 readers")
    reads = r.get("reads")
    if reads is not None and (not isinstance(reads, str) or not reads.strip()):
        raise ConfigError(f"{where}.reads: expected the path of a read-table CSV, got {reads!r}")
    model = r.get("model")
    if model is not None and not isinstance(model, str):
        raise ConfigError(f"{where}.model: expected a model name, got {model!r}")
    return ReaderStudyConfig(simulate=simulate, reads=reads, model=model)


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
    """Read a study config file (UTF-8 YAML, safe tags only, each key once) and parse it (:func:`parse_config`)."""
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
