"""The trainer: it learns, logs every term, selects on validation, resumes exactly, refuses bad settings."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from diffkd_study.distill.composite import build_loss
from diffkd_study.distill.distiller import DistillationTask
from diffkd_study.train.trainer import (
    CHECKPOINT,
    ClassifierTask,
    FitConfig,
    fit,
    predict_proba,
    validation_metrics,
)
from tests.unit.train.conftest import TinyNet, toy_set

CE = {"ce": {"type": "ce"}}


def _task(seed: int = 0) -> ClassifierTask:
    torch.manual_seed(seed)
    return ClassifierTask(TinyNet(), build_loss(CE))


def _config(**kw) -> FitConfig:
    return FitConfig(**{"epochs": 3, "batch_size": 8, "lr": 0.05, "patience": 0, "augment": "ultrasound", **kw})


def test_fit_learns_and_logs_every_epoch(tmp_path):
    train, val = toy_set(48), toy_set(16, seed=9)
    result = fit(_task(), train, val, _config(epochs=6), tmp_path, progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5, 6]
    assert {"train_ce", "train_total", "val_auc", "val_loss", "lr"} <= set(result.history[0])
    assert result.best_metric == max(h["val_auc"] for h in result.history) > 0.9
    assert (tmp_path / "best.safetensors").is_file() and (tmp_path / CHECKPOINT).is_file()
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["history"] == result.history


def test_resume_from_a_killed_run_is_bit_identical(tmp_path, monkeypatch):
    train, val = toy_set(32), toy_set(12, seed=5)
    config = _config(epochs=4)
    full = fit(_task(), train, val, config, tmp_path / "full", progress=False)

    import diffkd_study.train.trainer as trainer

    real_save = trainer._save_checkpoint
    calls = {"n": 0}

    def crash_after_two(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(trainer, "_save_checkpoint", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        fit(_task(), train, val, config, tmp_path / "killed", progress=False)
    monkeypatch.setattr(trainer, "_save_checkpoint", real_save)
    resumed = fit(_task(seed=99), train, val, config, tmp_path / "killed", progress=False)
    assert resumed.resumed_from == 2
    strip = [{k: v for k, v in h.items() if not k.endswith("_s")} for h in resumed.history]
    expect = [{k: v for k, v in h.items() if not k.endswith("_s")} for h in full.history]
    assert strip == expect
    again = fit(_task(seed=7), train, val, config, tmp_path / "killed", progress=False)  # finished: no training
    assert again.resumed_from == 4 and again.history == resumed.history


def test_changed_configuration_trains_afresh(tmp_path):
    train, val = toy_set(24), toy_set(12, seed=5)
    fit(_task(), train, val, _config(epochs=2), tmp_path, progress=False)
    other = fit(_task(), train, val, _config(epochs=2, lr=0.01), tmp_path, progress=False)
    assert other.resumed_from == 0


def test_same_ids_with_other_pixels_train_afresh(tmp_path):
    """A finished fit is re-used only for the same inputs: another crop or resolution of the same images
    (same ids, labels and settings) trains afresh instead of returning the old model."""
    train, val = toy_set(24), toy_set(12, seed=5)
    first = fit(_task(), train, val, _config(epochs=2), tmp_path, progress=False)
    assert fit(_task(), train, val, _config(epochs=2), tmp_path, progress=False).resumed_from == len(first.history)
    flipped = dataclasses.replace(train, images=train.images.flip(-1).contiguous())
    assert fit(_task(), flipped, val, _config(epochs=2), tmp_path, progress=False).resumed_from == 0


def test_early_stopping_and_selection(tmp_path):
    train, val = toy_set(24), toy_set(12, seed=5)
    result = fit(_task(), train, val, _config(epochs=20, lr=1e-6, patience=2, min_epochs=3, augment="none"),
                 tmp_path, progress=False)
    assert 3 <= len(result.history) < 20 and result.stopped_early
    assert result.best_epoch == 1 + int(np.argmax([h["val_auc"] for h in result.history]))


def test_distillation_never_changes_the_teacher(tmp_path):
    train, val = toy_set(24), toy_set(12, seed=5)
    torch.manual_seed(1)
    teacher = TinyNet()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = TinyNet()
    loss = build_loss({"ce": {"type": "ce", "weight": 0.5}, "kd": {"type": "kd", "weight": 0.5}})
    task = DistillationTask(student, teacher, loss)
    result = fit(task, train, val, _config(epochs=2), tmp_path, progress=False)
    assert {"train_ce", "train_kd", "train_total"} <= set(result.history[-1])
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not any(k.startswith("teacher.") for k in torch.load(tmp_path / CHECKPOINT, weights_only=True)["task"])
    task.train()
    assert not teacher.training


def test_predict_proba_rows_sum_to_one_and_metrics_golden():
    probs = predict_proba(TinyNet(), toy_set(10), batch_size=4)
    assert probs.shape == (10, 2) and np.allclose(probs.sum(1), 1)
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    m = validation_metrics(p, np.array([0, 1, 1, 0]))
    assert m["auc"] == pytest.approx(0.75) and m["accuracy"] == pytest.approx(0.5)
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.3])))
    assert np.isnan(validation_metrics(p, np.array([0, 0, 0, 0]))["auc"])


@pytest.mark.parametrize("bad, message", [
    ({"selection": "f1"}, "selection must be one of"),
    ({"batch_size": 1}, "batch_size >= 2"),
    ({"augment": "mri"}, "unknown augmentation"),
    ({"lr": 0}, "lr and grad_clip must be > 0"),
])
def test_bad_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        FitConfig(**bad)


def test_cuda_asked_for_on_a_cpu_machine_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        fit(_task(), toy_set(8), toy_set(4), _config(device="cuda"), tmp_path, progress=False)
