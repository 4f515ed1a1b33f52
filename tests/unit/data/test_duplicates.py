"""Near-duplicate detection: pHash by hand and against scipy's DCT, exact candidate search, confirmation by
correlation, connected components, and the manifest column the builders add."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.fft import dctn

from diffkd_study.data.duplicates import (
    MAX_HAMMING,
    MIN_CORRELATION,
    candidate_pairs,
    duplicate_groups,
    find_near_duplicates,
    flag_near_duplicates,
    hamming_distance,
    perceptual_hash,
    thumbnail_correlation,
)
from diffkd_study.data.schema import Manifest, ManifestSchema

SCHEMA = ManifestSchema(dataset="tiny", label_set=("benign", "malignant"), positive_class="malignant")


def _texture(seed: int, size: tuple[int, int] = (80, 60)) -> np.ndarray:
    """A smooth grey texture (random 6 x 5 field, bicubic upsampling) as uint8 H x W."""
    field = np.random.default_rng(seed).uniform(40, 215, (5, 6)).astype(np.float32)
    return np.asarray(Image.fromarray(field, mode="F").resize(size, Image.Resampling.BICUBIC).convert("L"))


def _save_rgb(path: Path, grey: np.ndarray, gains: tuple[float, float, float] = (1, 1, 1), quality: int = 95,
              scale: float = 1.0) -> None:
    """Save ``grey`` as an RGB JPEG with per-channel gains (another colour balance) and an optional resize."""
    rgb = np.clip(np.stack([grey * g for g in gains], axis=-1), 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb)
    if scale != 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=quality)


# -- the hash and the distance --------------------------------------------------------------------


def test_phash_of_a_constant_image_sets_only_the_dc_bit():
    # every coefficient but DC is 0, the median of the 64 is 0, and only DC (bit 0, most significant) exceeds it
    assert perceptual_hash(np.full((1, 32, 32), 100.0))[0] == np.uint64(1 << 63)


def test_phash_bits_match_scipy_dct():
    thumbs = np.random.default_rng(0).uniform(0, 255, (5, 32, 32))
    for thumb, value in zip(thumbs, perceptual_hash(thumbs), strict=True):
        low = dctn(thumb, type=2, norm="ortho")[:8, :8].ravel()
        expected = int("".join("1" if c > np.median(low) else "0" for c in low), 2)
        assert int(value) == expected


def test_hamming_distance_by_hand():
    a = np.array([0, 0, 0b1011, 2**64 - 1], dtype=np.uint64)
    b = np.array([0, 2**64 - 1, 0b0110, 2**63], dtype=np.uint64)
    assert hamming_distance(a, b).tolist() == [0, 64, 3, 63]
    assert hamming_distance(a[:, None], a[None, :]).shape == (4, 4)


def test_candidate_pairs_are_exactly_the_close_pairs_of_different_groups():
    r = np.random.default_rng(1)
    base = r.integers(0, 2**63, 40, dtype=np.uint64)
    flips = np.uint64(1) << r.integers(0, 64, (40, 3)).astype(np.uint64)
    hashes = np.concatenate([base, base ^ flips[:, 0] ^ flips[:, 1] ^ flips[:, 2]])  # 80 hashes, pairs <= 3 bits
    groups = [f"g{k % 13}" for k in range(80)]
    i, j, d = candidate_pairs(hashes, groups, max_hamming=6, block=7)
    brute = {(a, b) for a in range(80) for b in range(a + 1, 80)
             if groups[a] != groups[b] and int(hamming_distance(hashes[a], hashes[b])) <= 6}
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == brute and len(brute) >= 30
    assert (d == hamming_distance(hashes[i], hashes[j])).all()


def test_correlation_is_pearson_and_nan_for_a_constant_thumbnail():
    thumbs = np.stack([_texture(0, (32, 32)), 255 - _texture(0, (32, 32)), np.full((32, 32), 7, np.uint8)])
    r = thumbnail_correlation(thumbs, np.array([0, 0, 2]), np.array([0, 1, 2]))
    expected = np.corrcoef(thumbs[0].ravel().astype(float), thumbs[1].ravel().astype(float))[0, 1]
    assert r[0] == pytest.approx(1.0) and r[1] == pytest.approx(expected) and np.isnan(r[2])


# -- finding pairs in files -----------------------------------------------------------------------


@pytest.fixture()
def photos(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """Six images of five patients: a recoloured, recompressed, downscaled copy across patients (a ~ b), an
    exact copy within one patient (c ~ c2), two unrelated images, one of them in the same patient as a."""
    _save_rgb(tmp_path / "a.jpg", _texture(1))
    _save_rgb(tmp_path / "b.jpg", _texture(1), gains=(1.15, 0.9, 0.75), quality=70, scale=0.75)
    _save_rgb(tmp_path / "c.jpg", _texture(2))
    _save_rgb(tmp_path / "c2.jpg", _texture(2))
    _save_rgb(tmp_path / "d.jpg", _texture(3))
    _save_rgb(tmp_path / "e.jpg", _texture(4))
    table = pd.DataFrame({
        "image_id": ["a", "b", "c", "c2", "d", "e"], "patient_id": ["p1", "p2", "p3", "p3", "p4", "p1"],
        "dataset": "tiny", "center": "c1", "image_path": ["a.jpg", "b.jpg", "c.jpg", "c2.jpg", "d.jpg", "e.jpg"],
        "label": ["benign", "benign", "malignant", "malignant", "benign", "benign"],
    })
    return tmp_path, table


def test_a_recoloured_copy_across_patients_is_found_and_a_copy_within_a_patient_is_not(photos):
    root, table = photos
    pairs = find_near_duplicates([root / p for p in table["image_path"]], table["image_id"], table["patient_id"])
    assert pairs[["image_id_a", "image_id_b"]].values.tolist() == [["a", "b"]]
    assert pairs.at[0, "hamming"] <= 4 and pairs.at[0, "correlation"] > 0.995
    # the same images in one group each: the within-patient copy is a pair, unrelated images never are
    everyone = find_near_duplicates([root / p for p in table["image_path"]], table["image_id"], list(range(6)))
    assert everyone[["image_id_a", "image_id_b"]].values.tolist() == [["a", "b"], ["c", "c2"]]
    assert MAX_HAMMING == 10 and MIN_CORRELATION == 0.99  # the stated defaults


def test_identical_constant_images_are_duplicates_other_constants_are_not(tmp_path):
    for name, value in (("x", 90), ("y", 90), ("z", 200)):
        Image.fromarray(np.full((12, 16), value, np.uint8)).save(tmp_path / f"{name}.png")
    pairs = find_near_duplicates([tmp_path / f"{n}.png" for n in "xyz"], list("xyz"), ["p1", "p2", "p3"])
    assert pairs[["image_id_a", "image_id_b"]].values.tolist() == [["x", "y"]] and np.isnan(pairs.at[0, "correlation"])


def test_an_image_that_does_not_decode_is_named(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"bad\.png: cannot be decoded for near-duplicate detection"):
        find_near_duplicates([tmp_path / "bad.png"], ["bad"], ["p1"])


def test_duplicate_groups_are_connected_components_named_by_their_smallest_id():
    pairs = pd.DataFrame({"image_id_a": ["b", "c", "x"], "image_id_b": ["c", "d", "y"]})
    labels = duplicate_groups(["d", "a", "c", "b", "y", "x"], pairs)
    assert labels.tolist()[0] == "b" and pd.isna(labels.iloc[1])
    assert labels.tolist()[2:] == ["b", "b", "x", "x"]


def test_flag_near_duplicates_adds_the_column_and_warns_only_when_a_pair_is_found(photos):
    root, table = photos
    with pytest.warns(UserWarning, match=r"1 near-duplicate pair\(s\) across patient_id .* a \(p1\) ~ b \(p2\): "
                                         r"Hamming \d+, r = 0\.99\d\d"):
        flagged, pairs = flag_near_duplicates(Manifest(table, SCHEMA), root)
    assert flagged.df["duplicate_group"].tolist()[:2] == ["a", "a"] and flagged.df["duplicate_group"].isna().sum() == 4
    assert pairs[["group_a", "group_b"]].values.tolist() == [["p1", "p2"]]
    unrelated = Manifest(table.drop(index=1).reset_index(drop=True), SCHEMA)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same, none = flag_near_duplicates(unrelated, root)
    assert same is unrelated and none.empty and "duplicate_group" not in same.df.columns
    with pytest.raises(ValueError, match="already has a 'duplicate_group' column"):
        flag_near_duplicates(flagged, root)
