"""Preflight: the config checked against tiny manifests (CSV + sidecar, no images) before any data step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from diffkd_study.config import parse_config
from diffkd_study.data.schema import ConditionSpec, Manifest, ManifestSchema, write_manifest
from diffkd_study.preflight import DERIVED_SUBGROUPS, preflight
from diffkd_study.sections import ConfigError

CONDITIONS = {
    "cond_birads": ConditionSpec("categorical", levels=("2", "3", "4", "5")),
    "cond_age": ConditionSpec("numeric", unit="years", min=0, max=120),
    "cond_scanner": ConditionSpec("categorical", levels=("S1", "S2", "S3")),
}


def _rows(dataset: str, center: str, n: int, *, masks: bool = True, **conditions: str | list[str]) -> list[dict]:
    """``n`` rows of one center; a condition given as a list cycles through its values."""
    return [{"image_id": f"{dataset}_{center}_{i}", "patient_id": f"{dataset}_{center}_p{i}", "dataset": dataset,
             "center": center, "image_path": f"img/{center}_{i}.png", "label": ["benign", "malignant"][i % 2],
             "mask_path": f"masks/{center}_{i}.png" if masks else None,
             **{c: v[i % len(v)] if isinstance(v, list) else v for c, v in conditions.items()}} for i in range(n)]


def _write(project: Path, name: str, rows: list[dict], conditions: tuple[str, ...]) -> None:
    schema = ManifestSchema(dataset=name, label_set=("benign", "malignant", "normal"), positive_class="malignant",
                            conditions={c: CONDITIONS[c] for c in conditions})
    write_manifest(Manifest(pd.DataFrame(rows), schema), project / "data_manifests" / f"{name}.csv")
    (project / "data" / name).mkdir(parents=True, exist_ok=True)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """Dataset ``a`` (centers c1, c2: BI-RADS, age, a scanner per center) and ``b`` (center b1: scanner only,
    one normal image, no masks); the data root is ``project/data``."""
    _write(tmp_path, "a", _rows("a", "c1", 6, cond_birads=["3", "4"], cond_age=["50", "61"], cond_scanner="S1")
           + _rows("a", "c2", 6, cond_birads=["4", "5"], cond_age=["45", "70"], cond_scanner="S2"),
           ("cond_birads", "cond_age", "cond_scanner"))
    _write(tmp_path, "b", _rows("b", "b1", 4, masks=False, cond_scanner="S3")
           + [{**_rows("b", "b1n", 1)[0], "label": "normal"}], ("cond_scanner",))
    return tmp_path


def _config(**patch):
    raw = {"name": "t", "stages": ["data_audit", "baselines", "evaluation"],
           "data": {"manifests": [{"path": "data_manifests/a.csv", "root": "a"},
                                  {"path": "data_manifests/b.csv", "root": "b"}]},
           "baselines": {"models": ["clinical"]}}
    for key, value in patch.items():
        section, _, field = key.partition("__")
        if field:
            raw[section] = {**raw.get(section, {}), field: value}
        else:
            raw[section] = value
    return parse_config(raw, origin="study.yaml")


def _check(project: Path, config, data_root: Path | None | str = "data") -> list[str]:
    return preflight(config, project_root=project, data_root=None if data_root is None else project / data_root)


def _error(project: Path, config, data_root: str | None = "data") -> str:
    with pytest.raises(ConfigError) as info:
        _check(project, config, data_root)
    message = str(info.value)
    assert message.startswith("study.yaml: ") and "\n" not in message
    return message


def test_a_sound_config_passes_without_warnings(project):
    assert _check(project, _config(data__external={"center": ["c2"]})) == []


def test_preflight_imports_no_torch():
    code = "import sys, diffkd_study.preflight; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- manifests and the data root ---------------------------------------------------------------------
def test_manifests_need_the_data_root(project):
    assert _error(project, _config(), data_root=None) == (
        "study.yaml: data.manifests: the config reads manifests: pass --data-root DIR, the folder that holds 'a', 'b'")
    assert _error(project, _config(), data_root="elsewhere").startswith(
        f"study.yaml: data.manifests[0].root: {project / 'elsewhere' / 'a'} is not a folder")


def test_a_missing_or_unreadable_manifest_is_named(project):
    config = _config(data__manifests=[{"path": "data_manifests/nope.csv", "root": "a"}])
    assert _error(project, config) == (
        f"study.yaml: data.manifests[0].path: manifest {project / 'data_manifests/nope.csv'} not found (build it with "
        "`diffkd-study data build NAME --root DIR --out data_manifests/nope.csv`)")
    (project / "data_manifests" / "b.schema.yaml").unlink()
    assert _error(project, _config()).startswith(
        f"study.yaml: data.manifests[1].path: {project / 'data_manifests/b.schema.yaml'}: schema sidecar not found")
    (project / "data_manifests" / "a.csv").write_bytes(b"image_id,center\nx,\xff\xfe\n")
    assert _error(project, _config()).startswith(
        f"study.yaml: data.manifests[0].path: {project / 'data_manifests/a.csv'} is not a readable CSV: 'utf-8' codec")


# -- external selections and excluded labels -----------------------------------------------------------
@pytest.mark.parametrize(
    "external, message",
    [
        ({"dataset": ["c"]}, "data.external.dataset: 'c' matches no row of the manifests (known: a, b)"),
        ({"center": ["c3", "c4"]},
         "data.external.center: 'c3', 'c4' match no row of the manifests (known: b1, b1n, c1, c2)"),
        ({"dataset": ["a", "b"]}, "data.external: every row is selected as external data (dataset=a, dataset=b): "
                                  "nothing is left to train on"),
        ({"center": ["c1", "c2"], "dataset": ["b"]}, "nothing is left to train on"),
    ],
)
def test_external_selections_must_select_some_rows_and_leave_some(project, external, message):
    assert message in _error(project, _config(data__external=external))


def test_external_values_are_matched_after_the_excluded_labels(project):
    config = _config(data__external={"center": ["b1n"]}, data__exclude_labels=["normal"])
    assert "'b1n' matches no row of the manifests after data.exclude_labels (known: b1, c1, c2)" in _error(
        project, config)
    assert _error(project, _config(data__exclude_labels=["nrmal"])) == (
        "study.yaml: data.exclude_labels: 'nrmal' is in no label set of the manifests (labels: benign, malignant, "
        "normal)")


def test_phantom_external_centers_are_those_the_generator_makes(project):
    phantom = {"phantom": {"n_per_center": 8}}
    assert _check(project, _config(data={**phantom, "external": {"center": ["center_C"]}}), data_root=None) == []
    assert _error(project, _config(data={**phantom, "external": {"center": ["center_D"]}}), data_root=None) == (
        "study.yaml: data.external.center: 'center_D' matches no row of the phantom cohort "
        "(known: center_A, center_B, center_C)")
    assert "nothing is left to train on" in _error(
        project, _config(data={**phantom, "external": {"dataset": ["phantom"]}}), data_root=None)
    assert "'benign ' is in no label set of the phantom cohort (labels: benign, malignant)" in _error(
        project, _config(data={**phantom, "exclude_labels": ["benign "]}), data_root=None)


def test_phantom_columns_are_those_of_a_generated_cohort(tmp_path):
    from diffkd_study.data.phantom import generate_phantom_cohort
    from diffkd_study.preflight import _phantom_cohort

    cohort = generate_phantom_cohort(tmp_path / "ph", n_per_center=1, image_size=32, progress=False)
    assert _phantom_cohort().columns == set(cohort.df.columns)


# -- subgroups and clinical conditions -------------------------------------------------------------------
def test_an_unknown_subgroup_is_an_error(project):
    message = _error(project, _config(evaluation__subgroups=["center", "cond_nope"]))
    assert message.startswith("study.yaml: evaluation.subgroups: 'cond_nope' matches no column of the manifests "
                              "(known: age_band, center, cond_age, cond_birads, cond_scanner, dataset, image_id, ")


def test_subgroups_may_be_derived_or_recorded_in_some_manifests_only(project):
    assert _check(project, _config(evaluation__subgroups=["age_band", "cond_birads", "split"])) == []
    only_b = _config(data__manifests=[{"path": "data_manifests/b.csv", "root": "b"}], baselines__models=["clinical"],
                     evaluation__subgroups=["age_band"])
    assert "'age_band' matches no column" in _error(project, only_b)  # b records no age to derive it from


def test_the_default_subgroups_ask_only_for_what_the_data_records(project):
    config = _config(data__manifests=[{"path": "data_manifests/b.csv", "root": "b"}])  # no BI-RADS, no age
    assert "cond_birads" in config.section("evaluation").subgroups
    _check(project, config)


def test_derived_subgroups_are_those_the_evaluation_derives():
    from diffkd_study.methods.diffkd.evaluate import add_subgroups

    manifest = Manifest(pd.DataFrame(_rows("a", "c1", 2, cond_age="45")), ManifestSchema("a", ("benign", "malignant")))
    tests = pd.DataFrame({"image_id": manifest.df["image_id"]})
    out, used = add_subgroups(tests, manifest, list(DERIVED_SUBGROUPS))
    assert used == list(DERIVED_SUBGROUPS) and set(out["age_band"]) == {"40-49"}


def test_clinical_conditions_must_be_condition_columns(project):
    config = _config(baselines__clinical_conditions=["cond_birads", "cond_nope"])
    assert _error(project, config) == ("study.yaml: baselines.clinical_conditions: 'cond_nope' matches no column of "
                                       "the manifests (known: cond_age, cond_birads, cond_scanner)")
    assert _check(project, _config(stages=["data_audit"], baselines__clinical_conditions=["cond_nope"])) == []


# -- the read table ------------------------------------------------------------------------------------------
def test_the_read_table_must_exist(project):
    raw = {"stages": ["data_audit", "baselines", "reader_study"], "reader_study__reads": "reads/r.csv"}
    assert _error(project, _config(**raw)) == (
        f"study.yaml: reader_study.reads: read table {project / 'reads/r.csv'} not found (a relative path is read "
        "from the project root)")
    (project / "reads").mkdir()
    (project / "reads" / "r.csv").write_text("reader_id,case_id,rating\n")
    assert _check(project, _config(**raw)) == []
    assert _check(project, _config(**{**raw, "reader_study__reads": str(project / "reads/r.csv")})) == []


# -- warnings: baselines without inputs ------------------------------------------------------------------------
def test_clinical_baseline_without_inputs_on_an_external_set_is_a_warning(project):
    external = {"data__external": {"dataset": ["b"]}, "data__exclude_labels": ["normal"]}
    named = _config(**external, baselines__clinical_conditions=["cond_birads"])
    assert _check(project, named) == [
        "study.yaml: baseline 'clinical' has no inputs on external set center=b1 (cond_birads all missing): it will "
        "be reported as not applicable there"]
    # every recorded condition but the scanner, which re-states the center (ConditionEncoder leaves it out)
    assert _check(project, _config(**external)) == [
        "study.yaml: baseline 'clinical' has no inputs on external set center=b1 (cond_birads, cond_age all "
        "missing): it will be reported as not applicable there"]
    assert _check(project, _config(**external, stages=["data_audit"])) == []


def test_each_external_center_is_a_test_set_of_its_own(project):
    config = _config(data__external={"dataset": ["b"], "center": ["c2"]}, baselines__clinical_conditions=["cond_age"])
    assert [w.split(" (")[0] for w in _check(project, config)] == [
        "study.yaml: baseline 'clinical' has no inputs on external set center=b1",
        "study.yaml: baseline 'clinical' has no inputs on external set center=b1n"]


def test_clinical_baseline_without_inputs_in_the_internal_data_is_a_warning(project):
    config = _config(data__external={"dataset": ["a"]}, baselines__clinical_conditions=["cond_birads"])
    assert _check(project, config) == [
        "study.yaml: baseline 'clinical' has no inputs: none of cond_birads is recorded in the internal (training) "
        "data: it will be skipped"]


def test_image_feature_baseline_without_masks_is_a_warning(project):
    external = _config(data__external={"dataset": ["b"]}, baselines__models=["image_features"])
    assert _check(project, external) == [
        "study.yaml: baseline 'image_features' has no inputs on external set center=b1 (4 of 4 images have no "
        "lesion mask): it will be reported as not applicable there"]
    internal = _config(data__external={"center": ["c2"]}, baselines__models=["image_features"])
    assert _check(project, internal) == [
        "study.yaml: baseline 'image_features' needs a lesion mask for every training and validation image, but 4 "
        "of 11 internal images have none (data_manifests/b.csv: 4): it will be skipped unless they all fall in the "
        "test split"]


def test_box_geometry_baseline_without_masks_is_a_warning_too(project):
    external = _config(data__external={"dataset": ["b"]}, baselines__models=["box_geometry"])
    assert _check(project, external) == [
        "study.yaml: baseline 'box_geometry' has no inputs on external set center=b1 (4 of 4 images have no "
        "lesion mask): it will be reported as not applicable there"]
