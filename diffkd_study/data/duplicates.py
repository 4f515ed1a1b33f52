"""Near-duplicate images across patients: perceptual-hash candidates confirmed by pixel correlation.

A release can hold the same photograph under two patients (HAM10000: ISIC_0025226 of lesion HAM_0004919
and ISIC_0030074 of HAM_0000140, re-exported with another colour balance). A patient-grouped split then
puts one copy in training and the other in validation or test. This module finds such pairs in any
manifest and labels them, so that :func:`diffkd_study.data.splits.split_groups` keeps them together.

Method
------
1. Every image is decoded by the loader the cache and the datasets use
   (:func:`diffkd_study.data.cache.load_image`: 8-bit grey, stretched to ``THUMBNAIL`` x ``THUMBNAIL`` =
   32 x 32 pixels, bilinear with antialiasing).
2. Perceptual hash (pHash; Zauner 2010, "Implementation and benchmarking of perceptual image hash
   functions", thesis, Upper Austria University of Applied Sciences; the DCT variant of Krawetz 2011):
   the orthonormal 2-D DCT-II of the 32 x 32 thumbnail, its 8 x 8 lowest frequencies (DC included), one
   bit per coefficient: above the median of the 64. Two copies of a photograph differ in few bits
   whatever their size, JPEG quality or colour balance.
3. Candidates: every pair of images in *different* groups (patients; lesions for dermoscopy) whose
   hashes differ in at most ``max_hamming`` = 10 of 64 bits. All pairs are compared, in blocks of rows
   (XOR and a byte-table popcount): exact, no pair is missed by bucketing, and about 1 s for the
   50 million pairs of HAM10000's 10,015 images on one thread (decoding the images takes about 6 s).
4. Confirmation: Pearson's correlation ``r`` of the two 32 x 32 grey thumbnails, ``r >= min_correlation``
   = 0.99. A constant thumbnail has no correlation (NaN); a pair of them is confirmed only when the two
   are identical.

Why 0.99 and not 0.98: dermoscopy and ultrasound images share a large dark frame (the dermoscope's
circular vignette, the ultrasound sector) that makes different lesions correlate at 32 x 32. On
HAM10000, the one true cross-lesion copy has Hamming distance 4 and r = 0.9986 (within-lesion re-saved
copies: distance <= 4, r >= 0.997), while the next cross-lesion candidates, different moles in vignetted
MoleMax images (checked by eye), reach r = 0.988: with 0.98, 7 pairs would be flagged, 6 of them false.
A check of the seven flips and right-angle rotations found no cross-lesion pair above r = 0.981, so the
hash is not made rotation-invariant. Exact copies are also found by the validator's ``duplicate-pixels``
rule.

Output: :func:`find_near_duplicates` returns the pairs (``image_id_a``, ``image_id_b``, ``hamming``,
``correlation``); :func:`duplicate_groups` labels each image of a pair with its connected component
(the smallest ``image_id`` in it), the optional manifest column ``duplicate_group``. Builders call
:func:`flag_near_duplicates`, which adds that column when a pair is found and warns, listing the pairs.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import UnidentifiedImageError

from diffkd_study.data.cache import Preprocessing, load_image
from diffkd_study.data.schema import Manifest
from diffkd_study.data.splits import DUPLICATE_GROUP_COLUMN
from diffkd_study.progress import progress_bar

logger = logging.getLogger(__name__)

THUMBNAIL = 32  # side of the grey thumbnail that is hashed and correlated
HASH_SIDE = 8  # the hash keeps the HASH_SIDE x HASH_SIDE lowest DCT frequencies: 64 bits
MAX_HAMMING = 10
MIN_CORRELATION = 0.99
PAIR_COLUMNS: tuple[str, ...] = ("image_id_a", "image_id_b", "hamming", "correlation")

_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


@dataclass(frozen=True)
class ImageSignatures:
    """What near-duplicate detection keeps of each image: its 64-bit pHash and its grey thumbnail."""

    hashes: np.ndarray  # uint64, (n,)
    thumbnails: np.ndarray  # uint8, (n, THUMBNAIL, THUMBNAIL)


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix ``D`` (``D @ x`` transforms a length-``n`` signal)."""
    k = np.arange(n)
    matrix = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))
    matrix[0] /= np.sqrt(2.0)
    return matrix


