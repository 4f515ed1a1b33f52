"""Stage A of SSD-KD: the teacher's self-supervision (SS) head, trained on the frozen teacher.

The official code (``isic_ssd_kd.py``, from SSKD's ``teacher.py``) trains ``h_t`` = Linear-ReLU-Linear
on the pooled teacher embeddings of 4-rotation batches with ``CE(S, source index)``
(:class:`~diffkd_study.methods.ssdkd.losses.TeacherSSHeadLoss`), the backbone frozen (learning rate 0, eval
mode), SGD lr 1e-3 / momentum 0.9 / weight decay 1e-3, MultiStepLR at epochs 30 and 45 (gamma 0.1),
60 epochs, 32 images x 4 rotations per batch, and keeps the head with the best validation SS loss
(validation copies rotated, not augmented).

Because the backbone is frozen and in eval mode, a teacher embedding depends only on its input: this
module computes the embeddings of one augmented pass ("view") of the training set at a time and trains
the head on them, which is the official computation when every epoch gets its own view
(``views=0``). With ``views = V > 0`` only V augmented passes are computed and epoch ``e`` reuses view
``e mod V``: far cheaper on a CPU (a teacher pass costs ~100x a head epoch) at the price of less
augmentation diversity; the CPU profile states its V. Epoch plans, augmentation and head
initialisation are seeded; the best head and the history are written atomically
(``head.safetensors``, ``ss_head.json``) and a finished stage with the same signature is loaded, not
retrained.

Memory layout: the teacher passes run channels-last (NHWC, :data:`MEMORY_FORMAT`: the teacher is moved to it
and the rotated batches laid out alike), the layout the classifiers are trained in. The EfficientNet-Lite2
teacher's forward pass (eval, no gradient, batch 32, one CPU thread, ``benchmarks/training_throughput.py``)
ran at 234.0 vs 177.1 images/s contiguous at 96 px RGB (1.32x); the embeddings equal the contiguous ones to
float rounding. The head itself is two linear layers on (rows, d) embeddings, where a layout does not
apply. ``ss_head.json`` names the layout.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from diffkd_study.distill.hooks import FeatureHooks
from diffkd_study.io import atomic_path, write_json
from diffkd_study.layout import MEMORY_FORMAT, layout_name
from diffkd_study.methods.ssdkd.losses import TeacherSSHeadLoss
from diffkd_study.methods.ssdkd.rotation import N_ROTATIONS, ProjectionHead
from diffkd_study.methods.ssdkd.tasks import rotated_views
from diffkd_study.progress import progress_bar
from diffkd_study.repro import derive_seed
from diffkd_study.training.data import ImageTensors
from diffkd_study.training.trainer import input_normalisation

__all__ = ["SSHeadConfig", "SSHeadResult", "rotation_embeddings", "ss_batches", "train_ss_head"]

HEAD_FILE = "head.safetensors"
RECORD_FILE = "ss_head.json"
#: the layout of the teacher and its batches in the embedding passes (see the module notes)


@dataclass(frozen=True)
class SSHeadConfig:
    """Settings of stage A (the teacher's SS head): epochs, SGD learning rate, momentum and weight decay, images
    per batch, augmented views (0: a fresh pass every epoch, as officially), augmentation preset and seed.
    """

    epochs: int = 60
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-3
    batch_images: int = 32  # images per batch (x 4 rotations = rows)
    views: int = 0  # augmented passes computed; 0 = a fresh one every epoch (official)
    augment: str = "dermoscopy"
    seed: int = 0
    embed_batch_images: int = 16

    @property
    def milestones(self) -> list[int]:
        """Epochs after which the learning rate drops by 10: 50% and 75% of the run (official 30, 45 of 60)."""
        return sorted({max(1, round(0.5 * self.epochs)), max(1, round(0.75 * self.epochs))})


@dataclass
class SSHeadResult:
    """The trained SS head (frozen), its history, best epoch and validation SS loss and accuracy, time, and
    whether it was read back."""

    head: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    best_val_accuracy: float
    wall_s: float
    loaded: bool


@torch.no_grad()
def rotation_embeddings(
    teacher: nn.Module, data: ImageTensors, embedding_path: str, *, augment: str, seed: int,
    batch_images: int = 16, device: torch.device | str = "cpu", progress: bool = False, desc: str = "embed",
    memory_format: torch.memory_format = MEMORY_FORMAT,
) -> torch.Tensor:
    """Pooled teacher embeddings ``(N, 4, d)`` of every image's 4 rotated copies (0, 90, 180, 270 degrees).

    Each copy is augmented independently with the preset ``augment`` (``none`` for validation), with
    a generator seeded by ``seed``; the teacher runs in eval mode, moved (in place: the values are
    unchanged) to ``memory_format``, and the batches are laid out alike.
    """
    device = torch.device(device)
    was_training = teacher.training
    teacher.to(memory_format=memory_format).eval()
    mean, std = input_normalisation(teacher)
    generator = torch.Generator().manual_seed(seed)
    out = []
    try:
        with FeatureHooks(teacher, {"embedding": embedding_path}, detach=True) as hooks:
            starts = range(0, len(data), batch_images)
            for start in progress_bar(starts, desc=desc, unit="batch", disable=not progress, leave=False):
                images01 = data.images[start:start + batch_images].to(device).float().div_(255.0)
                rows = rotated_views(images01, augment, generator)
                _, features = hooks.run(((rows - mean) / std).contiguous(memory_format=memory_format))
                embedding = features["embedding"].flatten(1).float().cpu()
                out.append(embedding.reshape(-1, N_ROTATIONS, embedding.shape[-1]))
    finally:
        teacher.train(was_training)
    return torch.cat(out)


def ss_batches(n_images: int, batch_images: int, seed: int, epoch: int, shuffle: bool = True) -> list[np.ndarray]:
    """Image indices of each batch: a seeded permutation per epoch, batches of ``batch_images``; a last
    batch of fewer than 2 images is dropped (one image gives a one-column similarity matrix)."""
    order = np.random.default_rng(derive_seed(seed, "ss-plan", epoch)).permutation(n_images) if shuffle \
        else np.arange(n_images)
    batches = [order[i:i + batch_images] for i in range(0, n_images, batch_images)]
    return [b for b in batches if len(b) >= 2]


def _layout(embeddings: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """(n, 4, d) embeddings of the chosen images -> (4n, d) in rotation layout."""
    picked = embeddings[torch.as_tensor(rows, dtype=torch.long)]
    return picked.reshape(-1, picked.shape[-1])


@torch.no_grad()
def _evaluate(loss: TeacherSSHeadLoss, embeddings: torch.Tensor, batch_images: int, device: torch.device
              ) -> tuple[float, float]:
    loss.eval()
    total = correct = 0.0
    rows_seen = 0
    for rows in ss_batches(len(embeddings), batch_images, 0, 0, shuffle=False):
        value = loss(_layout(embeddings, rows).to(device))
        n = (N_ROTATIONS - 1) * len(rows)
        total += float(value) * n
        correct += loss.last_stats["ss_accuracy"] * n
        rows_seen += n
    return total / rows_seen, correct / rows_seen


def _signature(config: SSHeadConfig, teacher_sha256: str | None, dim: int, train: ImageTensors,
               val: ImageTensors) -> str:
    digest = hashlib.sha256(json.dumps({**asdict(config), "teacher": teacher_sha256, "dim": dim},
                                       sort_keys=True).encode())
    for part in (train, val):
        digest.update("|".join(part.image_ids).encode())
    return digest.hexdigest()


def train_ss_head(
    teacher: nn.Module, embedding_path: str, train: ImageTensors, val: ImageTensors, config: SSHeadConfig,
    out_dir: str | os.PathLike[str], *, teacher_sha256: str | None = None, device: torch.device | str = "cpu",
    progress: bool = True,
) -> SSHeadResult:
    """Train the teacher's SS head (module notes); return the best head (frozen, eval mode) and the history."""
    out_dir = Path(out_dir)
    device = torch.device(device)
    started = time.perf_counter()
    dim = _probe_dim(teacher, embedding_path, train)
    signature = _signature(config, teacher_sha256, dim, train, val)
    torch.manual_seed(derive_seed(config.seed, "ss-head-init"))
    head = ProjectionHead(dim).to(device)
    record_path, head_path = out_dir / RECORD_FILE, out_dir / HEAD_FILE
    if record_path.is_file() and head_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("signature") == signature:
            head.load_state_dict(load_file(head_path, device=str(device)))
            return SSHeadResult(_frozen(head), record["history"], record["best_epoch"], record["best_val_loss"],
                                record["best_val_accuracy"], record["wall_s"], loaded=True)
    val_embeddings = rotation_embeddings(teacher, val, embedding_path, augment="none", seed=0,
                                         batch_images=config.embed_batch_images, device=device,
                                         progress=progress, desc="SS head: validation embeddings")
    loss = TeacherSSHeadLoss(head=head)
    optimizer = torch.optim.SGD(head.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=config.milestones, gamma=0.1)
    n_views = config.views if 0 < config.views < config.epochs else config.epochs
    cached: dict[int, torch.Tensor] = {}
    history: list[dict[str, float]] = []
    best = (math.inf, 0.0, 0)
    best_state: dict[str, torch.Tensor] = {}
    for epoch in range(config.epochs):
        view = epoch % n_views
        if view not in cached:
            embeddings = rotation_embeddings(
                teacher, train, embedding_path, augment=config.augment, seed=derive_seed(config.seed, "ss-view", view),
                batch_images=config.embed_batch_images, device=device, progress=progress,
                desc=f"SS head: training embeddings, view {view + 1}/{n_views}")
            cached = {view: embeddings} if n_views == config.epochs else {**cached, view: embeddings}
        embeddings = cached[view]
        loss.train()
        total = correct = 0.0
        n_rows = 0
        for rows in ss_batches(len(embeddings), config.batch_images, config.seed, epoch):
            value = loss(_layout(embeddings, rows).to(device))
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            n = (N_ROTATIONS - 1) * len(rows)
            total += float(value.detach()) * n
            correct += loss.last_stats["ss_accuracy"] * n
            n_rows += n
        scheduler.step()
        val_loss, val_accuracy = _evaluate(loss, val_embeddings, config.batch_images, device)
        history.append({"epoch": epoch + 1, "view": view, "lr": optimizer.param_groups[0]["lr"],
                        "train_ss_loss": total / n_rows, "train_ss_accuracy": correct / n_rows,
                        "val_ss_loss": val_loss, "val_ss_accuracy": val_accuracy})
        if val_loss < best[0]:
            best = (val_loss, val_accuracy, epoch + 1)
            best_state = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    wall = time.perf_counter() - started
    with atomic_path(head_path) as tmp:
        save_file({k: v.contiguous() for k, v in best_state.items()}, tmp)
    write_json(record_path, {"signature": signature, "config": asdict(config), "dim": dim, "history": history,
                             "best_epoch": best[2], "best_val_loss": best[0], "best_val_accuracy": best[1],
                             "n_train_images": len(train), "n_val_images": len(val), "wall_s": round(wall, 2),
                             "memory_format": layout_name(MEMORY_FORMAT)})
    return SSHeadResult(_frozen(head), history, best[2], best[0], best[1], wall, loaded=False)


def _frozen(head: nn.Module) -> nn.Module:
    head.requires_grad_(False)
    return head.eval()


def _probe_dim(teacher: nn.Module, embedding_path: str, data: ImageTensors) -> int:
    from diffkd_study.distill.hooks import feature_shapes

    shape = feature_shapes(teacher, {"e": embedding_path}, tuple(data.images.shape[1:]))["e"]
    return int(torch.Size(shape[1:]).numel())
