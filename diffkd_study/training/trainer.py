"""One trainer for teachers and students: a *task* (a module whose ``forward(batch)`` returns
``(loss, {term: value})``, the mdistiller contract) is optimised on in-memory image tensors.

Loop
    AdamW on the task's trainable parameters (a frozen teacher has none), learning rate with a linear
    warm-up over ``warmup_epochs`` and a cosine decay to 0 at ``epochs`` (stepped per batch), gradient-
    norm clipping, bf16 autocast on CUDA only (no scaler needed; fp32 on CPU). Every term of the loss
    is averaged over the epoch and logged; tqdm shows the running terms and images/s.

Data
    Memory layout: the task's networks and every batch are channels-last (NHWC) by default
    (``memory_format``), the layout in which oneDNN's CPU convolutions run fastest: measured by
    ``benchmarks/training_throughput.py`` (one thread, forward + backward + AdamW) 1.5x faster for
    EfficientNet-Lite2 and 1.5-1.8x for PP-LCNet x0.35 and MobileNetV2. The numbers are the same as
    contiguous (NCHW) ones up to float rounding (``tests/unit/training/test_trainer.py``);
    ``memory_format: contiguous`` restores the old layout.

    Rows of epoch ``e`` come from :class:`~diffkd_study.training.data.EpochPlan` (real rows once, plus
    synthetic rows at ``synthetic_ratio``), augmented on the fly with a generator seeded by (seed,
    epoch, rank); torch's global RNG (dropout) is re-seeded from (seed, epoch, rank) at the start of
    each epoch. An epoch is therefore a function of the seed and its number, and resuming from the
    checkpoint of epoch ``e`` repeats epochs ``e+1...`` exactly.

Selection and early stopping
    After each epoch the deployable model (``task.model``) predicts the validation rows; the
    selection metric is the validation AUC of the positive class for binary tasks, balanced accuracy
    for multiclass ones (``selection`` can be ``auc``, ``macro_auc``, ``balanced_accuracy`` or
    ``loss``). The best epoch's weights are kept (``best.safetensors``); training stops after
    ``patience`` epochs without improvement (not before ``min_epochs``). Test sets are never looked at.

Checkpoint (``out_dir/last.pt``, atomic; read with ``torch.load(weights_only=True)``)
    task state (incl. adapters and projection heads), optimizer, LR scheduler, epoch, history, best
    metric, the sha256 of ``best.safetensors`` and a signature of the configuration, the data and the
    library code the fit runs (:func:`fit_code_modules`: the modules of the task, its losses, networks
    and adapters, the trainer, and what they import from the package; plotting and evaluation code are
    not part of it). Written at the end of every epoch and, every ``checkpoint_minutes`` of wall-clock
    time, in the middle of one: then it also holds the position in the epoch (batches done, the
    augmentation generator's and torch's RNG states, the running term sums and image counts), so that
    a resumed run equals the uninterrupted one exactly. ``fit`` continues from it when the signature
    matches and ``best.safetensors`` has the recorded sha256 (a finished run returns at once). Otherwise
    (other code, configuration or data; best weights missing or changed; an unreadable ``last.pt``) it
    trains afresh and first moves the old files to ``out_dir/.superseded/<UTC time>/``, with one
    warning line that says why: nothing is overwritten silently, nothing stale is handed back.

Distributed
    When ``torch.distributed`` is initialised (``torchrun``, ``accelerate launch`` or
    :func:`~diffkd_study.training.distributed.init_from_env`), the task is wrapped in
    ``DistributedDataParallel``; each global batch of ``batch_size * world_size`` rows is split
    between the ranks, gradients are averaged by DDP, every rank evaluates the full validation set
    (so all take the same decisions) and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from torch import nn

from diffkd_study.codedigest import PACKAGE, code_digest
from diffkd_study.devices import resolve_device
from diffkd_study.io import atomic_path, first_line, read_safetensors, set_aside, sha256_file, write_json
from diffkd_study.layout import MEMORY_FORMATS
from diffkd_study.progress import progress_bar
from diffkd_study.repro import derive_seed
from diffkd_study.training.augment import augmentation
from diffkd_study.training.data import EpochPlan, ImageTensors

logger = logging.getLogger(__name__)

SELECTION_METRICS: tuple[str, ...] = ("auc", "macro_auc", "balanced_accuracy", "loss")
CHECKPOINT = "last.pt"
BEST_WEIGHTS = "best.safetensors"
HISTORY = "history.json"
#: FitConfig fields that say when checkpoints are written, not what is trained: not in the signature
SCHEDULE_FIELDS: tuple[str, ...] = ("checkpoint_minutes",)

__all__ = [
    "ClassifierTask", "FitConfig", "FitResult", "fit", "fit_code_modules", "input_normalisation", "load_best",
    "make_batch", "predict_proba", "tidy_history", "validation_metrics", "VALIDATION_TERMS",
]


@dataclass(frozen=True, kw_only=True)
class FitConfig:
    """The settings of one :func:`fit`, given by keyword.

    Where the defaults live: the training recipe (epochs, batch size, optimiser, early stopping, selection
    metric, augmentation, seed) has no default here. Each stage chooses it, and its section holds the
    defaults (:class:`diffkd_study.methods.diffkd.stage.TrainingSection` for the teacher and student stages,
    :class:`diffkd_study.methods.ssdkd.stage.SSDKDStageConfig` for SSD-KD), so no fit falls back silently on a
    second table. Only the settings that do not choose the recipe default here: ``synthetic_ratio`` 0 (real
    rows only), ``eval_batch_size``, ``amp``, ``device``, ``checkpoint_minutes`` and ``memory_format``; a section that exposes
    one of them defaults to the same value (``tests/unit/training/test_trainer.py`` checks it).
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    grad_clip: float
    patience: int  # epochs without a better validation metric before stopping; 0 = never stop early
    min_epochs: int
    selection: str  # one of SELECTION_METRICS
    augment: str  # a preset of diffkd_study.training.augment
    synthetic_ratio: float = 0.0  # synthetic rows per real row in each epoch
    seed: int
    eval_batch_size: int = 64
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    checkpoint_minutes: float = 10.0  # also save last.pt mid-epoch after this much wall-clock time; 0 = off
    memory_format: str = "channels_last"  # layout of the networks and batches: channels_last | contiguous

    def __post_init__(self) -> None:
        if self.selection not in SELECTION_METRICS:
            raise ValueError(f"selection must be one of {SELECTION_METRICS}, got {self.selection!r}")
        if min(self.epochs, self.batch_size, self.eval_batch_size) < 1 or self.batch_size < 2:
            raise ValueError("epochs and eval_batch_size must be >= 1 and batch_size >= 2")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip <= 0 or self.warmup_epochs < 0:
            raise ValueError("lr and grad_clip must be > 0, weight_decay and warmup_epochs >= 0")
        if self.patience < 0 or self.min_epochs < 1 or self.synthetic_ratio < 0:
            raise ValueError("patience must be >= 0, min_epochs >= 1, synthetic_ratio >= 0")
        if not self.checkpoint_minutes >= 0:
            raise ValueError(f"checkpoint_minutes must be >= 0 (0 = only at the end of an epoch), "
                             f"got {self.checkpoint_minutes}")
        augmentation(self.augment)  # raises on an unknown name
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format must be one of {list(MEMORY_FORMATS)}, got {self.memory_format!r}")


