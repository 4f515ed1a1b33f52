"""The stage registry: each stage declared once; its notebook receives exactly the parameters it received
before the registry (a golden file), and its notebook's parameters cell repeats its section's defaults.

``stage_parameters.golden.json`` holds, for every shipped config and each of its stages, the parameters
``report.stage_parameters`` gave before the stage registry existed (paths under ``<base>``). After a deliberate
change of a stage's parameters, regenerate it with ``python -m tests.unit.test_stages``.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from diffkd_study.config import load_config, parse_config
from diffkd_study.report import stage_parameters
from diffkd_study.sections import section_from_parameters, section_parameters
from diffkd_study.stages import INPUTS, KNOWN_STAGES, PREDICTING_STAGES, STAGE_NOTEBOOKS, STAGES, StageContext

PROJECT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("stage_parameters.golden.json")
MINIMAL = {"name": "t", "data": {"phantom": {"n_per_center": 8, "image_size": 64}}, "stages": ["data_audit"]}


def _parameters_of(config_name: str, stage: str, base: Path) -> dict[str, Any]:
    """``stage_parameters`` of a shipped config, with its paths under ``base`` written ``<base>``."""
    config = load_config(PROJECT / "configs" / config_name)
    data = SimpleNamespace(manifest_path=base / "run" / "data" / "study.csv", root=base / "data")
    data_root_base = None if config.data.phantom is not None else base / "dataroot"
    parameters = stage_parameters(stage, config, data, base / "reports", base / "run", base / "project", data_root_base)
    return json.loads(json.dumps(parameters).replace(str(base), "<base>"))


def _golden_cases() -> list[tuple[str, str]]:
    return [(config.name, stage) for config in sorted((PROJECT / "configs").glob("*.yaml"))
            for stage in load_config(config).stages]


def test_every_shipped_config_and_stage_has_golden_parameters():
    assert sorted(json.loads(GOLDEN.read_text())) == sorted(f"{c}|{s}" for c, s in _golden_cases())


@pytest.mark.parametrize("config_name, stage", _golden_cases())
def test_stage_parameters_are_those_before_the_registry(config_name, stage, tmp_path):
    golden = json.loads(GOLDEN.read_text())[f"{config_name}|{stage}"]
    assert _parameters_of(config_name, stage, tmp_path.resolve()) == golden


def test_reader_study_parameters_derive_from_its_section(tmp_path):
    data = SimpleNamespace(manifest_path=tmp_path / "study.csv", root=tmp_path)
    raw = {**MINIMAL, "data": {"manifests": [{"path": "m.csv"}]}, "stages": ["baselines", "reader_study"],
           "reader_study": {"reads": "reads/r.csv", "model": "clinical"}}
    config = parse_config(raw)
    parameters = stage_parameters("reader_study", config, data, tmp_path / "reports", tmp_path / "run", tmp_path / "p")
    assert {k: parameters[k] for k in ("reads_path", "simulate", "n_junior", "n_senior", "model", "reader_study_dir")} \
        == {"reads_path": str((tmp_path / "p" / "reads" / "r.csv").resolve()), "simulate": False, "n_junior": 0,
            "n_senior": 0, "model": "clinical", "reader_study_dir": str((tmp_path / "run" / "reader_study").resolve())}
    absolute = parse_config({**raw, "reader_study": {"reads": str(tmp_path / "r.csv")}})
    parameters = stage_parameters("reader_study", absolute, data, tmp_path, tmp_path / "run", tmp_path / "elsewhere")
    assert parameters["reads_path"] == str((tmp_path / "r.csv").resolve()) and parameters["model"] == ""
    assert "data_root" not in parameters and "reads" not in parameters


# -- the registry --------------------------------------------------------------------------------------------
def test_the_registry_orders_stages_by_notebook_and_derives_its_tables():
    assert KNOWN_STAGES == tuple(sorted(STAGES, key=lambda s: STAGES[s].notebook))
    assert KNOWN_STAGES[0] == "data_audit" and KNOWN_STAGES[-1] == "summary"
    assert STAGE_NOTEBOOKS["evaluation"] == "50_evaluation"
    assert PREDICTING_STAGES == ("teacher", "student", "baselines")
    assert STAGES["evaluation"].needs[0].stages == PREDICTING_STAGES
    assert STAGES["diffusion"].workdirs == ("diffusion", "synthetic") and not STAGES["evaluation"].workdirs


@pytest.mark.parametrize("stage", KNOWN_STAGES)
def test_each_stage_has_its_notebook_a_section_and_known_inputs(stage):
    spec = STAGES[stage]
    assert spec.name == stage and (PROJECT / "notebooks" / f"{spec.notebook}.py").is_file()
    assert set(spec.inputs) <= set(INPUTS) and spec.section() is not None  # every section has defaults


def test_an_unknown_input_is_refused():
    from diffkd_study.stages import DataAuditConfig, StageSpec

    with pytest.raises(ValueError, match="unknown inputs \\['manifest'\\]"):
        StageSpec("x", "99_x", DataAuditConfig, inputs=("manifest",))


def test_the_config_module_stays_light():
    import subprocess

    code = "import sys, diffkd_study.config; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- defaults written once -----------------------------------------------------------------------------------
def parameters_cell(script: str) -> dict[str, Any]:
    """The literal values of a jupytext percent script's ``parameters``-tagged cell."""
    cells = re.split(r"^# %%", script, flags=re.M)
    cell = next(c for c in cells if re.match(r'[^\n]*tags=\["parameters"\]', c))
    tree = ast.parse(cell.split("\n", 1)[1])
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)}


