"""Detection data: letterbox arithmetic, box frames, errors naming file, line and rule, batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffkd_study.data.cache import Preprocessing, load_image
from diffkd_study.data.schema import read_manifest, write_manifest
from diffkd_study.methods.comoto.data import (
    BatchStream,
    DetectionDataError,
    letterbox,
    load_detection_data,
    network_batch,
)


@pytest.mark.parametrize("width, height, size", [(72, 96, 64), (96, 96, 64), (945, 1228, 320), (998, 1228, 320), (50, 20, 32)])
def test_letterbox_matches_the_cache_pad_mode(width, height, size, tmp_path):
    # a white image letterboxed by the cache: its bright region is exactly the placement we compute
    image = np.full((height, width), 255, np.uint8)
    path = tmp_path / "white.png"
    Image.fromarray(image).save(path)
    padded = load_image(path, Preprocessing.make(size, resize_mode="pad"))
    ys, xs = np.nonzero(padded > 127)
    box = letterbox(width, height, size)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (
        box.offset_x, box.offset_x + box.new_width, box.offset_y, box.offset_y + box.new_height)


def test_letterbox_round_trip_and_known_numbers():
    box = letterbox(945, 1228, 320)  # portrait DBT slice: scale 320/1228, width 246, offset 37
    assert (box.new_width, box.new_height, box.offset_x, box.offset_y) == (246, 320, 37, 0)
    stored = np.array([[558.0, 862.0, 667.0, 914.0]])
    network = box.to_network(stored)
    assert network[0, 0] == pytest.approx(558 * 246 / 945 + 37)
    assert network[0, 3] == pytest.approx(914 * 320 / 1228)
    assert np.allclose(box.to_image(network), stored)
    assert box.to_image(np.array([[0.0, -5.0, 400.0, 400.0]])).tolist() == [[0.0, 0.0, 945.0, 1228.0]]


def test_load_reads_boxes_reach_and_excludes_unlocated_lesions(cohorts):
    mammo = load_detection_data(cohorts["mammo"], cohorts["root"] / "mammo", 64, release_scale=0.5, progress=False)
    assert mammo.summary() == {"source": str(cohorts["mammo"]), "n_images": 12, "n_patients": 6,
                               "n_lesion_images": 8, "n_boxes": 8, "n_excluded": 1}
    assert mammo.excluded["image_id"].tolist() == ["mammo_unlocated0"]
    assert np.all(mammo.min_distance == 50.0)
    manifest = read_manifest(cohorts["mammo"])
    x, y, w, h = [float(v) for v in manifest.df.loc[0, "boxes"].strip("[]").split(",")]
    assert mammo.boxes[0].tolist() == [[x, y, x + w, y + h]]
    dbt = load_detection_data(cohorts["dbt"], cohorts["root"] / "dbt", 64, hit_min_distance=40, release_scale="scale",
                              progress=False)
    assert np.all(dbt.min_distance == 20.0) and dbt.has_lesion.all()


def test_cached_pixels_show_the_lesion_at_the_network_box(cohorts):
    dbt = load_detection_data(cohorts["dbt"], cohorts["root"] / "dbt", 64, release_scale="scale", progress=False)
    for i in range(len(dbt)):
        x1, y1, x2, y2 = dbt.network_boxes(i)[0]
        image = dbt.image(i).astype(float)
        inside = image[int(np.ceil(y1)) + 1: int(y2) - 1, int(np.ceil(x1)) + 1: int(x2) - 1]
        assert inside.mean() > 180 > image.mean()  # lesion pixels are 220, background about 60


def test_network_batch_flips_images_and_boxes(cohorts):
    dbt = load_detection_data(cohorts["dbt"], cohorts["root"] / "dbt", 64, release_scale="scale", progress=False)
    images, targets = network_batch(dbt, [0, 0], [False, True])
    assert images[0].shape == (1, 64, 64) and 0 <= float(images[0].min()) and float(images[0].max()) <= 1
    assert np.array_equal(images[1].numpy()[0], images[0].numpy()[0][:, ::-1])
    x1, y1, x2, y2 = targets[0]["boxes"][0].tolist()
    assert targets[1]["boxes"][0].tolist() == pytest.approx([64 - x2, y1, 64 - x1, y2])
    assert targets[0]["labels"].tolist() == [0]


def test_batch_stream_is_seeded_full_and_covers_every_image():
    a, b = BatchStream(10, 4, seed=5, flip_prob=0.5), BatchStream(10, 4, seed=5, flip_prob=0.5)
    batches = [a.next() for _ in range(5)]
    again = [b.next() for _ in range(5)]
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(batches, again, strict=True))
    indices = np.concatenate([x[0] for x in batches])
    assert sorted(indices[:10].tolist()) == list(range(10)) and all(len(x[0]) == 4 for x in batches)
    assert len(BatchStream(2, 4, seed=0).next()[0]) == 4  # fewer images than a batch: repeats


def _edit(csv, column, row, value):
    manifest = read_manifest(csv)
    manifest.df.loc[row, column] = value
    write_manifest(manifest, csv)


def test_a_normal_image_with_a_box_names_file_line_and_rule(cohorts):
    csv = cohorts["mammo"]
    manifest = read_manifest(csv)
    row = int(np.flatnonzero(manifest.df["label"] == "normal")[0])
    _edit(csv, "boxes", row, "[[1,1,5,5]]")
    with pytest.raises(DetectionDataError, match=rf"{csv}:{row + 2} .*lesion-free-with-box"):
        load_detection_data(csv, cohorts["root"] / "mammo", 64, progress=False)


def test_bad_scale_box_outside_missing_and_corrupt_files_are_clear_errors(cohorts):
    csv, root = cohorts["dbt"], cohorts["root"] / "dbt"
    _edit(csv, "scale", 3, "-1")
    with pytest.raises(DetectionDataError, match=rf"{csv}:5 \[image_id=dbt01_1\] error invalid-scale"):
        load_detection_data(csv, root, 64, release_scale="scale", progress=False)
    _edit(csv, "scale", 3, "0.5")
    _edit(csv, "boxes", 2, "[[60,80,30,30]]")  # the images are 72 x 96
    with pytest.raises(DetectionDataError, match=r":4 \[image_id=dbt01_0\] error box-outside-image"):
        load_detection_data(csv, root, 64, progress=False)
    _edit(csv, "boxes", 2, "[[6,8,10,10]]")
    (root / "img" / "dbt02_0.png").unlink()
    with pytest.raises(DetectionDataError, match=r"\[image_id=dbt02_0\] error missing-file"):
        load_detection_data(csv, root, 64, progress=False)
    (root / "img" / "dbt02_0.png").write_bytes(b"not a png")
    with pytest.raises(DetectionDataError, match=r"\[image_id=dbt02_0\] error unreadable-image"):
        load_detection_data(csv, root, 64, progress=False)


def test_missing_box_or_scale_column_is_named(cohorts, tmp_path):
    manifest = read_manifest(cohorts["dbt"])
    manifest.df = manifest.df.drop(columns=["boxes"])
    path = tmp_path / "nobox.csv"
    write_manifest(manifest, path)
    with pytest.raises(DetectionDataError, match="missing-column: a detection manifest needs a 'boxes' column"):
        load_detection_data(path, cohorts["root"] / "dbt", 64, progress=False)
    with pytest.raises(DetectionDataError, match="pixel-scale column 'spacing' is absent"):
        load_detection_data(cohorts["dbt"], cohorts["root"] / "dbt", 64, release_scale="spacing", progress=False)


def test_subset_keeps_rows_aligned(cohorts):
    dbt = load_detection_data(cohorts["dbt"], cohorts["root"] / "dbt", 64, release_scale="scale", progress=False)
    part = dbt.subset([5, 1])
    assert part.image_ids.tolist() == [dbt.image_ids[5], dbt.image_ids[1]]
    assert np.array_equal(part.image(0), dbt.image(5)) and part.boxes[1] is dbt.boxes[1]
    assert set(part.truth()) == set(part.image_ids) and isinstance(pd.Series(part.reach()).iloc[0], float)
