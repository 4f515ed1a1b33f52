"""Breast-ultrasound manifest builders: BUS-BRA and BrEaST on the shared releases, BUSI on a tiny tree.

The real-data tests are skipped when the shared data folder (``../shared/data`` from the project root,
or ``$DIFFKD_SHARED_DATA``) is absent; the error-path tests use tiny fixtures in ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffkd_study.data.builders import BUILDERS, BuildError, build_manifest
from diffkd_study.data.schema import read_manifest, write_manifest
from diffkd_study.data.validate import validate_manifest

PROJECT = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get("DIFFKD_SHARED_DATA", PROJECT.parent / "shared" / "data"))
MANIFESTS = PROJECT / "data_manifests"


def shared(name: str) -> Path:
    root = SHARED / name
    if not root.is_dir():
        pytest.skip(f"shared data release {root} is absent (set DIFFKD_SHARED_DATA to run real-data tests)")
    return root


def png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def lesion(h: int = 12, w: int = 16, box: tuple[int, int, int, int] = (3, 2, 5, 4)) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    x, y, bw, bh = box
    mask[y:y + bh, x:x + bw] = 255
    return mask


def image(seed: int, h: int = 12, w: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def test_builders_are_registered():
    assert {"bus-bra", "breast-lesions-usg", "busi"} <= set(BUILDERS.names())


# -- BUS-BRA ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bus_bra():
    root = shared("bus-bra")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = build_manifest("bus-bra", root)
    return manifest, root, [str(w.message) for w in caught]


def test_bus_bra_counts_and_columns(bus_bra):
    manifest, _, caught = bus_bra
    df = manifest.df
    assert len(df) == 1875 and df["patient_id"].nunique() == 1064
    assert df["label"].value_counts().to_dict() == {"benign": 1268, "malignant": 607}
    assert df["image_id"].is_monotonic_increasing
    assert df["center"].nunique() == 4 and (df["center"] == df["cond_device"]).all()
    assert set(df["site"]) == {"INCA"}
    assert set(df["cond_birads"]) == {"2", "3", "4", "5"}
    assert set(df["fold_5"]) == {str(k) for k in range(1, 6)}
    assert set(df["fold_10"]) == {str(k) for k in range(1, 11)}
    assert (df.groupby("patient_id")["fold_5"].nunique() == 1).all()  # official folds are patient-level
    row = df.set_index("image_id").loc["bus_0001-l"]
    assert row["image_path"] == "Images/bus_0001-l.png" and row["mask_path"] == "Masks/mask_0001-l.png"
    assert json.loads(row["boxes"]) == [[90, 23, 104, 80]] and row["bbox_official"] == "[91,24,103,79]"
    assert any("4 row(s) list a Width/Height" in m and "bus_0856-l" in m for m in caught)


def test_bus_bra_validates(bus_bra):
    manifest, root, _ = bus_bra
    report = validate_manifest(manifest, root, check_files=True, workers=8)
    assert report.ok, report.format()


def _tiny_bus_bra(root: Path) -> Path:
    rows = []
    for i, (side, pathology) in enumerate([("l", "benign"), ("r", "benign"), ("s", "malignant")]):
        image_id = f"bus_000{1 + i // 2}-{side}"
        png(root / "Images" / f"{image_id}.png", image(i))
        png(root / "Masks" / f"mask_000{1 + i // 2}-{side}.png", lesion())
        rows.append({"ID": image_id, "Case": 1 + i // 2, "Histology": "fibroadenoma", "Pathology": pathology,
                     "BIRADS": 3, "Device": "GE Logiq 5 @10-12MHz", "Width": 16, "Height": 12,
                     "Side": {"l": "left", "r": "right", "s": "single"}[side], "BBOX": "[4,3,4,3]"})
    pd.DataFrame(rows).to_csv(root / "bus_data.csv", index=False)
    for name in ("5-fold-cv.csv", "10-fold-cv.csv"):
        pd.DataFrame({"ID": [r["ID"] for r in rows], "Pathology": [r["Pathology"] for r in rows],
                      "kFold": [1, 1, 2]}).to_csv(root / name, index=False)
    return root


def test_bus_bra_tiny_release(tmp_path):
    manifest = build_manifest("bus-bra", _tiny_bus_bra(tmp_path))
    assert list(manifest.df["image_id"]) == ["bus_0001-l", "bus_0001-r", "bus_0002-s"]
    assert list(manifest.df["patient_id"]) == ["1", "1", "2"]
    assert json.loads(manifest.df.at[0, "boxes"]) == [[3, 2, 5, 4]]
    assert validate_manifest(manifest, tmp_path).ok


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda r: (r / "bus_data.csv").unlink(), r"bus_data\.csv: file not found"),
        (lambda r: (r / "10-fold-cv.csv").unlink(), r"10-fold-cv\.csv: file not found"),
        (lambda r: pd.read_csv(r / "bus_data.csv").drop(columns="Device").to_csv(r / "bus_data.csv", index=False),
         r"bus_data\.csv: column\(s\) \['Device'\] not found"),
        (lambda r: pd.read_csv(r / "bus_data.csv").assign(Pathology=["benign", "borderline", "benign"])
         .to_csv(r / "bus_data.csv", index=False), r"bus_data\.csv: line 3 \(ID bus_0001-r\): Pathology='borderline'"),
        (lambda r: (r / "Images" / "bus_0002-s.png").unlink(), r"line 4 \(ID bus_0002-s\): image .* not found"),
        (lambda r: (r / "Masks" / "mask_0001-l.png").unlink(), r"line 2 \(ID bus_0001-l\): mask .* not found"),
    ],
    ids=["no-table", "no-folds", "no-column", "bad-label", "no-image", "no-mask"],
)
def test_bus_bra_errors(tmp_path, damage, match):
    root = _tiny_bus_bra(tmp_path)
    damage(root)
    with pytest.raises(BuildError, match=match):
        build_manifest("bus-bra", root)


# -- BrEaST-Lesions-USG ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def breast():
    root = shared("breast-lesions-usg")
    return build_manifest("breast-lesions-usg", root), root


def test_breast_counts_and_conditions(breast):
    manifest, _ = breast
    df = manifest.df
    assert len(df) == 256 and df["patient_id"].nunique() == 256
    assert df["label"].value_counts().to_dict() == {"benign": 154, "malignant": 98, "normal": 4}
    normal = df[df["label"] == "normal"]
    assert normal["mask_path"].isna().all() and normal["boxes"].isna().all()
    assert df.loc[df["label"] != "normal", "mask_path"].str.endswith("_tumor.png").all()
    assert set(df["cond_birads"]) == {"1", "2", "3", "4a", "4b", "4c", "5"}
    assert df["cond_age"].isna().sum() == 42 and not (df["cond_age"] == 0).any()
    assert set(df["cond_margin"].dropna()) <= {"circumscribed", "indistinct", "microlobulated", "angular",
                                                "spiculated"}
    raw = df.set_index("margin_raw")["cond_margin"]
    assert raw["not circumscribed - spiculated&angular&microlobulated&indistinct"].eq("spiculated").all()
    assert raw["not circumscribed - angular&microlobulated"].eq("angular").all()
    lactating = df[df["tissue_composition_raw"] == "lactating&homogeneous: fibroglandular"]
    assert (lactating["cond_tissue_composition"] == "homogeneous: fibroglandular").all()
    assert (lactating["lactating"] == 1).all()
    assert set(df["cond_verification"].dropna()) == {"biopsy", "follow-up"}
    for spec in manifest.schema.conditions.values():
        assert spec.type == "numeric" or spec.levels


def test_breast_validates(breast):
    manifest, root = breast
    report = validate_manifest(manifest, root, check_files=True, workers=8)
    assert report.ok, report.format()


CLINICAL = "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx"


def _tiny_breast(root: Path) -> Path:
    folder = root / "BrEaST-Lesions_USG-images_and_masks"
    base = {"Pixel_size": 0.007, "Tissue_composition": "homogeneous: fat", "Signs": "no", "Symptoms": "no",
            "Shape": "oval", "Margin": "circumscribed", "Echogenicity": "hypoechoic", "Posterior_features": "no",
            "Halo": "no", "Calcifications": "no", "Skin_thickening": "no", "Interpretation": "Fibroadenoma",
            "BIRADS": 3, "Verification": "confirmed by biopsy", "Diagnosis": "Fibroadenoma",
            "Mask_other_filename": np.nan}
    rows = []
    for case, label in ((1, "benign"), (2, "malignant"), (3, "normal")):
        png(folder / f"case00{case}.png", image(case))
        mask = np.nan
        if label != "normal":
            mask = f"case00{case}_tumor.png"
            png(folder / mask, lesion())
        rows.append({**base, "CaseID": case, "Image_filename": f"case00{case}.png", "Mask_tumor_filename": mask,
                     "Age": "not available" if case == 1 else 50, "Classification": label})
    rows[1].update(Margin="not circumscribed - angular&indistinct", BIRADS="4c",
                   Tissue_composition="lactating&heterogeneous: predominantly fat")
    rows[2].update(Shape="not applicable", Margin="not applicable", BIRADS=1, Verification="not applicable")
    pd.DataFrame(rows).to_excel(root / CLINICAL, index=False)
    return root


def test_breast_tiny_release(tmp_path):
    manifest = build_manifest("breast-lesions-usg", _tiny_breast(tmp_path))
    df = manifest.df.set_index("image_id")
    assert np.isnan(df.at["case001", "cond_age"]) and df.at["case002", "cond_age"] == 50
    assert df.at["case002", "cond_margin"] == "angular" and df.at["case002", "cond_birads"] == "4c"
    assert df.at["case002", "cond_tissue_composition"] == "heterogeneous: predominantly fat"
    assert pd.isna(df.at["case003", "mask_path"]) and pd.isna(df.at["case003", "cond_shape"])
    path = write_manifest(manifest, tmp_path / "out" / "b.csv")
    again = read_manifest(path)
    assert np.isnan(again.df.set_index("image_id").at["case001", "cond_age"])  # empty cell, not 0
    assert validate_manifest(again, tmp_path).ok


def _rewrite(root: Path, **changes) -> None:
    table = pd.read_excel(root / CLINICAL)
    for column, value in changes.items():
        if value is None:
            table = table.drop(columns=column)
        else:
            table.loc[1, column] = value
    table.to_excel(root / CLINICAL, index=False)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda r: (r / CLINICAL).unlink(), r"clinical table not found"),
        (lambda r: _rewrite(r, Margin=None), r"\.xlsx: missing column\(s\) \['Margin'\]"),
        (lambda r: _rewrite(r, Classification="borderline"), r"\.xlsx: row 3 \(CaseID 2\): Classification='borderline'"),
        (lambda r: _rewrite(r, Shape="triangular"), r"row 3 \(CaseID 2\): Shape='triangular'"),
        (lambda r: _rewrite(r, Margin="not circumscribed - wavy"), r"row 3 \(CaseID 2\): Margin="),
        (lambda r: (r / "BrEaST-Lesions_USG-images_and_masks" / "case002_tumor.png").unlink(),
         r"row 3 \(CaseID 2\): tumor mask .* not found"),
    ],
    ids=["no-table", "no-column", "bad-label", "bad-level", "bad-margin", "no-mask"],
)
def test_breast_errors(tmp_path, damage, match):
    root = _tiny_breast(tmp_path)
    damage(root)
    with pytest.raises(BuildError, match=match):
        build_manifest("breast-lesions-usg", root)


# -- BUSI ------------------------------------------------------------------------------------------


def _tiny_busi(root: Path) -> Path:
    base = root / "Dataset_BUSI_with_GT"
    for k, (label, n) in enumerate((("benign", 3), ("malignant", 2), ("normal", 1))):
        for i in range(1, n + 1):
            png(base / label / f"{label} ({i}).png", image(100 * k + i))
            png(base / label / f"{label} ({i})_mask.png", lesion() if label != "normal" else lesion() * 0)
    png(base / "benign" / "benign (2)_mask_1.png", lesion(box=(10, 6, 3, 3)))
    png(base / "benign" / "benign (10).png", image(50))  # sorts after (3), not after (1)
    png(base / "benign" / "benign (10)_mask.png", lesion())
    png(base / "malignant" / "malignant (2).png", image(1))  # = benign (1), pixel for pixel
    (base / "Thumbs.db").write_bytes(b"")
    return root


def test_busi_tiny_release(tmp_path):
    root = _tiny_busi(tmp_path)
    with pytest.warns(UserWarning) as caught:
        manifest = build_manifest("busi", root)
    messages = " ".join(str(w.message) for w in caught)
    assert "no patient identifiers" in messages and "duplicate" in messages
    df = manifest.df.set_index("image_id")
    assert list(df.index) == ["benign (1)", "benign (2)", "benign (3)", "benign (10)", "malignant (1)",
                              "malignant (2)", "normal (1)"]
    assert (df.index == df["patient_id"]).all()
    assert df.at["benign (2)", "mask_path"] == "Dataset_BUSI_with_GT/benign/benign (2)_mask.png"
    assert json.loads(df.at["benign (2)", "mask_paths"]) == [
        "Dataset_BUSI_with_GT/benign/benign (2)_mask.png", "Dataset_BUSI_with_GT/benign/benign (2)_mask_1.png"]
    assert json.loads(df.at["benign (2)", "boxes"]) == [[3, 2, 5, 4], [10, 6, 3, 3]]
    assert pd.isna(df.at["normal (1)", "boxes"])
    assert df.at["malignant (2)", "duplicate_of"] == "benign (1)" and df["duplicate_of"].notna().sum() == 1
    assert set(df["label"]) == {"benign", "malignant", "normal"}
    report = validate_manifest(manifest, root)
    assert report.rules_broken() == {"duplicate-pixels"}  # the planted cross-label duplicate, nothing else

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inner = build_manifest("busi", root / "Dataset_BUSI_with_GT")  # root may be the folder itself
    assert inner.df.at[0, "image_path"] == "benign/benign (1).png"
    assert list(inner.df["image_id"]) == list(manifest.df["image_id"])


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda b: (b / "normal" / "normal (1).png").unlink() or (b / "normal" / "normal (1)_mask.png").unlink()
         or (b / "normal").rmdir(), r"normal: class folder not found"),
        (lambda b: (b / "benign" / "benign (3)_mask.png").unlink(), r"benign \(3\)\.png: no mask"),
        (lambda b: (b / "benign" / "benign (3).png").unlink(), r"benign \(3\)_mask\.png: mask without an image"),
    ],
    ids=["no-folder", "no-mask", "orphan-mask"],
)
def test_busi_errors(tmp_path, damage, match):
    root = _tiny_busi(tmp_path)
    damage(root / "Dataset_BUSI_with_GT")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(BuildError, match=match):
            build_manifest("busi", root)


def test_busi_missing_layout(tmp_path):
    with pytest.raises(BuildError, match="Dataset_BUSI_with_GT: folder not found"):
        build_manifest("busi", tmp_path)


# -- committed manifests ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bus-bra", "breast-lesions-usg"])
def test_committed_manifest_is_current(name, tmp_path):
    root = shared(name)
    committed = MANIFESTS / f"{name}.csv"
    assert committed.is_file() and (MANIFESTS / f"{name}.schema.yaml").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rebuilt = write_manifest(build_manifest(name, root), tmp_path / f"{name}.csv")
    assert rebuilt.read_bytes() == committed.read_bytes()
    assert (tmp_path / f"{name}.schema.yaml").read_bytes() == (MANIFESTS / f"{name}.schema.yaml").read_bytes()
