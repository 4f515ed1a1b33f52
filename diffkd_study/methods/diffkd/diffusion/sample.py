"""Sample synthetic images from a trained conditional diffusion model, with classifier-free guidance.

Samplers (diffusers schedulers built from the training noise schedule): ``ddpm`` (ancestral, usually all
``num_train_timesteps`` steps), ``ddim`` (``eta=0``, deterministic) and ``dpmsolver++``
(``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)``).

Guidance: ``out = out_uncond + s * (out_cond - out_uncond)`` on the model output (epsilon or v; the
combination is linear in both), where the unconditional pass nulls every condition: label, categorical,
numeric group and mask. ``s = 1`` is the plain conditional model (one pass), ``s = 0`` the
unconditional one.

Memory layout: the model and the latents are channels-last (NHWC, :data:`diffkd_study.layout.MEMORY_FORMAT`, as in training):
the sampling forward pass of the ``demo`` UNet (64 px, batch 32, one CPU thread) ran at 99.9 vs 86.7
images/s contiguous (1.15x, ``benchmarks/training_throughput.py``); the images equal the contiguous ones
up to float rounding (a pixel may differ by one grey level).

Randomness: batch ``b`` draws its initial noise (and, for ``ddpm``, its step noise) from a generator
seeded with ``derive_seed(seed, "batch", b)``: the same seed and batch size give the same images.

Conditions (:func:`draw_conditions`): whole rows of the training split are resampled with replacement,
so the synthetic set follows the empirical joint distribution of label, conditions and (for
mask-conditioned models) lesion masks; ``per_class`` fixes the number per label (e.g. to balance
classes), ``n`` draws from all rows; or a user table is given instead.

:func:`generate_synthetic` writes ``images/*.png`` (uint8), ``masks/*.png`` (the conditioning mask, 0/255,
for mask-conditioned models) and ``synthetic.csv`` + sidecar in the standard manifest schema, atomically.
The sidecar is the training manifest's schema (every declared condition; those the model does not use are
left empty in the rows, since the image was not generated from them). Extra columns: ``synthetic=1``,
``split=train``, ``source_image_id`` and ``source_center`` (the training row whose conditions and mask
were used), ``sampler``, ``steps``, ``guidance``, ``seed``, ``checkpoint_sha256``. ``center`` is
``synthetic``; ``dataset`` is the source row's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from PIL import Image

from diffkd_study.data.cache import ImageCache, PixelSource, Preprocessing, load_mask, load_source
from diffkd_study.data.schema import Manifest, ManifestSchema, write_manifest
from diffkd_study.io import atomic_dir, write_json
from diffkd_study.layout import MEMORY_FORMAT
from diffkd_study.methods.diffkd.diffusion.conditioning import ConditionBatch, ConditionDrop
from diffkd_study.methods.diffkd.diffusion.names import DOMAIN_RESIZE_MODES, SAMPLERS
from diffkd_study.methods.diffkd.diffusion.train import checkpoint_sha256, load_model
from diffkd_study.methods.diffkd.diffusion.unet import ConditionalUNet
from diffkd_study.progress import progress_bar
from diffkd_study.repro import derive_seed


def make_sampler(name: str, noise_scheduler_config: Mapping[str, Any], steps: int):
    """A diffusers scheduler for ``name`` on the training noise schedule, with ``steps`` timesteps set."""
    config = {k: v for k, v in noise_scheduler_config.items() if not k.startswith("_")}
    if name == "ddpm":
        # Ancestral DDPM clips each x0 estimate to [-1, 1] (the diffusers default, off in the training
        # schedule): without it 1000 guided steps drift out of range (BUS-BRA checkpoint, guidance 2:
        # KID 0.53 unclipped vs 0.03 clipped at n=16-48, benchmarks/diffusion_sampling.py).
        scheduler = DDPMScheduler.from_config(config, clip_sample=True)
    elif name == "ddim":
        scheduler = DDIMScheduler.from_config(config)
    elif name == "dpmsolver++":
        scheduler = DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    else:
        raise ValueError(f"unknown sampler {name!r}; known: {SAMPLERS}")
    if not 1 <= steps <= config["num_train_timesteps"]:
        raise ValueError(f"steps must be in [1, {config['num_train_timesteps']}], got {steps}")
    scheduler.set_timesteps(steps)
    return scheduler


@torch.no_grad()
def sample_images(model: ConditionalUNet, noise_scheduler_config: Mapping[str, Any], conditions: ConditionBatch,
                  masks: torch.Tensor | None = None, *, image_size: int, sampler: str = "dpmsolver++",
                  steps: int = 20, guidance_scale: float = 2.0, seed: int = 0, batch_size: int = 16,
                  device: str | torch.device = "cpu", progress: bool = True,
                  memory_format: torch.memory_format = MEMORY_FORMAT) -> np.ndarray:
    """uint8 images ``(N, H, W)`` (one channel) or ``(N, H, W, C)`` for the N rows of ``conditions``.

    ``masks``: float {0, 1} ``(N, 1, H, W)`` for mask-conditioned models (rows flagged ``has_mask``). The model
    is moved to ``memory_format`` (in place) and the latents and masks laid out alike.
    """
    device = torch.device(device)
    model = model.to(device, memory_format=memory_format).eval()
    n = len(conditions)
    channels = model.image_channels
    n_categorical = len(model.encoder.categorical_names)
    out = np.zeros((n, image_size, image_size, channels), dtype=np.uint8)
    starts = list(range(0, n, batch_size))
    for b, start in enumerate(progress_bar(starts, desc=f"sampling ({sampler}, {steps} steps)", unit="batch",
                                           disable=not progress)):
        rows = slice(start, min(start + batch_size, n))
        cond = conditions.index(rows).to(device)
        mask = None if masks is None else masks[rows].to(device).contiguous(memory_format=memory_format)
        k = len(cond)
        generator = torch.Generator().manual_seed(derive_seed(seed, "batch", b))
        scheduler = make_sampler(sampler, noise_scheduler_config, steps)
        x = torch.randn((k, channels, image_size, image_size), generator=generator).to(device).contiguous(
            memory_format=memory_format)
        x = x * scheduler.init_noise_sigma
        keep, null = ConditionDrop.none(k, n_categorical, device), ConditionDrop.all(k, n_categorical, device)
        for t in scheduler.timesteps:
            model_in = scheduler.scale_model_input(x, t)
            timesteps = torch.full((k,), int(t), device=device, dtype=torch.long)
            if guidance_scale == 1.0:
                prediction = model(model_in, timesteps, cond, mask, keep)
            elif guidance_scale == 0.0:
                prediction = model(model_in, timesteps, cond, mask, null)
            else:
                both = model(torch.cat([model_in, model_in]), torch.cat([timesteps, timesteps]),
                             _concat(cond, cond), None if mask is None else torch.cat([mask, mask]),
                             _concat_drop(keep, null))
                conditional, unconditional = both.chunk(2)
                prediction = unconditional + guidance_scale * (conditional - unconditional)
            step_kwargs = {"generator": generator} if sampler == "ddpm" else {}
            x = scheduler.step(prediction, t, x, **step_kwargs).prev_sample
        pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out[rows] = pixels
    return out[..., 0] if channels == 1 else out


def _concat(a: ConditionBatch, b: ConditionBatch) -> ConditionBatch:
    return ConditionBatch(**{k: torch.cat([v, getattr(b, k)]) for k, v in a.items()})


def _concat_drop(a: ConditionDrop, b: ConditionDrop) -> ConditionDrop:
    return ConditionDrop(**{k: torch.cat([getattr(a, k), getattr(b, k)]) for k in ("label", "categorical",
                                                                                    "numeric", "mask")})


def draw_conditions(manifest: Manifest, *, n: int | None = None, per_class: Mapping[str, int] | None = None,
                    seed: int = 0, split: str | None = "train") -> pd.DataFrame:
    """Whole rows of the ``split`` rows (with replacement): ``n`` from all, or ``per_class[label]`` per label."""
    df = manifest.df
    if split is not None and "split" in df.columns:
        df = df[df["split"] == split]
    if df.empty:
        raise ValueError(f"no rows with split == {split!r} to draw conditions from")
    rng = np.random.default_rng(derive_seed(seed, "conditions"))
    if (n is None) == (per_class is None):
        raise ValueError("give exactly one of n and per_class")
    if n is not None:
        picked = df.iloc[rng.integers(0, len(df), size=n)]
    else:
        assert per_class is not None
        parts = []
        for label, count in per_class.items():
            pool = df[df["label"] == label]
            if pool.empty and count > 0:
                raise ValueError(f"per_class asks for {count} {label!r} images but the {split} rows have none; "
                                 f"labels present: {sorted(df['label'].unique())}")
            parts.append(pool.iloc[rng.integers(0, len(pool), size=count)])
        picked = pd.concat(parts)
    return picked.reset_index(drop=True)


def _load_masks(rows: pd.DataFrame, root: str | os.PathLike[str] | None, cache: ImageCache | None,
                size: int, *, crop: str = "none", roi_margin: float = 0.25) -> tuple[torch.Tensor, np.ndarray]:
    """Masks of the rows (``mask_path`` under ``root``, or the cache's mask of ``image_id``), {0, 1}: the whole
    frame's (``crop: none``), or cut from the row's lesion-centred square as the model was trained (``crop: lesion``,
    which needs ``root`` and the row's ``image_path``)."""
    masks = torch.zeros(len(rows), 1, size, size)
    has_mask = np.zeros(len(rows), dtype=bool)
    if "mask_path" not in rows.columns:
        return masks, has_mask
    prep = Preprocessing.make(size, resize_mode=DOMAIN_RESIZE_MODES[crop], roi_margin=roi_margin)
    loaded: dict[str, np.ndarray] = {}
    for i, (image_id, mask_path) in enumerate(zip(rows["image_id"], rows["mask_path"], strict=True)):
        if not isinstance(mask_path, str) or not mask_path:
            continue
        if mask_path not in loaded:
            if crop != "none":
                if root is None:
                    raise ValueError(f"{image_id}: a lesion-crop mask needs root (the data folder)")
                source = PixelSource(str(image_id), str(rows["image_path"].iloc[i]), mask_path, f"row {i} [{image_id}]")
                loaded[mask_path] = load_source(source, Path(root), prep)[1]
            elif root is not None:
                loaded[mask_path] = load_mask(Path(root) / mask_path, prep)
            elif cache is not None and cache.masks is not None and image_id in cache:
                if cache.preprocessing.size != prep.size:
                    raise ValueError(f"the cache holds {cache.preprocessing.size} masks, the model needs {prep.size}")
                loaded[mask_path] = np.array(cache.masks[cache.index_of(image_id)])
            else:
                raise ValueError(f"{image_id}: mask {mask_path!r} needs root (the data folder) or a cache holding it")
        masks[i, 0] = torch.from_numpy(loaded[mask_path] > 0).float()
        has_mask[i] = True
    return masks, has_mask


def generate_synthetic(checkpoint: str | os.PathLike[str], train_manifest: Manifest, out_dir: str | os.PathLike[str],
                       *, root: str | os.PathLike[str] | None = None, cache: ImageCache | None = None,
                       n: int | None = None, per_class: Mapping[str, int] | None = None,
                       table: pd.DataFrame | None = None, sampler: str = "dpmsolver++", steps: int = 20,
                       guidance_scale: float = 2.0, seed: int = 0, batch_size: int = 16,
                       device: str | torch.device = "cpu", progress: bool = True,
                       record: Mapping[str, Any] | None = None) -> Manifest:
    """Sample a synthetic set and write it as a manifest folder ``out_dir`` (see the module docstring).

    Conditions come from ``table`` (a DataFrame with ``label``, the model's ``cond_*`` columns and, for
    mask-conditioned models, ``mask_path`` relative to ``root``) or are drawn from ``train_manifest``.
    ``record``, when given, is written as ``generation.json`` inside the same atomic folder.
    """
    model, config = load_model(checkpoint)
    image_size = int(config["train"]["image_size"])
    domain = config["train"].get("crop", "none")  # checkpoints from before the lesion-crop domain: whole frames
    rows = table.reset_index(drop=True) if table is not None else draw_conditions(
        train_manifest, n=n, per_class=per_class, seed=seed)
    if "image_id" not in rows.columns:
        rows = rows.assign(image_id=[f"row{i}" for i in range(len(rows))])
    if model.mask_conditioning:
        masks, has_mask = _load_masks(rows, root, cache, image_size, crop=domain,
                                      roi_margin=config["train"].get("roi_margin", 0.25))
    else:
        masks, has_mask = None, np.zeros(len(rows), dtype=bool)
    conditions = model.encoder.encode_rows(rows, has_mask=has_mask)
    images = sample_images(model, config["noise_scheduler"], conditions, masks, image_size=image_size,
                           sampler=sampler, steps=steps, guidance_scale=guidance_scale, seed=seed,
                           batch_size=batch_size, device=device, progress=progress)
    digest = checkpoint_sha256(checkpoint)
    schema = train_manifest.schema
    used = model.encoder.categorical_names + model.encoder.numeric_names
    unused = [c for c in schema.conditions if c not in used]
    out_dir = Path(out_dir)
    records = []
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        if masks is not None:
            (tmp / "masks").mkdir()
        for i, row in rows.iterrows():
            image_id = f"syn_{i:05d}"
            Image.fromarray(images[i]).save(tmp / "images" / f"{image_id}.png")
            entry = {"image_id": image_id, "patient_id": image_id,
                     "dataset": row["dataset"] if isinstance(row.get("dataset"), str) else schema.dataset,
                     "center": "synthetic", "image_path": f"images/{image_id}.png",
                     "mask_path": np.nan, "label": row["label"], **{c: row[c] for c in used},
                     **{c: np.nan for c in unused},
                     "split": "train", "synthetic": "1", "source_image_id": row["image_id"],
                     "source_center": row["center"] if isinstance(row.get("center"), str) else np.nan,
                     "sampler": sampler, "steps": str(steps), "guidance": str(guidance_scale), "seed": str(seed),
                     "synthetic_crop": domain,
                     "checkpoint_sha256": digest}
            if masks is not None and has_mask[i]:
                mask = (masks[i, 0].numpy() > 0.5).astype(np.uint8) * 255
                Image.fromarray(mask).save(tmp / "masks" / f"{image_id}.png")
                entry["mask_path"] = f"masks/{image_id}.png"
            records.append(entry)
        synthetic_schema = ManifestSchema(
            dataset=schema.dataset, label_set=schema.label_set, task=schema.task,
            positive_class=schema.positive_class, conditions=dict(schema.conditions),
            source=f"synthetic: {sampler} {steps} steps, guidance {guidance_scale}, seed {seed}, "
                   f"checkpoint sha256 {digest}")
        manifest = Manifest(pd.DataFrame(records), synthetic_schema)
        write_manifest(manifest, tmp / "synthetic.csv")
        if record is not None:
            write_json(tmp / "generation.json", dict(record))
    manifest.path = out_dir / "synthetic.csv"
    return manifest