def default_mismatches(stage: str, cell: dict[str, Any]) -> list[str]:
    """Every field of the stage's section (or parameter derived from its fields) that ``cell`` lacks or gives a
    value other than the section's default."""
    section = STAGES[stage].section
    default = section()
    derived = getattr(default, "notebook_parameters", None)
    if derived is not None:  # the notebook receives values derived from the fields
        ctx = StageContext(Path("run"), Path("study.csv"), Path("data"), Path("."), None, 128)
        expected = derived(ctx)
        return [f"{name} = {cell[name]!r}, the section's default gives {value!r}" if name in cell
                else f"{name} is missing (the section's default gives {value!r})"
                for name, value in expected.items() if name not in cell or cell[name] != value]
    given = section_from_parameters(section, cell, f"{STAGES[stage].notebook} parameters cell")
    literal = section_parameters(default)
    return [f"{name} = {cell[name]!r}, the section's default is {literal[name]!r}" if name in cell
            else f"{name} is missing (the section's default is {literal[name]!r})"
            for name in literal if name not in cell or getattr(given, name) != getattr(default, name)]


@pytest.mark.parametrize("stage", KNOWN_STAGES)
def test_the_notebook_parameters_cell_repeats_the_section_defaults(stage):
    script = (PROJECT / "notebooks" / f"{STAGES[stage].notebook}.py").read_text(encoding="utf-8")
    assert default_mismatches(stage, parameters_cell(script)) == []


def test_a_default_that_differs_is_found():
    evaluation = (PROJECT / "notebooks" / "50_evaluation.py").read_text(encoding="utf-8")
    assert default_mismatches("evaluation", parameters_cell(evaluation.replace("bootstrap = 2000", "bootstrap = 1000"))) \
        == ["bootstrap = 1000, the section's default is 2000"]
    script = (PROJECT / "notebooks" / "60_reader_study.py").read_text(encoding="utf-8")
    assert default_mismatches("reader_study", parameters_cell(script.replace("n_senior = 0", "n_senior = 4"))) \
        == ["n_senior = 4, the section's default gives 0"]
    cell = {**parameters_cell(evaluation), "subgroups": ["center"]}
    assert default_mismatches("evaluation", cell) == [
        "subgroups = ['center'], the section's default is ['center', 'cond_birads', 'age_band']"]
    del cell["bootstrap"]
    assert "bootstrap is missing (the section's default is 2000)" in default_mismatches("evaluation", cell)


def _write_golden() -> None:
    """Regenerate the golden file from today's ``stage_parameters``."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder).resolve()
        golden = {f"{c}|{s}": _parameters_of(c, s, base) for c, s in _golden_cases()}
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    _write_golden()
