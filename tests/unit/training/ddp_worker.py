"""Worker of the distributed-training test: ``torchrun --nproc-per-node 2 ddp_worker.py OUT_DIR [CRASH_AFTER]``.

Trains the BatchNorm-free TinyNet on the toy set with the gloo backend and writes rank 0's weights.
With ``CRASH_AFTER`` it checkpoints after every batch (``checkpoint_minutes`` tiny) and rank 0 dies
after writing that many checkpoints: an interrupted run for the resume test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from diffkd_study.distill.composite import build_loss
from diffkd_study.training.distributed import distributed_session
from diffkd_study.training.trainer import ClassifierTask, FitConfig, fit
from tests.unit.training.conftest import TinyNet, toy_set

WORLD_BATCH = 8


def train(out_dir: Path, batch_size: int, checkpoint_minutes: float = 10.0) -> torch.nn.Module:
    torch.manual_seed(0)
    task = ClassifierTask(TinyNet(), build_loss({"ce": {"type": "ce"}}))
    config = FitConfig(epochs=2, batch_size=batch_size, lr=0.05, weight_decay=1e-4, warmup_epochs=1.0, grad_clip=5.0,
                       patience=0, min_epochs=1, selection="auc", augment="none", seed=0, device="cpu",
                       checkpoint_minutes=checkpoint_minutes)
    fit(task, toy_set(32), toy_set(12, seed=5), config, out_dir, progress=False)
    return task.model


if __name__ == "__main__":
    torch.set_num_threads(1)
    with distributed_session("cpu") as distributed:
        assert distributed and torch.distributed.get_backend() == "gloo"
        world = torch.distributed.get_world_size()
        if len(sys.argv) > 2 and torch.distributed.get_rank() == 0:
            import diffkd_study.training.trainer as trainer

            real_save, saves = trainer._save_checkpoint, []

            def crash(*args, **kwargs):
                real_save(*args, **kwargs)
                saves.append(1)
                if len(saves) == int(sys.argv[2]):
                    raise SystemExit("simulated interruption")

            trainer._save_checkpoint = crash
        model = train(Path(sys.argv[1]), WORLD_BATCH // world, 1e-9 if len(sys.argv) > 2 else 10.0)
        if torch.distributed.get_rank() == 0:
            torch.save(model.state_dict(), Path(sys.argv[1]) / "final.pt")
