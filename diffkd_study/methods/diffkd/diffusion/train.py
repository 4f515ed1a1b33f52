"""Train the conditional diffusion model (DDPM objective, classifier-free-guidance dropout, EMA, exact resume).

Objective: ``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps`` with ``t`` uniform over the ``num_train_timesteps``
of a ``diffusers.DDPMScheduler`` (``squaredcos_cap_v2``, the cosine schedule, or ``linear``); the model
predicts ``eps`` (``prediction_type="epsilon"``) or ``v = sqrt(a_t) eps - sqrt(1 - a_t) x_0``
(``"v_prediction"``); loss = MSE over the image channels. Pixels are scaled to [-1, 1].

Optimisation: AdamW, linear warm-up then cosine decay of the learning rate (per step), gradient-norm
clipping, EMA of all weights with the warm-up ``decay_t = min(decay, (1 + n) / (10 + n))`` (as diffusers'
``EMAModel``); bf16 autocast only on CUDA (no grad scaler needed), fp32 on CPU.

Memory layout: the UNet's weights and the batches are channels-last (NHWC, :data:`MEMORY_FORMAT`), which
gives the same losses to float rounding. Measured on the ``demo`` UNet (64 px, mask-conditioned, batch 16,
one CPU thread, ``benchmarks/training_throughput.py``, layouts interleaved): training step 28.1 -> 29.8
images/s (1.06x), sampling forward pass (batch 32) 86.7 -> 99.9 images/s (1.15x): the GroupNorm and
attention layers gain little, the convolutions more. ``train_diffusion(memory_format=torch.contiguous_format)``
trains NCHW; checkpoints are stored contiguous either way, and ``config.json`` and :class:`TrainResult` name
the layout. A resume is exact only in the layout the run started in.

Data: the rows of the ``train`` split (every row when the manifest has no ``split`` column) are read once
into memory as uint8 at the training resolution, with their masks and encoded conditions. No
augmentation. Batch ``k`` of epoch ``e`` is a slice of a permutation drawn from
``derive_seed(seed, "order", e)``; the noise, timesteps and dropout of step ``s`` come from a generator
seeded with ``derive_seed(seed, "step", s)``. Everything random is thus a function of (seed, step),
which makes resuming exact; the global torch/NumPy/Python RNG states are saved and restored as well,
so code that draws from them stays reproducible too.

Checkpoint ``checkpoint-<step>/`` (written atomically; every ``checkpoint_every`` steps, after every
``checkpoint_minutes`` of wall-clock time since the last one, and at the end):
``model.safetensors``, ``ema.safetensors``, ``optimizer.safetensors`` (AdamW moment tensors),
``rng.safetensors`` (torch and NumPy RNG states), ``trainer_state.json`` (step, per-step losses,
optimizer param groups, LR-scheduler state, Python RNG state, data order, the digests of the training
data and of the training code) and ``config.json`` (model config with the encoder's levels and
normalisation statistics, noise-scheduler config, training config). A time-triggered checkpoint is an
ordinary ``checkpoint-<step>`` at whatever step the time ran out.
``resume="latest"`` (or a checkpoint folder) continues the run; the loss sequence then equals the
uninterrupted run's bit for bit (on the same hardware and thread count). A resume needs the same
training settings (the checkpoint schedule may change) and the same data, else it is an error; a
checkpoint written by other training code (:data:`CODE_MODULES` and what they import) is not continued:
the folder's files are moved to ``out_dir/.superseded/<UTC time>/`` and training starts afresh.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from safetensors.torch import save_file
from torch import nn

from diffkd_study.codedigest import code_digest
from diffkd_study.data.cache import ImageCache
from diffkd_study.data.datasets import ManifestDataset
from diffkd_study.data.schema import Manifest
from diffkd_study.io import atomic_dir, read_safetensors, set_aside, sha256_file
from diffkd_study.layout import MEMORY_FORMAT, layout_name
from diffkd_study.methods.diffkd.diffusion.conditioning import (
    ConditionBatch,
    ConditionDropout,
    encoder_spec_from_manifest,
)
from diffkd_study.methods.diffkd.diffusion.names import (
    BETA_SCHEDULES,
    DOMAIN_RESIZE_MODES,
    NUM_TRAIN_TIMESTEPS,
    PREDICTION_TYPES,
)
from diffkd_study.methods.diffkd.diffusion.unet import ConditionalUNet, create_conditional_unet, unet_profile
from diffkd_study.progress import progress_bar
from diffkd_study.repro import derive_seed, seed_everything

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
#: TrainConfig fields that say when checkpoints are written, not what is trained: a resume may change them
SCHEDULE_FIELDS: tuple[str, ...] = ("checkpoint_every", "checkpoint_minutes")
#: the modules whose code a training run executes (with what they import from the package)
CODE_MODULES: tuple[str, ...] = ("diffkd_study.methods.diffkd.diffusion.train", "diffkd_study.methods.diffkd.diffusion.unet",
                                 "diffkd_study.methods.diffkd.diffusion.conditioning")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one diffusion training run, all resolved: the stage builds it from its section, whose named
    profiles (:class:`diffkd_study.methods.diffkd.diffusion.stage.DiffusionStageConfig`) hold the presets."""

    profile: str = "smoke"  # UNet architecture (diffkd_study.methods.diffkd.diffusion.unet.UNET_PROFILES)
    image_size: int = 32
    crop: str = "none"  # none: whole frames stretched to image_size; lesion: the classifier's lesion-centred square
    roi_margin: float = 0.25  # crop: lesion only (the classifier's crop_margin)
    conditions: tuple[str, ...] | None = None  # cond_* names; None = every condition the schema declares
    mask_conditioning: bool = False
    dropout: ConditionDropout = field(default_factory=ConditionDropout)
    batch_size: int = 4
    max_steps: int = 6
    learning_rate: float = 2e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    prediction_type: str = "epsilon"
    beta_schedule: str = "squaredcos_cap_v2"
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
    checkpoint_every: int = 500
    checkpoint_minutes: float = 10.0  # also a checkpoint after this much wall-clock time since the last; 0 = off
    seed: int = 0

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if unet_profile(self.profile).image_size != self.image_size:
            logger.info("UNet profile %s is designed for %d px, training at %d px", self.profile,
                        unet_profile(self.profile).image_size, self.image_size)
        if self.crop not in DOMAIN_RESIZE_MODES:
            raise ValueError(f"crop must be one of {DOMAIN_RESIZE_MODES}, got {self.crop!r}")
        if min(self.batch_size, self.max_steps, self.checkpoint_every) < 1:
            raise ValueError("batch_size, max_steps and checkpoint_every must be >= 1")
        if not self.checkpoint_minutes >= 0:
            raise ValueError(f"checkpoint_minutes must be >= 0 (0 = off), got {self.checkpoint_minutes}")

    def training_settings(self) -> dict[str, Any]:
        """The settings that decide what is trained: all but :data:`SCHEDULE_FIELDS` (a resume keeps them)."""
        return {k: v for k, v in self.to_dict().items() if k not in SCHEDULE_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready data (stored in every checkpoint's ``config.json``)."""
        out = asdict(self)
        out["dropout"] = self.dropout.to_dict()
        out["conditions"] = None if self.conditions is None else list(self.conditions)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """The configuration from :meth:`to_dict` data (checked again as at construction)."""
        data = dict(data)
        data["dropout"] = ConditionDropout(**data["dropout"])
        if data.get("conditions") is not None:
            data["conditions"] = tuple(data["conditions"])
        return cls(**data)


@dataclass
class TrainResult:
    """What :func:`train_diffusion` returns: the loss of every step, the last checkpoint, the step count, this call's
    throughput and the step it resumed from."""

    losses: list[float]  # one per step, from step 1 (includes the steps before a resume)
    checkpoint: Path  # the last checkpoint written
    steps: int
    images_per_second: float  # over the steps run in this call
    resumed_from: int = 0  # step this call continued from (0: trained from scratch)
    memory_format: str = "channels_last"  # layout of the weights and batches: "channels_last" or "contiguous"


@dataclass
class TrainingData:
    """The training rows in memory: uint8 images, masks (mask-conditioned models), encoded conditions, ids."""

    images: torch.Tensor  # uint8 (N, C, H, W)
    masks: torch.Tensor | None  # uint8 {0, 1} (N, 1, H, W)
    conditions: ConditionBatch
    image_ids: list[str]


# -- EMA --------------------------------------------------------------------------------------------------
class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current state (decay ``min(decay, (1 + n) / (10 + n))`` after n
        updates); integer buffers are copied."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[key].lerp_(value.detach(), 1.0 - decay)
            else:
                self.shadow[key].copy_(value)


# -- data ---------------------------------------------------------------------------------------------------
def load_training_data(manifest: Manifest, model: ConditionalUNet, *, root: str | os.PathLike[str] | None = None,
                       cache: ImageCache | None = None, image_size: int, split: str | None = "train",
                       crop: str = "none", roi_margin: float = 0.25) -> TrainingData:
    """The train split in memory (uint8), with masks (mask-conditioned models) and encoded conditions: whole frames
    (``crop: none``) or the lesion-centred squares the classifier sees (``crop: lesion``, masks in their coordinates)."""
    if split is not None and "split" not in manifest.df.columns:
        split = None
    dataset = ManifestDataset(manifest, root, cache=cache, split=split, size=image_size,
                              resize_mode=DOMAIN_RESIZE_MODES[crop], roi_margin=roi_margin)
    if len(dataset) == 0:
        raise ValueError(f"no training rows (split={split!r}) in {manifest.path}")
    images, masks, has_mask = [], [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        images.append((sample["image"] * 255).round().to(torch.uint8))
        mask = sample.get("mask")
        has_mask.append(mask is not None)
        masks.append(torch.zeros_like(images[-1][:1]) if mask is None else mask.to(torch.uint8))
    conditions = model.encoder.encode_rows(dataset.df, has_mask=has_mask)
    return TrainingData(images=torch.stack(images), masks=torch.stack(masks) if model.mask_conditioning else None,
                        conditions=conditions, image_ids=list(dataset.image_ids))


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Rows of the batch of (0-based) ``step``: epochs are seeded permutations, the last partial batch dropped."""
    batch_size = min(batch_size, n)
    per_epoch = n // batch_size
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng(derive_seed(seed, "order", epoch)).permutation(n)
    return order[position * batch_size:(position + 1) * batch_size]


def make_noise_scheduler(config: TrainConfig) -> DDPMScheduler:
    """The DDPM noise scheduler of ``config`` (timesteps, beta schedule, prediction type; no sample clipping)."""
    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                         prediction_type=config.prediction_type, clip_sample=False)


def _lr_lambda(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


# -- checkpoints --------------------------------------------------------------------------------------------
def _contiguous(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}


def save_checkpoint(out_dir: Path, *, step: int, model: ConditionalUNet, ema: EMA, optimizer: torch.optim.Optimizer,
                    lr_scheduler: torch.optim.lr_scheduler.LRScheduler, noise_scheduler: DDPMScheduler,
                    config: TrainConfig, losses: Sequence[float], data_sha256: str | None = None,
                    code_sha256: str | None = None, memory_format: torch.memory_format = MEMORY_FORMAT) -> Path:
    """Write ``out_dir/checkpoint-<step>/`` atomically and return it.

    It holds the model, EMA and optimizer tensors (safetensors, contiguous), torch's and numpy's RNG states,
    and as JSON the step, the losses so far, the optimizer and LR-scheduler states, Python's RNG state, the
    data and code digests the run is tied to (``trainer_state.json``) and the model, noise-scheduler and
    training configuration with the training layout ``memory_format`` (``config.json``): everything a resume
    needs to continue exactly.
    """
    path = out_dir / f"{CHECKPOINT_PREFIX}{step:06d}"
    opt_state = optimizer.state_dict()
    opt_tensors: dict[str, torch.Tensor] = {}
    opt_other: dict[str, dict[str, Any]] = {}
    for pid, state in opt_state["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                opt_tensors[f"{pid}.{key}"] = value
            else:
                opt_other.setdefault(str(pid), {})[key] = value
    np_state = np.random.get_state()
    py_state = random.getstate()
    with atomic_dir(path, overwrite=True) as tmp:  # checkpoint folders are the program's own
        save_file(_contiguous(model.state_dict()), tmp / "model.safetensors")
        save_file(_contiguous(ema.shadow), tmp / "ema.safetensors")
        save_file(_contiguous(opt_tensors), tmp / "optimizer.safetensors")
        save_file({"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np_state[1].astype(np.int64))},
                  tmp / "rng.safetensors")
        trainer_state = {
            "step": step,
            "data_sha256": data_sha256,
            "code_sha256": code_sha256,
            "losses": list(losses),
            "ema_updates": ema.updates,
            "optimizer": {"param_groups": opt_state["param_groups"], "state_other": opt_other},
            "lr_scheduler": lr_scheduler.state_dict(),
            "rng": {"numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
                    "python": [py_state[0], list(py_state[1]), py_state[2]]},
            "data_order": {"seed": config.seed, "epoch_permutation": "derive_seed(seed, 'order', epoch)",
                           "next_step": step},
        }
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1), encoding="utf-8")
        config_json = {"model": model.config(), "noise_scheduler": dict(noise_scheduler.config),
                       "train": config.to_dict(), "memory_format": layout_name(memory_format)}
        (tmp / "config.json").write_text(json.dumps(config_json, indent=1, default=str), encoding="utf-8")
    return path


def list_checkpoints(out_dir: str | os.PathLike[str]) -> list[Path]:
    """The ``checkpoint-<step>`` folders of ``out_dir`` (step- and time-triggered alike), by step."""
    folder = Path(out_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
             and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))  # by step, past 999999 too


def resolve_checkpoint(out_dir: str | os.PathLike[str], resume: str | os.PathLike[str]) -> Path:
    """The checkpoint folder named by ``resume``: ``"latest"`` (the highest step in ``out_dir``) or a path.

    Raises ``FileNotFoundError`` when ``out_dir`` holds no checkpoint or the path is not a checkpoint folder.
    """
    if str(resume) == "latest":
        found = list_checkpoints(out_dir)
        if not found:
            raise FileNotFoundError(f"resume='latest' but {out_dir} holds no {CHECKPOINT_PREFIX}* folder")
        return found[-1]
    path = Path(resume)
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint folder (no model.safetensors)")
    return path


def training_data_sha256(data: TrainingData) -> str:
    """One digest of what a run trains on: image ids, pixels, masks and encoded conditions."""
    import hashlib

    digest = hashlib.sha256("|".join(data.image_ids).encode())
    tensors = [("images", data.images), ("masks", data.masks), *data.conditions.items()]
    for name, tensor in tensors:
        if tensor is not None:
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def checkpoint_sha256(path: str | os.PathLike[str]) -> str:
    """One digest for a checkpoint folder: sha256 over its weight and config files' own sha256."""
    import hashlib

    path = Path(path)
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "ema.safetensors"):
        digest.update(f"{name} {sha256_file(path / name)}\n".encode())
    return digest.hexdigest()


def read_checkpoint_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint folder: model, noise-scheduler and training configuration."""
    return json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))


def load_model(path: str | os.PathLike[str], *, ema: bool = True) -> tuple[ConditionalUNet, dict[str, Any]]:
    """The model of a checkpoint folder (EMA weights by default), in eval mode, and the folder's config."""
    path = Path(path)
    config = read_checkpoint_config(path)
    model = ConditionalUNet.from_config(config["model"])
    model.load_state_dict(read_safetensors(path / ("ema.safetensors" if ema else "model.safetensors")))
    model.eval()
    return model, config


def _restore(path: Path, model: ConditionalUNet, ema: EMA, optimizer: torch.optim.Optimizer,
             lr_scheduler: torch.optim.lr_scheduler.LRScheduler) -> tuple[int, list[float]]:
    state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    model.load_state_dict(read_safetensors(path / "model.safetensors"))
    ema.shadow = read_safetensors(path / "ema.safetensors")
    ema.updates = int(state["ema_updates"])
    tensors = read_safetensors(path / "optimizer.safetensors")
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        opt_state.setdefault(int(pid), {})[name] = value
    for pid, other in state["optimizer"]["state_other"].items():
        opt_state.setdefault(int(pid), {}).update(other)
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["optimizer"]["param_groups"]})
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    rng = read_safetensors(path / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    name, pos, has_gauss, cached = state["rng"]["numpy"]
    np.random.set_state((name, rng["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["rng"]["python"]
    random.setstate((version, tuple(internal), gauss))
    return int(state["step"]), [float(v) for v in state["losses"]]


# -- the loop -------------------------------------------------------------------------------------------------
def build_model(manifest: Manifest, config: TrainConfig, image_channels: int = 1) -> ConditionalUNet:
    """A fresh :class:`ConditionalUNet` of ``config.profile`` for ``manifest``, conditioned on ``config.conditions``
    (default: every condition of its schema) and, with ``mask_conditioning``, on the lesion mask."""
    names = list(manifest.schema.conditions) if config.conditions is None else list(config.conditions)
    spec = encoder_spec_from_manifest(manifest, names, embed_dim=unet_profile(config.profile).embed_dim,
                                      mask=config.mask_conditioning)
    return create_conditional_unet(config.profile, spec, image_channels)


def diffusion_loss(model: ConditionalUNet, noise_scheduler: DDPMScheduler, data: TrainingData, rows: np.ndarray,
                   config: TrainConfig, generator: torch.Generator, device: torch.device, *,
                   memory_format: torch.memory_format = MEMORY_FORMAT) -> torch.Tensor:
    """The denoising MSE of the batch ``rows``: images scaled to [-1, 1] are noised at random timesteps and the
    model, with conditions dropped at random (classifier-free guidance), predicts the noise or the velocity.

    Every random draw (noise, timesteps, drops) comes from ``generator``, in that order; bf16 autocast on CUDA.
    The images, noise and masks are laid out in ``memory_format`` (the same values in either layout).
    """
    index = torch.from_numpy(rows)
    x0 = data.images[index].float().div(127.5).sub(1.0).contiguous(memory_format=memory_format)
    n = x0.shape[0]
    noise = torch.randn(x0.shape, generator=generator).contiguous(memory_format=memory_format)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (n,), generator=generator)
    drop = config.dropout.sample(n, model.encoder.categorical_names, generator, device)
    x0, noise, timesteps = x0.to(device), noise.to(device), timesteps.to(device)
    noisy = noise_scheduler.add_noise(x0, noise, timesteps)
    target = noise if config.prediction_type == "epsilon" else noise_scheduler.get_velocity(x0, noise, timesteps)
    mask = None if data.masks is None else data.masks[index].float().to(device).contiguous(
        memory_format=memory_format)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    with autocast:
        prediction = model(noisy, timesteps, data.conditions.index(index).to(device), mask, drop)
    return F.mse_loss(prediction.float(), target)


def train_diffusion(manifest: Manifest, out_dir: str | os.PathLike[str], config: TrainConfig, *,
                    root: str | os.PathLike[str] | None = None, cache: ImageCache | None = None,
                    resume: str | os.PathLike[str] | None = None, device: str | torch.device | None = None,
                    progress: bool = True, memory_format: torch.memory_format = MEMORY_FORMAT) -> TrainResult:
    """Train (or, with ``resume``, continue) a conditional diffusion model; checkpoints go to ``out_dir``.

    The UNet and its batches are in ``memory_format`` (channels-last by default; see the module notes).
    """
    out_dir = Path(out_dir)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    mode = cache.preprocessing.mode if cache is not None else "L"
    seed_everything(config.seed)
    model = build_model(manifest, config, image_channels=3 if mode == "RGB" else 1).to(device,
                                                                                       memory_format=memory_format)
    data = load_training_data(manifest, model, root=root, cache=cache, image_size=config.image_size, crop=config.crop,
                              roi_margin=config.roi_margin)
    data_sha256 = training_data_sha256(data)
    noise_scheduler = make_noise_scheduler(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config.warmup_steps, config.max_steps))
    ema = EMA(model, config.ema_decay)
    code_sha256 = code_digest(CODE_MODULES)
    start, losses = 0, []
    if resume is not None:
        checkpoint = resolve_checkpoint(out_dir, resume)
        saved = TrainConfig.from_dict(read_checkpoint_config(checkpoint)["train"])
        if saved.training_settings() != config.training_settings():
            raise ValueError(f"{checkpoint}: trained with another configuration; resume needs the same one.\n"
                             f"saved: {saved}\ngiven: {config}")
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        if state.get("data_sha256") is not None and state["data_sha256"] != data_sha256:
            raise ValueError(f"{checkpoint}: trained on other data (other images, masks or conditions); resume "
                             "needs the same training set: delete the checkpoints (diffusion.resume: false) to "
                             "train afresh")
        if state.get("code_sha256") != code_sha256:
            aside = set_aside(out_dir)
            logger.warning("%s was written by other diffusion training code (%s): training afresh; the old files "
                           "are moved to %s", checkpoint, ", ".join(CODE_MODULES), aside)
        else:
            start, losses = _restore(checkpoint, model, ema, optimizer, lr_scheduler)
            ema.shadow = {k: v.to(device) for k, v in ema.shadow.items()}
    last_checkpoint = resolve_checkpoint(out_dir, "latest") if start else out_dir
    n = len(data.images)
    model.train()
    # at most ~200 redraws: in a notebook every redraw is kept in the saved output (a large maxinterval
    # keeps tqdm's monitor thread from resetting miniters to 1 when steps are slow)
    bar = progress_bar(range(start, config.max_steps), initial=start, total=config.max_steps, desc="diffusion",
                       unit="step", disable=not progress, miniters=max(1, config.max_steps // 200), mininterval=1.0,
                       maxinterval=3600.0)
    began, images_seen = time.perf_counter(), 0
    last_saved = time.monotonic()
    for step in bar:
        rows = batch_indices(n, config.batch_size, config.seed, step)
        generator = torch.Generator().manual_seed(derive_seed(config.seed, "step", step))
        loss = diffusion_loss(model, noise_scheduler, data, rows, config, generator, device,
                              memory_format=memory_format)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        lr_scheduler.step()
        ema.update(model)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"diffusion loss is {value} at step {step + 1}")
        losses.append(value)
        images_seen += len(rows)
        rate = images_seen / max(time.perf_counter() - began, 1e-9)
        bar.set_postfix(loss=f"{value:.4f}", img_s=f"{rate:.1f}", refresh=False)
        done = step + 1
        due = done % config.checkpoint_every == 0 or done == config.max_steps
        if not due and config.checkpoint_minutes > 0:
            due = time.monotonic() - last_saved >= config.checkpoint_minutes * 60.0
        if due:
            last_checkpoint = save_checkpoint(out_dir, step=done, model=model, ema=ema, optimizer=optimizer,
                                              lr_scheduler=lr_scheduler, noise_scheduler=noise_scheduler,
                                              config=config, losses=losses, data_sha256=data_sha256,
                                              code_sha256=code_sha256, memory_format=memory_format)
            last_saved = time.monotonic()
    elapsed = time.perf_counter() - began
    return TrainResult(losses=losses, checkpoint=last_checkpoint, steps=len(losses),
                       images_per_second=images_seen / elapsed if images_seen else 0.0, resumed_from=start,
                       memory_format=layout_name(memory_format))
