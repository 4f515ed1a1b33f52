"""Batch augmentation on tensors, seeded by a ``torch.Generator`` (so a resumed run repeats it exactly).

Works on a float batch in [0, 1] of shape ``(B, C, H, W)`` and moves an optional mask ``(B, 1, H, W)``
with it (geometry only; nearest-neighbour). Every random draw comes from the generator passed in, one
value (or one field) per image, in a fixed order.

Presets (our choices; DiffKD-DCIS does not publish its augmentation):

``ultrasound`` (B-mode): horizontal flip (p 0.5; never vertical: depth runs down the image and
posterior shadowing/enhancement must stay below the lesion); small affine (rotation +-10 deg, scale
0.9-1.1, shift +-5%, black outside the field of view, as outside a scan sector); gain (global
multiplicative factor ``exp(N(0, 0.15))``, as a TGC/gain knob) and contrast (gamma, log-uniform in
[0.8, 1.25], as a dynamic-range setting); speckle jitter (multiplicative ``1 + s * n`` with ``n`` a
Gaussian field blurred to the grain of speckle, ``s ~ U(0, 0.15)`` per image).

``dermoscopy``: flips on both axes (p 0.5 / 0.2); with p 0.25 one affine of rotation +-120 deg and
zoom 1-2x (the official imgaug pipeline draws rotation and zoom as two separate p 0.25 events);
Gaussian blur (sigma <= 1.5) with p 0.25; brightness shift +-15/255 and saturation jitter +-10% with
p 0.25. This is the official SSD-KD pipeline (docs/methods/ssdkd.md §3.4) in tensor form, without its
coarse dropout.

``none``: identity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffkd_study.training.presets import AUGMENTATION_PRESETS

__all__ = ["AUGMENTATIONS", "Augmentation", "augmentation"]


@dataclass(frozen=True)
class Augmentation:
    """A batch augmentation preset (see the module docstring): probabilities and ranges of flips, affine,
    gain, gamma, speckle, blur and colour jitter; calling it augments a batch (and its masks).
    """

    hflip: float = 0.0
    vflip: float = 0.0
    affine_p: float = 0.0
    rotate_deg: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    shift: float = 0.0
    gain_sd: float = 0.0
    gamma: tuple[float, float] = (1.0, 1.0)
    speckle: float = 0.0
    blur_p: float = 0.0
    blur_sigma: float = 0.0
    color_p: float = 0.0
    brightness: float = 0.0
    saturation: float = 0.0

    def __call__(self, images: torch.Tensor, masks: torch.Tensor | None = None, *,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        if images.ndim != 4:
            raise ValueError(f"augmentation expects a (B, C, H, W) batch, got {tuple(images.shape)}")
        b = images.shape[0]

        def uniform(low: float = 0.0, high: float = 1.0) -> torch.Tensor:
            return torch.rand(b, generator=generator).mul_(high - low).add_(low).to(images.device)

        x = images
        if self.hflip > 0:
            flip = uniform() < self.hflip
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            masks = None if masks is None else torch.where(flip[:, None, None, None], masks.flip(-1), masks)
        if self.vflip > 0:
            flip = uniform() < self.vflip
            x = torch.where(flip[:, None, None, None], x.flip(-2), x)
            masks = None if masks is None else torch.where(flip[:, None, None, None], masks.flip(-2), masks)
        if self.affine_p > 0:
            apply = uniform() < self.affine_p
            angle = uniform(-self.rotate_deg, self.rotate_deg) * math.pi / 180 * apply
            log_scale = uniform(math.log(self.scale[0]), math.log(self.scale[1])) * apply
            shift = torch.stack([uniform(-self.shift, self.shift), uniform(-self.shift, self.shift)], 1) * 2 * apply[:, None]
            # affine_grid maps output to input coordinates: zoom in by s = sample a 1/s-sized window
            inv = torch.exp(-log_scale)
            cos, sin = torch.cos(angle) * inv, torch.sin(angle) * inv
            theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
            grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            if masks is not None:
                masks = F.grid_sample(masks.to(x.dtype), grid, mode="nearest", padding_mode="zeros",
                                      align_corners=False).to(masks.dtype)
        if self.gain_sd > 0:
            gain = torch.exp(torch.randn(b, generator=generator).to(x.device) * self.gain_sd)
            x = x * gain[:, None, None, None]
        if self.gamma != (1.0, 1.0):
            gamma = torch.exp(uniform(math.log(self.gamma[0]), math.log(self.gamma[1])))
            x = x.clamp(0, 1).pow(gamma[:, None, None, None])
        if self.speckle > 0:
            strength = uniform(0.0, self.speckle)
            field = torch.randn(x.shape[0], 1, *x.shape[-2:], generator=generator).to(x.device)
            field = _gaussian_blur(field, 0.8)
            field = field / field.flatten(1).std(1).clamp_min(1e-6)[:, None, None, None]
            x = x * (1 + strength[:, None, None, None] * field)
        if self.blur_p > 0 and self.blur_sigma > 0:
            apply = uniform() < self.blur_p
            sigma = uniform(0.0, self.blur_sigma)
            blurred = torch.stack([_gaussian_blur(img[None], float(s))[0] if a and s > 0.05 else img
                                   for img, s, a in zip(x, sigma.tolist(), apply.tolist(), strict=True)])
            x = blurred
        if self.color_p > 0:
            apply = (uniform() < self.color_p).to(x.dtype)[:, None, None, None]
            shift = uniform(-self.brightness, self.brightness)[:, None, None, None]
            x = x + apply * shift
            if self.saturation > 0 and x.shape[1] == 3:
                gray = x.mean(1, keepdim=True)
                factor = 1 + apply * uniform(-self.saturation, self.saturation)[:, None, None, None]
                x = gray + (x - gray) * factor
        return x.clamp(0, 1), masks


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    coords = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


#: the presets of :data:`diffkd_study.training.presets.AUGMENTATION_PRESETS`, as augmentations
AUGMENTATIONS: dict[str, Augmentation] = {name: Augmentation(**kwargs) for name, kwargs in AUGMENTATION_PRESETS.items()}


def augmentation(name: str) -> Augmentation:
    """The preset ``name`` of :data:`AUGMENTATIONS`; ``ValueError`` naming the known ones."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; known: {sorted(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]
