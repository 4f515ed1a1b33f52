"""The box-geometry baseline: what the lesion's bounding box alone says about malignancy (a shortcut audit).

On BUS-BRA the height/width ratio of the annotated lesion box alone separates malignant from benign lesions
about as well as the teacher network (issue 25). A network that sees a lesion-centred crop can read the box's
shape, size and position from the crop itself (how much of the crop is image, how stretched the lesion is), so
every image model is reported beside this baseline: an image model is only shown to use the pixels where it
beats the box.

The features (:data:`BOX_FEATURES`) come from each row's *original* mask file at its native resolution, never
from the resized cache (stretching to a square changes the aspect ratio):

* ``log_height_width``: log(h / w) of the mask's bounding box (rows x columns of pixels it spans); > 0 for a
  lesion taller than wide, the BI-RADS "not parallel" orientation (ACR BI-RADS Atlas, 5th ed., 2013);
* ``log_area_fraction``: log(h w / (H W)), the box's area as a share of the image's;
* ``long_side_fraction``: max(h, w) / min(H, W), the box's longer side over the image's shorter side;
* ``window_outside_fraction``: the share of the nominal lesion crop window that lies outside the image; the
  window is :func:`diffkd_study.data.cache.lesion_window` of the mask with the study's crop margin
  (:data:`DEFAULT_CROP_MARGIN`), the square the lesion crop starts from before it is shifted or padded, so
  this is how much black padding (or shifting) the crop of this lesion needs.

The image's size is the mask's (the cache refuses a lesion crop whose mask and image differ in size). The
fit, the choice of the penalty on validation and the not-applicable rules are those of the image-feature
baseline (:mod:`~diffkd_study.methods.diffkd.baselines`): a row without a mask has no box.

:func:`box_geometry_reference` sets every other model beside the baseline on each test set: both AUCs on the
images both scored and the difference (model minus box geometry) by DeLong's paired test clustered by patient
(Obuchowski 1997, Biometrics 53:567; ``comparisons.paired_test_row``).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import UnidentifiedImageError

from diffkd_study.data.cache import (
    ImageDecodeError,
    check_inside_root,
    decode_mask,
    default_workers,
    lesion_window,
    outside_root_allowed,
    pixel_sources,
)
from diffkd_study.data.schema import Manifest
from diffkd_study.methods.diffkd.comparisons import paired_scores, paired_test_row
from diffkd_study.progress import progress_bar

#: the baseline's name in the baselines stage and the prediction tables
BOX_GEOMETRY = "box_geometry"
#: the crop margin of the study's lesion crop (``training.crop_margin``'s default): the window's margin
DEFAULT_CROP_MARGIN = 0.25
BOX_FEATURES: dict[str, str] = {
    "log_height_width": "log of the lesion box's height / width at native resolution (> 0: taller than wide)",
    "log_area_fraction": "log of the lesion box's area / the image's area",
    "long_side_fraction": "the lesion box's longer side / the image's shorter side",
    "window_outside_fraction": "share of the nominal lesion crop window (margin 0.25) outside the image",
}
REFERENCE_COLUMNS = ["test_set", "model", "n", "n_patients", "n_pos", "auc", "auc_box_geometry", "difference",
                     "ci_low", "ci_high", "se", "p_value", "mdd", "note"]
#: the columns :func:`with_box_geometry` adds to an AUC table
BESIDE_COLUMNS = ["box_geometry_auc", "box_geometry_difference", "box_geometry_ci_low", "box_geometry_ci_high",
                  "box_geometry_p", "vs_box_geometry"]
__all__ = ["BESIDE_COLUMNS", "BOX_FEATURES", "BOX_GEOMETRY", "DEFAULT_CROP_MARGIN", "REFERENCE_COLUMNS",
           "box_features", "box_geometry_reference", "box_geometry_table", "window_outside_fraction",
           "with_box_geometry"]


def window_outside_fraction(window: tuple[int, int, int, int], height: int, width: int) -> float:
    """The share of the window ``(left, top, right, bottom)`` (pixel edges, right/bottom exclusive) that lies
    outside an image of ``height`` x ``width`` pixels: 1 - |window and image| / |window|; 0 for an empty window."""
    left, top, right, bottom = window
    area = (right - left) * (bottom - top)
    if area <= 0:
        return 0.0
    inside = max(0, min(right, width) - max(left, 0)) * max(0, min(bottom, height) - max(top, 0))
    return 1.0 - inside / area


def box_features(mask: np.ndarray, margin: float = DEFAULT_CROP_MARGIN) -> dict[str, float]:
    """:data:`BOX_FEATURES` of one 2-D mask at its native resolution (non-zero = lesion); NaN for an empty mask.
    ``margin`` is the crop margin of the nominal lesion window (:func:`~diffkd_study.data.cache.lesion_window`)."""
    m = np.asarray(mask) > 0
    if m.ndim != 2:
        raise ValueError(f"a mask must be 2-D; got shape {m.shape}")
    window = lesion_window(m, margin)
    if window is None:
        return dict.fromkeys(BOX_FEATURES, math.nan)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    height, width = m.shape
    return {
        "log_height_width": math.log(h / w),
        "log_area_fraction": math.log(h * w / (height * width)),
        "long_side_fraction": max(h, w) / min(height, width),
        "window_outside_fraction": window_outside_fraction(window, height, width),
    }


def box_geometry_table(
    manifest: Manifest, root: str | Path, *, margin: float = DEFAULT_CROP_MARGIN, workers: int | None = None,
    progress: bool = False, allow_outside_root: bool | None = None,
) -> pd.DataFrame:
    """:data:`BOX_FEATURES` of every manifest row (index image_id), from its original mask file under ``root``.

    Rows without a mask (or an empty one) get NaN. Masks decode on ``workers`` threads (default: up to 8, as the
    cache); a mask that does not decode raises ``ImageDecodeError`` naming the row, and a path outside ``root``
    is refused unless ``allow_outside_root`` (default: the study's opt-in), as in the cache.
    """
    root = Path(root)
    sources = pixel_sources(manifest)
    if not outside_root_allowed(allow_outside_root):
        check_inside_root(sources, root)

    def features(k: int) -> dict[str, float]:
        source = sources[k]
        if source.mask_path is None:
            return dict.fromkeys(BOX_FEATURES, math.nan)
        path = root / source.mask_path
        try:  # the mask only (the image is not decoded): 8-bit L, values unscaled, as the cache reads it
            mask = np.asarray(decode_mask(path))
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise ImageDecodeError(f"{source.where}: mask_path {path} does not decode: {err}") from err
        return box_features(mask, margin)

    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        rows = list(progress_bar(pool.map(features, range(len(sources))), total=len(sources), unit="mask",
                                 disable=not progress, desc=f"box geometry of {len(sources)} masks"))
    ids = pd.Index([source.image_id for source in sources], name="image_id")
    return pd.DataFrame(rows, index=ids, columns=list(BOX_FEATURES))


def box_geometry_reference(tests: pd.DataFrame, *, level: float = 0.95,
                           reference: str = BOX_GEOMETRY) -> pd.DataFrame:
    """Every model of ``tests`` (``evaluate.evaluation_rows``) beside the box-geometry baseline, per test set.

    One row per (test set, model other than ``reference``): on the images both scored, the model's AUC
    (``auc``), the baseline's (``auc_box_geometry``) and the difference model minus baseline with its 95%
    interval, SE, two-sided p and detectable difference at 80% power, by DeLong's paired test clustered by
    patient (Obuchowski 1997; ``comparisons.paired_test_row``); no multiplicity adjustment (a reference for
    each model, not a family of claims). Where the baseline has no predictions on a set, or too few patients of
    a class, the row keeps its counts and says why in ``note``. Columns :data:`REFERENCE_COLUMNS`; empty when
    ``reference`` has no predictions at all (the baselines stage did not run it).
    """
    rows = []
    if reference in set(tests["model"]):
        for test_set in pd.unique(tests["test_set"]):
            part = tests[tests["test_set"] == test_set]
            scored = (part["model"] == reference).any()
            for model in [m for m in pd.unique(part["model"]) if m != reference]:
                row = {"test_set": test_set, "model": model}
                if not scored:
                    rows.append({**row, "note": f"{reference} has no predictions on this test set"})
                    continue
                both = paired_scores(tests, test_set, model, reference)
                test = paired_test_row(both, level)
                rows.append({**row, **test, "auc": test.get("auc_a"), "auc_box_geometry": test.get("auc_b")})
    return pd.DataFrame(rows, columns=REFERENCE_COLUMNS)


def with_box_geometry(auc: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """``auc`` (one row per model and test set, e.g. ``evaluate.auc_table``) with the box-geometry baseline beside
    each model (:data:`BESIDE_COLUMNS`, from :func:`box_geometry_reference` of the same rows): its AUC on the
    images both scored, the difference model minus baseline with its interval clustered by patient, the p, and
    ``vs_box_geometry`` as text ('+0.012 (-0.030 to 0.054)'; empty for the baseline itself and where the
    difference is not estimable, with the reason in the reference table's ``note``)."""
    beside = reference.rename(columns={"auc_box_geometry": "box_geometry_auc", "difference": "box_geometry_difference",
                                       "ci_low": "box_geometry_ci_low", "ci_high": "box_geometry_ci_high",
                                       "p_value": "box_geometry_p"})
    beside = beside.assign(vs_box_geometry=[
        "" if pd.isna(d) else f"{d:+.3f} ({lo:+.3f} to {hi:+.3f})"
        for d, lo, hi in zip(beside["box_geometry_difference"], beside["box_geometry_ci_low"],
                             beside["box_geometry_ci_high"], strict=True)])
    out = auc.drop(columns=[c for c in BESIDE_COLUMNS if c in auc.columns])
    out = out.merge(beside[["test_set", "model", *BESIDE_COLUMNS]], on=["test_set", "model"], how="left",
                    validate="one_to_one")
    out["vs_box_geometry"] = out["vs_box_geometry"].fillna("")
    return out
