"""The trainer: it learns, logs every term, selects on validation, resumes exactly, refuses bad settings."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffkd_study.distill.composite import build_loss
from diffkd_study.distill.distiller import DistillationTask
from diffkd_study.methods.diffkd.stage import StudentStageConfig, TeacherStageConfig
from diffkd_study.methods.ssdkd.stage import SSDKDStageConfig
from diffkd_study.training.trainer import (
    CHECKPOINT,
    ClassifierTask,
    FitConfig,
    fit,
    predict_proba,
    tidy_history,
    validation_metrics,
)
from tests.unit.training.conftest import TinyNet, toy_set

CE = {"ce": {"type": "ce"}}


def _task(seed: int = 0) -> ClassifierTask:
    torch.manual_seed(seed)
    return ClassifierTask(TinyNet(), build_loss(CE))


#: the recipe of these tests (FitConfig has no defaults for it)
RECIPE = {"epochs": 3, "batch_size": 8, "lr": 0.05, "weight_decay": 1e-4, "warmup_epochs": 1.0, "grad_clip": 5.0,
          "patience": 0, "min_epochs": 1, "selection": "auc", "augment": "ultrasound", "seed": 0}


def _config(**kw) -> FitConfig:
    return FitConfig(**{**RECIPE, **kw})


def test_fit_learns_and_logs_every_epoch(tmp_path):
    train, val = toy_set(48), toy_set(16, seed=9)
    result = fit(_task(), train, val, _config(epochs=6), tmp_path, progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5, 6]
    assert {"train_ce", "train_total", "val_auc", "val_loss", "lr"} <= set(result.history[0])
    assert result.best_metric == max(h["val_auc"] for h in result.history) > 0.9
    assert (tmp_path / "best.safetensors").is_file() and (tmp_path / CHECKPOINT).is_file()
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["history"] == result.history


def test_tidy_history_keeps_loss_terms_and_the_chosen_validation_values():
    history = [{"epoch": 1, "lr": 0.1, "train_ce": 0.7, "train_diag.rows": 8, "train_images": 32,
                "train_images_per_s": 9.0, "val_loss": 0.6, "val_auc": 0.8, "val_balanced_accuracy": 0.7}]
    assert tidy_history(history) == [
        {"epoch": 1, "term": "ce", "value": 0.7, "split": "train"},
        {"epoch": 1, "term": "diag.rows", "value": 8, "split": "train"},
        {"epoch": 1, "term": "validation NLL", "value": 0.6, "split": "validation"},
        {"epoch": 1, "term": "validation AUC", "value": 0.8, "split": "validation"},
        {"epoch": 1, "term": "validation balanced accuracy", "value": 0.7, "split": "validation"}]
    assert [r["term"] for r in tidy_history(history, validation=("val_loss",), skip_prefix="diag.")] == [
        "ce", "validation NLL"]


def test_a_reused_finished_fit_keeps_its_training_time(tmp_path):
    train, val = toy_set(48), toy_set(16, seed=9)
    first = fit(_task(), train, val, _config(epochs=2), tmp_path, progress=False)
    again = fit(_task(), train, val, _config(epochs=2), tmp_path, progress=False)
    assert first.training_s == pytest.approx(sum(h["epoch_s"] for h in first.history)) and first.training_s > 0
    assert again.resumed_from == 2 and again.training_s == first.training_s  # this call trained nothing ...
    assert again.wall_s < first.training_s and again.summary()["training_s"] == round(first.training_s, 1)


def test_resume_from_a_killed_run_is_bit_identical(tmp_path, monkeypatch):
    train, val = toy_set(32), toy_set(12, seed=5)
    config = _config(epochs=4)
    full = fit(_task(), train, val, config, tmp_path / "full", progress=False)

    import diffkd_study.training.trainer as trainer

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
    ({"memory_format": "nhwc"}, "memory_format must be one of"),
])
def test_bad_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        _config(**bad)


def test_the_recipe_has_no_default():
    with pytest.raises(TypeError, match="missing 8 required keyword-only arguments"):
        FitConfig(epochs=3, batch_size=8, lr=0.05)


@pytest.mark.parametrize("section", [TeacherStageConfig, StudentStageConfig, SSDKDStageConfig])
def test_sections_default_the_operational_settings_as_the_trainer_does(section):
    """FitConfig's only defaults (settings that do not choose the recipe) are the sections' defaults too."""
    trainer_defaults = {f.name: f.default for f in dataclasses.fields(FitConfig)
                        if f.default is not dataclasses.MISSING}
    assert set(trainer_defaults) == {"synthetic_ratio", "eval_batch_size", "amp", "device", "checkpoint_minutes",
                                     "memory_format"}
    section_defaults = {f.name: f.default for f in dataclasses.fields(section)}
    shared = {name for name in trainer_defaults if name in section_defaults and name != "synthetic_ratio"}
    assert shared >= {"eval_batch_size", "device"}
    assert {name: section_defaults[name] for name in shared} == {name: trainer_defaults[name] for name in shared}


def test_cuda_asked_for_on_a_cpu_machine_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        fit(_task(), toy_set(8), toy_set(4), _config(device="cuda"), tmp_path, progress=False)


# -- nothing lost, nothing stale --------------------------------------------------------------------------------
class DropNet(TinyNet):
    """TinyNet with dropout: its training draws from torch's global RNG, which a resume must restore."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(x)).mean((2, 3))
        return self.head(torch.nn.functional.dropout(features, 0.5, self.training))


