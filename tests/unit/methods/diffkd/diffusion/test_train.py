from __future__ import annotations

import inspect
import json
import math
import shutil

import pytest
import torch

from diffkd_study.data.schema import Manifest
from diffkd_study.methods.diffkd.diffusion.conditioning import ConditionDropout
from diffkd_study.methods.diffkd.diffusion.train import (
    TrainConfig,
    batch_indices,
    checkpoint_sha256,
    list_checkpoints,
    load_model,
    train_diffusion,
)
from diffkd_study.methods.diffkd.diffusion.workflow import train_config_from_section

from .conftest import smoke_config, smoke_section


def test_one_step_runs_and_returns_a_finite_loss(phantom_cohort, tmp_path):
    manifest, root = phantom_cohort
    config = smoke_config(max_steps=1, prediction_type="v_prediction", beta_schedule="linear")
    result = train_diffusion(manifest, tmp_path, config, root=root, progress=False)
    assert len(result.losses) == 1 and math.isfinite(result.losses[0])
    assert result.checkpoint.name == "checkpoint-000001"
    saved = json.loads((result.checkpoint / "config.json").read_text())
    assert saved["noise_scheduler"]["prediction_type"] == "v_prediction"
    assert saved["model"]["encoder"]["numeric"]["cond_age"]["sd"] > 0  # normalisation stats travel along
    model, _ = load_model(result.checkpoint)
    assert model.encoder.categorical_names == ["cond_birads", "cond_shape"]


def test_resume_reproduces_the_uninterrupted_run_exactly(phantom_cohort, tmp_path):
    manifest, root = phantom_cohort
    config = smoke_config(max_steps=6, checkpoint_every=3, mask_conditioning=True,
                          dropout=ConditionDropout(0.3, 0.3, 0.3, 0.3), warmup_steps=2)
    full = train_diffusion(manifest, tmp_path / "full", config, root=root, progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "full")] == ["checkpoint-000003", "checkpoint-000006"]

    # an interrupted run: only the step-3 checkpoint survived
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoint-000006")
    resumed = train_diffusion(manifest, tmp_path / "cut", config, root=root, resume="latest", progress=False)

    assert len(full.losses) == 6
    assert resumed.losses == full.losses  # bit for bit, steps 4-6 included
    for name in ("model", "ema"):
        a, b = (load_model(run.checkpoint, ema=name == "ema")[0].state_dict() for run in (full, resumed))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_channels_last_training_matches_contiguous_and_is_recorded(phantom_cohort, tmp_path):
    manifest, root = phantom_cohort
    config = smoke_config(max_steps=2, mask_conditioning=True)
    runs = {layout: train_diffusion(manifest, tmp_path / layout, config, root=root, progress=False,
                                    memory_format=fmt)
            for layout, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last))}
    assert runs["channels_last"].losses == pytest.approx(runs["contiguous"].losses, rel=1e-4)
    for layout, run in runs.items():
        assert run.memory_format == layout
        assert json.loads((run.checkpoint / "config.json").read_text())["memory_format"] == layout
    a, b = (load_model(run.checkpoint, ema=False)[0].state_dict() for run in runs.values())
    # AdamW moves a weight by about lr whatever its gradient's size, so a near-zero gradient whose sign rounding
    # flips can leave that weight up to 2 x lr apart after two steps: the tolerance is 4 x lr, as for the detector
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-4, atol=4 * config.learning_rate) for k in a)
    assert inspect.signature(train_diffusion).parameters["memory_format"].default == torch.channels_last  # the adopted default


def test_resume_with_another_configuration_is_refused(phantom_cohort, tmp_path):
    manifest, root = phantom_cohort
    train_diffusion(manifest, tmp_path, smoke_config(max_steps=1), root=root, progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        train_diffusion(manifest, tmp_path, smoke_config(max_steps=2, learning_rate=1e-3), root=root,
                        resume="latest", progress=False)


def test_resume_on_other_training_data_is_refused(phantom_cohort, tmp_path):
    manifest, root = phantom_cohort
    train_diffusion(manifest, tmp_path, smoke_config(max_steps=1), root=root, progress=False)
    fewer = Manifest(df=manifest.df.iloc[1:], schema=manifest.schema, path=manifest.path)
    with pytest.raises(ValueError, match="other data"):
        train_diffusion(fewer, tmp_path, smoke_config(max_steps=1), root=root, resume="latest", progress=False)
    # the same data resumes
    train_diffusion(manifest, tmp_path, smoke_config(max_steps=1), root=root, resume="latest", progress=False)


def test_batches_cover_each_epoch_once():
    rows = [batch_indices(10, 3, seed=1, step=s) for s in range(3)]
    flat = sorted(int(i) for r in rows for i in r)
    assert len(flat) == 9 and len(set(flat)) == 9
    assert (batch_indices(10, 3, 1, 0) == rows[0]).all()  # a function of (seed, step) only
    next_epoch = [int(i) for s in range(3, 6) for i in batch_indices(10, 3, 1, s)]
    assert len(set(next_epoch)) == 9 and next_epoch != [int(i) for r in rows for i in r]


def test_profiles_and_config_round_trip(phantom_cohort):
    for name in ("smoke", "demo", "full"):
        config = train_config_from_section(smoke_section(profile=name), phantom_cohort[0], seed=0)
        assert config.profile == name
        assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="prediction_type"):
        smoke_config(prediction_type="x0")


