"""The distributed code path on CPU: 2 processes (gloo) under torchrun train exactly like one process
with the same global batch (BatchNorm-free net, no augmentation, equal halves)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.unit.training.ddp_worker import WORLD_BATCH, train

PROJECT = Path(__file__).resolve().parents[3]


def _torchrun(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """The 2-process gloo worker (``ddp_worker.py``) writing into ``tmp_path/ddp``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               str(Path(__file__).with_name("ddp_worker.py")), str(tmp_path / "ddp"), *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=PROJECT)


def _assert_matches_one_process(tmp_path: Path) -> None:
    distributed = torch.load(tmp_path / "ddp" / "final.pt", weights_only=True)
    single = train(tmp_path / "single", WORLD_BATCH).state_dict()
    for name, value in single.items():
        torch.testing.assert_close(distributed[name], value, rtol=1e-5, atol=1e-6)


def test_two_gloo_processes_match_one_process(tmp_path):
    completed = _torchrun(tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    _assert_matches_one_process(tmp_path)
    assert (tmp_path / "ddp" / "history.json").is_file()


def test_two_processes_resume_a_mid_epoch_checkpoint(tmp_path):
    """Rank 0 dies right after a time checkpoint in epoch 2 (every rank's RNG states and sums in it); a new
    2-process run continues from there and ends like one process with the same global batch."""
    cut = _torchrun(tmp_path, "5")
    assert cut.returncode != 0 and "simulated interruption" in cut.stderr, cut.stderr[-3000:]
    state = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    # epoch 1: time checkpoints after global batches 1-3 and the epoch's end; epoch 2: after batch 1
    assert state["epoch"] == 1 and state["position"]["batch"] == 1 and len(state["position"]["ranks"]) == 2
    resumed = _torchrun(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_matches_one_process(tmp_path)
