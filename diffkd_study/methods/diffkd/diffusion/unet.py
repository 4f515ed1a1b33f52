"""Conditional UNet: ``diffusers.UNet2DModel`` plus the :class:`ConditionEncoder`, trained together.

The encoder's vector goes in as ``class_labels`` of a ``UNet2DModel(class_embed_type="identity")``, which
adds it to the time embedding (its width is ``4 * block_out_channels[0]``, so the encoder's
``embed_dim`` is set to that).

Optional spatial condition: with ``mask_conditioning`` the lesion mask is one extra input channel
concatenated to the noisy image (lesion ``+1``, background ``-1``, dropped or absent ``0``); the UNet
predicts only the image channel(s).

Profiles (architecture only; training settings are in :mod:`diffkd_study.methods.diffkd.diffusion.train`):

- ``smoke``: 32 px, channels (16, 32), one ResNet per level, no attention: for tests.
- ``demo``: 64 px, channels (16, 32, 64, 128), attention at the 8 px level (2.7 M parameters): a
  training step of 16 images takes about 0.25 s on 2 CPU cores (0.4 s on one), so a few hundred
  steps fit in the phantom demo and some ten thousand in a few CPU hours on real data. (A (32, 64,
  128) design with attention at 16 px, of the same size, was 3.5x slower per step, the cost being the
  convolutions at full resolution.)
- ``full``: 128 px, channels (64, 128, 256, 256), two ResNets per level, attention at 16 and 8 px: a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from diffusers import UNet2DModel
from torch import nn

from diffkd_study.methods.diffkd.diffusion.conditioning import (
    ConditionBatch,
    ConditionDrop,
    ConditionEncoder,
    EncoderSpec,
)


@dataclass(frozen=True)
class UNetProfile:
    """A UNet architecture: image size, channels and block types per level, ResNets per level, norm groups."""

    image_size: int
    block_out_channels: tuple[int, ...]
    down_block_types: tuple[str, ...]
    up_block_types: tuple[str, ...]
    layers_per_block: int = 1
    norm_num_groups: int = 8

    @property
    def embed_dim(self) -> int:
        """Width of the time (and condition) embedding: ``4 * block_out_channels[0]``."""
        return 4 * self.block_out_channels[0]

    def to_dict(self) -> dict[str, Any]:
        """The profile as JSON-ready data (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UNetProfile:
        """The profile from :meth:`to_dict` data."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


UNET_PROFILES: dict[str, UNetProfile] = {
    "smoke": UNetProfile(32, (16, 32), ("DownBlock2D", "DownBlock2D"), ("UpBlock2D", "UpBlock2D"), 1, 8),
    "demo": UNetProfile(64, (16, 32, 64, 128), ("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                        ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"), 1, 8),
    "full": UNetProfile(128, (64, 128, 256, 256), ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                        ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), 2, 32),
}


def unet_profile(name: str) -> UNetProfile:
    """The named architecture profile (``smoke``, ``demo``, ``full``); ``KeyError`` for another name."""
    if name not in UNET_PROFILES:
        raise KeyError(f"unknown UNet profile {name!r}; known: {sorted(UNET_PROFILES)}")
    return UNET_PROFILES[name]


class ConditionalUNet(nn.Module):
    """``forward(noisy, timesteps, conditions, mask=None, drop=None)`` -> prediction for the image channels."""

    def __init__(self, profile: UNetProfile, encoder: ConditionEncoder, image_channels: int = 1) -> None:
        super().__init__()
        if encoder.embed_dim != profile.embed_dim:
            raise ValueError(f"encoder embed_dim {encoder.embed_dim} != UNet time-embedding width {profile.embed_dim}")
        self.profile = profile
        self.image_channels = image_channels
        self.mask_conditioning = encoder.spec.mask
        self.encoder = encoder
        self.unet = UNet2DModel(
            sample_size=profile.image_size,
            in_channels=image_channels + int(self.mask_conditioning),
            out_channels=image_channels,
            block_out_channels=profile.block_out_channels,
            down_block_types=profile.down_block_types,
            up_block_types=profile.up_block_types,
            layers_per_block=profile.layers_per_block,
            norm_num_groups=profile.norm_num_groups,
            class_embed_type="identity",
        )

    def config(self) -> dict[str, Any]:
        """Profile, image channels and encoder spec as JSON-ready data (:meth:`from_config` rebuilds the module)."""
        return {"profile": self.profile.to_dict(), "image_channels": self.image_channels,
                "encoder": self.encoder.config()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ConditionalUNet:
        """A network (freshly initialised) for a :meth:`config` record."""
        return cls(UNetProfile.from_dict(config["profile"]), ConditionEncoder(EncoderSpec.from_dict(config["encoder"])),
                   int(config["image_channels"]))

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, conditions: ConditionBatch,
                mask: torch.Tensor | None = None, drop: ConditionDrop | None = None) -> torch.Tensor:
        """The UNet's prediction (noise or velocity) for the image channels of ``noisy`` at ``timesteps``.

        ``conditions`` are embedded (``drop`` nulls parts of them) and added to the time embedding; with mask
        conditioning, ``mask`` (N, 1, H, W) in {0, 1} is the extra input channel.
        """
        n = noisy.shape[0]
        if drop is None:
            drop = ConditionDrop.none(n, len(self.encoder.categorical_names), noisy.device)
        if self.mask_conditioning:
            if mask is None:
                mask_channel = torch.zeros_like(noisy[:, :1])
            else:
                keep = (~drop.mask & conditions.has_mask).to(noisy.dtype)[:, None, None, None]
                mask_channel = (mask * 2 - 1) * keep  # {0, 1} -> {-1, +1}; dropped -> 0
            noisy = torch.cat([noisy, mask_channel], dim=1)
        embedding = self.encoder(conditions, drop)
        return self.unet(noisy, timesteps, class_labels=embedding).sample


def create_conditional_unet(profile: str | UNetProfile, encoder_spec: EncoderSpec,
                            image_channels: int = 1) -> ConditionalUNet:
    """A :class:`ConditionalUNet`; ``encoder_spec.embed_dim`` is set to the profile's time-embedding width."""
    profile = unet_profile(profile) if isinstance(profile, str) else profile
    spec = EncoderSpec(label_set=encoder_spec.label_set, categorical=encoder_spec.categorical,
                       numeric=encoder_spec.numeric, embed_dim=profile.embed_dim, mask=encoder_spec.mask)
    return ConditionalUNet(profile, ConditionEncoder(spec), image_channels)