def _strip(history):
    return [{k: v for k, v in h.items() if not k.endswith("_s")} for h in history]


def test_a_time_checkpoint_in_mid_epoch_resumes_exactly(tmp_path, monkeypatch):
    """A wall-clock checkpoint in the middle of an epoch keeps the batch position, both RNG states and the
    running sums: the resumed run ends with the uninterrupted run's weights byte for byte."""
    import diffkd_study.training.trainer as trainer

    train, val = toy_set(32), toy_set(12, seed=5)  # 4 batches of 8 per epoch

    def task():
        torch.manual_seed(0)
        return ClassifierTask(DropNet(), build_loss(CE))

    full = fit(task(), train, val, _config(epochs=3, checkpoint_minutes=0), tmp_path / "full", progress=False)
    real_save = trainer._save_checkpoint
    saves = []

    def crash_in_epoch_two(*args, **kwargs):
        real_save(*args, **kwargs)
        saves.append(kwargs.get("position"))
        if len(saves) == 6:  # epoch 1: 3 time checkpoints + its end; epoch 2: after batches 1 and 2
            raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(trainer, "_save_checkpoint", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):  # 1e-9 minutes: a time checkpoint after every batch
        fit(task(), train, val, _config(epochs=3, checkpoint_minutes=1e-9), tmp_path / "cut", progress=False)
    monkeypatch.setattr(trainer, "_save_checkpoint", real_save)
    assert [None if p is None else p["batch"] for p in saves] == [1, 2, 3, None, 1, 2]
    state = torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 1 and state["position"]["batch"] == 2

    resumed = fit(task(), train, val, _config(epochs=3), tmp_path / "cut", progress=False)
    assert resumed.resumed_from == 1
    assert _strip(resumed.history) == _strip(full.history)
    for name in ("best.safetensors",):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()
    a, b = (torch.load(tmp_path / run / CHECKPOINT, weights_only=True)["task"] for run in ("full", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_checkpoint_interval_is_no_reason_to_retrain(tmp_path):
    train, val = toy_set(24), toy_set(12, seed=5)
    first = fit(_task(), train, val, _config(epochs=2), tmp_path, progress=False)
    again = fit(_task(), train, val, _config(epochs=2, checkpoint_minutes=0.5), tmp_path, progress=False)
    assert again.resumed_from == len(first.history)
    with pytest.raises(ValueError, match="checkpoint_minutes must be >= 0"):
        _config(checkpoint_minutes=-1)


def test_edited_library_code_trains_afresh_and_sets_the_old_fit_aside(tmp_path, monkeypatch, caplog):
    import diffkd_study.training.trainer as trainer

    train, val = toy_set(24), toy_set(12, seed=5)
    first = fit(_task(), train, val, _config(epochs=2), tmp_path, progress=False)
    old_best = (tmp_path / "best.safetensors").read_bytes()
    monkeypatch.setattr(trainer, "code_digest", lambda modules: "edited" + "0" * 58)
    with caplog.at_level("WARNING", logger=trainer.__name__):
        again = fit(_task(), train, val, _config(epochs=2), tmp_path, progress=False)
    assert again.resumed_from == 0 and len(again.history) == len(first.history)
    [aside] = (tmp_path / ".superseded").iterdir()
    assert sorted(p.name for p in aside.iterdir()) == ["best.safetensors", "history.json", CHECKPOINT]
    assert (aside / "best.safetensors").read_bytes() == old_best
    assert "other library code" in caplog.text and str(aside) in caplog.text
    # the same (patched) code again: the new fit is re-used
    assert fit(_task(), train, val, _config(epochs=2), tmp_path, progress=False).resumed_from == 2


def test_the_code_of_a_fit_is_its_task_losses_models_and_trainer_not_the_evaluation():
    from diffkd_study.codedigest import module_closure
    from diffkd_study.distill.hooks import build_adapter
    from diffkd_study.training.trainer import fit_code_modules

    torch.manual_seed(0)
    student, teacher = TinyNet(), TinyNet()
    adapter = build_adapter(student, teacher, "conv", "conv", input_shape=(1, 16, 16), use_relu=False)
    loss = build_loss({"ce": {"type": "ce"}, "fitnet": {"type": "fitnet"}}, {"fitnet": {"adapter": adapter}})
    task = DistillationTask(student, teacher, loss, student_features={"feature": "conv"},
                            teacher_features={"feature": "conv"})
    modules = fit_code_modules(task)
    assert {"diffkd_study.training.trainer", "diffkd_study.distill.distiller", "diffkd_study.distill.composite",
            type(adapter).__module__} <= set(modules)
    assert "tests.unit.training.conftest" not in modules  # not the package's: its edits are the test's business
    closure = module_closure(modules)
    assert "diffkd_study.training.augment" in closure and not any(m.startswith(("diffkd_study.metrics", "diffkd_study.viz")) for m in closure)


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_best_weights_are_never_handed_back(tmp_path, caplog, damage):
    import diffkd_study.training.trainer as trainer

    train, val = toy_set(24), toy_set(12, seed=5)
    fit(_task(), train, val, _config(epochs=2), tmp_path, progress=False)
    best = tmp_path / "best.safetensors"
    if damage == "truncate":
        best.write_bytes(best.read_bytes()[:-40])
    else:
        best.unlink()
    with caplog.at_level("WARNING", logger=trainer.__name__):
        again = fit(_task(), train, val, _config(epochs=2), tmp_path, progress=False)
    assert again.resumed_from == 0 and best.is_file()
    why = "differs from the weights last.pt recorded" if damage == "truncate" else "is missing"
    assert f"{best} {why}" in caplog.text
    [aside] = (tmp_path / ".superseded").iterdir()
    assert (aside / CHECKPOINT).is_file()


def test_an_unreadable_checkpoint_is_set_aside_and_the_fit_trains_afresh(tmp_path, caplog):
    import diffkd_study.training.trainer as trainer

    train, val = toy_set(24), toy_set(12, seed=5)
    fit(_task(), train, val, _config(epochs=2), tmp_path, progress=False)
    last = tmp_path / CHECKPOINT
    last.write_bytes(last.read_bytes()[:100])
    with caplog.at_level("WARNING", logger=trainer.__name__):
        again = fit(_task(), train, val, _config(epochs=2), tmp_path, progress=False)
    assert again.resumed_from == 0
    assert f"{last} cannot be read" in caplog.text and len(caplog.records) == 1
    [aside] = (tmp_path / ".superseded").iterdir()
    assert (aside / CHECKPOINT).stat().st_size == 100


def test_load_best_checks_the_recorded_sha256(tmp_path):
    from diffkd_study.io import sha256_file
    from diffkd_study.training.trainer import load_best

    fit(_task(), toy_set(24), toy_set(12, seed=5), _config(epochs=1), tmp_path, progress=False)
    best = tmp_path / "best.safetensors"
    recorded = sha256_file(best)
    model = load_best(TinyNet(), tmp_path, expected_sha256=recorded)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in load_file(best).items())
    best.write_bytes(best.read_bytes()[:-8])
    with pytest.raises(ValueError, match=r"best.safetensors has sha256 .*not the recorded .*--force STAGE") as err:
        load_best(TinyNet(), tmp_path, expected_sha256=recorded)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"best.safetensors cannot be read .*--force STAGE"):
        load_best(TinyNet(), tmp_path)


