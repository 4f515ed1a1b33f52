"""Study config parsing: valid configs load; each kind of mistake names the file and key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from diffkd_study.config import load_config, parse_config
from diffkd_study.sections import ConfigError, parse_section, section_from_parameters, section_parameters
from diffkd_study.stages import KNOWN_STAGES, STAGES

PROJECT = Path(__file__).resolve().parents[2]

MINIMAL = {"name": "t", "data": {"phantom": {"n_per_center": 8, "image_size": 64}}, "stages": ["data_audit"]}
SHIPPED = sorted(path.name for path in (PROJECT / "configs").glob("*.yaml"))


def test_every_shipped_config_is_tested():
    assert {"demo.yaml", "busbra.yaml", "busbra_external.yaml", "comoto_dbt.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load(name):
    config = load_config(PROJECT / "configs" / name)
    assert config.name == name.removesuffix(".yaml")
    assert config.stages and config.source_path == str(PROJECT / "configs" / name)


def test_defaults_and_round_trip():
    config = parse_config(MINIMAL)
    assert config.seed == 0 and config.data.split.val_frac == 0.15
    assert parse_config(config.to_dict()) == config


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"nmae": "x"}, "unknown key(s) ['nmae']"),
        ({"name": "a b"}, "folder-safe"),
        ({"name": ".."}, "name must not start with '.', got '..'"),
        ({"name": ".hidden"}, "name must not start with '.'"),
        ({"stages": []}, "stages: the list is empty"),
        ({"data": {"phantom": {}, "split": {"val_frac": 0.5, "test_frac": 0.5}}},
         "data.split: val_frac + test_frac = 1 leaves no training data; it must be < 1"),
        ({"data": {"phantom": {}, "allow_paths_outside_root": "yes"}},
         "data.allow_paths_outside_root: expected true or false, got 'yes'"),
        ({"seed": -1}, "seed: -1 is outside"),
        ({"seed": "1"}, "seed: expected int"),
        ({"stages": ["train"]}, "unknown stage 'train'"),
        ({"data": {}}, "exactly one of 'phantom' or 'manifests'"),
        ({"data": {"phantom": {}, "manifests": [{"path": "a.csv"}]}}, "exactly one of"),
        ({"data": {"manifests": [{"root": "x"}]}}, "data.manifests[0]: required key(s) ['path']"),
        ({"data": {"phantom": {"image_size": 16}}}, "data.phantom.image_size: 16 is outside"),
        ({"data": {"phantom": {}, "split": {"val_frac": 0.9}}}, "data.split.val_frac: 0.9 is outside"),
        ({"data": {"phantom": {}, "external": {"scanner": ["x"]}}}, "only 'center' or 'dataset'"),
    ],
)
def test_errors_name_the_key(patch, message):
    raw = {**MINIMAL, **patch}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, origin="study.yaml")
    assert message in str(info.value) and str(info.value).startswith("study.yaml")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(bad)
    message = str(info.value)
    assert message.startswith(str(bad)) and "\n" not in message and "(line 2, column 1)" in message
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(MINIMAL))
    assert load_config(good).source_path == str(good)


def test_stages_are_required():
    raw = {k: v for k, v in MINIMAL.items() if k != "stages"}
    with pytest.raises(ConfigError, match=r"^study.yaml: stages: required; list the stages to run"):
        parse_config(raw, origin="study.yaml")


def test_a_config_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(yaml.safe_dump({**MINIMAL, "description": "étude"}, allow_unicode=True).encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: not UTF-8 text (byte ") and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: t\nseed: 1\ndata: {phantom: {}}\nstages: [data_audit]\nseed: 2\n",
         "duplicate key 'seed' at line 5 (first at line 2)"),
        ("name: t\ndata:\n  phantom: {}\n  split:\n    val_frac: 0.1\n    val_frac: 0.2\nstages: [data_audit]\n",
         "duplicate key 'val_frac' at line 6 (first at line 5)"),
    ],
)
def test_a_key_given_twice_is_refused_with_its_line(tmp_path, text, message):
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_a_merged_key_may_be_overridden(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("name: t\nstages: [data_audit]\ndata:\n  phantom: {}\n"
                    "  split: {<<: {val_frac: 0.1, test_frac: 0.2}, test_frac: 0.3}\n")
    split = load_config(path).data.split
    assert (split.val_frac, split.test_frac) == (0.1, 0.3)


def test_python_tags_are_refused(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\ndata: {{phantom: {{}}}}\n"
                    "stages: [data_audit]\n")
    with pytest.raises(ConfigError, match="not valid YAML: could not determine a constructor for the tag"):
        load_config(path)
    assert not marker.exists()


def test_paths_outside_root_are_refused_unless_allowed():
    assert parse_config(MINIMAL).data.allow_paths_outside_root is False
    config = parse_config({**MINIMAL, "data": {**MINIMAL["data"], "allow_paths_outside_root": True}})
    assert config.data.allow_paths_outside_root is True
    assert parse_config(config.to_dict()) == config


# -- stage dependencies ------------------------------------------------------------------------------
def test_every_need_names_earlier_stages():
    for stage, spec in STAGES.items():
        for need in spec.needs:
            assert need.stages and need.reads
            assert all(KNOWN_STAGES.index(s) < KNOWN_STAGES.index(stage) for s in need.stages), (stage, need)


@pytest.mark.parametrize(
    "stages, message",
    [
        (["data_audit", "summary"],
         "stages: 'summary' needs one of [teacher, student, baselines] (it reads their predictions)"),
        (["evaluation"],
         "stages: 'evaluation' needs one of [teacher, student, baselines] (it reads their predictions)"),
        (["data_audit", "student"], "stages: 'student' needs 'teacher' (it reads the teachers' training records"),
        (["synthetic_quality", "teacher"],
         "stages: 'synthetic_quality' needs 'diffusion' (it reads the synthetic images"),
        (["data_audit", "reader_study"], "stages: 'reader_study' needs one of [teacher, student, baselines]"),
        (["teacher", "reader_study"], "'reader_study' without reader_study.model compares the readers with the DiffKD "
                                      "student (student variant 'diffkd') or else the best baseline"),
    ],
)
def test_a_stage_without_what_it_reads_is_refused(stages, message):
    raw = {**MINIMAL, "stages": stages, "reader_study": {"simulate": {}}}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, origin="study.yaml")
    assert str(info.value).startswith("study.yaml: ") and message in str(info.value)


@pytest.mark.parametrize(
    "stages, extra",
    [
        (["teacher", "evaluation", "summary"], {}),
        (["baselines", "reader_study"], {"reader_study": {"simulate": {}}}),
        (["teacher", "student", "reader_study"], {"reader_study": {"simulate": {}}}),
        (["teacher", "reader_study"], {"reader_study": {"simulate": {}, "model": "teacher_real"}}),
        (["diffusion", "synthetic_quality"], {}),
        (["data_audit", "reader_study"], {}),  # skipped (no reads): it reads nothing
    ],
)
def test_a_stage_with_what_it_reads_loads(stages, extra):
    assert parse_config({**MINIMAL, "stages": stages, **extra}).stages == tuple(stages)


def test_reader_study_needs_baselines_when_the_student_trains_no_diffkd():
    raw = {**MINIMAL, "stages": ["teacher", "student", "reader_study"], "reader_study": {"simulate": {}},
           "student": {"variants": ["alone", "kd_real"]}}
    with pytest.raises(ConfigError, match="add 'baselines' to stages or name reader_study.model"):
        parse_config(raw)


def test_evaluation_stage_keys_parse_and_round_trip():
    raw = {**MINIMAL, "stages": ["data_audit", "baselines", "evaluation", "reader_study"],
           "baselines": {"models": ["clinical"], "clinical_conditions": ["cond_birads"]},
           "evaluation": {"bootstrap": 500, "subgroups": ["center"]},
           "reader_study": {"simulate": {"n_junior": 2, "n_senior": 3}}}
    config = parse_config(raw)
    assert config.section("baselines").models == ("clinical",) and config.section("evaluation").bootstrap == 500
    assert config.section("reader_study").simulate.n_senior == 3 and config.skip_reason("reader_study") is None
    assert config.data.resolution == 64
    assert parse_config(config.to_dict()) == config
    assert "no read table" in parse_config(MINIMAL).skip_reason("reader_study")


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"stages": ["evaluation", "baselines"]}, "in the order"),
        ({"baselines": {"models": ["cnn"]}}, "baselines.models: unknown baseline 'cnn'"),
        ({"baselines": {"clinical_conditions": ["age"]}}, "not condition columns"),
        ({"evaluation": {"bootstrap": 10}}, "evaluation.bootstrap: 10 is outside"),
        ({"evaluation": {"boot": 10}}, "evaluation: unknown key(s) ['boot']"),
        ({"reader_study": {"simulate": {}, "reads": "r.csv"}}, "not both"),
        ({"reader_study": {"simulate": {"n_junior": 1, "n_senior": 0}}}, "n_senior: 0 is outside"),
        ({"data": {"manifests": [{"path": "a.csv"}]}, "reader_study": {"simulate": {}}},
         "readers are simulated only for the phantom cohort"),
    ],
)
def test_evaluation_stage_errors_name_the_key(patch, message):
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, **patch}, origin="study.yaml")
    assert message in str(info.value) and str(info.value).startswith("study.yaml")


# -- stage sections ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Inner:
    steps: int = 2


@dataclass(frozen=True)
class _Section:
    rate: float = 0.1
    steps: int = 3
    name: str = "a"
    flag: bool = False
    names: tuple[str, ...] = ("x",)
    limit: int | None = None
    inner: _Inner = field(default_factory=_Inner)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be >= 1")


def test_section_parses_types_and_defaults():
    section = parse_section({"rate": 1, "names": ["p", "q"], "limit": 5, "inner": {"steps": 4}}, _Section, "f.yaml: s")
    assert section == _Section(rate=1.0, names=("p", "q"), limit=5, inner=_Inner(4))
    assert isinstance(section.rate, float)
    assert parse_section(None, _Section, "w") == _Section()
    assert parse_section({"names": "single"}, _Section, "w").names == ("single",)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"rat": 1}, "f.yaml: s: unknown key(s) ['rat']"),
        ({"steps": 1.5}, "f.yaml: s.steps: expected int"),
        ({"flag": "yes"}, "f.yaml: s.flag: expected true or false"),
        ({"names": {"a": 1}}, "f.yaml: s.names: expected a list"),
        ({"limit": "many"}, "f.yaml: s.limit: expected int"),
        ({"inner": {"steps": "x"}}, "f.yaml: s.inner.steps: expected int"),
        ({"steps": 0}, "f.yaml: s: steps must be >= 1"),
        ({"name": None}, "f.yaml: s.name: expected a string, got None"),
    ],
)
def test_section_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError) as info:
        parse_section(raw, _Section, "f.yaml: s")
    assert message in str(info.value)


@dataclass(frozen=True)
class _Recipe:
    weights: dict[str, float] = field(default_factory=lambda: {"ce": 1.0})
    params: dict[str, dict[str, float]] = field(default_factory=dict)
    sections: dict[str, _Inner] = field(default_factory=dict)


def test_mapping_fields_parse_into_plain_dicts_checked_by_their_hint():
    raw = {"weights": {"ce": 1, "kd": 0.5}, "params": {"kd": {"temperature": 4}}, "sections": {"a": {"steps": 5}}}
    recipe = parse_section(raw, _Recipe, "f.yaml: r")
    assert recipe.weights == {"ce": 1.0, "kd": 0.5} and isinstance(recipe.weights["ce"], float)
    assert type(recipe.params) is dict and recipe.params == {"kd": {"temperature": 4.0}}
    assert recipe.sections == {"a": _Inner(5)}
    assert parse_section(None, _Recipe, "w") == _Recipe()
    assert section_parameters(recipe) == {"weights": {"ce": 1.0, "kd": 0.5}, "params": {"kd": {"temperature": 4.0}},
                                          "sections": {"a": {"steps": 5}}}
    assert section_from_parameters(_Recipe, section_parameters(recipe), "p") == recipe


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"weights": [1.0]}, "f.yaml: r.weights: expected a mapping, got [1.0]"),
        ({"weights": {1: 1.0}}, "f.yaml: r.weights: keys must be strings, got 1"),
        ({"weights": {"kd": "high"}}, "f.yaml: r.weights.kd: expected float, got 'high'"),
        ({"params": {"kd": {"temperature": True}}}, "f.yaml: r.params.kd.temperature: expected float, got True"),
        ({"params": {"kd": 4.0}}, "f.yaml: r.params.kd: expected a mapping, got 4.0"),
        ({"sections": {"a": {"step": 5}}}, "f.yaml: r.sections.a: unknown key(s) ['step']"),
    ],
)
def test_mapping_field_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError) as info:
        parse_section(raw, _Recipe, "f.yaml: r")
    assert message in str(info.value)


def test_notebook_parameters_are_type_checked_like_yaml():
    section = section_from_parameters(_Section, {"names": ["p"], "rate": 2, "run_dir": "/x", "seed": 1}, "parameters")
    assert section == _Section(names=("p",), rate=2.0) and isinstance(section.rate, float)
    with pytest.raises(ConfigError, match=r"^parameters.steps: expected int, got 'three'$"):
        section_from_parameters(_Section, {"steps": "three"}, "parameters")
    with pytest.raises(ConfigError, match=r"^parameters: steps must be >= 1$"):
        section_from_parameters(_Section, {"steps": 0}, "parameters")


@pytest.mark.parametrize(
    "data, message",
    [
        ({"audit_examples_per_group": 0}, "study.yaml: data.audit_examples_per_group: 0 is outside [1, 32]"),
        ({"audit_examples_per_group": "x"}, "study.yaml: data.audit_examples_per_group: expected int, got 'x'"),
        ({"phantom": {"n_per_center": 2}}, "study.yaml: data.phantom.n_per_center: 2 is outside [4, None]"),
        ({"phantom": {}, "split": {"test_frac": 0.6}}, "study.yaml: data.split.test_frac: 0.6 is outside [0.0, 0.5]"),
    ],
)
def test_data_errors_name_the_key(data, message):
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, "data": {"phantom": {}, **data}}, origin="study.yaml")
    assert str(info.value) == message


def test_the_audit_setting_is_the_data_audit_section_and_round_trips():
    config = parse_config({**MINIMAL, "data": {**MINIMAL["data"], "audit_examples_per_group": 3}})
    assert config.section("data_audit").examples_per_group == 3
    assert config.to_dict()["data"]["audit_examples_per_group"] == 3 and "data_audit" not in config.to_dict()
    assert parse_config(config.to_dict()) == config
    assert parse_config(MINIMAL).section("data_audit").examples_per_group == 4
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['data_audit'\]"):
        parse_config({**MINIMAL, "data_audit": {"examples_per_group": 3}})


def test_a_phantom_key_without_value_is_the_default_phantom():
    config = parse_config({**MINIMAL, "data": {"phantom": None}})
    assert (config.data.phantom.n_per_center, config.data.phantom.image_size) == (60, 128)
