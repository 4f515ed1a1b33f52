"""CLI data commands on tiny manifests: split, combine, cache; errors exit 2 with a message."""

from __future__ import annotations

import dataclasses
import json

from diffkd_study.cli import main
from diffkd_study.data.schema import read_manifest, write_manifest


def test_split_with_external_and_excluded_labels(table_manifest, tmp_path, capsys):
    manifest = table_manifest(60)
    manifest.df.loc[0, "label"] = "normal"
    path = write_manifest(manifest, tmp_path / "m.csv")
    out = tmp_path / "split.csv"
    assert main(["data", "split", str(path), "--out", str(out), "--external", "center=c3",
                 "--exclude-labels", "normal", "--seed", "3"]) == 0
    result = read_manifest(out)
    assert "normal" not in set(result.df["label"]) and len(result.df) == len(manifest.df) - 1
    assert set(result.df.loc[result.df["center"] == "c3", "split"]) == {"external"}
    assert set(result.df.loc[result.df["center"] != "c3", "split"]) == {"train", "val", "test"}
    assert "external" in capsys.readouterr().out


def test_split_unknown_external_value_is_exit_2(table_manifest, tmp_path, capsys):
    path = write_manifest(table_manifest(20), tmp_path / "m.csv")
    assert main(["data", "split", str(path), "--out", str(tmp_path / "o.csv"), "--external", "center=c9"]) == 2
    assert "match no row" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


def test_combine_prefixes_paths(table_manifest, tmp_path):
    a = table_manifest(10, dataset="a")
    b = table_manifest(10, dataset="b")
    a.schema = dataclasses.replace(a.schema, dataset="a")
    b.schema = dataclasses.replace(b.schema, dataset="b")
    pa, pb = write_manifest(a, tmp_path / "a.csv"), write_manifest(b, tmp_path / "b.csv")
    out = tmp_path / "ab.csv"
    assert main(["data", "combine", f"{pa}=a_dir", f"{pb}=b_dir", "--out", str(out)]) == 0
    combined = read_manifest(out)
    assert len(combined.df) == len(a.df) + len(b.df)
    assert combined.df["image_path"].str.startswith(("a_dir/", "b_dir/")).all()
    # both parts use patient ids p000...: they are namespaced so two patients are never merged
    assert combined.df["patient_id"].str.match(r"^(a|b):p\d{3}$").all()


def test_combine_argument_error(tmp_path, capsys):
    assert main(["data", "combine", "only.csv", "--out", str(tmp_path / "x.csv")]) == 2
    assert "MANIFEST=SUBFOLDER" in capsys.readouterr().err


def test_cache_command(make_cohort, tmp_path, capsys):
    manifest, root = make_cohort(4)
    path = write_manifest(manifest, root / "m.csv")
    assert main(["data", "cache", str(path), "--root", str(root), "--size", "16",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "cache ready" in capsys.readouterr().out


def test_cache_command_crops_around_the_lesion_with_the_given_margin(make_cohort, tmp_path, capsys):
    manifest, root = make_cohort(4)
    path = write_manifest(manifest, root / "m.csv")
    assert main(["data", "cache", str(path), "--root", str(root), "--size", "16", "--resize-mode", "lesion",
                 "--roi-margin", "0.5", "--cache-dir", str(tmp_path / "cache")]) == 0
    (index,) = (tmp_path / "cache").glob("*/index.json")
    prep = json.loads(index.read_text())["preprocessing"]
    assert (prep["resize_mode"], prep["roi_margin"]) == ("lesion", 0.5)


def test_phantom_command_writes_a_valid_cohort(tmp_path, capsys):
    out = tmp_path / "ph"
    assert main(["phantom", "--out", str(out), "--n-per-center", "3", "--size", "48", "--seed", "5"]) == 0
    assert "wrote 9 images" in capsys.readouterr().out
    assert main(["data", "validate", str(out / "phantom.csv"), "--root", str(out), "--quiet"]) == 0


def test_build_unknown_dataset_is_exit_2(tmp_path, capsys):
    assert main(["data", "build", "no-such-data", "--root", str(tmp_path), "--out", str(tmp_path / "x.csv")]) == 2
    assert "unknown dataset 'no-such-data'" in capsys.readouterr().err


def test_build_from_incomplete_release_names_the_file(tmp_path, capsys):
    (tmp_path / "bus-bra").mkdir()
    assert main(["data", "build", "bus-bra", "--root", str(tmp_path / "bus-bra"),
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert "bus_data.csv" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
