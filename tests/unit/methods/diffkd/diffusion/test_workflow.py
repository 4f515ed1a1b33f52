from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from diffkd_study.data.schema import Manifest, read_manifest
from diffkd_study.methods.diffkd.diffusion.stage import DiffusionStageConfig
from diffkd_study.methods.diffkd.diffusion.train import list_checkpoints
from diffkd_study.methods.diffkd.diffusion.workflow import (
    ensure_synthetic,
    loss_history,
    read_condition_table,
    resolve_class_counts,
    run_training,
    train_config_from_section,
    training_label_counts,
)

from .conftest import SMOKE_CONDITIONS, smoke_section


def _with_split(manifest: Manifest, labels: list[str], splits: list[str]) -> Manifest:
    df = manifest.df.iloc[:len(labels)].copy()
    df["label"], df["split"] = labels, splits
    return Manifest(df.reset_index(drop=True), manifest.schema)


def test_loss_history_averages_blocks_of_steps():
    history = loss_history([float(v) for v in range(1, 11)], n_bins=4)  # blocks of 3: 1-3, 4-6, 7-9, 10
    assert history["step"].tolist() == [3, 6, 9, 10]
    assert history["value"].tolist() == [2.0, 5.0, 8.0, 10.0]
    assert set(history["split"]) == {"train"} and history["term"].nunique() == 1
    with pytest.raises(ValueError, match="no losses"):
        loss_history([])


def test_class_counts_balance_the_training_split(phantom_cohort):
    manifest = _with_split(phantom_cohort[0], ["benign"] * 5 + ["malignant"] * 2 + ["malignant"] * 3,
                           ["train"] * 7 + ["test"] * 3)
    assert training_label_counts(manifest) == {"benign": 5, "malignant": 2}
    assert resolve_class_counts(manifest) == {"benign": 5, "malignant": 5}
    assert resolve_class_counts(manifest, n_per_class=3) == {"benign": 3, "malignant": 3}
    assert resolve_class_counts(manifest, class_counts=["malignant=4", "benign=0"]) == {"malignant": 4}
    with pytest.raises(ValueError, match=r"label\(s\) \['normal'\] outside the label set"):
        resolve_class_counts(manifest, class_counts=["normal=2"])
    only_benign = _with_split(phantom_cohort[0], ["benign"] * 3, ["train"] * 3)
    assert resolve_class_counts(only_benign) == {"benign": 3}
    with pytest.raises(ValueError, match=r"\['malignant'\] that the training split does not contain"):
        resolve_class_counts(only_benign, class_counts=["malignant=2"])


def test_train_config_from_section(phantom_cohort):
    manifest = phantom_cohort[0]
    config = train_config_from_section(smoke_section(condition_dropout=0.25, max_steps=3), manifest, seed=7)
    assert config.conditions == tuple(manifest.schema.conditions)  # empty section list = every declared one
    assert (config.seed, config.max_steps, config.image_size, config.batch_size) == (7, 3, 32, 4)
    assert config.dropout.categorical_p("cond_shape") == 0.25 and config.dropout.label == 0.1
    with pytest.raises(ValueError, match=r"names \['cond_density'\], which .* does not declare"):
        train_config_from_section(DiffusionStageConfig(conditions=("cond_density",)), manifest, seed=0)


def test_run_training_resumes_refuses_other_configs_and_restarts(phantom_cohort, tmp_path):
    manifest, root = phantom_cohort
    section = smoke_section(conditions=SMOKE_CONDITIONS[:2], max_steps=2, checkpoint_every=1)
    config = train_config_from_section(section, manifest, seed=0)
    first = run_training(manifest, tmp_path, config, root=root, progress=False)
    assert (first.steps, first.steps_run, first.resumed_from) == (2, 2, 0)
    loss = pd.read_csv(tmp_path / "loss.csv")
    assert loss["step"].tolist() == [1, 2] and np.allclose(loss["loss"], first.losses)
    record = json.loads((tmp_path / "training.json").read_text())
    assert record["steps"] == 2 and record["checkpoint_sha256"] == first.checkpoint_sha256

    again = run_training(manifest, tmp_path, config, root=root, progress=False)  # complete: nothing to train
    assert (again.steps_run, again.resumed_from, again.losses) == (0, 2, first.losses)
    assert again.wall_s_total == first.wall_s_total and again.checkpoint_sha256 == first.checkpoint_sha256

    other = train_config_from_section(smoke_section(conditions=SMOKE_CONDITIONS[:2], max_steps=3, checkpoint_every=1),
                                      manifest, seed=0)
    with pytest.raises(ValueError, match=r"another configuration \(max_steps: 2 -> 3\).*resume: false"):
        run_training(manifest, tmp_path, other, root=root, progress=False)
    fresh = run_training(manifest, tmp_path, other, root=root, resume=False, progress=False)
    assert (fresh.steps, fresh.steps_run) == (3, 3)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-000001", "checkpoint-000002",
                                                           "checkpoint-000003"]
    assert fresh.losses[:2] == first.losses  # same seed, same first steps (the LR schedule differs later)


