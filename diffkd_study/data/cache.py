"""Preprocessing cache: every image (and mask) decoded and resized to the training resolution once.

A cache is a folder holding

- ``images.npy``: uint8, ``N x H x W`` (mode ``L``) or ``N x H x W x 3`` (mode ``RGB``);
- ``masks.npy``: uint8 ``N x H x W`` (only when the manifest has masks; rows without one are 0);
- ``index.json``: the image_ids in array order with the image and mask path each was read from, the
  preprocessing parameters, the cache key, the sha256 of the manifest it was built from (a manifest
  that differs only in labels or splits re-uses the cache: the key decides) and the package version.

Arrays are opened memory-mapped (``np.load(mmap_mode="r")``), so a dataset of any size costs no RAM
up front and DataLoader workers share the page cache.

The folder is named by the cache key (its first 32 hex digits): the sha256 of what determines the
pixels, namely the preprocessing parameters and, for every row sorted by ``image_id``, its
``image_id``, ``image_path``, ``mask_path`` and the size and modification time of those files.
Labels, splits and conditions are not part of the key, so re-splitting a study with another seed
re-uses its cache; regenerating an image in place (a phantom cohort with a new seed) changes its
modification time and therefore the key. Arrays are stored in ``image_id`` order, so the row order of
the manifest does not matter either.

Aspect ratio (``resize_mode``): ``stretch`` resizes to the target size regardless of aspect (what most
classification papers do); ``pad`` letterboxes: the image is scaled to fit inside the target size and
centred on a black (0) background, so shapes keep their proportions (the study's ``crop: whole``);
``lesion`` crops the lesion's region of interest first: the square centred on the bounding box of the
row's mask, with sides ``(1 + 2 * roi_margin)`` times the box's longer side, then resizes it (image
bilinear, mask nearest). The window is moved to lie inside the image (:func:`window_inside`); only a
window larger than the image is filled beyond the border, by mirroring the image, never with black: 44%
of the BUS-BRA windows ran past the border, and the amount of black padding was a feature that tracked
the lesion's size and position. ``jittered`` is ``lesion`` with the window perturbed like a rough manual
box (:func:`jittered_window`: centre shift up to ``JITTER_SHIFT`` of the box's longer side per axis, side
scaled log-uniformly within ``JITTER_SCALE``, seeded per image by ``jitter_seed`` and the image_id). A row
without a mask, or with an empty one, keeps the whole image (``stretch``). The crop uses the mask of every
row, test rows included: a ``lesion`` model classifies a lesion someone has outlined, which is how the
ultrasound datasets are annotated; ``jittered`` and ``pad`` need no exact outline.

Resize chain (``via``): with ``via > 0`` every image (after its crop) is resized to ``via x via`` and then
to the target size. The classifier stages set ``via`` to the diffusion resolution, so a real lesion crop
and a synthetic one (generated at ``via`` px) reach the network through the same two resizes: neither set
carries a resolution cue the other lacks.

Image resizing is bilinear with antialiasing (Pillow's resampling filter widens with the scale factor
when downsampling); masks use nearest neighbour, so their values stay the values of the file.

Bit depth: every image becomes 8 bits by its declared depth, never by its content, so one image's
brightness does not depend on another's. 16-bit samples (Pillow modes ``I;16*``) are divided by 257 and
rounded, mapping the full range 0..65535 onto 0..255 exactly (Pillow's own conversion would clip
everything above 255 to white); 32-bit integer images (mode ``I``) are read as 16-bit data and must lie in
0..65535; float images (mode ``F``) must lie in [0, 1] and are multiplied by 255. Anything else is an
error rather than a guess (12-bit data in a 16-bit file comes out dark: the validator's
``high-bit-depth`` warning shows the value range). Masks are not rescaled: a 16-bit label mask keeps its
values (above 255 they clip to 255), so a lesion labelled 1 stays a lesion. An image of more pixels than
Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is refused with its pixel count.

Paths: a row whose image or mask resolves outside the data root is refused before anything is read
(the validator's ``path-outside-root`` rule) unless ``allow_outside_root=True``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from diffkd_study import __version__
from diffkd_study.data.schema import OUTSIDE_ROOT_REMEDY, Manifest, path_outside_root
from diffkd_study.io import atomic_dir, sha256_bytes, write_json
from diffkd_study.progress import progress_bar

CACHE_FORMAT = 3  # part of the key; 3: lesion windows kept inside the image; 2: bit-depth scaling (1 clipped)
CACHE_DIR_ENV = "DIFFKD_CACHE_DIR"
MODES: tuple[str, ...] = ("L", "RGB")
RESIZE_MODES: tuple[str, ...] = ("stretch", "pad", "lesion", "jittered")
#: resize modes that crop a window around the lesion's mask box
WINDOW_MODES: tuple[str, ...] = ("lesion", "jittered")
#: the rough manual box of ``resize_mode="jittered"``: the window's centre moves by up to this fraction of the
#: box's longer side along each axis (uniform), and its side is scaled by a factor log-uniform in JITTER_SCALE
JITTER_SHIFT = 0.15
JITTER_SCALE: tuple[float, float] = (0.8, 1.25)

logger = logging.getLogger(__name__)


class ImageDecodeError(ValueError):
    """An image or mask named by a manifest row does not decode."""


@dataclass(frozen=True)
class Preprocessing:
    """How a file becomes an array: target ``size`` as (height, width), colour ``mode``, aspect handling."""

    size: tuple[int, int]
    mode: str = "L"
    resize_mode: str = "stretch"
    roi_margin: float = 0.25  # resize modes "lesion" and "jittered" only
    via: int = 0  # > 0: resize to via x via first, then to ``size`` (the shared chain of real and synthetic inputs)
    jitter_seed: int = 0  # resize_mode "jittered" only

    @classmethod
    def make(cls, size: int | tuple[int, int] | list[int], mode: str = "L", resize_mode: str = "stretch",
             roi_margin: float = 0.25, via: int = 0, jitter_seed: int = 0) -> Preprocessing:
        """A checked :class:`Preprocessing`: ``size`` as an int (square) or (height, width).

        Raises ``ValueError`` for a non-positive size, an unknown ``mode`` or ``resize_mode``, a ``roi_margin``
        outside [0, 4] or a negative ``via``.
        """
        if isinstance(size, int):
            size = (size, size)
        size = tuple(int(v) for v in size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        if not 0 <= roi_margin <= 4:
            raise ValueError(f"roi_margin must lie in [0, 4], got {roi_margin!r}")
        if int(via) < 0:
            raise ValueError(f"via must be >= 0 (0: resize once), got {via!r}")
        return cls(size=size, mode=mode, resize_mode=resize_mode, roi_margin=float(roi_margin),  # type: ignore[arg-type]
                   via=int(via), jitter_seed=int(jitter_seed))

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one preprocessed image: (H, W) in mode ``L``, (H, W, 3) in ``RGB``."""
        return self.size if self.mode == "L" else (*self.size, 3)

    def to_dict(self) -> dict[str, Any]:
        """The parameters as JSON-ready data (part of the cache key); each only where it changes the pixels:
        ``roi_margin`` in the window modes, ``jitter_seed`` in ``jittered``, ``via`` when it is not 0."""
        out = asdict(self)
        out["size"] = list(self.size)
        if self.resize_mode not in WINDOW_MODES:
            out.pop("roi_margin")
        if self.resize_mode != "jittered":
            out.pop("jitter_seed")
        if not self.via:
            out.pop("via")
        return out


