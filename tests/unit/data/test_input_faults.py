"""Bad input gets one clear line naming the file, row and rule: paths leaving the data root, pixels
deeper than 8 bits, decompression bombs, malformed sidecars and malformed CSV files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffkd_study.cli import main
from diffkd_study.config import DataConfig, ManifestSource, StudyConfig
from diffkd_study.data import cache as cache_module
from diffkd_study.data.cache import ImageDecodeError, Preprocessing, build_cache, load_image, load_mask
from diffkd_study.data.datasets import ManifestDataset
from diffkd_study.data.schema import SchemaError, read_manifest, write_manifest
from diffkd_study.data.study import DataPreparationError, prepare_study_data
from diffkd_study.data.validate import validate_manifest

from .conftest import write_png

# -- paths outside the data root ------------------------------------------------------------------


@pytest.fixture()
def escaping(make_cohort, tmp_path):
    """A cohort whose rows 0-3 name files outside its root: absolute, ``../``, a symlink leading out, and a
    ``../`` mask; row 4 is a symlink that stays inside the root (allowed)."""
    manifest, root = make_cohort(6)
    outside = tmp_path / "outside"
    r = np.random.default_rng(1)
    for i in range(4):
        write_png(outside / f"{i}.png", r.integers(0, 256, (18, 24), dtype=np.uint8))
    (root / "img/link_out.png").symlink_to(outside / "2.png")
    (root / "img/link_in.png").symlink_to(root / "img/4.png")
    df = manifest.df
    df.loc[0, "image_path"] = str(outside / "0.png")
    df.loc[1, "image_path"] = "../outside/1.png"
    df.loc[2, "image_path"] = "img/link_out.png"
    write_png(outside / "mask.png", np.full((18, 24), 255, np.uint8))
    df.loc[3, "mask_path"] = "../outside/mask.png"
    df.loc[4, "image_path"] = "img/link_in.png"
    return manifest, root


def test_paths_leaving_the_root_are_errors_unless_allowed(escaping):
    manifest, root = escaping
    report = validate_manifest(manifest, root, workers=1)
    assert [(p.rule, p.line) for p in report.errors] == [("path-outside-root", line) for line in (2, 3, 4, 5)]
    assert "outside/0.png" in report.errors[0].message and "outside the data root" in report.errors[0].message
    assert "mask_path" in report.errors[3].message
    assert "im0" not in report.image_sizes  # refused, never read
    allowed = validate_manifest(manifest, root, workers=1, allow_outside_root=True)
    assert allowed.ok and allowed.image_sizes["im0"] == (24, 18)


def test_unresolvable_paths_are_reported_as_missing_files(make_cohort):
    manifest, root = make_cohort(3)
    (root / "img/loop.png").symlink_to(root / "img/loop.png")
    manifest.df.loc[0, "image_path"] = "img/loop.png"
    manifest.df.loc[1, "image_path"] = "img/nul\0.png"
    report = validate_manifest(manifest, root, workers=1)
    assert [(p.rule, p.line) for p in report.errors] == [("missing-file", 2), ("missing-file", 3)]


def test_cache_and_dataset_refuse_paths_leaving_the_root(escaping, tmp_path):
    manifest, root = escaping
    with pytest.raises(ValueError, match=r"m\.csv:2 \[image_id=im0\]: image_path .* outside the data root"):
        build_cache(manifest, root, size=8, cache_dir=tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists() or list((tmp_path / "c").iterdir()) == []
    with pytest.raises(ValueError, match=r"m\.csv:2 \[image_id=im0\].* outside the data root"):
        ManifestDataset(manifest, root, size=8)
    cache = build_cache(manifest, root, size=8, cache_dir=tmp_path / "c", progress=False, allow_outside_root=True)
    disk = ManifestDataset(manifest, root, size=8, allow_outside_root=True)
    np.testing.assert_array_equal(cache.images[0], (disk[0]["image"][0] * 255).round().byte().numpy())


def test_cli_cache_refuses_a_path_leaving_the_root(escaping, tmp_path, capsys):
    manifest, root = escaping
    path = write_manifest(manifest, tmp_path / "escaping.csv")
    assert main(["data", "cache", str(path), "--root", str(root), "--size", "8",
                 "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "outside the data root" in err[0]


def _study_config(manifest_path: Path, dataset_root: str, allow: bool = False) -> StudyConfig:
    return StudyConfig(name="t", data=DataConfig(manifests=(ManifestSource(str(manifest_path), dataset_root),),
                                                 allow_paths_outside_root=allow))


def test_study_refuses_a_manifest_path_leaving_the_root_unless_the_config_allows_it(escaping, tmp_path):
    manifest, root = escaping
    path = write_manifest(manifest, tmp_path / "escaping.csv")
    with pytest.raises(DataPreparationError, match=r"escaping\.csv:3 \[image_id=im1\] error path-outside-root"):
        prepare_study_data(_study_config(path, root.name), tmp_path / "run", data_root=root.parent, progress=False)
    data = prepare_study_data(_study_config(path, root.name, allow=True), tmp_path / "run", data_root=root.parent,
                              progress=False)
    assert data.validation.ok and data.validation.image_sizes["im0"] == (24, 18)


def test_study_refuses_a_dataset_root_outside_the_data_root_unless_the_config_allows_it(make_cohort, tmp_path):
    manifest, root = make_cohort(4)
    path = write_manifest(manifest, tmp_path / "m.csv")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DataPreparationError, match=r"outside the data root .*elsewhere.*allow_paths_outside_root"):
        prepare_study_data(_study_config(path, str(root)), tmp_path / "run", data_root=tmp_path / "elsewhere",
                           progress=False)
    data = prepare_study_data(_study_config(path, str(root), allow=True), tmp_path / "run",
                              data_root=tmp_path / "elsewhere", progress=False)
    assert data.validation.ok


# -- pixels deeper than 8 bits --------------------------------------------------------------------

# 16-bit value -> round(value / 257): the full 16-bit range onto the full 8-bit range
SIXTEEN_BIT = np.array([[0, 128, 129, 257], [1000, 32896, 65280, 65535]], np.uint16)
EIGHT_BIT = np.array([[0, 0, 1, 1], [4, 128, 254, 255]], np.uint8)


def test_16_bit_png_is_scaled_by_its_bit_depth(tmp_path):
    Image.fromarray(SIXTEEN_BIT).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode == "I;16"
    np.testing.assert_array_equal(load_image(tmp_path / "deep.png", Preprocessing.make((2, 4))), EIGHT_BIT)
    rgb = load_image(tmp_path / "deep.png", Preprocessing.make((2, 4), mode="RGB"))
    np.testing.assert_array_equal(rgb, np.repeat(EIGHT_BIT[..., None], 3, axis=2))


def test_32_bit_integer_and_float_images(tmp_path):
    Image.fromarray(SIXTEEN_BIT.astype(np.int32)).save(tmp_path / "int.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "int.tif", Preprocessing.make((2, 4))), EIGHT_BIT)
    floats = np.array([[0.0, 0.5, 1 / 255, 1.0]], np.float32)
    Image.fromarray(floats).save(tmp_path / "float.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "float.tif", Preprocessing.make((1, 4))),
                                  np.array([[0, 128, 1, 255]], np.uint8))
    Image.fromarray(np.array([[0, 70000]], np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(ImageDecodeError, match=r"mode I.*0\.\.70000.*0\.\.65535"):
        load_image(tmp_path / "wide.tif", Preprocessing.make((1, 2)))
    Image.fromarray(np.array([[0.0, 2.5]], np.float32)).save(tmp_path / "hot.tif")
    with pytest.raises(ImageDecodeError, match=r"mode F.*2\.5.*\[0, 1\]"):
        load_image(tmp_path / "hot.tif", Preprocessing.make((1, 2)))


def test_16_bit_mask_keeps_its_label_values(tmp_path):
    Image.fromarray(np.array([[0, 1, 2, 65535]], np.uint16)).save(tmp_path / "mask.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "mask.png", Preprocessing.make((1, 4))), [[0, 1, 2, 255]])


def test_cache_and_validator_on_a_16_bit_cohort(make_cohort, tmp_path):
    manifest, root = make_cohort(4, size=(4, 2))
    Image.fromarray(SIXTEEN_BIT).save(root / "img/1.png")
    Image.fromarray(SIXTEEN_BIT // 2).save(root / "img/3.png")
    cache = build_cache(manifest, root, size=(2, 4), cache_dir=tmp_path / "c", progress=False)
    np.testing.assert_array_equal(cache.images[1], EIGHT_BIT)
    report = validate_manifest(manifest, root, workers=1)
    assert report.ok and report.image_modes == {"im0": "L", "im1": "I;16", "im2": "L", "im3": "I;16"}
    [warning] = report.warnings
    assert (warning.rule, warning.line) == ("high-bit-depth", 3)
    assert "2 image(s)" in warning.message and "mode I;16" in warning.message and "lines 3, 5" in warning.message
    assert "values 0..65535" in warning.message and "257" in warning.message


def test_a_cache_of_the_clipping_decoder_is_not_reused(make_cohort, tmp_path, monkeypatch):
    manifest, root = make_cohort(2, size=(4, 2))
    Image.fromarray(SIXTEEN_BIT).save(root / "img/1.png")
    monkeypatch.setattr(cache_module, "CACHE_FORMAT", 1)
    monkeypatch.setattr(cache_module, "to_8bit", lambda img: img)  # format 1: Pillow's convert clipped at 255
    old = build_cache(manifest, root, size=(2, 4), cache_dir=tmp_path / "c", progress=False)
    assert (old.images[1] == 255).sum() == 5
    monkeypatch.undo()
    new = build_cache(manifest, root, size=(2, 4), cache_dir=tmp_path / "c", progress=False)
    assert new.path != old.path
    np.testing.assert_array_equal(new.images[1], EIGHT_BIT)


# -- decompression bombs --------------------------------------------------------------------------


@pytest.mark.parametrize("limit, action", [(100, "default"), (300, "ignore"), (300, "error")])
def test_decompression_bomb_is_an_unreadable_image_with_its_pixel_count(make_cohort, tmp_path, monkeypatch,
                                                                         limit, action):
    """Over twice the limit Pillow raises; over the limit it warns (silenced, or an exception under ``-W error``)."""
    manifest, root = make_cohort(2)  # 24 x 18 = 432 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with warnings.catch_warnings():
        warnings.simplefilter(action, Image.DecompressionBombWarning)
        report = validate_manifest(manifest, root, workers=1)
        assert {p.rule for p in report.errors} == {"unreadable-image"}
        assert all("432 pixels" in p.message for p in report.errors)
        with pytest.raises(ImageDecodeError, match=r"m\.csv:2 \[image_id=im0\]: image_path .*432 pixels"):
            build_cache(manifest, root, size=8, cache_dir=tmp_path / "c", progress=False)


# -- the schema sidecar ---------------------------------------------------------------------------


@pytest.mark.parametrize("sidecar, key", [
    ("dataset: d\nlabel_set: 5\n", "label_set"),
    ("dataset: d\nlabel_set: [a, [b]]\n", "label_set"),
    ("dataset: d\nlabel_set: [a]\nconditions: [cond_x]\n", "conditions"),
    ("dataset: d\nlabel_set: [a]\nconditions: {5: {type: numeric}}\n", "conditions"),
    ("dataset: d\nlabel_set: [a]\nconditions: {cond_x: {type: numeric, min: low}}\n", "cond_x.*min"),
    ("dataset: d\nlabel_set: [a]\nconditions: {cond_x: {type: numeric, min: 5, max: 1}}\n", "cond_x.*min"),
    ("dataset: d\nlabel_set: [a]\nconditions: {cond_x: {type: categorical, levels: 5}}\n", "cond_x.*levels"),
    ("dataset: d\nlabel_set: [a]\nconditions: {cond_x: {type: numeric, unit: [cm]}}\n", "cond_x.*unit"),
])
def test_sidecar_type_errors_are_one_line_schema_errors(tmp_path, sidecar, key):
    (tmp_path / "m.csv").write_text("image_id\nx\n")
    (tmp_path / "m.schema.yaml").write_text(sidecar)
    with pytest.raises(SchemaError, match=rf"m\.schema\.yaml: .*{key}") as caught:
        read_manifest(tmp_path / "m.csv")
    assert "\n" not in str(caught.value)


# -- the CSV file ---------------------------------------------------------------------------------

HEADER = "image_id,patient_id,dataset,center,image_path,label"


@pytest.mark.parametrize("text, match", [
    ("", r"m\.csv: the file is empty"),
    ("\n\n", r"m\.csv: the file has no header line"),
    (HEADER + ",label\n", r"m\.csv:1: column 'label' appears twice in the header"),
    (HEADER + "\na,p,d,c,x.png,benign\nb,p,d,c,y.png\n", r"m\.csv:3: 5 fields but the header has 6"),
    (HEADER + "\na,p,d,c,x.png,benign,extra\nb,p,d,c,y.png,benign,extra\n",
     r"m\.csv:2: 7 fields but the header has 6 .*2 rows"),
    (HEADER + "\na,p,d,c,x.png,benign\nb,p,d,c,y.png,benign,extra\n", r"m\.csv:3: 7 fields but the header has 6"),
])
def test_malformed_csv_is_one_schema_error_naming_the_line(tmp_path, text, match):
    (tmp_path / "m.csv").write_text(text)
    (tmp_path / "m.schema.yaml").write_text("dataset: d\nlabel_set: [benign]\n")
    with pytest.raises(SchemaError, match=match) as caught:
        read_manifest(tmp_path / "m.csv")
    assert "\n" not in str(caught.value)


def test_quoted_fields_and_blank_lines_are_counted_as_the_csv_module_reads_them(tmp_path):
    (tmp_path / "m.csv").write_text(HEADER + ',note\na,p,d,c,x.png,benign,"one, two"\n\nb,p,d,c,y.png,benign,\n')
    (tmp_path / "m.schema.yaml").write_text("dataset: d\nlabel_set: [benign]\n")
    manifest = read_manifest(tmp_path / "m.csv")
    assert manifest.df["note"].tolist()[0] == "one, two" and len(manifest.df) == 2


def test_cli_validate_on_an_empty_manifest_is_one_error_line(tmp_path, capsys):
    (tmp_path / "m.csv").write_bytes(b"")
    (tmp_path / "m.schema.yaml").write_text("dataset: d\nlabel_set: [benign]\n")
    assert main(["data", "validate", str(tmp_path / "m.csv"), "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'm.csv'}: the file is empty")
