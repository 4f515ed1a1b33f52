"""Study config parsing: valid configs load; each kind of mistake names the file and key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from diffkd_study.config import ConfigError, load_config, parse_config, parse_section

PROJECT = Path(__file__).resolve().parents[2]

MINIMAL = {"name": "t", "data": {"phantom": {"n_per_center": 8, "image_size": 64}}}


@pytest.mark.parametrize("name", ["demo.yaml", "busbra.yaml", "busbra_external.yaml"])
def test_shipped_configs_load(name):
    config = load_config(PROJECT / "configs" / name)
    assert config.name == name.removesuffix(".yaml")
    assert config.stages[0] == "data_audit"


def test_defaults_and_round_trip():
    config = parse_config(MINIMAL)
    assert config.seed == 0 and config.data.split.val_frac == 0.15
    assert parse_config(config.to_dict()) == config


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"nmae": "x"}, "unknown key(s) ['nmae']"),
        ({"name": "a b"}, "folder-safe"),
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
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(MINIMAL))
    assert load_config(good).source_path == str(good)


def test_evaluation_stage_keys_parse_and_round_trip():
    raw = {**MINIMAL, "stages": ["data_audit", "baselines", "evaluation", "reader_study"],
           "baselines": {"models": ["clinical"], "clinical_conditions": ["cond_birads"]},
           "evaluation": {"bootstrap": 500, "subgroups": ["center"]},
           "reader_study": {"simulate": {"n_junior": 2, "n_senior": 3}}}
    config = parse_config(raw)
    assert config.baselines.models == ("clinical",) and config.evaluation.bootstrap == 500
    assert config.reader_study.simulate.n_senior == 3 and config.reader_study.skip_reason() is None
    assert config.data.resolution == 64
    assert parse_config(config.to_dict()) == config
    assert "no read table" in parse_config(MINIMAL).reader_study.skip_reason()


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
