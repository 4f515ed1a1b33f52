"""Issue 20, items 4, 5, 7 and 8 (inputs): every bad manifest, sidecar, image and config is one line of
error naming the file, the row and the rule, before any work; nothing is read from outside the data root."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.faults.conftest import TINY_STUDY, error_lines

SIDECAR = "phantom.schema.yaml"


def edit_csv(folder: Path, edit) -> Path:
    path = folder / "phantom.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")
    return path


def edit_sidecar(folder: Path, edit) -> None:
    schema = yaml.safe_load((folder / SIDECAR).read_text())
    edit(schema)
    (folder / SIDECAR).write_text(yaml.safe_dump(schema, sort_keys=False))


def validate(cli, folder: Path, *extra: str) -> tuple[int, str]:
    return cli("data", "validate", folder / "phantom.csv", "--root", folder, "--quiet", *extra)


# -- 4. paths that leave the data root ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink"])
def test_paths_outside_the_root_are_an_error_unless_allowed(cli, cohort_copy, tmp_path, kind):
    outside = tmp_path / "outside.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(outside)
    if kind == "symlink":
        (cohort_copy / "images" / "phA_00000.png").unlink()
        os.symlink(outside, cohort_copy / "images" / "phA_00000.png")
    else:
        value = "../outside.png" if kind == "parent" else str(outside)
        edit_csv(cohort_copy, lambda lines: [lines[0], lines[1].replace("images/phA_00000.png", value), *lines[2:]])
    code, err = validate(cli, cohort_copy)
    assert code == 1 and "path-outside-root" in err and "phA_00000" in err
    assert validate(cli, cohort_copy, "--allow-outside-root")[0] == 0


# -- 5. 16-bit images -----------------------------------------------------------------------------------------
def test_a_16_bit_image_is_scaled_not_saturated(cli, cohort_copy, tmp_path):
    ramp = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)  # 0..65472
    Image.fromarray(ramp).save(cohort_copy / "images" / "phA_00000.png")
    assert Image.open(cohort_copy / "images" / "phA_00000.png").mode.startswith("I")
    code, err = validate(cli, cohort_copy, "--json", tmp_path / "report.json")
    assert code == 0 and "high-bit-depth" in err and "I;16" in err  # the validator names the bit depth it found
    assert cli("data", "cache", cohort_copy / "phantom.csv", "--root", cohort_copy, "--size", "32",
               "--cache-dir", tmp_path / "cache")[0] == 0
    images = np.load(next((tmp_path / "cache").glob("*/images.npy")))
    first = images[0]  # phA_00000 sorts first
    assert (first == 255).mean() < 0.01 and first.max() == 255 and first.min() == 0


# -- 7. unreadable and malformed inputs -----------------------------------------------------------------------
def test_a_decompression_bomb_is_an_unreadable_image(cli, cohort_copy, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    code, err = validate(cli, cohort_copy)
    assert code == 1 and "unreadable-image" in err and "pixels" in err


@pytest.mark.parametrize(("edit", "key"), [
    (lambda s: s.update(label_set=5), "label_set"),
    (lambda s: s.update(conditions=list(s["conditions"])), "conditions"),
    (lambda s: s["conditions"]["cond_age"].update(min="young"), "min"),
    (lambda s: s["conditions"]["cond_birads"].update(levels=5), "levels"),
])
def test_sidecar_type_errors_are_one_line(cli, cohort_copy, edit, key):
    edit_sidecar(cohort_copy, edit)
    code, err = validate(cli, cohort_copy)
    assert code == 2 and len(error_lines(err)) == 1 and SIDECAR in err and key in err


def test_a_0_byte_manifest_names_the_file(cli, cohort_copy):
    (cohort_copy / "phantom.csv").write_bytes(b"")
    code, err = validate(cli, cohort_copy)
    assert code == 2 and len(error_lines(err)) == 1 and "phantom.csv" in err and "empty" in err, err


@pytest.mark.parametrize(("edit", "words"), [
    (lambda lines: ["", ""], "no header"),
    (lambda lines: [lines[0].replace("cond_age", "label"), *lines[1:]], "'label' appears twice"),
    (lambda lines: [lines[0], lines[1].rsplit(",", 2)[0], *lines[2:]], "phantom.csv:2: 17 fields"),
    (lambda lines: [lines[0], lines[1] + ",x,y", *lines[2:]], "phantom.csv:2: 21 fields"),
])
def test_malformed_csv_is_one_line(cli, cohort_copy, edit, words):
    edit_csv(cohort_copy, edit)
    code, err = validate(cli, cohort_copy)
    assert code == 2 and len(error_lines(err)) == 1 and "phantom.csv" in err and words in err, err


# -- 7/8. configs ---------------------------------------------------------------------------------------------
def test_non_utf8_config_names_the_file(cli, tmp_path):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("name: caf\xe9\nstages: [data_audit]\ndata: {phantom: {}}\n".encode("latin-1"))
    code, err = cli("run", config, "--runs-dir", tmp_path / "runs")
    assert code == 2 and len(error_lines(err)) == 1 and "latin1.yaml" in err and "UTF-8" in err


CONFIG_FAULTS = {
    "duplicate key": ("name: a\nseed: 0\nseed: 1\nstages: [data_audit]\ndata: {phantom: {}}\n", "duplicate key"),
    "no stages": ("name: a\ndata: {phantom: {}}\n", "stages"),
    "empty stages": ("name: a\nstages: []\ndata: {phantom: {}}\n", "stages"),
    "name ..": ("name: '..'\nstages: [data_audit]\ndata: {phantom: {}}\n", "name"),
    "summary alone": ("name: a\nstages: [data_audit, summary]\ndata: {phantom: {}}\n", "summary"),
    "split fractions": ("name: a\nstages: [data_audit]\ndata: {phantom: {}, split: {val_frac: 0.5, test_frac: 0.5}}\n",
                        "split"),
    "external center": ("name: a\nstages: [data_audit]\ndata: {phantom: {}, external: {center: [center_Z]}}\n",
                        "center_Z"),
    "subgroup": ("name: a\nstages: [data_audit, baselines, evaluation]\ndata: {phantom: {}}\n"
                 "evaluation: {subgroups: [cond_nope]}\n", "cond_nope"),
    "clinical condition": ("name: a\nstages: [data_audit, baselines]\ndata: {phantom: {}}\n"
                           "baselines: {clinical_conditions: [cond_nope]}\n", "cond_nope"),
    "reads file": ("name: a\nstages: [data_audit, baselines, reader_study]\ndata: {phantom: {}}\n"
                   "reader_study: {reads: no_such_reads.csv}\n", "no_such_reads.csv"),
    "python tag": ("name: !!python/object/apply:os.system ['echo pwned']\nstages: [data_audit]\ndata: {phantom: {}}\n",
                   "yaml"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_FAULTS))
def test_config_faults_are_one_line_before_any_work(study, tmp_path, case):
    text, words = CONFIG_FAULTS[case]
    code, err = study({}, text=text)
    assert code == 2 and len(error_lines(err)) == 1 and words.lower() in err.lower(), err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "reports").exists()


def test_a_study_reading_outside_its_root_stops_before_any_stage(study, cohort_copy, tmp_path):
    edit_csv(cohort_copy, lambda lines: [lines[0], lines[1].replace("images/phA_00000.png", "../../etc/hostname"),
                                         *lines[2:]])
    raw = {**TINY_STUDY, "data": {"manifests": [{"path": str(cohort_copy / "phantom.csv"), "root": "data"}],
                                  "split": {"val_frac": 0.25, "test_frac": 0.25}}, "stages": ["data_audit"]}
    code, err = study(raw, "--data-root", tmp_path)
    assert code == 2 and "path-outside-root" in err
    assert not (tmp_path / "reports" / "faults").exists()


def test_a_decompression_bomb_stops_a_study_in_its_data_step(study, cohort_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    raw = {**TINY_STUDY, "data": {"manifests": [{"path": str(cohort_copy / "phantom.csv"), "root": "data"}],
                                  "split": {"val_frac": 0.25, "test_frac": 0.25}}, "stages": ["data_audit"]}
    code, err = study(raw, "--data-root", tmp_path)
    assert code == 2 and "unreadable-image" in err and "pixels" in err
    assert not (tmp_path / "reports" / "faults").exists()