@dataclass
class FitResult:
    """What :func:`fit` returns: the per-epoch history, the best epoch, its metric and weights file, whether
    training stopped early, the epochs done before this call, wall time and training throughput.
    """

    history: list[dict[str, Any]]
    best_epoch: int
    best_metric: float
    best_weights: Path
    stopped_early: bool
    resumed_from: int  # epochs already done when this call started (0 = fresh)
    wall_s: float
    train_images_per_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def training_s(self) -> float:
        """Time of every epoch of the fit (training + validation), summed over interrupted and resumed calls.

        Unlike ``wall_s`` (this call's time: 0 when the fit is re-used from its finished checkpoint), it is the
        fit's own training time, whichever call trained it.
        """
        return float(sum(record.get("epoch_s", 0.0) for record in self.history))

    def summary(self) -> dict[str, Any]:
        """The fit for records: epochs run, best epoch and metric, early stop, resume point, time, throughput."""
        return {"epochs_run": len(self.history), "best_epoch": self.best_epoch, "best_metric": self.best_metric,
                "stopped_early": self.stopped_early, "resumed_from": self.resumed_from,
                "wall_s": round(self.wall_s, 2), "training_s": round(self.training_s, 1),
                "train_images_per_s": round(self.train_images_per_s, 1)}


# -- helpers -----------------------------------------------------------------------------------------------
def input_normalisation(model: nn.Module) -> tuple[float, float]:
    """The (mean, std) the model expects on [0, 1] inputs (one value for every channel)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean", (0.5,)), cfg.get("std", (0.5,))
    return float(np.mean(mean)), float(np.mean(std))


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def make_batch(data: ImageTensors, rows: np.ndarray | torch.Tensor, device: torch.device, *,
               normalisation: tuple[float, float], augment=None, generator: torch.Generator | None = None,
               memory_format: torch.memory_format = torch.contiguous_format) -> dict[str, Any]:
    """A training/evaluation batch: normalised images (in ``memory_format``), targets, masks (float {0,1})
    and flags."""
    index = torch.as_tensor(rows, dtype=torch.long)
    images = data.images[index].to(device).float().div_(255.0)
    masks = None if data.masks is None else data.masks[index].to(device).float()
    if augment is not None:
        assert generator is not None
        images, masks = augment(images, masks, generator=generator)
    mean, std = normalisation
    batch: dict[str, Any] = {
        "images": ((images - mean) / std).contiguous(memory_format=memory_format),
        "target": data.labels[index].to(device),
        "synthetic": data.synthetic[index].to(device),
        "image_size": tuple(images.shape[-2:]),
    }
    if masks is not None:
        has = data.has_mask[index].to(device) if data.has_mask is not None else masks.flatten(1).amax(1) > 0
        batch["masks"] = masks * has[:, None, None, None].to(masks.dtype)
    return batch


#: the validation values of an epoch record, under the term names the loss-curve figures show
VALIDATION_TERMS: dict[str, str] = {"val_loss": "validation NLL", "val_auc": "validation AUC",
                                    "val_balanced_accuracy": "validation balanced accuracy"}


def tidy_history(history: list[dict[str, Any]], *, validation: Sequence[str] = tuple(VALIDATION_TERMS),
                 skip_prefix: str | None = None) -> list[dict[str, Any]]:
    """A fit's per-epoch records (``history.json``) as tidy rows ``epoch, term, value, split``.

    Training rows: each logged loss term (``train_<term>``, not the image counts and throughput; terms starting
    with ``skip_prefix`` left out), split ``train``. Validation rows: the ``validation`` keys of
    :data:`VALIDATION_TERMS` present in the record, under their term names, split ``validation``.
    """
    rows = []
    for epoch in history:
        for key, value in epoch.items():
            if key.startswith("train_") and key not in ("train_images", "train_images_per_s"):
                term, split = key.removeprefix("train_"), "train"
                if skip_prefix is not None and term.startswith(skip_prefix):
                    continue
            elif key in validation:
                term, split = VALIDATION_TERMS[key], "validation"
            else:
                continue
            rows.append({"epoch": epoch["epoch"], "term": term, "value": value, "split": split})
    return rows


@torch.no_grad()
def predict_proba(model: nn.Module, data: ImageTensors, *, batch_size: int = 64,
                  device: torch.device | str = "cpu", memory_format: str = "channels_last") -> np.ndarray:
    """Softmax probabilities ``(N, K)`` of ``model`` on every row of ``data`` (eval mode, no augmentation),
    the batches in ``memory_format`` (a key of :data:`MEMORY_FORMATS`; the model's own layout is left as it is)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    normalisation = input_normalisation(model)
    out = []
    try:
        for start in range(0, len(data), batch_size):
            rows = np.arange(start, min(start + batch_size, len(data)))
            batch = make_batch(data, rows, device, normalisation=normalisation,
                               memory_format=MEMORY_FORMATS[memory_format])
            out.append(torch.softmax(model(batch["images"]).float(), dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy().astype(np.float64)


def validation_metrics(probabilities: np.ndarray, labels: np.ndarray, positive_index: int = 1) -> dict[str, float]:
    """Loss (mean NLL), accuracy, balanced accuracy and AUC (binary: of ``positive_index``; multiclass:
    macro one-vs-rest) of predicted probabilities; an AUC that is undefined (one class only) is NaN."""
    labels = np.asarray(labels)
    k = probabilities.shape[1]
    eps = 1e-12
    out = {
        "loss": float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels] + eps))),
        "accuracy": float(np.mean(probabilities.argmax(1) == labels)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, probabilities.argmax(1))),
    }
    present = np.unique(labels)
    if k == 2:
        out["auc"] = float(roc_auc_score(labels == positive_index, probabilities[:, positive_index])) \
            if len(present) == 2 else float("nan")
        out["macro_auc"] = out["auc"]
    else:
        aucs = [roc_auc_score(labels == c, probabilities[:, c]) for c in range(k) if c in present]
        out["macro_auc"] = float(np.mean(aucs)) if len(present) > 1 else float("nan")
        out["auc"] = out["macro_auc"]
    return out


