"""Training loop, schedule, KD wiring and inference frame; closed-form LsKD / ImPA values."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from diffkd_study.methods.comoto.data import load_detection_data
from diffkd_study.methods.comoto.detector import DetectorSpec, create_detector
from diffkd_study.methods.comoto.lesion import (
    ImageLevelKDLoss,
    ImPALoss,
    LesionKDLoss,
    extract_lesion_points,
    impa_loss,
)
from diffkd_study.methods.comoto.stage import ComotoStageConfig
from diffkd_study.methods.comoto.train import (
    Distillation,
    fit_detector,
    load_state,
    make_optimizer,
    predict,
    save_state,
    steps_for,
)

TINY = ComotoStageConfig(backbone="resnet18", weights="none", feature_stage=2, detector_image_size=64,
                         anchor_sizes=(8, 16, 32), batch_size=2, warmup_steps=0, detections_per_img=5)
CPU = torch.device("cpu")


def _detector(seed: int = 0):
    torch.manual_seed(seed)
    return create_detector(DetectorSpec(**TINY.detector_fields()))


@pytest.fixture()
def tiny_data(cohorts):
    dbt = load_detection_data(cohorts["dbt"], cohorts["root"] / "dbt", 64, release_scale="scale", progress=False)
    mammo = load_detection_data(cohorts["mammo"], cohorts["root"] / "mammo", 64, release_scale=0.5, progress=False)
    return dbt, mammo


def test_steps_for_budget_rule():
    assert steps_for(87, 4, 8, 80) == 176  # 8 epochs of ceil(87 / 4) = 22 steps
    assert steps_for(9, 4, 8, 80) == 80  # the minimum applies
    assert steps_for(10, 8, 50, 0) == 100


def test_schedule_warmup_then_one_step_decay():
    config = ComotoStageConfig(optimizer="sgd", lr=1.0, warmup_steps=4, lr_step_fraction=0.6, lr_gamma=0.1)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer, schedule = make_optimizer([parameter], config, steps=10)
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert seen == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1, 0.1, 0.1, 0.1, 0.1])
    adamw, _ = make_optimizer([parameter], ComotoStageConfig(), steps=10)
    assert isinstance(adamw, torch.optim.AdamW)


def test_teacher_with_impa_is_deterministic_and_logs_every_term(tiny_data):
    _, mammo = tiny_data
    runs = []
    for _ in range(2):
        model = _detector()
        runs.append(fit_detector(model, mammo, steps=3, config=TINY, seed=4, device=CPU, impa=ImPALoss(seed=1),
                                 progress=False))
    history = runs[0]
    assert list(history.columns) == ["step", "classification", "bbox_regression", "impa", "total", "lr", "seconds"]
    terms = history[["classification", "bbox_regression", "impa"]].sum(axis=1)
    assert np.allclose(terms, history["total"], rtol=1e-5)
    assert np.isfinite(history.drop(columns="seconds").to_numpy()).all()
    assert runs[0].drop(columns="seconds").equals(runs[1].drop(columns="seconds"))


def test_channels_last_training_and_inference_match_contiguous(tiny_data):
    dbt, mammo = tiny_data
    layouts = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    models, histories, detections = {}, {}, {}
    for layout, fmt in layouts.items():
        models[layout] = _detector()
        histories[layout] = fit_detector(models[layout], mammo, steps=2, config=TINY, seed=4, device=CPU,
                                         impa=ImPALoss(seed=1), progress=False, memory_format=fmt)
        detections[layout] = predict(models[layout], dbt, CPU, batch_size=4, memory_format=fmt)
        assert histories[layout].attrs["memory_format"] == layout
    terms = ["classification", "bbox_regression", "impa", "total"]
    assert np.allclose(histories["channels_last"][terms], histories["contiguous"][terms], rtol=1e-4, atol=1e-6)
    # AdamW moves a weight by about lr whatever its gradient's size, so a gradient that rounding sends across zero
    # may end 2 lr away: the weights agree to a few learning rates, the losses and scores to rounding
    a, b = (m.state_dict() for m in models.values())
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-4, atol=4 * TINY.lr) for k in a)
    assert np.allclose(np.sort(detections["channels_last"]["score"]), np.sort(detections["contiguous"]["score"]),
                       atol=1e-3)
    assert models["channels_last"].backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert inspect.signature(fit_detector).parameters["memory_format"].default == torch.channels_last  # the adopted default


@pytest.mark.parametrize("kind", ["lskd", "image_kd"])
def test_student_distils_from_a_frozen_teacher(tiny_data, kind):
    dbt, mammo = tiny_data
    teacher = _detector(1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    lesions = mammo.subset(np.flatnonzero(mammo.has_lesion))
    loss = LesionKDLoss() if kind == "lskd" else ImageLevelKDLoss(64, 64)  # 8 x 8 grid at stride 8
    projection = loss.projection.weight.detach().clone()
    student = _detector(2)
    history = fit_detector(student, dbt, steps=2, config=TINY, seed=0, device=CPU,
                           distill=Distillation(teacher, lesions, loss, kind, seed=3), progress=False)
    assert kind in history.columns and np.isfinite(history[kind]).all() and (history[kind] > 0).all()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # frozen, eval BN
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not torch.equal(projection, loss.projection.weight)  # the adapter trains with the student


def test_kd_needs_lesion_images_and_excludes_impa(tiny_data):
    dbt, mammo = tiny_data
    with pytest.raises(ValueError, match="must all have lesion boxes"):
        Distillation(_detector(), mammo, LesionKDLoss(), "lskd", seed=0)
    lesions = mammo.subset(np.flatnonzero(mammo.has_lesion))
    with pytest.raises(ValueError, match="give one of impa / distill"):
        fit_detector(_detector(), dbt, steps=1, config=TINY, seed=0, device=CPU, impa=ImPALoss(),
                     distill=Distillation(_detector(), lesions, LesionKDLoss(), "lskd", seed=0), progress=False)


def test_predictions_are_in_stored_image_pixels(tiny_data):
    dbt, _ = tiny_data
    model = _detector()
    model.eval()
    detections = predict(model, dbt, CPU, batch_size=5)
    assert list(detections.columns) == ["image_id", "score", "x1", "y1", "x2", "y2"]
    assert set(detections["image_id"]) <= set(dbt.image_ids) and len(detections) <= 5 * len(dbt)
    for i in (0, 7):  # first and second batch: rows stay with their images
        mine = detections[detections["image_id"] == dbt.image_ids[i]]
        with torch.no_grad():
            raw = model([torch.from_numpy(dbt.image(i).astype(np.float32) / 255)[None]])[0]
        got, want = mine[["x1", "y1", "x2", "y2"]].to_numpy(), dbt.letterboxes[i].to_image(raw["boxes"].numpy())
        # an untrained head scores many anchors alike: compare as sets (row order of ties may differ)
        assert np.allclose(got[np.lexsort(got.T)], want[np.lexsort(want.T)], atol=1e-3)
        assert np.allclose(np.sort(mine["score"].to_numpy()), np.sort(raw["scores"].numpy()), atol=1e-6)
    assert (detections["x2"] <= 72).all() and (detections["y2"] <= 96).all() and (detections["x1"] >= 0).all()


def test_state_round_trip(tmp_path):
    model = _detector(5)
    save_state(model, tmp_path / "m.safetensors")
    other = load_state(_detector(6), tmp_path / "m.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True))


# ---------------------------------------------------------------------- points on the detector's own map
def test_nine_points_on_the_hooked_map_of_a_network_box():
    # 64 px input, stride 8 -> 8 x 8 grid; box (17, 9, 47, 40) -> cells x (2, 5), y (1, 5), centre (3, 3)
    grid = torch.arange(64, dtype=torch.float64).reshape(1, 1, 8, 8)  # value = 8 y + x
    points = extract_lesion_points(grid, [torch.tensor([[17.0, 9.0, 47.0, 40.0]])], (64, 64))
    expected = [8 * y + x for x, y in [(2, 1), (5, 1), (2, 5), (5, 5), (3, 3), (2, 3), (5, 3), (3, 1), (3, 5)]]
    assert points.points[0, 0].tolist() == expected


# ---------------------------------------------------------------------- closed-form (golden) loss values
def test_lskd_closed_form_with_identity_projection():
    # one channel; teacher points all equal (uniform distribution), student points 0..8, T = 4, alpha = 2:
    # KL(u || p) = -log 9 - mean_i log p_i with log p_i = i/4 - log Z, Z = sum_i e^(i/4); mean_i i/4 = 1
    z = sum(math.exp(i / 4) for i in range(9))
    expected = 2 * 16 * (-math.log(9) - 1 + math.log(z))
    loss = LesionKDLoss().double()
    with torch.no_grad():
        loss.projection.weight.copy_(torch.eye(9, dtype=torch.float64))
        loss.projection.bias.zero_()
    student = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    student[0, 0] = torch.tensor([[0, 7, 1], [5, 4, 6], [2, 8, 3]], dtype=torch.float64)
    # the box covering the 3 x 3 map reads TL, TR, BL, BR, C, L, R, T, B = 0, 1, 2, 3, 4, 5, 6, 7, 8
    box = [torch.tensor([[0.0, 0.0, 2.0, 2.0]])]
    got = loss(student, torch.ones(1, 1, 3, 3, dtype=torch.float64), box, box, (3, 3), (3, 3))
    assert float(got.detach()) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(6.4029, abs=1e-4)  # Z = 29.884, KL = 3.3974 - 2.1972 - 1 = 0.2001


def test_impa_closed_form():
    # positives v1 = e1, v2 = e2 (orthogonal); negatives both = e1:
    # pull = mean over (1,1), (1,2), (2,1), (2,2) of relu(1 - cos) = (0 + 1 + 1 + 0) / 4 = 0.5
    # push = mean over pairs of relu(cos(v_i, u_j)) = (1 + 1 + 0 + 0) / 4 = 0.5;  beta 2 -> 2.0
    positives = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # (B=2, C=1, P=2)
    negatives = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])
    assert float(impa_loss(positives, negatives, beta=2.0)) == pytest.approx(2.0)
    assert float(impa_loss(positives, -negatives, beta=2.0)) == pytest.approx(1.0)  # negative cosine is free
