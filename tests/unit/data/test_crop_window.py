"""Crop windows of the classifier's input: inside the image, jittered within stated bounds, one resize chain."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffkd_study.data.cache import (
    JITTER_SCALE,
    JITTER_SHIFT,
    PixelSource,
    Preprocessing,
    crop_window,
    jittered_window,
    lesion_window,
    load_source,
    window_inside,
)


def _write(tmp_path, image, mask):
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return PixelSource("a", "img.png", "mask.png", "m.csv:2 [image_id=a]")


@pytest.mark.parametrize("seed", range(40))
def test_the_window_never_leaves_an_image_it_fits(seed):
    rng = np.random.default_rng(seed)
    width, height = int(rng.integers(20, 200)), int(rng.integers(20, 200))
    side = int(rng.integers(1, min(width, height) + 1))
    left, top = int(rng.integers(-side, width)), int(rng.integers(-side, height))
    inside = window_inside((left, top, left + side, top + side), width, height)
    assert inside[2] - inside[0] == side and inside[3] - inside[1] == side  # moved, not resized
    assert inside[0] >= 0 and inside[1] >= 0 and inside[2] <= width and inside[3] <= height


def test_a_lesion_at_the_border_is_cropped_without_black_padding(tmp_path):
    image = np.full((40, 60), 120, dtype=np.uint8)
    image[:, :5] = 30
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[0:6, 0:6] = 255  # a corner lesion: the nominal window (-3, -3, 9, 9) runs past two borders
    source = _write(tmp_path, image, mask)
    assert lesion_window(mask > 0, 0.5) == (-3, -3, 9, 9)
    crop, crop_mask = load_source(source, tmp_path, Preprocessing.make(12, resize_mode="lesion", roi_margin=0.5))
    assert crop.min() > 0  # no black: the window moved to (0, 0, 12, 12)
    assert np.array_equal(crop, image[0:12, 0:12]) and np.array_equal(crop_mask, mask[0:12, 0:12])


def test_padding_no_longer_tracks_the_lesion_so_cannot_predict_the_label(tmp_path):
    # planted: "malignant" lesions are large and touch the border (their nominal windows run far past it),
    # "benign" ones are small and central; the image itself has no black pixel
    rng = np.random.default_rng(0)
    black_fraction, labels = [], []
    for i in range(30):
        malignant = i % 2 == 1
        image = rng.integers(40, 250, size=(64, 80)).astype(np.uint8)
        mask = np.zeros((64, 80), dtype=np.uint8)
        if malignant:
            mask[0:30, 0:int(rng.integers(30, 40))] = 255
        else:
            y, x = int(rng.integers(25, 35)), int(rng.integers(30, 45))
            mask[y:y + 8, x:x + 8] = 255
        source = _write(tmp_path, image, mask)
        crop, _ = load_source(source, tmp_path, Preprocessing.make(32, resize_mode="lesion"))
        black_fraction.append(float((crop == 0).mean()))
        labels.append(malignant)
    assert max(black_fraction) == 0.0  # constant: an AUC of exactly 0.5 for any rule on it


def test_a_window_larger_than_the_image_is_filled_by_mirroring():
    image = Image.fromarray(np.arange(1, 26, dtype=np.uint8).reshape(5, 5))
    out = np.asarray(crop_window(image, (-2, 0, 5, 7)))  # 7 x 7 around a 5 x 5 image
    assert out.shape == (7, 7) and out.min() > 0
    pixels = np.asarray(image)
    assert np.array_equal(out[:5, 2:], pixels)  # x: already covering the image, kept where it was; y: from 0
    assert np.array_equal(out[:5, 1], pixels[:, 0]) and np.array_equal(out[:5, 0], pixels[:, 1])  # mirrored
    assert np.array_equal(out[5, 2:], pixels[4]) and np.array_equal(out[6, 2:], pixels[3])


def test_the_jittered_box_is_seeded_per_image_and_stays_within_the_stated_bounds():
    mask = np.zeros((300, 300), dtype=bool)
    mask[100:160, 120:200] = True  # box 80 x 60, longer side 80, centre (160, 130)
    nominal = lesion_window(mask, 0.25)
    side = nominal[2] - nominal[0]
    windows = [jittered_window(mask, 0.25, 0, f"img{i}") for i in range(300)]
    assert jittered_window(mask, 0.25, 0, "img7") == windows[7]  # the same image, the same box
    assert jittered_window(mask, 0.25, 1, "img7") != windows[7]  # another seed, another box
    assert len(set(windows)) > 250
    for left, top, right, bottom in windows:
        assert abs((left + right) / 2 - 160) <= JITTER_SHIFT * 80 + 1
        assert abs((top + bottom) / 2 - 130) <= JITTER_SHIFT * 80 + 1
        assert JITTER_SCALE[0] * side - 2 <= right - left <= JITTER_SCALE[1] * side + 2
        assert right - left == bottom - top or abs((right - left) - (bottom - top)) <= 1
    shifts = np.array([(w[0] + w[2]) / 2 - 160 for w in windows])
    assert shifts.min() < -0.1 * 80 and shifts.max() > 0.1 * 80  # it does move, both ways


def test_real_and_synthetic_inputs_share_one_resize_chain(tmp_path):
    """A real crop, written as the diffusion model writes a synthetic image (at ``via`` px), reads back through
    the synthetic path exactly as the real path gives it: same size, same two resizes."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(180, 240)).astype(np.uint8)
    mask = np.zeros((180, 240), dtype=np.uint8)
    mask[60:110, 90:170] = 255
    source = _write(tmp_path, image, mask)
    real, _ = load_source(source, tmp_path, Preprocessing.make(48, resize_mode="lesion", via=16))
    at_via, _ = load_source(source, tmp_path, Preprocessing.make(16, resize_mode="lesion"))  # the diffusion domain
    Image.fromarray(at_via).save(tmp_path / "syn.png")
    synthetic, _ = load_source(PixelSource("s", "syn.png", None, "syn.csv:2"), tmp_path,
                               Preprocessing.make(48, resize_mode="stretch", via=16))
    assert real.shape == synthetic.shape == (48, 48)
    assert np.array_equal(real, synthetic)
    once, _ = load_source(source, tmp_path, Preprocessing.make(48, resize_mode="lesion"))
    assert not np.array_equal(once, real)  # without via the real crop keeps detail the synthetic one cannot have


def test_via_and_jitter_are_part_of_the_key_only_where_they_matter():
    assert "via" not in Preprocessing.make(32).to_dict()
    assert Preprocessing.make(32, via=16).to_dict()["via"] == 16
    assert "jitter_seed" not in Preprocessing.make(32, resize_mode="lesion", jitter_seed=3).to_dict()
    assert Preprocessing.make(32, resize_mode="jittered", jitter_seed=3).to_dict()["jitter_seed"] == 3
    with pytest.raises(ValueError, match="via must be"):
        Preprocessing.make(32, via=-1)