def perceptual_hash(thumbnails: np.ndarray) -> np.ndarray:
    """64-bit pHashes (Zauner 2010) of square grey thumbnails ``(n, s, s)``: bit ``8 r + c`` (most significant
    first) is set when DCT coefficient ``(r, c)``, r, c < 8, exceeds the median of those 64 coefficients."""
    thumbnails = np.asarray(thumbnails, dtype=np.float64)
    if thumbnails.ndim != 3 or thumbnails.shape[1] != thumbnails.shape[2] or thumbnails.shape[1] < HASH_SIDE:
        raise ValueError(f"thumbnails must have shape (n, s, s) with s >= {HASH_SIDE}, got {thumbnails.shape}")
    dct = _dct_matrix(thumbnails.shape[1])
    low = (dct @ thumbnails @ dct.T)[:, :HASH_SIDE, :HASH_SIDE].reshape(len(thumbnails), -1)
    low = np.round(low, 6)  # rounding error (~1e-13) must not decide a bit: a flat image's zeros stay zeros
    bits = low > np.median(low, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def hamming_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Number of differing bits between 64-bit hashes, elementwise with broadcasting (a byte-table popcount)."""
    xor = np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))
    octets = np.ascontiguousarray(xor).view(np.uint8).reshape(*np.shape(xor), 8)
    return _POPCOUNT[octets].sum(axis=-1, dtype=np.uint8)


def image_signatures(paths: Sequence[str | Path], *, progress: bool = False) -> ImageSignatures:
    """Decode every image (grey, ``THUMBNAIL`` x ``THUMBNAIL``) and hash it. Raises ``ValueError`` naming the
    file that does not decode."""
    prep = Preprocessing.make(THUMBNAIL, mode="L")
    thumbnails = np.zeros((len(paths), THUMBNAIL, THUMBNAIL), dtype=np.uint8)
    items = progress_bar(paths, total=len(paths), desc="near-duplicates", unit="img") if progress else paths
    for i, path in enumerate(items):
        try:
            thumbnails[i] = load_image(path, prep)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
            raise ValueError(f"{path}: cannot be decoded for near-duplicate detection ({type(err).__name__}: {err})") \
                from None
    return ImageSignatures(hashes=perceptual_hash(thumbnails), thumbnails=thumbnails)


def candidate_pairs(hashes: np.ndarray, groups: Sequence[object], max_hamming: int = MAX_HAMMING,
                    block: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` of different ``groups`` whose hashes differ in at most ``max_hamming`` bits, as
    arrays ``(i, j, distance)`` in row order. All pairs are compared, ``block`` rows at a time."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    codes = pd.factorize(pd.Series(list(groups), dtype=object))[0]
    if len(codes) != len(hashes):
        raise ValueError(f"{len(hashes)} hashes but {len(codes)} groups")
    found_i, found_j, found_d = [], [], []
    for start in range(0, len(hashes), block):
        rows = hashes[start:start + block]
        distance = hamming_distance(rows[:, None], hashes[None, start:])
        i, j = np.nonzero(distance <= max_hamming)
        keep = (j > i) & (codes[i + start] != codes[j + start])
        found_i.append(i[keep] + start)
        found_j.append(j[keep] + start)
        found_d.append(distance[i[keep], j[keep]])
    if not found_i:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0, np.uint8)
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)


def thumbnail_correlation(thumbnails: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Pearson's r between the thumbnails of rows ``i`` and ``j`` (pairwise); NaN where one is constant."""
    flat = np.asarray(thumbnails, dtype=np.float64).reshape(len(thumbnails), -1)
    centred = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(centred, axis=1)
    unit = np.divide(centred, norm[:, None], out=np.zeros_like(centred), where=norm[:, None] > 0)
    r = np.einsum("ij,ij->i", unit[i], unit[j])
    r[(norm[i] == 0) | (norm[j] == 0)] = np.nan
    return np.clip(r, -1.0, 1.0)


def find_near_duplicates(
    paths: Sequence[str | Path],
    image_ids: Sequence[str],
    groups: Sequence[object],
    *,
    max_hamming: int = MAX_HAMMING,
    min_correlation: float = MIN_CORRELATION,
    progress: bool = False,
) -> pd.DataFrame:
    """Near-duplicate pairs of images in different ``groups`` (the method is in the module docstring).

    Returns one row per pair, ``image_id_a < image_id_b``, sorted: ``image_id_a``, ``image_id_b``,
    ``hamming`` (bits of 64) and ``correlation`` (Pearson's r of the grey thumbnails; NaN for two identical
    constant thumbnails).
    """
    if not (len(paths) == len(image_ids) == len(groups)):
        raise ValueError(f"paths, image_ids and groups differ in length: {len(paths)}, {len(image_ids)}, {len(groups)}")
    signatures = image_signatures(paths, progress=progress)
    return confirmed_pairs(signatures, image_ids, groups, max_hamming=max_hamming, min_correlation=min_correlation)


def confirmed_pairs(
    signatures: ImageSignatures,
    image_ids: Sequence[str],
    groups: Sequence[object],
    *,
    max_hamming: int = MAX_HAMMING,
    min_correlation: float = MIN_CORRELATION,
) -> pd.DataFrame:
    """The candidate pairs of :func:`candidate_pairs` whose thumbnails correlate at ``min_correlation`` or more
    (two constant thumbnails: when identical), as the table :func:`find_near_duplicates` returns."""
    i, j, distance = candidate_pairs(signatures.hashes, groups, max_hamming)
    r = thumbnail_correlation(signatures.thumbnails, i, j)
    keep = r >= min_correlation
    for k in np.flatnonzero(np.isnan(r)):  # a constant thumbnail: only an identical one is its duplicate
        keep[k] = np.array_equal(signatures.thumbnails[i[k]], signatures.thumbnails[j[k]])
    ids = np.asarray([str(v) for v in image_ids], dtype=object)
    a, b = ids[i[keep]], ids[j[keep]]
    pairs = pd.DataFrame({
        "image_id_a": np.where(a < b, a, b), "image_id_b": np.where(a < b, b, a),
        "hamming": distance[keep].astype(int), "correlation": r[keep],
    }, columns=list(PAIR_COLUMNS))
    return pairs.sort_values(["image_id_a", "image_id_b"], kind="stable").reset_index(drop=True)


def duplicate_groups(image_ids: Sequence[str], pairs: pd.DataFrame) -> pd.Series:
    """The ``duplicate_group`` label of each image: the smallest ``image_id`` of its connected component in the
    graph whose edges are ``pairs``; NaN for an image in no pair. Indexed like ``image_ids``."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in zip(pairs["image_id_a"].astype(str), pairs["image_id_b"].astype(str), strict=True):
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)  # the root is always the smallest id
    labels = [find(str(v)) if str(v) in parent else np.nan for v in image_ids]
    return pd.Series(labels, dtype=object, name=DUPLICATE_GROUP_COLUMN)


def flag_near_duplicates(
    manifest: Manifest,
    root: str | Path,
    *,
    group_col: str = "patient_id",
    max_hamming: int = MAX_HAMMING,
    min_correlation: float = MIN_CORRELATION,
    progress: bool = False,
) -> tuple[Manifest, pd.DataFrame]:
    """Find near-duplicates across ``group_col`` in a built manifest (``image_path`` relative to ``root``).

    Returns the manifest, with the column ``duplicate_group`` added when at least one pair is found (left
    unchanged otherwise), and the pairs table of :func:`find_near_duplicates` with the two groups added
    (``group_a``, ``group_b``). Each pair is listed in a ``UserWarning``, so that building a manifest shows
    them. An existing ``duplicate_group`` column is an error: labels are written once, by a builder.
    """
    df = manifest.df
    if DUPLICATE_GROUP_COLUMN in df.columns:
        raise ValueError(f"the manifest already has a {DUPLICATE_GROUP_COLUMN!r} column")
    started = time.perf_counter()
    root = Path(root)
    pairs = find_near_duplicates(
        [root / str(p) for p in df["image_path"]], df["image_id"].astype(str).tolist(), df[group_col].tolist(),
        max_hamming=max_hamming, min_correlation=min_correlation, progress=progress,
    )
    group_of = dict(zip(df["image_id"].astype(str), df[group_col], strict=True))
    pairs["group_a"] = pairs["image_id_a"].map(group_of)
    pairs["group_b"] = pairs["image_id_b"].map(group_of)
    logger.info("near-duplicate search over %d images: %d pair(s) across %s in %.1f s",
                len(df), len(pairs), group_col, time.perf_counter() - started)
    if pairs.empty:
        return manifest, pairs
    listed = "; ".join(
        f"{p.image_id_a} ({p.group_a}) ~ {p.image_id_b} ({p.group_b}): Hamming {p.hamming}, r = {p.correlation:.4f}"
        for p in pairs.itertuples()
    )
    warnings.warn(
        f"{manifest.schema.dataset}: {len(pairs)} near-duplicate pair(s) across {group_col} (pHash Hamming <= "
        f"{max_hamming} of 64, thumbnail r >= {min_correlation}), labelled in column {DUPLICATE_GROUP_COLUMN!r} "
        f"so that a split keeps each pair together: {listed}",
        stacklevel=2,
    )
    out = df.copy()
    out[DUPLICATE_GROUP_COLUMN] = duplicate_groups(out["image_id"].astype(str).tolist(), pairs).to_numpy()
    return Manifest(out, manifest.schema, manifest.path), pairs