def test_a_time_triggered_checkpoint_resumes_like_the_uninterrupted_run(phantom_cohort, tmp_path, monkeypatch):
    """checkpoint_minutes: a checkpoint after every interval of wall-clock time, at whatever step that is
    (here a tiny interval: every step); resuming the latest equals the uninterrupted run bit for bit."""
    import diffkd_study.methods.diffkd.diffusion.train as train

    manifest, root = phantom_cohort
    settings = dict(max_steps=5, checkpoint_every=100, dropout=ConditionDropout(0.3, 0.3, 0.3, 0.3), warmup_steps=2)
    full = train_diffusion(manifest, tmp_path / "full", smoke_config(**settings, checkpoint_minutes=0), root=root,
                           progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "full")] == ["checkpoint-000005"]

    real_save = train.save_checkpoint

    def crash_after_step_three(*args, **kwargs):
        path = real_save(*args, **kwargs)
        if kwargs["step"] == 3:
            raise KeyboardInterrupt("simulated interruption")
        return path

    monkeypatch.setattr(train, "save_checkpoint", crash_after_step_three)
    timed = smoke_config(**settings, checkpoint_minutes=1e-9)
    with pytest.raises(KeyboardInterrupt):
        train_diffusion(manifest, tmp_path / "cut", timed, root=root, progress=False)
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    assert [p.name for p in list_checkpoints(tmp_path / "cut")] == [f"checkpoint-00000{k}" for k in (1, 2, 3)]
    # the schedule may change on resume (it decides when checkpoints are written, not what is trained)
    resumed = train_diffusion(manifest, tmp_path / "cut", smoke_config(**settings, checkpoint_minutes=0), root=root,
                              resume="latest", progress=False)
    assert resumed.resumed_from == 3 and resumed.losses == full.losses
    assert resumed.checkpoint.name == "checkpoint-000005"
    for name in ("model.safetensors", "ema.safetensors"):
        assert (resumed.checkpoint / name).read_bytes() == (full.checkpoint / name).read_bytes()


def test_checkpoints_are_listed_by_step(tmp_path):
    for step in (999_999, 1_000_000, 7):
        (tmp_path / f"checkpoint-{step:06d}").mkdir()
    (tmp_path / "checkpoint-notes").mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-000007", "checkpoint-999999",
                                                            "checkpoint-1000000"]


def test_other_training_code_trains_afresh_and_sets_the_old_run_aside(phantom_cohort, tmp_path, monkeypatch,
                                                                      caplog):
    import diffkd_study.methods.diffkd.diffusion.train as train

    manifest, root = phantom_cohort
    config = smoke_config(max_steps=2, checkpoint_every=1)
    first = train_diffusion(manifest, tmp_path, config, root=root, progress=False)
    old = checkpoint_sha256(first.checkpoint)
    monkeypatch.setattr(train, "code_digest", lambda modules: "edited" + "0" * 58)
    with caplog.at_level("WARNING", logger=train.__name__):
        again = train_diffusion(manifest, tmp_path, config, root=root, resume="latest", progress=False)
    assert again.resumed_from == 0 and again.losses == first.losses  # trained again, from step 0
    assert "other diffusion training code" in caplog.text
    [aside] = (tmp_path / ".superseded").iterdir()
    assert [p.name for p in list_checkpoints(aside)] == ["checkpoint-000001", "checkpoint-000002"]
    assert checkpoint_sha256(aside / "checkpoint-000002") == old
    state = json.loads((again.checkpoint / "trainer_state.json").read_text())
    assert state["code_sha256"] == "edited" + "0" * 58
    # the same code again: the new run is continued, not trained a third time
    assert train_diffusion(manifest, tmp_path, config, root=root, resume="latest", progress=False).resumed_from == 2
