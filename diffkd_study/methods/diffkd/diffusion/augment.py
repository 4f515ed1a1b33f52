"""Real + synthetic mixing inputs: the augmentation manifest (synthetic minus flagged near-copies) and the
classic-augmentation baseline of the synthetic-quality stage.

Classic augmentation (the "simple baseline" that a generative model has to beat): each image is a
randomly chosen real training image with, drawn independently per image from a seeded generator, a
horizontal flip (p = 0.5), a rotation of U(-10, 10) degrees, a scale of U(0.9, 1.1), a translation of
U(-5%, 5%) of the side in x and y (bilinear, border filled with 0 = black, as the ultrasound fan's
surroundings), then a brightness factor and a contrast factor of U(0.9, 1.1) each
(``torchvision.transforms.v2.functional``). These are the usual mild augmentations of ultrasound
classifiers; they are our choice (the paper names none).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from diffkd_study.data.schema import Manifest, write_manifest
from diffkd_study.repro import derive_seed

AUGMENTATION_FILE = "augmentation.csv"


@dataclass(frozen=True)
class AugmentParams:
    """The parameters of one classic augmentation: flip, rotation (degrees), scale, translation (pixels),
    brightness, contrast."""

    flip: bool = False
    angle: float = 0.0  # degrees
    scale: float = 1.0
    translate: tuple[int, int] = (0, 0)  # pixels (x, y)
    brightness: float = 1.0
    contrast: float = 1.0


def draw_params(rng: np.random.Generator, size: int) -> AugmentParams:
    """Draw one image's :class:`AugmentParams` from ``rng`` for images of side ``size`` (the ranges of the
    module docstring)."""
    shift = 0.05 * size
    return AugmentParams(flip=bool(rng.random() < 0.5), angle=float(rng.uniform(-10, 10)),
                         scale=float(rng.uniform(0.9, 1.1)),
                         translate=(int(round(rng.uniform(-shift, shift))), int(round(rng.uniform(-shift, shift)))),
                         brightness=float(rng.uniform(0.9, 1.1)), contrast=float(rng.uniform(0.9, 1.1)))


def augment_image(image: np.ndarray, params: AugmentParams) -> np.ndarray:
    """One uint8 image ``(H, W)`` or ``(H, W, C)`` with ``params`` applied (identity params: unchanged)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image))
    tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    if params.flip:
        tensor = TF.horizontal_flip(tensor)
    if params.angle or params.scale != 1.0 or params.translate != (0, 0):
        tensor = TF.affine(tensor, angle=params.angle, translate=list(params.translate), scale=params.scale,
                           shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR, fill=0)
    if params.brightness != 1.0:
        tensor = TF.adjust_brightness(tensor, params.brightness)
    if params.contrast != 1.0:
        tensor = TF.adjust_contrast(tensor, params.contrast)
    out = tensor.numpy()
    return out[0] if image.ndim == 2 else out.transpose(1, 2, 0)


def classic_augmentation(images: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` augmented copies of randomly chosen ``images`` (uint8, ``(N, H, W[, C])``) and their source rows."""
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) == 0:
        raise ValueError(f"images must be a non-empty uint8 (N, H, W[, C]) array, got {images.dtype} {images.shape}")
    rng = np.random.default_rng(derive_seed(seed, "classic-augmentation"))
    sources = rng.integers(0, len(images), size=n)
    out = np.stack([augment_image(images[i], draw_params(rng, images.shape[1])) for i in sources]) if n else \
        np.zeros((0, *images.shape[1:]), dtype=np.uint8)
    return out, sources


def write_augmentation_manifest(synthetic: Manifest, flagged_ids: set[str] | list[str],
                                synthetic_dir: str | os.PathLike[str], *, exclude_flagged: bool = True) -> Manifest:
    """``augmentation.csv`` (+ sidecar) in ``synthetic_dir``: the synthetic rows, flagged ones left out.

    The paths stay relative to ``synthetic_dir`` (the file sits next to ``synthetic.csv``).
    """
    unknown = set(flagged_ids) - set(synthetic.df["image_id"])
    if unknown:
        raise ValueError(f"flagged image ids {sorted(unknown)[:5]} are not rows of the synthetic manifest")
    df = synthetic.df
    if exclude_flagged:
        df = df[~df["image_id"].isin(set(flagged_ids))]
    manifest = Manifest(df.reset_index(drop=True), synthetic.schema)
    write_manifest(manifest, Path(synthetic_dir) / AUGMENTATION_FILE)
    return manifest


def flagged_summary(flags: pd.Series, labels: pd.Series) -> pd.DataFrame:
    """Synthetic images per label: generated, flagged, kept for augmentation."""
    frame = pd.DataFrame({"label": labels.to_numpy(), "flagged": flags.to_numpy().astype(bool)})
    out = frame.groupby("label").agg(generated=("flagged", "size"), flagged=("flagged", "sum"))
    out["kept"] = out["generated"] - out["flagged"]
    return out.astype(int)
