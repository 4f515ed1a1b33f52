"""The preprocessing cache: layout, key, re-use, atomic builds, decode errors, resize modes."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffkd_study.data import cache as cache_module
from diffkd_study.data.cache import (
    ImageCache,
    ImageDecodeError,
    Preprocessing,
    build_cache,
    cache_key,
    default_cache_dir,
    load_image,
    load_mask,
)
from diffkd_study.data.schema import Manifest
from diffkd_study.io import OWNER_MARK

from .conftest import write_png


def _count_decodes(monkeypatch) -> list[str]:
    """Every image and mask decode (masks have their own decoder: they are not rescaled by bit depth)."""
    calls: list[str] = []
    for name in ("_decode", "decode_mask"):
        real = getattr(cache_module, name)

        def counting(path, *args, real=real):
            calls.append(str(path))
            return real(path, *args)

        monkeypatch.setattr(cache_module, name, counting)
    return calls


def test_layout_shapes_and_index(make_cohort, tmp_path):
    manifest, root = make_cohort(5)
    cache = build_cache(manifest, root, size=(12, 16), mode="L", cache_dir=tmp_path / "c", progress=False)
    assert cache.path.parent == tmp_path / "c"
    assert sorted(p.name for p in cache.path.iterdir()) == [OWNER_MARK, "images.npy", "index.json", "masks.npy"]
    assert isinstance(cache.images, np.memmap) and cache.images.dtype == np.uint8
    assert cache.images.shape == (5, 12, 16) and cache.masks.shape == (5, 12, 16)
    assert cache.image_ids == ["im0", "im1", "im2", "im3", "im4"]
    assert cache.has_mask.tolist() == [True, True, True, True, False]
    assert not cache.masks[4].any()  # the row without a mask
    assert cache.index_of("im3") == 3
    assert cache.index["manifest_sha256"] == manifest.sha256()
    assert cache.index["preprocessing"] == {"size": [12, 16], "mode": "L", "resize_mode": "stretch"}
    assert cache.index["package_version"]
    expected = load_image(root / "img/3.png", Preprocessing.make((12, 16)))
    np.testing.assert_array_equal(cache.images[3], expected)
    with pytest.raises(KeyError, match="im9"):
        cache.index_of("im9")


def test_rgb_and_no_masks(make_cohort, tmp_path):
    manifest, root = make_cohort(3, rgb=True, masks=False)
    cache = build_cache(manifest, root, size=8, mode="RGB", cache_dir=tmp_path, progress=False)
    assert cache.images.shape == (3, 8, 8, 3) and cache.masks is None
    assert cache.has_mask.tolist() == [False, False, False]
    gray = build_cache(manifest, root, size=8, mode="L", cache_dir=tmp_path, progress=False)
    assert gray.images.shape == (3, 8, 8) and gray.path != cache.path


def test_arrays_are_stored_in_image_id_order_whatever_the_row_order(make_cohort, tmp_path):
    manifest, root = make_cohort(4)
    reversed_rows = Manifest(manifest.df.iloc[::-1], manifest.schema, manifest.path)
    a = build_cache(manifest, root, size=8, cache_dir=tmp_path / "a", progress=False)
    b = build_cache(reversed_rows, root, size=8, cache_dir=tmp_path / "b", progress=False)
    assert a.path.name == b.path.name and a.image_ids == b.image_ids
    np.testing.assert_array_equal(a.images, b.images)


def test_key_changes_with_pixel_sources_and_parameters_only(make_cohort):
    manifest, root = make_cohort(4)
    prep = Preprocessing.make(16)
    key = cache_key(manifest, root, prep)

    # not the key: labels, splits, conditions, row order
    relabelled = manifest.df.assign(label="benign", split="test", cond_birads="5").iloc[::-1]
    assert cache_key(Manifest(relabelled, manifest.schema), root, prep) == key
    # the key: preprocessing
    for other in (Preprocessing.make(17), Preprocessing.make((16, 17)), Preprocessing.make(16, "RGB"),
                  Preprocessing.make(16, resize_mode="pad")):
        assert cache_key(manifest, root, other) != key
    # the key: which rows, which files
    assert cache_key(Manifest(manifest.df.iloc[:3], manifest.schema), root, prep) != key
    renamed = manifest.df.assign(image_id=lambda d: d["image_id"].str.replace("im0", "x0"))
    assert cache_key(Manifest(renamed, manifest.schema), root, prep) != key
    swapped = manifest.df.copy()
    swapped.loc[[0, 1], "image_path"] = swapped.loc[[1, 0], "image_path"].to_numpy()
    assert cache_key(Manifest(swapped, manifest.schema), root, prep) != key
    no_mask = manifest.df.assign(mask_path=np.nan)
    assert cache_key(Manifest(no_mask, manifest.schema), root, prep) != key
    # the key: file content (an image regenerated in place has a new mtime)
    stat = os.stat(root / "img/2.png")
    os.utime(root / "img/2.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert cache_key(manifest, root, prep) != key


def test_second_build_reuses_the_cache_without_decoding(make_cohort, tmp_path, monkeypatch):
    manifest, root = make_cohort(4)
    calls = _count_decodes(monkeypatch)
    first = build_cache(manifest, root, size=8, cache_dir=tmp_path / "c", progress=False)
    assert len(calls) == 4 + 3  # 4 images, 3 masks
    resplit = Manifest(manifest.df.assign(split="train"), manifest.schema)
    second = build_cache(resplit, root, size=8, cache_dir=tmp_path / "c", progress=False)
    assert len(calls) == 7
    assert second.path == first.path
    assert second.index["build_seconds"] == first.index["build_seconds"]  # the same folder, not rebuilt
    build_cache(manifest, root, size=10, cache_dir=tmp_path / "c", progress=False)
    assert len(calls) == 14
    assert len(list((tmp_path / "c").iterdir())) == 2


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_interrupted_build_leaves_no_cache_folder(make_cohort, tmp_path, monkeypatch, error):
    manifest, root = make_cohort(6)
    real = cache_module.load_image
    count = []

    def failing(path, prep):
        count.append(path)
        if len(count) == 3:
            raise error
        return real(path, prep)

    monkeypatch.setattr(cache_module, "load_image", failing)
    with pytest.raises(type(error)):
        build_cache(manifest, root, size=8, cache_dir=tmp_path / "c", workers=2, progress=False)
    assert list((tmp_path / "c").iterdir()) == []
    monkeypatch.setattr(cache_module, "load_image", real)
    cache = build_cache(manifest, root, size=8, cache_dir=tmp_path / "c", progress=False)
    assert len(cache) == 6 and [p.name for p in (tmp_path / "c").iterdir()] == [cache.path.name]


def test_corrupt_image_error_names_file_row_and_id(make_cohort, tmp_path):
    manifest, root = make_cohort(4)
    (root / "img/2.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageDecodeError, match=r"m\.csv:4 \[image_id=im2\]: image_path .*img/2\.png does not decode"):
        build_cache(manifest, root, size=8, cache_dir=tmp_path / "c", progress=False)
    assert list((tmp_path / "c").iterdir()) == []


def test_missing_mask_error_names_the_mask(make_cohort, tmp_path):
    manifest, root = make_cohort(3)
    (root / "msk/1.png").unlink()
    with pytest.raises(ImageDecodeError, match=r"m\.csv:3 \[image_id=im1\]: mask_path .*msk/1\.png"):
        build_cache(manifest, root, size=8, cache_dir=tmp_path / "c", progress=False)


def test_duplicate_image_id_is_rejected(make_cohort, tmp_path):
    manifest, root = make_cohort(3)
    manifest.df.loc[2, "image_id"] = "im0"
    with pytest.raises(ValueError, match=r"m\.csv:4 \[image_id=im0\]: duplicate image_id"):
        build_cache(manifest, root, size=8, cache_dir=tmp_path, progress=False)


def test_pad_mode_letterboxes_and_stretch_fills(tmp_path):
    write_png(tmp_path / "wide.png", np.full((20, 40), 200, np.uint8))  # 40 wide, 20 high
    padded = load_image(tmp_path / "wide.png", Preprocessing.make(16, resize_mode="pad"))
    # scale 0.4 -> 16 x 8, centred vertically: rows 4..11 hold the image
    assert padded.shape == (16, 16)
    assert (padded[:4] == 0).all() and (padded[12:] == 0).all() and (padded[4:12] == 200).all()
    stretched = load_image(tmp_path / "wide.png", Preprocessing.make(16))
    assert (stretched == 200).all()
    tall = load_image(tmp_path / "wide.png", Preprocessing.make((10, 40), resize_mode="pad"))
    assert tall.shape == (10, 40) and (tall[:, :10] == 0).all() and (tall[:, 10:30] == 200).all()


def test_masks_keep_their_values_and_images_are_antialiased(tmp_path):
    stripes = np.zeros((64, 64), np.uint8)
    stripes[:, ::2] = 255
    write_png(tmp_path / "mask.png", stripes)
    mask = load_mask(tmp_path / "mask.png", Preprocessing.make(16))
    assert set(np.unique(mask)) <= {0, 255}
    image = load_image(tmp_path / "mask.png", Preprocessing.make(16))
    assert (image[:, 1:-1] == 128).all()  # 1-pixel stripes average out (no aliasing) away from the border
    block = np.zeros((64, 64), np.uint8)
    block[16:48, 8:40] = 255
    Image.fromarray(block).convert("1").save(tmp_path / "bilevel.png")  # 1-bit PNG, as BrEaST's masks
    assert set(np.unique(load_mask(tmp_path / "bilevel.png", Preprocessing.make(16)))) == {0, 255}


@pytest.mark.parametrize("kwargs", [{"size": 0}, {"size": (8, 8, 8)}, {"size": 8, "mode": "CMYK"},
                                    {"size": 8, "resize_mode": "crop"}])
def test_bad_parameters_raise(kwargs):
    with pytest.raises(ValueError):
        Preprocessing.make(**kwargs)


def test_cache_pickles_as_its_path_and_reopens(make_cohort, tmp_path):
    manifest, root = make_cohort(4)
    cache = build_cache(manifest, root, size=32, cache_dir=tmp_path, progress=False)
    data = pickle.dumps(cache)
    assert len(data) < 1000  # not the 4 x 32 x 32 pixels
    clone = pickle.loads(data)
    np.testing.assert_array_equal(clone.images, cache.images)
    assert clone.index_of("im2") == 2


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFKD_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("DIFFKD_CACHE_DIR")
    assert default_cache_dir().parts[-2:] == (".cache", "diffkd_study")


def test_build_uses_the_environment_cache_dir(make_cohort, tmp_path, monkeypatch):
    manifest, root = make_cohort(2)
    monkeypatch.setenv("DIFFKD_CACHE_DIR", str(tmp_path / "env"))
    cache = build_cache(manifest, root, size=8, progress=False)
    assert cache.path.parent == tmp_path / "env"


def test_a_damaged_cache_is_rebuilt(make_cohort, tmp_path):
    manifest, root = make_cohort(3)
    cache = build_cache(manifest, root, size=8, cache_dir=tmp_path, progress=False)
    (cache.path / "images.npy").write_bytes(b"truncated")
    rebuilt = build_cache(manifest, root, size=8, cache_dir=tmp_path, progress=False)
    assert rebuilt.path == cache.path and rebuilt.images.shape == (3, 8, 8)


def test_open_rejects_a_folder_that_is_not_a_cache(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.json"):
        ImageCache.open(tmp_path)


def test_empty_manifest_raises(make_cohort, tmp_path):
    manifest, root = make_cohort(2)
    with pytest.raises(ValueError, match="no rows"):
        build_cache(Manifest(pd.DataFrame(columns=manifest.df.columns), manifest.schema), root, size=8,
                    cache_dir=tmp_path, progress=False)


def test_lesion_crop_is_the_square_around_the_mask_box(tmp_path):
    from diffkd_study.data.cache import PixelSource, Preprocessing, lesion_window, load_source

    image = np.zeros((40, 60), dtype=np.uint8)
    image[:, 30:] = 200  # right half bright
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[10:20, 24:44] = 255  # box 20 wide, 10 high, centre (34, 15)
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert lesion_window(mask > 0, 0.25) == (19, 0, 49, 30)  # side 20 * 1.5 = 30, centred
    assert lesion_window(np.zeros((4, 4), bool), 0.25) is None
    source = PixelSource("a", "img.png", "mask.png", "m.csv:2 [image_id=a]")
    crop, crop_mask = load_source(source, tmp_path, Preprocessing.make(30, resize_mode="lesion"))
    assert np.array_equal(crop, image[0:30, 19:49]) and np.array_equal(crop_mask, mask[0:30, 19:49])
    # a window reaching outside the image is black there
    mask[:] = 0
    mask[0:4, 0:4] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    crop, _ = load_source(source, tmp_path, Preprocessing.make(8, resize_mode="lesion", roi_margin=0.5))
    assert lesion_window(mask > 0, 0.5) == (-2, -2, 6, 6) and crop.shape == (8, 8)
    # no mask: the whole image, stretched
    whole, none = load_source(PixelSource("b", "img.png", None, "m.csv:3"), tmp_path,
                              Preprocessing.make(20, resize_mode="lesion"))
    assert none is None and whole.shape == (20, 20) and whole[:, :9].max() == 0 and whole[:, 11:].min() > 150
    with pytest.raises(ValueError, match="roi_margin must lie"):
        Preprocessing.make(8, resize_mode="lesion", roi_margin=-1)
