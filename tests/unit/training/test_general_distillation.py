"""General distillation: training images only, a loadable and checked ``distilled:`` weight source, re-use."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from diffkd_study.models.classifier import create_classifier
from diffkd_study.models.pretrained import parse_weight_source
from diffkd_study.training.data import ImageTensors
from diffkd_study.training.general_distillation import (
    IMAGES,
    RECORD,
    WEIGHTS,
    check_training_only,
    general_distillation,
)
from diffkd_study.training.initialisation import InitialisationConfig

TINY = InitialisationConfig(views=3, epochs=2, batch_size=8, lr=1e-3)


def _images(n: int, prefix: str = "tr", size: int = 32) -> ImageTensors:
    g = torch.Generator().manual_seed(len(prefix) + n)
    images = torch.randint(0, 255, (n, 1, size, size), generator=g, dtype=torch.uint8)
    return ImageTensors(images=images, labels=torch.zeros(n, dtype=torch.long), image_ids=[f"{prefix}{i}" for i in range(n)])


def _splits(data: ImageTensors, planted: dict[str, str] | None = None) -> dict[str, str]:
    return {i: "train" for i in data.image_ids} | (planted or {})


def test_a_planted_test_image_is_refused_before_any_work(tmp_path):
    data = _images(12)
    for split in ("test", "val", "external"):
        with pytest.raises(ValueError, match=rf"training images only; 1 image\(s\) are not in the training split: "
                                             rf"tr3 \({split}\)"):
            general_distillation("lcnet_035", {"whole image": data}, _splits(data, {"tr3": split}), TINY, tmp_path,
                                 augment="ultrasound")
    with pytest.raises(ValueError, match=r"tr0 \(not in the manifest\)"):
        check_training_only({}, ["tr0"], "x")
    assert not any(tmp_path.iterdir())


def test_the_initialisation_loads_through_its_checked_weight_source_and_is_reused(tmp_path):
    data = _images(16)
    init = general_distillation("lcnet_035", {"lesion crop": data, "whole image": _images(8, "wh")},
                                _splits(data) | {f"wh{i}": "train" for i in range(8)}, TINY, tmp_path,
                                augment="ultrasound")
    assert not init.reused and init.weights.startswith("distilled:") and init.weights.endswith(init.sha256)
    record = json.loads((tmp_path / RECORD).read_text())
    assert record["images"] == {"lesion crop": 16, "whole image": 8} and record["views"] == 3 * 24
    assert len(record["history"]) == 2 and all(np.isfinite(h["train_total"]) for h in record["history"])
    seen = (tmp_path / IMAGES).read_text().splitlines()
    assert len(seen) == 25 and all(line.endswith(",train") for line in seen[1:])
    # the student for the task: same body, a new 2-class head; the adapter and the ImageNet head are not kept
    model = create_classifier("lcnet_035", 2, 1, init.weights)
    state = create_classifier("lcnet_035", 1000, 1, init.weights).state_dict()
    assert torch.equal(model.state_dict()["conv_stem.weight"], state["conv_stem.weight"])
    assert model.pretrained_cfg["weights_sha256"] == init.sha256
    again = general_distillation("lcnet_035", {"lesion crop": data, "whole image": _images(8, "wh")},
                                 _splits(data) | {f"wh{i}": "train" for i in range(8)}, TINY, tmp_path,
                                 augment="ultrasound")
    assert again.reused and again.sha256 == init.sha256
    with pytest.raises(ValueError, match="distilled into timm model 'lcnet_035', not 'lcnet_050'"):
        create_classifier("lcnet_050", 2, 1, init.weights)
    # a changed file is refused by its sha256; a changed image set makes the initialisation afresh
    (tmp_path / WEIGHTS).write_bytes((tmp_path / WEIGHTS).read_bytes()[:-8])
    with pytest.raises(ValueError, match="sha256 mismatch"):
        create_classifier("lcnet_035", 2, 1, init.weights)
    fresh = general_distillation("lcnet_035", {"lesion crop": data}, _splits(data), TINY, tmp_path,
                                 augment="ultrasound")
    assert not fresh.reused and (tmp_path / ".superseded").is_dir()


def test_a_distilled_source_must_be_a_general_distillation_file(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(1)}, path)
    from diffkd_study.io import sha256_file

    spec = f"distilled:{path}#sha256={sha256_file(path)}"
    assert str(parse_weight_source(spec)) == spec
    with pytest.raises(ValueError, match="is not a general-distillation initialisation"):
        create_classifier("lcnet_035", 2, 1, spec)
    with pytest.raises(ValueError, match="must end in one of .safetensors"):
        parse_weight_source(f"distilled:{tmp_path / 'x.pth'}#sha256={'0' * 64}")
    with pytest.raises(ValueError, match="needs its sha256"):
        parse_weight_source(f"distilled:{path}")