def _score(metrics: Mapping[str, float], selection: str) -> float:
    value = metrics[selection]
    value = -value if selection == "loss" else value
    return value if math.isfinite(value) else -math.inf


def warmup_cosine_factor(warmup_steps: int, total_steps: int):
    """The learning-rate factor of step ``step``: linear warm-up over ``warmup_steps``, then a cosine decay
    to 0 at ``total_steps`` (for ``torch.optim.lr_scheduler.LambdaLR``)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def fit_code_modules(task: nn.Module) -> list[str]:
    """The package modules whose code a fit of ``task`` runs: the trainer and the modules that define the
    task's class and every submodule's class (losses, networks, adapters, heads) that is the package's.

    :func:`~diffkd_study.codedigest.code_digest` adds what they import, so an edited loss or model
    trains afresh while an edit of the evaluation or plotting code (never imported here) does not.
    """
    modules = {__name__}
    for module in task.modules():
        name = type(module).__module__
        if name == PACKAGE or name.startswith(PACKAGE + "."):
            modules.add(name)
    return sorted(modules)


def _signature(task: nn.Module, train: ImageTensors, val: ImageTensors, config: FitConfig,
               description: Mapping[str, Any] | None, code: str) -> str:
    digest = hashlib.sha256(code.encode())
    settings = {k: v for k, v in asdict(config).items() if k not in SCHEDULE_FIELDS}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(json.dumps(description or {}, sort_keys=True, default=str).encode())
    for name, tensor in sorted(task.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
    for part in (train, val):
        digest.update("|".join(part.image_ids).encode())
        digest.update(part.labels.numpy().tobytes())
        digest.update(part.synthetic.numpy().tobytes())
        # The pixels themselves: another crop, resolution or cache gives other inputs, so a fresh fit.
        digest.update(str(tuple(part.images.shape)).encode())
        digest.update(part.images.contiguous().numpy().tobytes())
        if part.masks is not None:
            digest.update(part.masks.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _continuable(checkpoint: Path, signature: str, code: str) -> tuple[dict[str, Any] | None, str]:
    """The state saved in ``checkpoint`` when a fit may continue from it, else None and why not."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: torch raises several types, all mean "unreadable"
        return None, f"{checkpoint} cannot be read ({first_line(err)})"
    if not isinstance(state, dict) or "signature" not in state:
        return None, f"{checkpoint} is not a checkpoint of this trainer"
    if state.get("code_digest") != code:
        return None, f"{checkpoint} was written by other library code (the task's, its losses' or models' modules)"
    if state["signature"] != signature:
        return None, f"{checkpoint} was written for another configuration or data"
    best = checkpoint.parent / BEST_WEIGHTS
    if int(state["best_epoch"]) > 0:
        if not best.is_file():
            return None, f"{best} is missing"
        if sha256_file(best) != state.get("best_sha256"):
            return None, f"{best} differs from the weights {checkpoint.name} recorded (sha256)"
    return state, ""


