"""The torch Dataset over a manifest: from the preprocessing cache, or decoded from disk.

Both paths use :func:`diffkd_study.data.cache.load_source`, so an image read through the cache and the
same image decoded from disk are the same array, bit for bit.

A sample is a dict (the MONAI / torchvision-v2 convention, so one transform can move image and mask
together)::

    {"image": float32 C x H x W in [0, 1] (a tv_tensors.Image),
     "label": int (position of the label in the schema's label_set),
     "mask": float32 1 x H x W in {0, 1} (a tv_tensors.Mask; only for rows that have a mask),
     "image_id": str,
     "index": int (position in this dataset; ``dataset.df.iloc[index]`` is its manifest row)}

Because image and mask are ``tv_tensors``, a torchvision v2 transform given as ``transform`` (it is
called on the whole dict) flips, crops and rotates the mask with the image and leaves the rest alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from diffkd_study.data.cache import (
    ImageCache,
    Preprocessing,
    check_inside_root,
    load_source,
    outside_root_allowed,
    pixel_sources,
)
from diffkd_study.data.schema import SPLITS, Manifest


def _image_tensor(array: np.ndarray) -> tv_tensors.Image:
    tensor = torch.from_numpy(array)
    tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return tv_tensors.Image(tensor.float().div_(255.0))


def _mask_tensor(array: np.ndarray) -> tv_tensors.Mask:
    return tv_tensors.Mask(torch.from_numpy(array > 0)[None].float())


class ManifestDataset(Dataset):
    """Rows of ``manifest`` (optionally one ``split``) as samples (see the module docstring).

    With ``cache`` the pixels come from the cache and its preprocessing applies; ``size``, ``mode`` and
    ``resize_mode``, when given, must then agree with it. Without a cache, images are decoded from
    ``root`` and preprocessed on the fly, and ``size`` is required; a row naming a file outside ``root`` is then
    refused unless ``allow_outside_root`` (a cache was checked when it was built).
    """

    def __init__(
        self,
        manifest: Manifest,
        root: str | os.PathLike[str] | None = None,
        *,
        cache: ImageCache | None = None,
        split: str | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        size: int | tuple[int, int] | None = None,
        mode: str | None = None,
        resize_mode: str | None = None,
        roi_margin: float | None = None,
        allow_outside_root: bool | None = None,
    ) -> None:
        self.manifest = manifest
        self.cache = cache
        self.root = None if root is None else Path(root)
        self.transform = transform
        self.split = split
        self.preprocessing = self._preprocessing(size, mode, resize_mode, roi_margin)

        df = manifest.df
        keep = np.ones(len(df), dtype=bool)
        if split is not None:
            if split not in SPLITS:
                raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
            if "split" not in df.columns:
                raise ValueError("split given but the manifest has no split column; split the manifest first")
            keep = (df["split"] == split).to_numpy()
        sources = [s for s, k in zip(pixel_sources(manifest), keep, strict=True) if k]
        self.df = df[keep]
        self.label_map: dict[str, int] = {label: i for i, label in enumerate(manifest.schema.label_set)}
        unknown = [i for i, label in enumerate(self.df["label"]) if label not in self.label_map]
        if unknown:
            raise ValueError(
                f"{sources[unknown[0]].where}: label {self.df['label'].iloc[unknown[0]]!r} is not in the label set "
                f"{list(self.label_map)}" + (f" ({len(unknown)} such rows)" if len(unknown) > 1 else "")
            )
        self.labels = self.df["label"].map(self.label_map).to_numpy(dtype=np.int64)
        if cache is None and not outside_root_allowed(allow_outside_root):
            assert self.root is not None  # _preprocessing requires a root when there is no cache
            check_inside_root(sources, self.root)
        self.image_ids = [s.image_id for s in sources]
        self._sources = sources
        self._positions = cache.positions(sources) if cache is not None else None

    def _preprocessing(self, size: Any, mode: str | None, resize_mode: str | None,
                       roi_margin: float | None) -> Preprocessing:
        if self.cache is not None:
            prep = self.cache.preprocessing
            wanted = {"size": None if size is None else Preprocessing.make(size).size,
                      "mode": mode, "resize_mode": resize_mode, "roi_margin": roi_margin}
            conflicts = {k: (v, getattr(prep, k)) for k, v in wanted.items() if v is not None and v != getattr(prep, k)}
            if conflicts:
                raise ValueError(
                    "the cache was built with other preprocessing: "
                    + ", ".join(f"{k}={v[0]!r} asked, cache has {v[1]!r}" for k, v in conflicts.items())
                )
            return prep
        if self.root is None or size is None:
            raise ValueError("without a cache, ManifestDataset needs root (the data folder) and size")
        return Preprocessing.make(size, mode or "L", resize_mode or "stretch",
                                  Preprocessing.roi_margin if roi_margin is None else roi_margin)

    @property
    def classes(self) -> list[str]:
        """The labels in class-index order (the schema's ``label_set``)."""
        return list(self.label_map)

    def __len__(self) -> int:
        return len(self._sources)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)}")
        index = index % len(self)
        if self.cache is not None and self._positions is not None:
            position = int(self._positions[index])
            image = np.array(self.cache.images[position])  # a copy: the memmap is read-only
            has_mask = self.cache.masks is not None and bool(self.cache.has_mask[position])
            mask = np.array(self.cache.masks[position]) if has_mask else None  # type: ignore[index]
        else:
            assert self.root is not None
            image, mask = load_source(self._sources[index], self.root, self.preprocessing)
        sample: dict[str, Any] = {
            "image": _image_tensor(image),
            "label": int(self.labels[index]),
            "image_id": self.image_ids[index],
            "index": index,
        }
        if mask is not None:
            sample["mask"] = _mask_tensor(mask)
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        source = f"cache={self.cache.path}" if self.cache is not None else f"root={self.root}"
        return (f"ManifestDataset(n={len(self)}, split={self.split!r}, classes={self.classes}, {source}, "
                f"{self.preprocessing})")