def test_a_mid_epoch_checkpoint_of_another_process_count_is_a_clear_error(tmp_path, monkeypatch):
    import diffkd_study.training.trainer as trainer

    real_save = trainer._save_checkpoint

    def crash(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(trainer, "_save_checkpoint", crash)
    with pytest.raises(KeyboardInterrupt):
        fit(_task(), toy_set(32), toy_set(12, seed=5), _config(checkpoint_minutes=1e-9), tmp_path, progress=False)
    monkeypatch.setattr(trainer, "_save_checkpoint", real_save)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    state["position"]["world"] = 2  # as if two torchrun processes had written it
    torch.save(state, tmp_path / CHECKPOINT)
    with pytest.raises(ValueError, match=r"middle of epoch 1 by 2 process\(es\); resume it with 2"):
        fit(_task(), toy_set(32), toy_set(12, seed=5), _config(), tmp_path, progress=False)


def test_channels_last_computes_the_same_numbers_as_contiguous(tmp_path):
    """The default layout (channels-last) is a speed choice only. On a real timm network (BatchNorm, depthwise and
    pointwise convolutions, hard-swish): one training-mode forward and backward pass gives the contiguous logits
    and gradients to float rounding; a whole fit gives the contiguous run's losses and predictions to 1e-3
    relative (rounding differences grow over AdamW steps), and leaves the weights in the layout it trained in."""
    from diffkd_study.models.classifier import create_classifier

    x = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    outputs = {}
    for layout, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        torch.manual_seed(0)
        model = create_classifier("lcnet_035", 2, 1, "none").to(memory_format=fmt).train()
        logits = model(x.contiguous(memory_format=fmt))
        logits.logsumexp(1).sum().backward()
        outputs[layout] = (logits.detach(), torch.cat([p.grad.flatten() for p in model.parameters()]))
    for a, b in zip(outputs["contiguous"], outputs["channels_last"], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()))

    train, val = toy_set(24, size=32), toy_set(12, seed=9, size=32)
    runs = {}
    for layout in ("contiguous", "channels_last"):
        torch.manual_seed(0)
        model = create_classifier("lcnet_035", 2, 1, "none")
        result = fit(ClassifierTask(model, build_loss(CE)), train, val,
                     _config(epochs=1, lr=1e-4, memory_format=layout), tmp_path / layout, progress=False)
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        assert all(p.is_contiguous(memory_format=fmt) for p in model.parameters() if p.ndim == 4)
        runs[layout] = (result.history, predict_proba(model, val, memory_format=layout))
    (h_contiguous, p_contiguous), (h_last, p_last) = runs["contiguous"], runs["channels_last"]
    for key in ("train_total", "val_loss"):  # not the AUC: a rank statistic of near-tied scores
        assert h_last[0][key] == pytest.approx(h_contiguous[0][key], rel=1e-3), key
    np.testing.assert_allclose(p_last, p_contiguous, rtol=1e-3, atol=1e-4)
