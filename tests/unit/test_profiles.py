"""Named profiles (diffkd_study.profiles): presets applied while a section is parsed, the section's keys on top."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import pytest

from diffkd_study.profiles import Profiles
from diffkd_study.sections import ConfigError, parse_section, section_from_parameters, section_parameters
from diffkd_study.stages import STAGES


@dataclass(frozen=True)
class Toy:
    PROFILES: ClassVar[Profiles] = Profiles({"small": {"steps": 10}, "big": {"steps": 1000, "lr": 0.1}})

    profile: str = "small"
    steps: int = 10
    lr: float = 0.5
    name: str = "toy"


def _sections_with_profiles() -> list[type]:
    return [spec.section for spec in STAGES.values() if getattr(spec.section, "PROFILES", None) is not None]


def test_the_selected_preset_replaces_the_defaults():
    assert parse_section({"profile": "big"}, Toy, "x") == Toy(profile="big", steps=1000, lr=0.1)
    assert parse_section(None, Toy, "x") == Toy()  # the default profile's values are the field defaults


def test_keys_of_the_section_override_the_preset():
    assert parse_section({"profile": "big", "lr": 0.01}, Toy, "x") == Toy(profile="big", steps=1000, lr=0.01)
    params = {**section_parameters(Toy(profile="big", steps=5)), "run_dir": "/r"}  # a notebook's parameters
    assert section_from_parameters(Toy, params, "parameters") == Toy(profile="big", steps=5)
    assert section_from_parameters(Toy, {"profile": "big"}, "parameters").steps == 1000


def test_an_unknown_profile_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"^x.profile: profile must be one of \['small', 'big'\], got 'huge'$"):
        parse_section({"profile": "huge"}, Toy, "x")


def test_a_nested_profile_block_says_how_to_write_it_now():
    with pytest.raises(ConfigError, match=r"^x.big: profiles are no longer nested blocks; write `profile: big` and "
                                          r"give its settings as keys of the section itself$"):
        parse_section({"profile": "big", "big": {"steps": 3}}, Toy, "x")


def test_a_preset_key_that_is_not_a_field_is_refused():
    @dataclass(frozen=True)
    class Renamed:
        PROFILES: ClassVar[Profiles] = Profiles({"a": {}, "b": {"step": 3}})
        profile: str = "a"
        steps: int = 1

    with pytest.raises(TypeError, match=r"Renamed.PROFILES\['b'\] names \['step'\], which are not settable fields"):
        parse_section({}, Renamed, "x")


def test_the_default_profile_must_agree_with_the_field_defaults():
    @dataclass(frozen=True)
    class Drifted:
        PROFILES: ClassVar[Profiles] = Profiles({"a": {"steps": 2}})
        profile: str = "a"
        steps: int = 1

    with pytest.raises(TypeError, match=r"the default profile\) gives \['steps'\] values other than the field"):
        parse_section({}, Drifted, "x")


def test_the_stages_with_profiles_are_diffusion_ssdkd_and_comoto():
    assert sorted(cls.__name__ for cls in _sections_with_profiles()) == [
        "ComotoStageConfig", "DiffusionStageConfig", "SSDKDStageConfig"]


@pytest.mark.parametrize("cls", _sections_with_profiles(), ids=lambda c: c.__name__)
def test_every_preset_of_a_shipped_section_names_its_fields_and_parses(cls):
    cls.PROFILES.check(cls)  # every preset key is a field (a renamed field breaks this)
    fields = {f.name for f in dataclasses.fields(cls)}
    for name, preset in cls.PROFILES.presets.items():
        assert set(preset) <= fields - {"profile"}
        section = parse_section({"profile": name}, cls, "shipped")
        assert {key: getattr(section, key) for key in preset} == dict(preset)


def test_the_profiles_module_is_a_leaf():
    from tests.unit.test_architecture import import_graph

    graph = import_graph()
    assert graph["diffkd_study.profiles"] <= {"diffkd_study"} and "diffkd_study.profiles" not in graph[
        "diffkd_study.sections"]  # the parser applies profiles duck-typed and stays a leaf too