def _resize(img: Image.Image, prep: Preprocessing, resample: Image.Resampling) -> np.ndarray:
    """``img`` at ``prep.size`` by ``prep.resize_mode`` (``stretch`` or ``pad``), through ``via`` x ``via`` first when
    ``prep.via`` is set: the one resize chain of every classifier input, real or synthetic."""
    if prep.via:
        first = Preprocessing(size=(prep.via, prep.via), mode=prep.mode, resize_mode=prep.resize_mode)
        img = Image.fromarray(_resize(img, first, resample))
        prep = Preprocessing(size=prep.size, mode=prep.mode, resize_mode="stretch")
    height, width = prep.size
    if prep.resize_mode == "stretch":
        return np.array(img.resize((width, height), resample, reducing_gap=None))
    scale = min(width / img.width, height / img.height)
    new_w = min(width, max(1, round(img.width * scale)))
    new_h = min(height, max(1, round(img.height * scale)))
    canvas = Image.new(img.mode, (width, height), 0)
    canvas.paste(img.resize((new_w, new_h), resample, reducing_gap=None), ((width - new_w) // 2, (height - new_h) // 2))
    return np.array(canvas)


def open_image(path: Path) -> Image.Image:
    """Decode a file in its stored mode: the one place the cache, the datasets and the validator open images.

    An image over ``PIL.Image.MAX_IMAGE_PIXELS`` is an ``ImageDecodeError`` naming its pixel count, whether
    Pillow raised (over twice the limit), warned, or was told to raise on the warning (``-W error``).
    """
    try:
        with Image.open(path) as img:
            pixels = img.width * img.height
            if Image.MAX_IMAGE_PIXELS is not None and pixels > Image.MAX_IMAGE_PIXELS:
                raise ImageDecodeError(
                    f"{img.width}x{img.height} = {pixels} pixels is over Pillow's decompression-bomb limit of "
                    f"{Image.MAX_IMAGE_PIXELS} pixels (PIL.Image.MAX_IMAGE_PIXELS)"
                )
            img.load()
            return img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(f"decompression-bomb check: {err}") from None


HIGH_BIT_MODES: dict[str, str] = {
    "I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I;16N": "16-bit",
    "I": "32-bit integer (read as 16-bit)", "F": "32-bit float",
}


def eight_bit_rule(mode: str) -> str:
    """How :func:`to_8bit` maps a mode of ``HIGH_BIT_MODES`` (for messages)."""
    return "multiplying by 255 (values must lie in [0, 1])" if mode == "F" else "dividing by 257, rounded (65535 -> 255)"


def to_8bit(img: Image.Image) -> Image.Image:
    """``img`` with 8-bit samples, scaled by its bit depth (see the module docstring); 8-bit modes unchanged."""
    if img.mode not in HIGH_BIT_MODES:
        return img
    values = np.asarray(img)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if img.mode == "F":
        if not (np.isfinite(values).all() and low >= 0 and high <= 1):
            raise ImageDecodeError(
                f"float pixels (mode F) range {low:g}..{high:g}, outside [0, 1]; convert the file to 8 or 16 bits"
            )
        return Image.fromarray(np.rint(values * 255).astype(np.uint8))
    if low < 0 or high > 65535:
        raise ImageDecodeError(
            f"integer pixels (mode {img.mode}) range {low:g}..{high:g}, outside 0..65535; "
            f"convert the file to 8 or 16 bits"
        )
    return Image.fromarray(((values.astype(np.uint32) + 128) // 257).astype(np.uint8))


def _decode(path: Path, mode: str) -> Image.Image:
    """An image as ``mode`` with 8-bit samples, scaled by its bit depth."""
    return to_8bit(open_image(path)).convert(mode)


def decode_mask(path: Path) -> Image.Image:
    """A mask as 8-bit ``L`` without rescaling (label values are not intensities)."""
    return open_image(path).convert("L")


def load_image(path: str | os.PathLike[str], prep: Preprocessing) -> np.ndarray:
    """Decode an image file and preprocess it: the one function both the cache and the disk path use."""
    return _resize(_decode(Path(path), prep.mode), prep, Image.Resampling.BILINEAR)


def load_mask(path: str | os.PathLike[str], prep: Preprocessing) -> np.ndarray:
    """Decode a mask as 8-bit grayscale and resize it with nearest neighbour."""
    return _resize(decode_mask(Path(path)), prep, Image.Resampling.NEAREST)


def _has_value(value: Any) -> bool:
    return isinstance(value, str) and value != ""


class PixelSource(NamedTuple):
    """The files of one manifest row, and where the row is (for error messages)."""

    image_id: str
    image_path: str
    mask_path: str | None
    where: str  # "data_manifests/bus-bra.csv:12 [image_id=bus_0011-l]"


def pixel_sources(manifest: Manifest) -> list[PixelSource]:
    """The pixel sources of every row, in row order (plain values: safe to share between threads)."""
    df = manifest.df
    name = str(manifest.path) if manifest.path is not None else "<manifest>"
    masks = df["mask_path"] if "mask_path" in df.columns else [None] * len(df)
    sources = []
    for position, (image_id, image_path, mask_path) in enumerate(
        zip(df["image_id"], df["image_path"], masks, strict=True)
    ):
        where = f"{name}:{position + 2} [image_id={image_id}]"
        if not _has_value(image_path):
            raise ValueError(f"{where}: image_path is empty")
        sources.append(PixelSource(str(image_id), image_path, mask_path if _has_value(mask_path) else None, where))
    return sources


#: Set to ``1`` by ``diffkd-study run`` when the config opts in (``data.allow_paths_outside_root: true``):
#: every stage's kernel inherits it, so the caches and datasets of that study read what its validation allowed.
ALLOW_OUTSIDE_ROOT_ENV = "DIFFKD_ALLOW_PATHS_OUTSIDE_ROOT"


def outside_root_allowed(explicit: bool | None = None) -> bool:
    """An explicit choice wins; otherwise the study's opt-in (:data:`ALLOW_OUTSIDE_ROOT_ENV`)."""
    return explicit if explicit is not None else os.environ.get(ALLOW_OUTSIDE_ROOT_ENV) == "1"


def check_inside_root(sources: Sequence[PixelSource], root: Path) -> None:
    """Refuse the first row whose image or mask resolves outside ``root`` (the validator's
    ``path-outside-root`` rule), for readers that run without validating first."""
    for source in sources:
        for column, value in (("image_path", source.image_path), ("mask_path", source.mask_path)):
            outside = None if value is None else path_outside_root(root, value)
            if outside is not None:
                raise ValueError(
                    f"{source.where}: {column} {value!r} leads to {outside}, outside the data root "
                    f"{root.resolve()} (path-outside-root); {OUTSIDE_ROOT_REMEDY}"
                )


def lesion_window(mask: np.ndarray, margin: float) -> tuple[int, int, int, int] | None:
    """The square ``(left, top, right, bottom)`` around the mask's bounding box, sides ``(1 + 2 margin)``
    times the box's longer side, centred on the box; ``None`` for an empty mask."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    half = max(x1 - x0, y1 - y0) * (1 + 2 * margin) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return round(cx - half), round(cy - half), round(cx + half), round(cy + half)


def jittered_window(mask: np.ndarray, margin: float, seed: int, image_id: str) -> tuple[int, int, int, int] | None:
    """:func:`lesion_window` perturbed like a rough manual box, the same for an image on every run: the centre moves
    by up to ``JITTER_SHIFT`` of the box's longer side along each axis (uniform) and the side is scaled by a
    factor log-uniform in ``JITTER_SCALE``, drawn from a generator seeded by ``seed`` and the ``image_id``."""
    window = lesion_window(mask, margin)
    if window is None:
        return None
    ys, xs = np.nonzero(mask)
    longer = max(int(xs.max()) + 1 - int(xs.min()), int(ys.max()) + 1 - int(ys.min()))
    digest = int(sha256_bytes(image_id.encode("utf-8"))[:16], 16)
    rng = np.random.default_rng([seed, digest])
    dx, dy = rng.uniform(-JITTER_SHIFT, JITTER_SHIFT, size=2) * longer
    factor = float(np.exp(rng.uniform(np.log(JITTER_SCALE[0]), np.log(JITTER_SCALE[1]))))
    left, top, right, bottom = window
    half = (right - left) * factor / 2
    cx, cy = (left + right) / 2 + dx, (top + bottom) / 2 + dy
    return round(cx - half), round(cy - half), round(cx + half), round(cy + half)


def window_inside(window: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """``window`` moved (not resized) to lie inside a ``width`` x ``height`` image along every axis it fits; along
    an axis it does not fit it covers the whole image, as near its place as possible (the rest is then
    reflected, :func:`crop_window`)."""
    def place(low: int, high: int, extent: int) -> tuple[int, int]:
        side = high - low
        low = min(max(low, 0), extent - side) if side <= extent else min(max(low, extent - side), 0)
        return low, low + side

    left, right = place(window[0], window[2], width)
    top, bottom = place(window[1], window[3], height)
    return left, top, right, bottom


def crop_window(img: Image.Image, window: tuple[int, int, int, int]) -> Image.Image:
    """The ``window`` of ``img`` after :func:`window_inside`: no part of it lies outside the image unless the
    window is larger than the image, and that part is the image mirrored at its border (never black padding,
    whose amount would otherwise tell the model how large the lesion is)."""
    left, top, right, bottom = window_inside(window, img.width, img.height)
    if left >= 0 and top >= 0 and right <= img.width and bottom <= img.height:
        return img.crop((left, top, right, bottom))
    array = np.asarray(img)
    before_y, before_x = max(0, -top), max(0, -left)
    pad = [(before_y, max(0, bottom - img.height)), (before_x, max(0, right - img.width))] + [(0, 0)] * (array.ndim - 2)
    array = np.pad(array, pad, mode="symmetric")
    return Image.fromarray(array[top + before_y:bottom + before_y, left + before_x:right + before_x])


def _load_row(source: PixelSource, root: Path, image_loader: Callable[[Path], Any],
              mask_loader: Callable[[Path], Any]) -> tuple[Any, Any]:
    """``image_loader`` / ``mask_loader`` applied to the row's files (mask None when the row has none);
    an error names the column, the file and the row."""
    loaded: list[Any] = []
    for column, value, loader in (("image_path", source.image_path, image_loader),
                                  ("mask_path", source.mask_path, mask_loader)):
        if value is None:
            loaded.append(None)
            continue
        path = root / value
        try:
            loaded.append(loader(path))
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise ImageDecodeError(f"{source.where}: {column} {path} does not decode: {err}") from err
    image, mask = loaded
    assert image is not None
    return image, mask


def load_source(source: PixelSource, root: Path, prep: Preprocessing) -> tuple[np.ndarray, np.ndarray | None]:
    """The preprocessed image and mask (or None) of one row; an error names the file and the row."""
    if prep.resize_mode not in WINDOW_MODES:
        return _load_row(source, root, lambda path: load_image(path, prep), lambda path: load_mask(path, prep))
    image, mask = _load_row(source, root, lambda path: _decode(path, prep.mode), decode_mask)
    if mask is not None and mask.size != image.size:
        raise ImageDecodeError(f"{source.where}: mask {source.mask_path} is {mask.size[0]}x{mask.size[1]} pixels, the "
                               f"image {image.size[0]}x{image.size[1]}: a lesion crop needs them aligned")
    window = None
    if mask is not None:
        box = np.asarray(mask) > 0
        window = (jittered_window(box, prep.roi_margin, prep.jitter_seed, source.image_id)
                  if prep.resize_mode == "jittered" else lesion_window(box, prep.roi_margin))
    if window is not None:
        image, mask = crop_window(image, window), crop_window(mask, window)
    stretch = Preprocessing.make(prep.size, prep.mode, "stretch", via=prep.via)
    return (_resize(image, stretch, Image.Resampling.BILINEAR),
            None if mask is None else _resize(mask, stretch, Image.Resampling.NEAREST))


# -- cache key and location -----------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$DIFFKD_CACHE_DIR``, else ``.cache/diffkd_study`` in the project (the source checkout holding the
    package), else in the current directory."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    checkout = Path(__file__).resolve().parents[2]
    base = checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()
    return base / ".cache" / "diffkd_study"


def _file_signature(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None  # a missing file is reported by the build with its row
    return [stat.st_size, stat.st_mtime_ns]


def _sorted_sources(manifest: Manifest) -> list[PixelSource]:
    return sorted(pixel_sources(manifest), key=lambda source: source.image_id)


def cache_key(manifest: Manifest, root: str | os.PathLike[str], prep: Preprocessing) -> str:
    """sha256 of the preprocessing parameters and the pixel sources of every row (see the module doc)."""
    root = Path(root)
    rows = [
        [s.image_id, s.image_path, _file_signature(root / s.image_path),
         s.mask_path, None if s.mask_path is None else _file_signature(root / s.mask_path)]
        for s in _sorted_sources(manifest)
    ]
    payload = {"format": CACHE_FORMAT, "preprocessing": prep.to_dict(), "rows": rows}
    return sha256_bytes(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())


# -- the cache ------------------------------------------------------------------------------------


class ImageCache:
    """A built cache folder, opened memory-mapped. Pickles as its path (cheap to send to workers)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        index_file = self.path / "index.json"
        if not index_file.is_file():
            raise FileNotFoundError(f"{self.path} is not an image cache: index.json is missing")
        self.index: dict[str, Any] = json.loads(index_file.read_text(encoding="utf-8"))
        if self.index.get("format") != CACHE_FORMAT:
            raise ValueError(
                f"{self.path}: cache format {self.index.get('format')!r}, this version reads {CACHE_FORMAT}; "
                f"delete the folder to rebuild it"
            )
        self.preprocessing = Preprocessing.make(**self.index["preprocessing"])
        self.image_ids: list[str] = list(self.index["image_ids"])
        self._positions = {image_id: i for i, image_id in enumerate(self.image_ids)}
        self.images: np.ndarray = np.load(self.path / "images.npy", mmap_mode="r")
        self.masks: np.ndarray | None = (
            np.load(self.path / "masks.npy", mmap_mode="r") if (self.path / "masks.npy").is_file() else None
        )
        self.has_mask = np.asarray(self.index["has_mask"], dtype=bool)
        expected = (len(self.image_ids), *self.preprocessing.image_shape)
        if self.images.shape != expected:
            raise ValueError(f"{self.path}/images.npy has shape {self.images.shape}, index.json says {expected}")

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ImageCache:
        """Open the built cache folder ``path`` (the same as ``ImageCache(path)``)."""
        return cls(path)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def __len__(self) -> int:
        return len(self.image_ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._positions

    def __repr__(self) -> str:
        return f"ImageCache({str(self.path)!r}, n={len(self)}, {self.preprocessing})"

    def index_of(self, image_id: str) -> int:
        """Array position of ``image_id``; ``KeyError`` when the cache does not hold it."""
        try:
            return self._positions[str(image_id)]
        except KeyError:
            raise KeyError(
                f"image_id {image_id!r} is not in the cache {self.path} (built from another manifest?)"
            ) from None

    def positions(self, sources: Sequence[PixelSource]) -> np.ndarray:
        """Array positions of manifest rows, checking that each row names the files the cache was built
        from (an image_id that now points to another file must not silently read stale pixels)."""
        absent = [s.image_id for s in sources if s.image_id not in self._positions]
        if absent:
            raise KeyError(
                f"{len(absent)} image_id(s) are not in the cache {self.path}, e.g. {absent[:5]}; "
                f"build the cache from the same manifest"
            )
        positions = np.fromiter((self._positions[s.image_id] for s in sources), dtype=np.int64, count=len(sources))
        for source, position in zip(sources, positions, strict=True):
            cached = (self.index["image_paths"][position], self.index["mask_paths"][position])
            if (source.image_path, source.mask_path) != cached:
                raise ValueError(
                    f"{source.where}: the row names image {source.image_path!r} and mask {source.mask_path!r}, "
                    f"but the cache {self.path} holds {cached[0]!r} and {cached[1]!r}; build the cache from this manifest"
                )
        return positions


def default_workers() -> int:
    """Threads for decoding a dataset's files: one per core, at most 8 (Pillow holds the GIL for much of PNG
    decoding, so more threads would not pay)."""
    return min(8, os.cpu_count() or 1)


def build_cache(
    manifest: Manifest,
    root: str | os.PathLike[str],
    *,
    size: int | tuple[int, int],
    mode: str = "L",
    resize_mode: str = "stretch",
    roi_margin: float = 0.25,
    via: int = 0,
    jitter_seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
    allow_outside_root: bool | None = None,
) -> ImageCache:
    """Build (or re-use) the cache of ``manifest``'s images under ``root`` at ``size`` (height, width).

    The folder is ``cache_dir / <key>``; when it exists it is opened without decoding anything. A build
    writes into a temporary folder that is renamed into place only when every image has decoded, so an
    error or an interruption leaves no partial cache. Decoding runs on ``workers`` threads (default: up
    to 8, one per core); Pillow releases the GIL while resizing but holds it for much of PNG decoding,
    so expect well under linear scaling. A row naming a file outside ``root`` is refused before anything is
    read unless ``allow_outside_root`` (default: the study's opt-in, :func:`outside_root_allowed`); the cache
    does not run the validator.
    """
    prep = Preprocessing.make(size, mode, resize_mode, roi_margin, via, jitter_seed)
    root = Path(root)
    if manifest.df.empty:
        raise ValueError("the manifest has no rows to cache")
    sources = _sorted_sources(manifest)
    for before, source in itertools.pairwise(sources):
        if before.image_id == source.image_id:
            raise ValueError(f"{source.where}: duplicate image_id (also at {before.where})")
    if not outside_root_allowed(allow_outside_root):
        check_inside_root(sources, root)
    key = cache_key(manifest, root, prep)
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = target / key[:32]
    if (folder / "index.json").is_file():
        try:
            cache = ImageCache.open(folder)
        except (OSError, ValueError, KeyError) as err:  # damaged by hand, or an older format
            logger.warning("rebuilding the cache %s: it does not open (%s)", folder, err)
        else:
            if cache.index.get("key") == key:
                return cache

    has_mask = [source.mask_path is not None for source in sources]
    started = time.perf_counter()
    # a folder holding our index.json is a cache this program built (before folders were marked as ours)
    with atomic_dir(folder, overwrite=(folder / "index.json").is_file()) as tmp:
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8,
                                           shape=(len(sources), *prep.image_shape))
        masks = (
            np.lib.format.open_memmap(tmp / "masks.npy", mode="w+", dtype=np.uint8, shape=(len(sources), *prep.size))
            if any(has_mask) else None
        )

        def fill(position: int) -> None:
            image, mask = load_source(sources[position], root, prep)
            images[position] = image
            if masks is not None and mask is not None:
                masks[position] = mask

        pool = ThreadPoolExecutor(max_workers=workers or default_workers())
        try:
            jobs = pool.map(fill, range(len(sources)))  # yields in order, re-raises the first error
            for _ in progress_bar(jobs, total=len(sources), unit="img", disable=not progress,
                                  desc=f"caching {len(sources)} images at {prep.size[0]}x{prep.size[1]}"):
                pass
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # on error, do not decode the rest
        images.flush()
        if masks is not None:
            masks.flush()
        write_json(tmp / "index.json", {
            "format": CACHE_FORMAT,
            "key": key,
            "image_ids": [source.image_id for source in sources],
            "image_paths": [source.image_path for source in sources],
            "mask_paths": [source.mask_path for source in sources],
            "has_mask": has_mask,
            "preprocessing": prep.to_dict(),
            "manifest_sha256": manifest.sha256(),
            "manifest_path": None if manifest.path is None else str(manifest.path),
            "root": str(root.resolve()),
            "package_version": __version__,
            "build_seconds": round(time.perf_counter() - started, 3),
        })
    return ImageCache.open(folder)

