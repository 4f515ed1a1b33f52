"""Worker of the distributed-training test: ``torchrun --nproc-per-node 2 ddp_worker.py OUT_DIR``.

Trains the BatchNorm-free TinyNet on the toy set with the gloo backend and writes rank 0's weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from diffkd_study.distill.composite import build_loss
from diffkd_study.train.distributed import distributed_session
from diffkd_study.train.trainer import ClassifierTask, FitConfig, fit
from tests.unit.train.conftest import TinyNet, toy_set

WORLD_BATCH = 8


def train(out_dir: Path, batch_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    task = ClassifierTask(TinyNet(), build_loss({"ce": {"type": "ce"}}))
    config = FitConfig(epochs=2, batch_size=batch_size, lr=0.05, patience=0, augment="none", device="cpu")
    fit(task, toy_set(32), toy_set(12, seed=5), config, out_dir, progress=False)
    return task.model


if __name__ == "__main__":
    torch.set_num_threads(1)
    with distributed_session("cpu") as distributed:
        assert distributed and torch.distributed.get_backend() == "gloo"
        world = torch.distributed.get_world_size()
        model = train(Path(sys.argv[1]), WORLD_BATCH // world)
        if torch.distributed.get_rank() == 0:
            torch.save(model.state_dict(), Path(sys.argv[1]) / "final.pt")
