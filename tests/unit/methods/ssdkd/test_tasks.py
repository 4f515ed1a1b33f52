"""Student tasks: the SSD-KD rotation batch fed to both networks, per-copy augmentation, each method's terms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffkd_study.distill.losses import kd_loss
from diffkd_study.methods.ssdkd.rotation import ProjectionHead, rotate_batch
from diffkd_study.methods.ssdkd.stage import METHODS, SSDKDStageConfig
from diffkd_study.methods.ssdkd.tasks import (
    RotationDistillationTask,
    build_student_task,
    method_objective,
    method_recipes,
    rotated_views,
    uses_rotation_batches,
)
from diffkd_study.models.classifier import create_classifier

SIZE = 32
CLASSES = 3
WEIGHTS = [1.0, 2.0, 4.0]


@pytest.fixture(scope="module")
def networks():
    torch.manual_seed(0)
    teacher = create_classifier("tf_efficientnet_lite0", CLASSES, 3, "none").eval()
    return teacher


def _student():
    torch.manual_seed(1)
    return create_classifier("mobilenetv2_035", CLASSES, 3, "none")


def _batch(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    images01 = torch.rand(n, 3, SIZE, SIZE, generator=g)
    return {"images": (images01 - 0.5) / 0.5, "target": torch.randint(0, CLASSES, (n,), generator=g)}


def _inputs_of(model):
    seen = []
    handle = model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    return seen, handle


def test_rotation_task_feeds_both_networks_the_4b_layout(networks):
    cfg = SSDKDStageConfig(augment="none")
    student = _student()
    task = build_student_task("ssd_kd", cfg, student, networks, WEIGHTS, image_size=SIZE,
                              teacher_head=ProjectionHead(1280))
    assert isinstance(task, RotationDistillationTask)
    batch = _batch(3)
    student_inputs, h1 = _inputs_of(student)
    teacher_inputs, h2 = _inputs_of(networks)
    try:
        loss, terms = task(batch)
    finally:
        h1.remove()
        h2.remove()
    expected = rotate_batch(batch["images"])  # normalisation is affine, so it commutes with rotation
    for seen in (student_inputs, teacher_inputs):
        assert seen[0].shape == (12, 3, SIZE, SIZE)
        assert torch.allclose(seen[0], expected, atol=1e-6)
    assert torch.isfinite(loss)
    assert {"ssd_kd.ce", "ssd_kd.kd", "ssd_kd.tf", "ssd_kd.ss", "ssd_kd.rkd_dist", "ssd_kd.rkd_angle",
            "ssd_kd.crkd", "total"} <= set(terms)
    assert terms["diag.ssd_kd.n_tf_rows"] == 9.0  # ratio_tf 1.0 keeps all 3B rotated rows
    assert 0 < terms["diag.ssd_kd.n_ss_rows"] <= 9


def test_each_rotated_copy_is_augmented_independently():
    images01 = torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    rows = rotated_views(images01, "dermoscopy", torch.Generator().manual_seed(1))
    plain = rotate_batch(images01)
    untouched = (rows - plain).abs().flatten(1).amax(1) < 1e-6  # copies the augmentation left as they were
    per_image = untouched.reshape(32, 4).sum(1).numpy()
    # a shared augmentation per image would leave all 4 copies or none untouched; independent draws mix them
    assert ((per_image > 0) & (per_image < 4)).any()
    again = rotated_views(images01, "dermoscopy", torch.Generator().manual_seed(1))
    assert torch.equal(rows, again)


def test_rotation_task_augmentation_follows_torch_global_seed(networks):
    cfg = SSDKDStageConfig()
    task = build_student_task("ssd_kd", cfg, _student(), networks, WEIGHTS, image_size=SIZE,
                              teacher_head=ProjectionHead(1280)).eval()
    batch = _batch(2)
    values = []
    for _ in range(2):
        torch.manual_seed(7)
        with torch.no_grad():
            values.append(task(batch)[1]["total"])
    assert values[0] == values[1]


EXPECTED_TERMS = {
    "ce": {"ce"},
    "kd": {"wce", "kd"},
    "rkd": {"wce", "rkd", "rkd.dist", "rkd.angle"},
    "dkd": {"wce", "dkd", "dkd.tckd", "dkd.nckd"},
    "diverse_kd": {"diverse_kd", "diverse_kd.wce", "diverse_kd.kl", "diverse_kd.rkd_dist", "diverse_kd.rkd_angle",
                   "diverse_kd.crkd"},
}


@pytest.mark.parametrize("method", list(EXPECTED_TERMS))
def test_every_method_logs_its_terms(method, networks):
    task = build_student_task(method, SSDKDStageConfig(), _student(), networks, WEIGHTS, image_size=SIZE)
    with torch.no_grad():
        loss, terms = task.eval()(_batch(4))
    assert set(terms) == EXPECTED_TERMS[method] | {"total"}
    assert float(loss) == pytest.approx(terms["total"], rel=1e-6)


@pytest.mark.parametrize("kd_class_weighting", [False, True])
def test_kd_task_is_half_wce_plus_half_t2_kl_from_the_networks(networks, kd_class_weighting):
    cfg = SSDKDStageConfig(kd_class_weighting=kd_class_weighting)
    student = _student()
    task = build_student_task("kd", cfg, student, networks, WEIGHTS, image_size=SIZE).eval()
    batch = _batch(4)
    with torch.no_grad():
        _, terms = task(batch)
        s, t = student(batch["images"]), networks(batch["images"])
        wce = torch.nn.functional.cross_entropy(s, batch["target"], weight=torch.tensor(WEIGHTS))
    assert terms["wce"] == pytest.approx(0.5 * float(wce), rel=1e-5)
    rows = torch.tensor(WEIGHTS)[batch["target"]] if kd_class_weighting else None
    assert terms["kd"] == pytest.approx(0.5 * float(kd_loss(s, t, 5.0, rows)), rel=1e-5)


def test_task_errors(networks):
    cfg = SSDKDStageConfig()
    with pytest.raises(ValueError, match="distils from a teacher"):
        build_student_task("kd", cfg, _student(), None, WEIGHTS, image_size=SIZE)
    with pytest.raises(ValueError, match="self-supervision head"):
        build_student_task("ssd_kd", cfg, _student(), networks, WEIGHTS, image_size=SIZE)
    with pytest.raises(ValueError, match="unknown method"):
        build_student_task("crd", cfg, _student(), networks, WEIGHTS, image_size=SIZE)
    loss, _ = build_student_task("ce", cfg, _student(), None, None, image_size=SIZE)(_batch(2))
    assert np.isfinite(float(loss.detach()))


def test_every_method_is_a_recipe_of_registered_losses_with_a_description():
    cfg = SSDKDStageConfig()
    assert set(method_recipes(cfg)) == set(METHODS)
    assert [m for m in METHODS if uses_rotation_batches(m, cfg)] == ["ssd_kd"]
    assert method_objective("kd", cfg) == "0.5 x cross-entropy + 0.5 x T^2 KL (Hinton KD, T = 5.0)"
    assert method_objective("dkd", cfg).startswith("cross-entropy + decoupled KD (1.0 x TCKD + 8.0 x NCKD, T = 4.0)")
    assert "1000.0 x channel-Gram relation" in method_objective("diverse_kd", cfg)
    # kd_class_weighting puts the WCE class weights on the rows of the softened-output KLs
    weighted = method_recipes(cfg, WEIGHTS)
    assert weighted["kd"]["kd"]["params"]["class_weights"] == WEIGHTS
    assert weighted["ssd_kd"]["ssd_kd"]["params"]["kd_class_weighting"] is True
    plain = method_recipes(SSDKDStageConfig(kd_class_weighting=False), WEIGHTS)
    assert plain["dkd"]["dkd"]["params"]["class_weights"] is None
    assert plain["diverse_kd"]["diverse_kd"]["params"]["kd_class_weighting"] is False
