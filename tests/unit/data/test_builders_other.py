"""Builders for HAM10000, mini-MIAS and the BCS-DBT slices: tiny fixtures in the official layouts (always run)
and the real releases under the shared data folder (skipped when it is absent)."""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffkd_study.data.builders import BUILDERS, BuildError, build_manifest
from diffkd_study.data.builders.mini_mias import circle_box
from diffkd_study.data.schema import read_manifest, write_manifest
from diffkd_study.data.validate import validate_manifest

PROJECT_ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = PROJECT_ROOT / "data_manifests"


def _shared_data() -> Path:
    env = os.environ.get("DIFFKD_SHARED_DATA")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "data"


SHARED = _shared_data()


def _release(folder: str) -> Path:
    path = SHARED / folder
    if not path.is_dir():
        pytest.skip(f"shared data {path} not available (set DIFFKD_SHARED_DATA to the shared data folder)")
    return path


def _png(path: Path, size: tuple[int, int], value: int | None = None, mode: str = "L", seed: str = "") -> None:
    """A constant image (``value``) or noise seeded by ``seed`` or the file name (distinct pixels per file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    if value is None:
        rng = np.random.default_rng(zlib.crc32((seed or path.name).encode()))
        array = rng.integers(1, 256, shape, dtype=np.uint8)
    else:
        array = np.full(shape, value, np.uint8)
    Image.fromarray(array).save(path)


def test_builders_are_registered() -> None:
    for name in ("ham10000", "mini-mias", "bcs-dbt-slices"):
        assert name in BUILDERS


# ----------------------------------------------------------------------------------------------- HAM10000
HAM_HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization\n"


def _ham(root: Path, rows: list[str], images: dict[str, str] | None = None, masks: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "HAM10000_metadata.csv").write_text(HAM_HEADER + "".join(r + "\n" for r in rows))
    for image_id, folder in (images or {}).items():
        _png(root / folder / f"{image_id}.jpg", (12, 9), mode="RGB")
        if masks:
            _png(root / masks / f"{image_id}_segmentation.png", (12, 9), 255)
    return root


def test_ham10000_official_layout(tmp_path: Path) -> None:
    root = _ham(
        tmp_path / "ham",
        ["HAM_1,ISIC_2,mel,histo,,unknown,unknown", "HAM_1,ISIC_1,mel,histo,0.0,male,back",
         "HAM_2,ISIC_3,nv,follow_up,45.0,female,lower extremity"],
        {"ISIC_1": "HAM10000_images_part_1", "ISIC_2": "HAM10000_images_part_1", "ISIC_3": "HAM10000_images_part_2"},
        masks="HAM10000_segmentations_lesion_tschandl",
    )
    (root / "HAM10000_segmentations_lesion_tschandl" / "ISIC_3_segmentation.png").unlink()
    m = build_manifest("ham10000", root)
    df = m.df
    assert list(df["image_id"]) == ["ISIC_1", "ISIC_2", "ISIC_3"]  # sorted
    assert list(df["patient_id"]) == ["HAM_1", "HAM_1", "HAM_2"]
    assert df.loc[2, "image_path"] == "HAM10000_images_part_2/ISIC_3.jpg"
    assert df.loc[0, "mask_path"] == "HAM10000_segmentations_lesion_tschandl/ISIC_1_segmentation.png"
    assert pd.isna(df.loc[2, "mask_path"])
    assert df.loc[0, "cond_age"] == 0  # age 0 is an age
    assert math.isnan(df.loc[1, "cond_age"])  # empty age is missing, never 0
    assert pd.isna(df.loc[1, "cond_sex"]) and pd.isna(df.loc[1, "cond_localization"])  # 'unknown' -> missing
    assert set(df["center"]) == {"ham10000"}
    assert m.schema.task == "multiclass" and m.schema.positive_class == "mel"
    assert validate_manifest(m, root).ok
    write_manifest(m, tmp_path / "ham.csv")
    assert read_manifest(tmp_path / "ham.csv").df["cond_age"].isna().sum() == 1


def test_ham10000_dataset_column_is_center(tmp_path: Path) -> None:
    root = tmp_path / "ham"
    _ham(root, [], {"ISIC_1": "images"})
    (root / "HAM10000_metadata.csv").write_text(HAM_HEADER.strip() + ",dataset\nHAM_1,ISIC_1,nv,histo,30,male,back,rosendahl\n")
    assert list(build_manifest("ham10000", root).df["center"]) == ["rosendahl"]


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("no-csv", r"HAM10000_metadata\.csv: file not found \(expected the official HAM10000 layout\)"),
        ("no-column", r"HAM10000_metadata\.csv: column\(s\) \['dx'\] not found"),
        ("bad-label", r"HAM10000_metadata\.csv:3 \[image_id=ISIC_2\]: unknown dx 'scc'"),
        ("no-image", r"HAM10000_metadata\.csv:3 \[image_id=ISIC_2\]: image ISIC_2\.jpg not found"),
    ],
)
def test_ham10000_errors(tmp_path: Path, case: str, match: str) -> None:
    root = _ham(tmp_path / "ham", ["HAM_1,ISIC_1,nv,histo,30,male,back", "HAM_2,ISIC_2,nv,histo,30,male,back"],
                {"ISIC_1": "images", "ISIC_2": "images"})
    if case == "no-csv":
        (root / "HAM10000_metadata.csv").unlink()
    elif case == "no-column":
        (root / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx_type,age,sex,localization\n")
    elif case == "bad-label":
        _ham(root, ["HAM_1,ISIC_1,nv,histo,30,male,back", "HAM_2,ISIC_2,scc,histo,30,male,back"])
    else:
        (root / "images" / "ISIC_2.jpg").unlink()
    with pytest.raises(BuildError, match=match):
        build_manifest("ham10000", root)


def test_ham10000_copy_across_lesions_gets_a_duplicate_group(tmp_path: Path) -> None:
    root = _ham(tmp_path / "ham", ["HAM_1,ISIC_1,nv,histo,30,male,back", "HAM_2,ISIC_2,nv,histo,30,male,back",
                                   "HAM_3,ISIC_3,mel,histo,60,female,face"], {"ISIC_1": "images", "ISIC_3": "images"})
    (root / "images" / "ISIC_2.jpg").write_bytes((root / "images" / "ISIC_1.jpg").read_bytes())  # a copy
    with pytest.warns(UserWarning, match=r"ISIC_1 \(HAM_1\) ~ ISIC_2 \(HAM_2\)"):
        df = build_manifest("ham10000", root).df
    assert df["duplicate_group"].tolist()[:2] == ["ISIC_1", "ISIC_1"] and pd.isna(df.at[2, "duplicate_group"])


def test_ham10000_release() -> None:
    root = _release("ham10000")
    started = time.perf_counter()
    with pytest.warns(UserWarning, match="1 near-duplicate pair"):
        m = build_manifest("ham10000", root)
    assert time.perf_counter() - started < 180  # ~10-15 s on one shared core: decoding 10,015 thumbnails
    df = m.df
    # The one copy across lesions (pHash distance 4, r = 0.9986): labelled so that a split keeps it together.
    assert df.loc[df["duplicate_group"].notna(), ["image_id", "patient_id", "duplicate_group"]].values.tolist() == [
        ["ISIC_0025226", "HAM_0004919", "ISIC_0025226"], ["ISIC_0030074", "HAM_0000140", "ISIC_0025226"]]
    assert len(df) == 10015 and df["image_id"].is_unique
    assert df["patient_id"].nunique() == 7470
    assert df["label"].value_counts().to_dict() == {
        "nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327, "vasc": 142, "df": 115}
    assert df["cond_age"].isna().sum() == 57 and (df["cond_age"] == 0).sum() == 39
    assert df["cond_sex"].isna().sum() == 57 and df["cond_localization"].isna().sum() == 234
    assert df["mask_path"].notna().all()
    # Full validation with files (hash of every image, mask sizes and foreground) takes ~13 s here.
    started = time.perf_counter()
    report = validate_manifest(m, root, workers=8)
    assert report.ok, report.format()
    assert time.perf_counter() - started < 120
    # Identical pixels only within one lesion (ISIC_0024366/ISIC_0029861, ISIC_0024777/ISIC_0029938).
    assert len(report.warnings) == 2


# ----------------------------------------------------------------------------------------------- mini-MIAS
INFO_HEAD = "MIAS header text\n\n1st column: MIAS database reference number.\n\n"


def _mias(root: Path, lines: list[str], size: int = 1024, suffix: str = ".pgm") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Info.txt").write_text(INFO_HEAD + "".join(line + "\n" for line in lines) + "\n=====\n")
    for ref in sorted({line.split()[0] for line in lines}):
        _png(root / f"{ref}{suffix}", (size, size))
    return root


def test_circle_box_flips_y_by_hand() -> None:
    # mdb001 G CIRC B 535 425 197 on the 512 x 512 copy: scale 0.5, cx 267.5, cy 512 - 212.5 = 299.5, r 98.5.
    assert circle_box(535, 425, 197, 512, 512) == [169.0, 201.0, 197.0, 197.0]
    # Same circle in the 1024 frame of the release: cy = 1024 - 425 = 599.
    assert circle_box(535, 425, 197, 1024, 1024) == [338.0, 402.0, 394.0, 394.0]
    # Clipped at the top-left corner; entirely outside -> None.
    assert circle_box(10, 1014, 30, 1024, 1024) == [0.0, 0.0, 40.0, 40.0]
    assert circle_box(-100, 500, 10, 1024, 1024) is None


def test_mini_mias_official_layout(tmp_path: Path) -> None:
    root = _mias(tmp_path / "mias", [
        "mdb001 G CIRC B 535 425 197",
        "mdb002 G NORM ",
        "mdb003 D CALC B 100 200 10",
        "mdb003 D CALC M 300 400 20",
        "mdb004 F CALC M *NOTE 3*",
        "mdb005 F ARCH B 50 60 5",
        "mdb005 F SPIC B 500 600 5",
    ])
    m = build_manifest("mini-mias", root)
    df = m.df.set_index("image_id")
    assert list(df.index) == ["mdb001", "mdb002", "mdb003", "mdb004", "mdb005"]
    assert df.at["mdb001", "image_path"] == "mdb001.pgm"
    assert json.loads(df.at["mdb001", "boxes"]) == [[338, 402, 394, 394]]
    assert df.at["mdb002", "boxes"] == "[]" and df.at["mdb002", "label"] == "normal"
    assert json.loads(df.at["mdb003", "boxes"]) == [[90, 814, 20, 20], [280, 604, 40, 40]]
    assert df.at["mdb003", "label"] == "malignant" and df.at["mdb003", "cond_abnormality"] == "CALC"
    assert pd.isna(df.at["mdb004", "boxes"]) and df.at["mdb004", "n_unlocated"] == "1"
    assert df.at["mdb005", "cond_abnormality"] == "mixed" and df.at["mdb005", "label"] == "benign"
    assert list(df["patient_id"]) == ["mias_p001", "mias_p001", "mias_p002", "mias_p002", "mias_p003"]
    assert list(df["side"]) == ["R", "L", "R", "L", "R"]
    assert validate_manifest(m, root).ok


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("no-info", r"Info\.txt: Info\.txt not found"),
        ("bad-class", r"Info\.txt:6 \[mdb002\]: unknown abnormality class 'LUMP'"),
        ("bad-severity", r"Info\.txt:6 \[mdb002\]: abnormality CIRC needs severity B or M, found 'X'"),
        ("bad-tissue", r"Info\.txt:6 \[mdb002\]: unknown background tissue 'Q'"),
        ("no-image", r"Info\.txt:6 \[mdb002\]: image mdb002\.pgm \(or \.png\) not found"),
    ],
)
def test_mini_mias_errors(tmp_path: Path, case: str, match: str) -> None:
    second = {"bad-class": "mdb002 G LUMP B 1 2 3", "bad-severity": "mdb002 G CIRC X 1 2 3",
              "bad-tissue": "mdb002 Q NORM"}.get(case, "mdb002 G NORM")
    root = _mias(tmp_path / "mias", ["mdb001 G NORM", second], size=64, suffix=".png")
    if case == "no-info":
        (root / "Info.txt").unlink()
    elif case == "no-image":
        (root / "mdb002.png").unlink()
    with pytest.raises(BuildError, match=match):
        build_manifest("mini-mias", root)


def test_mini_mias_release() -> None:
    root = _release("mini-mias")
    m = build_manifest("mini-mias", root)
    df = m.df.set_index("image_id")
    assert len(df) == 322 and df["patient_id"].nunique() == 161
    boxes = [json.loads(b) for b in df["boxes"].dropna()]
    assert sum(len(b) for b in boxes) == 119
    assert sum(1 for b in boxes if b) == 111  # 119 circles on 111 images
    assert (df["label"] == "normal").sum() == 207
    assert df["label"].value_counts().to_dict() == {"normal": 207, "benign": 63, "malignant": 52}
    assert sorted(df.index[df["boxes"].isna()]) == ["mdb059", "mdb216", "mdb233", "mdb245"]  # no coordinates
    assert df["n_abnormalities"].astype(int).sum() == 123
    # The y-flip by hand: mdb001 G CIRC B 535 425 197 on the 512 x 512 copy -> [169, 201, 197, 197].
    with Image.open(root / df.at["mdb001", "image_path"]) as img:
        width, height = img.size
    scale = width / 1024
    r = 197 * scale
    assert json.loads(df.at["mdb001", "boxes"]) == [[535 * scale - r, height - 425 * scale - r, 2 * r, 2 * r]]
    # mdb005 has two circles.
    assert len(json.loads(df.at["mdb005", "boxes"])) == 2
    report = validate_manifest(m, root)
    assert report.ok and not report.warnings, report.format()


# ----------------------------------------------------------------------------------------------- BCS-DBT slices
BCS_HEADER = "file,PatientID,StudyUID,View,Slice,VolumeSlices,Class,X,Y,Width,Height,image_width,image_height,scale\n"


def _bcs(root: Path, rows: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "slices.csv").write_text(BCS_HEADER + "".join(r + "\n" for r in rows))
    for row in rows:
        path = root / row.split(",")[0]
        if not path.exists():
            _png(path, (40, 50), seed=",".join(row.split(",")[1:5]))  # files of one slice: same pixels
    return root


def test_bcs_dbt_slices_layout(tmp_path: Path) -> None:
    root = _bcs(tmp_path / "bcs", [
        "slices/P2-b.png,P2,S2,lcc,29,70,cancer,20,30,5,6,40,50,0.5",
        "slices/P2-a.png,P2,S2,lcc,29,70,benign,1,2,3,4,40,50,0.5",  # same slice, second file
        "slices/P1-x.png,P1,S1,rmlo1,16,49,benign,5,5,10,10,40,50,0.5",
    ])
    m = build_manifest("bcs-dbt-slices", root)
    df = m.df.set_index("image_id")
    assert list(df.index) == ["P1-x", "P2-a"]
    assert df.at["P1-x", "cond_view"] == "rmlo" and df.at["P1-x", "view"] == "rmlo1"
    assert df.at["P1-x", "label"] == "benign"
    assert json.loads(df.at["P2-a", "boxes"]) == [[1, 2, 3, 4], [20, 30, 5, 6]]
    assert df.at["P2-a", "label"] == "malignant" and df.at["P2-a", "duplicate_files"] == "slices/P2-b.png"
    assert m.schema.label_set == ("benign", "malignant") and m.schema.task == "detection"
    assert validate_manifest(m, root).ok


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("no-csv", r"slices\.csv: file not found \(expected the official BCS-DBT slice export layout\)"),
        ("no-column", r"slices\.csv: column\(s\) \['Class'\] not found"),
        ("bad-label", r"slices\.csv:3 \[slices/b\.png\]: unknown Class 'actionable'"),
        ("no-image", r"slices\.csv:3: image .*slices/b\.png not found"),
        ("different-pixels", r"slices\.csv:3: slices/b\.png and slices/a\.png .* hold different pixels"),
    ],
)
def test_bcs_dbt_slices_errors(tmp_path: Path, case: str, match: str) -> None:
    second = "slices/b.png,P2,S2,lcc,9,70,cancer,20,30,5,6,40,50,0.5"
    if case == "bad-label":
        second = second.replace("cancer", "actionable")
    if case == "different-pixels":
        second = "slices/b.png,P1,S1,rcc,3,40,cancer,20,30,5,6,40,50,0.5"
    root = _bcs(tmp_path / "bcs", ["slices/a.png,P1,S1,rcc,3,40,benign,1,2,3,4,40,50,0.5", second])
    if case == "no-csv":
        (root / "slices.csv").unlink()
    elif case == "no-column":
        text = (root / "slices.csv").read_text().replace(",Class,", ",Klass,")
        (root / "slices.csv").write_text(text)
    elif case == "no-image":
        (root / "slices/b.png").unlink()
    elif case == "different-pixels":
        _png(root / "slices/b.png", (40, 50), 7)
    with pytest.raises(BuildError, match=match):
        build_manifest("bcs-dbt-slices", root)


def test_bcs_dbt_slices_release() -> None:
    root = _release("bcs-dbt-slices")
    m = build_manifest("bcs-dbt-slices", root)
    df = m.df
    boxes = [json.loads(b) for b in df["boxes"]]
    assert sum(len(b) for b in boxes) == 110
    assert df["patient_id"].nunique() == 50
    assert len(df) == 109  # DBT-P01826 lcc slice 29 holds two cancer boxes (two identical files)
    classes = pd.read_csv(root / "slices.csv")["Class"].value_counts().to_dict()
    assert classes == {"benign": 60, "cancer": 50}
    assert df["label"].value_counts().to_dict() == {"benign": 60, "malignant": 49}
    assert set(df["cond_view"]) == {"lcc", "lmlo", "rcc", "rmlo"}
    report = validate_manifest(m, root)
    assert report.ok and not report.warnings, report.format()


# ----------------------------------------------------------------------------------------------- committed manifests
@pytest.mark.parametrize(("name", "folder"), [("ham10000", "ham10000"), ("mini-mias", "mini-mias"),
                                              ("bcs-dbt-slices", "bcs-dbt-slices")])
def test_committed_manifest_matches_build(tmp_path: Path, name: str, folder: str) -> None:
    committed = MANIFESTS / f"{name}.csv"
    assert committed.is_file(), f"{committed} is missing; build it with 'diffkd-study data build {name}'"
    table = read_manifest(committed)
    assert validate_manifest(table, SHARED / folder, check_files=False).ok
    root = _release(folder)
    out = write_manifest(build_manifest(name, root), tmp_path / f"{name}.csv")
    assert out.read_bytes() == committed.read_bytes()
    assert (tmp_path / f"{name}.schema.yaml").read_bytes() == (MANIFESTS / f"{name}.schema.yaml").read_bytes()