def _one_step_checkpoint(manifest, root, out_dir):
    """A smoke model conditioned on BI-RADS, trained for one step: enough to sample from."""
    config = train_config_from_section(smoke_section(conditions=("cond_birads",), max_steps=1), manifest, seed=0)
    return run_training(manifest, out_dir, config, root=root, progress=False).checkpoint


def test_synthetic_set_is_reused_only_when_identical(phantom_cohort, tmp_path):
    manifest, root = phantom_cohort
    checkpoint = _one_step_checkpoint(manifest, root, tmp_path / "d")
    kwargs = dict(root=root, per_class={"benign": 2, "malignant": 1}, sampler="ddim", steps=2, seed=3,
                  progress=False)
    first = ensure_synthetic(checkpoint, manifest, tmp_path / "s", **kwargs)
    assert not first.reused and len(first.manifest.df) == 3
    record = json.loads((tmp_path / "s" / "generation.json").read_text())
    assert record["generation"]["per_class"] == {"benign": 2, "malignant": 1} and record["n_images"] == 3
    second = ensure_synthetic(checkpoint, manifest, tmp_path / "s", **kwargs)
    assert second.reused and second.manifest.df.equals(first.manifest.df)
    third = ensure_synthetic(checkpoint, manifest, tmp_path / "s", **{**kwargs, "seed": 4})
    assert not third.reused and third.record["seed"] == 4


def test_synthetic_manifest_keeps_the_study_schema(phantom_cohort, tmp_path):
    manifest, root = phantom_cohort
    checkpoint = _one_step_checkpoint(manifest, root, tmp_path / "d")
    ensure_synthetic(checkpoint, manifest, tmp_path / "s", root=root, per_class={"malignant": 2}, steps=2,
                     progress=False)
    synthetic = read_manifest(tmp_path / "s" / "synthetic.csv")
    assert dict(synthetic.schema.conditions) == dict(manifest.schema.conditions)
    df = synthetic.df
    assert df["cond_shape"].isna().all() and df["cond_birads"].notna().all()  # unused conditions stay empty
    source = manifest.df.set_index("image_id")
    assert df["source_center"].tolist() == source.loc[df["source_image_id"], "center"].tolist()
    assert set(df["center"]) == {"synthetic"} and set(df["dataset"]) == {"phantom"}


def test_condition_table_needs_a_label(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("cond_birads\n3\n")
    with pytest.raises(ValueError, match="needs a 'label' column"):
        read_condition_table(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_condition_table(tmp_path / "none.csv")
    path.write_text("label,cond_birads\nbenign,\nmalignant,4\n")
    table = read_condition_table(path)
    assert table["cond_birads"].isna().tolist() == [True, False]


def test_the_quality_stage_finds_the_sampling_checkpoint_and_checks_its_hash(phantom_cohort, tmp_path):
    from diffkd_study.methods.diffkd.diffusion.quality import read_generation

    manifest, root = phantom_cohort
    checkpoint = _one_step_checkpoint(manifest, root, tmp_path / "diffusion")
    ensure_synthetic(checkpoint, manifest, tmp_path / "synthetic", root=root, per_class={"benign": 1}, steps=1,
                     progress=False)
    record, found = read_generation(tmp_path / "synthetic", tmp_path)
    assert found == checkpoint and record["steps"] == 1
    (checkpoint / "ema.safetensors").write_bytes((checkpoint / "ema.safetensors").read_bytes() + b"\0")
    with pytest.raises(ValueError, match="differs from the .* recorded in"):
        read_generation(tmp_path / "synthetic", tmp_path)
    with pytest.raises(FileNotFoundError, match="run the diffusion stage first"):
        read_generation(tmp_path / "nothing", tmp_path)


def test_run_training_after_a_code_change_trains_afresh_and_keeps_the_old_run(phantom_cohort, tmp_path, monkeypatch):
    import diffkd_study.methods.diffkd.diffusion.train as train

    manifest, root = phantom_cohort
    config = train_config_from_section(smoke_section(conditions=SMOKE_CONDITIONS[:2], max_steps=2, checkpoint_every=1),
                                       manifest, seed=0)
    first = run_training(manifest, tmp_path, config, root=root, progress=False)
    monkeypatch.setattr(train, "code_digest", lambda modules: "edited" + "0" * 58)
    again = run_training(manifest, tmp_path, config, root=root, progress=False)
    assert (again.steps, again.steps_run, again.resumed_from) == (2, 2, 0)
    assert again.wall_s_total == again.wall_s  # the old run's time is not added to the new model's
    [aside] = (tmp_path / ".superseded").iterdir()
    assert {"loss.csv", "training.json", "checkpoint-000002"} <= {p.name for p in aside.iterdir()}
    assert json.loads((aside / "training.json").read_text())["checkpoint_sha256"] == first.checkpoint_sha256