def _save_best(model: nn.Module, path: Path) -> str:
    """Write the model's weights atomically; return their sha256."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp)
        return sha256_file(tmp)


def _epoch_position(generator: torch.Generator, device: torch.device, sums: Mapping[str, float],
                    n_epoch: int) -> dict[str, Any]:
    """What a rank needs to continue an epoch in the middle: its RNG states and running sums."""
    return {"augment_rng": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "sums": dict(sums), "n_epoch": n_epoch}


def _time_checkpoint_due(last_saved: float, config: FitConfig, world: int, device: torch.device) -> bool:
    """Whether ``checkpoint_minutes`` have passed since the last save (on any rank: all ranks agree)."""
    if config.checkpoint_minutes <= 0:
        return False
    due = time.monotonic() - last_saved >= config.checkpoint_minutes * 60.0
    if world > 1:
        flag = torch.tensor([int(due)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        due = bool(flag.item())
    return due


def _trainable(task: nn.Module) -> list[nn.Parameter]:
    params = [p for p in task.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(task).__name__} has no trainable parameters")
    return params


# -- the loop ------------------------------------------------------------------------------------------------
def fit(task: nn.Module, train: ImageTensors, val: ImageTensors, config: FitConfig, out_dir: str | os.PathLike[str],
        *, positive_index: int = 1, description: Mapping[str, Any] | None = None, resume: bool = True,
        progress: bool = True, desc: str = "train") -> FitResult:
    """Train ``task`` (see the module docstring); checkpoints and history go to ``out_dir``.

    ``task.model`` is the network that is evaluated and saved; ``task(batch)`` returns ``(loss, terms)``.
    ``description`` (JSON-able) is recorded in the history and the checkpoint signature. ``resume=False``
    trains afresh even over a matching checkpoint (whose files are moved to ``.superseded/`` first).
    """
    out_dir = Path(out_dir)
    rank, world = _world()
    device = resolve_device(config.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    layout = MEMORY_FORMATS[config.memory_format]
    task = task.to(device).to(memory_format=layout)
    model: nn.Module = task.model
    normalisation = input_normalisation(model)
    augment = augmentation(config.augment)
    plan = EpochPlan.for_set(train, config.synthetic_ratio, config.seed)
    steps_per_epoch = len(plan.batches(0, config.batch_size, rank, world))
    if steps_per_epoch == 0:
        raise ValueError(f"{len(plan.rows(0))} training rows make no batch of >= 2 per rank")
    params = _trainable(task)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine_factor(int(round(config.warmup_epochs * steps_per_epoch)), config.epochs * steps_per_epoch))
    code = code_digest(fit_code_modules(task))
    signature = _signature(task, train, val, config, description, code)
    history: list[dict[str, Any]] = []
    best_metric, best_epoch, stale, start_epoch, finished = -math.inf, 0, 0, 0, False
    best_sha256: str | None = None  # of the best weights this rank knows to be in out_dir
    position: dict[str, Any] | None = None  # where in its epoch a mid-epoch checkpoint was saved
    checkpoint = out_dir / CHECKPOINT
    state, why_not = _continuable(checkpoint, signature, code) if resume and checkpoint.is_file() else (None, "")
    if state is not None:
        task.load_state_dict(state["task"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = json.loads(state["history"])
        best_metric, best_epoch, stale = float(state["best_metric"]), int(state["best_epoch"]), int(state["stale"])
        start_epoch, finished, best_sha256 = int(state["epoch"]), bool(state["finished"]), state.get("best_sha256")
        position = state.get("position")
        if position is not None and int(position["world"]) != world:
            raise ValueError(f"{checkpoint} was saved in the middle of epoch {start_epoch + 1} by {position['world']} "
                             f"process(es); resume it with {position['world']} (nproc), or delete it to train afresh")
    else:
        old = [name for name in (CHECKPOINT, BEST_WEIGHTS, HISTORY) if (out_dir / name).exists()]
        if old and rank == 0:
            aside = set_aside(out_dir, old)
            reason = why_not or ("resume=False" if not resume else f"{checkpoint} is missing")
            logger.warning("%s: %s: training afresh; the old files (%s) are moved to %s", desc, reason,
                           ", ".join(old), aside)
        if world > 1:
            torch.distributed.barrier()  # no rank reads out_dir while rank 0 moves files out of it
    resumed_from = start_epoch
    runner: nn.Module = task
    if world > 1:
        runner = nn.parallel.DistributedDataParallel(task, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and config.amp
                else contextlib.nullcontext())
    began, images_seen = time.perf_counter(), 0
    val_labels = val.labels.numpy()
    epoch = start_epoch
    last_saved = time.monotonic()
    while not finished and epoch < config.epochs:
        epoch_started = time.perf_counter()
        torch.manual_seed(derive_seed(config.seed, "torch", epoch, rank))
        generator = torch.Generator().manual_seed(derive_seed(config.seed, "augment", epoch, rank))
        task.train()
        sums: dict[str, float] = {}
        batches = plan.batches(epoch, config.batch_size, rank, world)
        skip, n_epoch = 0, 0
        if position is not None:  # continue this epoch where a mid-epoch checkpoint left it
            mine = position["ranks"][rank]
            skip, sums, n_epoch = int(position["batch"]), dict(mine["sums"]), int(mine["n_epoch"])
            generator.set_state(mine["augment_rng"])
            torch.set_rng_state(mine["torch_rng"])
            if mine["cuda_rng"] is not None and device.type == "cuda":
                torch.cuda.set_rng_state(mine["cuda_rng"], device)
            position = None
        bar = progress_bar(batches[skip:], initial=skip, total=len(batches),
                           desc=f"{desc} epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not progress or rank != 0, leave=False)
        for done, rows in enumerate(bar, start=skip + 1):  # done: batches of this epoch finished
            batch = make_batch(train, rows, device, normalisation=normalisation, augment=augment, generator=generator,
                               memory_format=layout)
            with autocast:
                loss, terms = runner(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss is {float(loss)} at epoch {epoch + 1}; terms {terms}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            scheduler.step()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value) * len(rows)
            n_epoch += len(rows)
            images_seen += len(rows)
            rate = images_seen / max(time.perf_counter() - began, 1e-9)
            bar.set_postfix({k: f"{v / n_epoch:.3g}" for k, v in list(sums.items())[:4]} | {"img/s": f"{rate:.1f}"})
            # the last batch is followed by the end-of-epoch checkpoint anyway
            if done < len(batches) and _time_checkpoint_due(last_saved, config, world, device):
                mine = _epoch_position(generator, device, sums, n_epoch)
                ranks = [mine]
                if world > 1:
                    ranks = [None] * world
                    torch.distributed.all_gather_object(ranks, mine)
                if rank == 0:
                    _save_checkpoint(checkpoint, task, optimizer, scheduler, signature, epoch, history, best_metric,
                                     best_epoch, stale, False, code=code, best_sha256=best_sha256,
                                     position={"batch": done, "world": world, "ranks": ranks})
                    logger.info("%s: checkpoint in epoch %d after batch %d/%d", desc, epoch + 1, done, len(batches))
                last_saved = time.monotonic()
        train_s = time.perf_counter() - epoch_started
        probabilities = predict_proba(model, val, batch_size=config.eval_batch_size, device=device,
                                      memory_format=config.memory_format)
        metrics = validation_metrics(probabilities, val_labels, positive_index)
        record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                  **{f"train_{k}": v / max(n_epoch, 1) for k, v in sums.items()},
                  **{f"val_{k}": v for k, v in metrics.items()},
                  "train_images": n_epoch * world, "epoch_s": round(time.perf_counter() - epoch_started, 3),
                  "train_images_per_s": round(n_epoch * world / max(train_s, 1e-9), 2)}
        history.append(record)
        score = _score(metrics, config.selection)
        improved = score > best_metric or best_epoch == 0  # an undefined first metric still keeps weights
        if improved:
            best_metric, best_epoch, stale = score, epoch + 1, 0
            # only rank 0 writes, so only it knows the new file's digest
            best_sha256 = _save_best(model, out_dir / BEST_WEIGHTS) if rank == 0 else None
        else:
            stale += 1
        epoch += 1
        finished = epoch >= config.epochs or (config.patience > 0 and stale >= config.patience
                                              and epoch >= config.min_epochs)
        if rank == 0:
            _save_checkpoint(checkpoint, task, optimizer, scheduler, signature, epoch, history, best_metric,
                             best_epoch, stale, finished, code=code, best_sha256=best_sha256)
            write_json(out_dir / HISTORY, {"description": description, "config": asdict(config), "history": history})
        last_saved = time.monotonic()
        if world > 1:
            torch.distributed.barrier()
    wall = time.perf_counter() - began
    stopped_early = len(history) < config.epochs
    result = FitResult(history=history, best_epoch=best_epoch,
                       best_metric=-best_metric if config.selection == "loss" else best_metric,
                       best_weights=out_dir / BEST_WEIGHTS, stopped_early=stopped_early, resumed_from=resumed_from,
                       wall_s=wall, train_images_per_s=images_seen * world / wall if images_seen else 0.0)
    load_best(model, out_dir, expected_sha256=best_sha256)
    return result


def _save_checkpoint(path: Path, task: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, signature: str,
                     epoch: int, history: list[dict[str, Any]], best_metric: float, best_epoch: int, stale: int,
                     finished: bool, *, code: str, best_sha256: str | None,
                     position: dict[str, Any] | None = None) -> None:
    """Write ``last.pt``; ``epoch`` counts finished epochs, ``position`` is set in the middle of the next one."""
    state = {
        "task": {k: v.detach().cpu() for k, v in task.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "signature": signature,
        "epoch": epoch,
        "history": json.dumps(history),
        "best_metric": best_metric,
        "best_epoch": best_epoch,
        "stale": stale,
        "finished": finished,
        "code_digest": code,
        "best_sha256": best_sha256,
        "position": position,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


# -- tasks -----------------------------------------------------------------------------------------------------
class ClassifierTask(nn.Module):
    """Supervised training of one classifier: ``loss`` is a CompositeLoss over ``student_logits`` and
    ``target`` (e.g. class-weighted cross-entropy)."""

    def __init__(self, model: nn.Module, loss: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """``(loss, terms)`` of a batch: ``loss`` called with the model's ``student_logits`` and the ``target``."""
        logits = self.model(batch["images"])
        return self.loss({"student_logits": logits.float(), "target": batch["target"]})


def load_best(model: nn.Module, out_dir: str | os.PathLike[str], expected_sha256: str | None = None) -> nn.Module:
    """Load the best weights a :func:`fit` run kept in ``out_dir`` into ``model``.

    With ``expected_sha256`` (as the stage's records hold it) the file must have that digest: weights
    that changed since they were recorded are an error, never used silently. A missing, changed or
    unreadable file is a one-line error naming it and the remedy.
    """
    weights = read_safetensors(Path(out_dir) / BEST_WEIGHTS, expected_sha256)
    model.load_state_dict(weights)
    return model
