"""The built-in simulated breast-ultrasound cohort (B-mode), so the whole study runs with no download.

Every case is one patient with one solid or cystic breast lesion, imaged at one of three centers whose
scanners differ (transducer frequency, gain, dynamic range, depth, burned-in overlay, case mix).

Generative order (per case, from ``derive_seed(seed, center, index)``)
----------------------------------------------------------------------
1. center (given) -> 2. age ~ the center's age distribution -> 3. a latent *suspicion* ``z`` (rises with
age) that drives the BI-RADS lexicon features: shape, margin, orientation, echo pattern, posterior
features, calcifications, lesion size; palpability from size and depth -> 4. an **unrecorded** latent
*microstructure heterogeneity* ``h ~ N(0, 1)``, visible only as internal lesion texture -> 5. the label,
``malignant ~ Bernoulli(true_risk)`` with the logistic model below -> 6. a reader's BI-RADS category from
the recorded features plus reader noise (it never sees the label, ``h`` or the age) -> 7. the image.

Risk model (``RISK_MODEL``; log-odds, reference levels in brackets)
-------------------------------------------------------------------
::

    logit(true_risk) = intercept[center]
        + 0.35 * (age - 50) / 10          age in years
        + 0.40 * (size_mm - 15) / 10      true lesion size
        + 0.30 * palpable
        + 0.00 * shape_round + 1.30 * shape_irregular                          [oval]
        + 0.80 * margin_indistinct + 1.20 * margin_angular
        + 1.00 * margin_microlobulated + 2.00 * margin_spiculated               [circumscribed]
        + 1.00 * orientation_not_parallel                                      [parallel]
        - 2.50 * echo_anechoic - 0.30 * echo_isoechoic
        + 0.60 * echo_complex + 0.50 * echo_heterogeneous                       [hypoechoic]
        - 0.80 * posterior_enhancement + 1.00 * posterior_shadowing
        + 0.40 * posterior_combined                                            [none]
        + 1.00 * calcifications_present
        + 0.90 * microstructure_heterogeneity    (unrecorded, image-only signal)

The per-center intercepts are calibrated (Monte Carlo over the feature sampler, 100k draws per center) so that the
expected prevalence equals ``CenterSpec.prevalence``. ``true_risk`` is stored as a metadata column.

B-mode formation (vectorised, at the target size)
-------------------------------------------------
An echogenicity map (bright skin line, subcutaneous fat with lobules, Cooper's ligaments as bright curved
lines, heterogeneous fibroglandular tissue, retromammary fat under a smooth fascia, pectoral muscle with
interrupted oblique striations, dark chest wall, lesion with a capsule or echogenic halo) scales a
complex (IQ) Gaussian scatterer field; point reflectors add calcifications. The field is blurred by a
Gaussian PSF: axial sigma from the wavelength (``1540 m/s / f``), lateral sigma smallest at the focal
depth and growing away from it (three depth bands, blended linearly). Scanners with spatial compounding
(``CenterSpec.compounding_looks``) average the intensity of steered looks (each look sees the scatterers
with its own lateral phase ramp): smoother speckle with the same grain. Envelope = magnitude; then log
compression; posterior shadowing/enhancement grows with the beam's path length through the lesion (so it
starts inside the lesion and follows its outline, blurred by the beam width), smooth round lesions may
cast thin refraction shadows from their lateral walls; attenuation with imperfect time-gain compensation
acts in dB; the center's gain and dynamic range map to 8 bits, and the center's overlay (vendor logo box,
scanner name, depth and gain, depth scale, focus marker, sometimes calipers) is burned in.

The physical PSF is widened (``PSF_SCALE``) so the speckle grain stays visible at 64-256 pixels; speckle
size still scales with wavelength and pixel size, so a lower-frequency probe gives coarser speckle.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from diffkd_study.data.schema import ConditionSpec, Manifest, ManifestSchema, write_manifest
from diffkd_study.io import atomic_dir
from diffkd_study.repro import derive_seed

SPEED_OF_SOUND_MM_PER_US = 1.54
PSF_SCALE_AXIAL = 2.0  # axial sigma = PSF_SCALE_AXIAL * wavelength
PSF_SCALE_LATERAL = 3.0  # lateral sigma at the focus = PSF_SCALE_LATERAL * wavelength
ATTENUATION_DB_PER_CM_MHZ = 0.5  # one way; breast tissue is ~0.5-0.75
ECHO_REFERENCE_DB = 18.0  # log-envelope level shown white at zero gain
MISSING_FRACTION = 0.10  # of age and palpability, each independently

SHAPES = ("oval", "round", "irregular")
MARGINS = ("circumscribed", "indistinct", "angular", "microlobulated", "spiculated")
ORIENTATIONS = ("parallel", "not_parallel")
ECHO_PATTERNS = ("anechoic", "hypoechoic", "isoechoic", "complex", "heterogeneous")
POSTERIOR = ("none", "enhancement", "shadowing", "combined")
CALCIFICATIONS = ("absent", "present")
BIRADS = ("2", "3", "4a", "4b", "4c", "5")
LABELS = ("benign", "malignant")


@dataclass(frozen=True)
class CenterSpec:
    """One site: its scanner and its case mix."""

    scanner: str
    frequency_mhz: float  # transducer centre frequency: sets the PSF, hence speckle size
    gain_db: float  # overall gain: shifts brightness
    dynamic_range_db: float  # log-compression range mapped to 0..255
    depth_mm: float  # imaging depth (the image is square: lateral field = depth)
    tgc_compensation: float  # fraction of the depth attenuation the TGC undoes (imperfect: < 1)
    calipers: float  # probability that caliper '+' markers were left on the image
    prevalence: float  # expected fraction malignant
    age_mean: float
    age_sd: float
    compounding_looks: int = 1  # spatial compounding: steered looks averaged (smoother speckle, same grain)
    logo: str = ""  # vendor mark burned into a box
    overlay_layout: tuple[str, str, str] = ("tl", "bl", "right")  # logo corner, text corner, depth-scale side


CENTERS: dict[str, CenterSpec] = {
    "center_A": CenterSpec("Aurora L14-5", frequency_mhz=14.0, gain_db=0.0, dynamic_range_db=60.0, depth_mm=35.0,
                           tgc_compensation=0.92, calipers=0.6, prevalence=0.35, age_mean=52.0, age_sd=12.0,
                           compounding_looks=3, logo="AURORA", overlay_layout=("tl", "bl", "right")),
    "center_B": CenterSpec("Borealis L7-3", frequency_mhz=7.0, gain_db=4.0, dynamic_range_db=50.0, depth_mm=45.0,
                           tgc_compensation=0.80, calipers=0.0, prevalence=0.45, age_mean=57.0, age_sd=13.0,
                           compounding_looks=1, logo="BOREALIS", overlay_layout=("tr", "bl", "left")),
    "center_C": CenterSpec("Cirrus L12-4", frequency_mhz=10.0, gain_db=-3.0, dynamic_range_db=55.0, depth_mm=40.0,
                           tgc_compensation=0.88, calipers=0.4, prevalence=0.25, age_mean=47.0, age_sd=11.0,
                           compounding_looks=2, logo="cirrus", overlay_layout=("br", "bl", "right")),
}
DEFAULT_EXTERNAL_CENTER = "center_C"

RISK_MODEL: dict[str, float] = {
    "intercept[center_A]": -2.27,
    "intercept[center_B]": -1.93,
    "intercept[center_C]": -2.74,
    "age_per_10y_over_50": 0.35,
    "size_per_10mm_over_15": 0.40,
    "palpable_yes": 0.30,
    "shape_round": 0.00,
    "shape_irregular": 1.30,
    "margin_indistinct": 0.80,
    "margin_angular": 1.20,
    "margin_microlobulated": 1.00,
    "margin_spiculated": 2.00,
    "orientation_not_parallel": 1.00,
    "echo_pattern_anechoic": -2.50,
    "echo_pattern_isoechoic": -0.30,
    "echo_pattern_complex": 0.60,
    "echo_pattern_heterogeneous": 0.50,
    "posterior_enhancement": -0.80,
    "posterior_shadowing": 1.00,
    "posterior_combined": 0.40,
    "calcifications_present": 1.00,
    "microstructure_heterogeneity": 0.90,
}

# The reader weighs the recorded lexicon features like the risk model, plus noise; categories by the
# ACR likelihood bands (3: <= 2 %, 4a: 2-10 %, 4b: 10-50 %, 4c: 50-95 %, 5: >= 95 %; 2: benign finding).
_READER_INTERCEPT = -3.0
_READER_NOISE_SD = 0.8
_BIRADS_CUTS = (0.005, 0.02, 0.10, 0.50, 0.95)


@dataclass
class PhantomCase:
    """One simulated case: the B-mode image, lesion mask, recorded conditions, label and hidden truths."""

    image: np.ndarray  # uint8 (H, W)
    mask: np.ndarray  # uint8 (H, W), 0/255
    conditions: dict[str, Any]  # cond_* values as recorded (missing = None)
    label: str
    true_risk: float
    microstructure_heterogeneity: float  # the unrecorded latent, for audits of image-only signal


def phantom_schema() -> ManifestSchema:
    """The schema of the phantom cohort's manifest: binary benign/malignant and its ``cond_*`` columns."""
    cat = functools.partial(ConditionSpec, "categorical")
    return ManifestSchema(
        dataset="phantom",
        task="binary",
        label_set=LABELS,
        positive_class="malignant",
        conditions={
            "cond_age": ConditionSpec("numeric", unit="years", min=18, max=100, description="patient age"),
            "cond_lesion_size_mm": ConditionSpec("numeric", unit="mm", min=2, max=80,
                                                 description="largest lesion diameter as measured"),
            "cond_palpable": cat(levels=("no", "yes"), description="lesion palpable on examination"),
            "cond_birads": cat(levels=BIRADS, description="BI-RADS assessment category (reader)"),
            "cond_shape": cat(levels=SHAPES, description="BI-RADS shape"),
            "cond_margin": cat(levels=MARGINS, description="BI-RADS margin"),
            "cond_orientation": cat(levels=ORIENTATIONS, description="BI-RADS orientation"),
            "cond_echo_pattern": cat(levels=ECHO_PATTERNS, description="BI-RADS echo pattern"),
            "cond_posterior": cat(levels=POSTERIOR, description="BI-RADS posterior features"),
            "cond_calcifications": cat(levels=CALCIFICATIONS, description="echogenic foci in the lesion"),
            "cond_scanner": cat(levels=tuple(c.scanner for c in CENTERS.values()), description="scanner model"),
        },
        source="diffkd_study.data.phantom: simulated B-mode breast ultrasound (no real patients); "
               "risk model documented in the module docstring.",
    )


# ------------------------------------------------------------------------------------------------
# Clinical and lexicon features
# ------------------------------------------------------------------------------------------------
def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _choice(r: np.random.Generator, levels: tuple[str, ...], logits: list[float]) -> str:
    weights = np.exp(np.asarray(logits) - max(logits))
    return levels[int(r.choice(len(levels), p=weights / weights.sum()))]


def _sample_features(r: np.random.Generator, spec: CenterSpec) -> dict[str, Any]:
    """Age, lexicon features, size, palpability and the unrecorded heterogeneity (steps 2-4)."""
    age = float(np.clip(r.normal(spec.age_mean, spec.age_sd), 18, 95))
    z = 0.4 * (age - 50.0) / 12.0 + r.normal()
    f: dict[str, Any] = {"age": age}
    if r.random() < _sigmoid(-2.0 - 1.2 * z):  # simple-cyst-like finding
        f["shape"] = "oval" if r.random() < 0.6 else "round"
        f["margin"] = "circumscribed" if r.random() < 0.85 else "indistinct"
        f["orientation"] = "parallel" if r.random() < 0.9 else "not_parallel"
        f["echo_pattern"] = "anechoic"
        f["posterior"] = "enhancement" if r.random() < 0.8 else "none"
        f["calcifications"] = "absent"
    else:
        f["shape"] = _choice(r, SHAPES, [0.6 - 1.2 * z, -0.5, -0.6 + 1.5 * z])
        irregular = 0.7 if f["shape"] == "irregular" else 0.0
        f["margin"] = _choice(r, MARGINS, [1.2 - 1.5 * z - irregular, 0.0, -0.8 + 0.8 * z,
                                           -0.8 + 0.7 * z, -1.5 + 1.6 * z + irregular])
        f["orientation"] = "not_parallel" if r.random() < _sigmoid(-1.5 + 1.2 * z) else "parallel"
        f["echo_pattern"] = _choice(r, ECHO_PATTERNS, [-9.0, 1.0, -0.3 - 0.3 * z, -1.3 + 0.4 * z, -0.8 + 0.6 * z])
        f["posterior"] = _choice(r, POSTERIOR, [1.0, -0.6 - 0.5 * z, -1.2 + 1.0 * z, -2.0 + 0.5 * z])
        f["calcifications"] = "present" if r.random() < _sigmoid(-2.3 + 1.0 * z) else "absent"
    f["size_mm"] = float(np.clip(math.exp(r.normal(math.log(12.0) + 0.15 * z, 0.4)), 4.0, 0.55 * spec.depth_mm))
    f["lesion_depth_frac"] = float(r.uniform(0.35, 0.65))
    f["palpable"] = "yes" if r.random() < _sigmoid(-2.0 + 0.12 * (f["size_mm"] - 12.0)
                                                   - 3.0 * (f["lesion_depth_frac"] - 0.5)) else "no"
    f["heterogeneity"] = float(r.normal())
    return f


def _lexicon_logit(f: Mapping[str, Any]) -> float:
    m = RISK_MODEL
    return (m["shape_round"] * (f["shape"] == "round") + m["shape_irregular"] * (f["shape"] == "irregular")
            + m.get(f"margin_{f['margin']}", 0.0) + m["orientation_not_parallel"] * (f["orientation"] == "not_parallel")
            + m.get(f"echo_pattern_{f['echo_pattern']}", 0.0) + m.get(f"posterior_{f['posterior']}", 0.0)
            + m["calcifications_present"] * (f["calcifications"] == "present"))


def risk_logit(f: Mapping[str, Any], center: str) -> float:
    """The documented logistic risk model (log-odds of malignancy) for one case's true features."""
    m = RISK_MODEL
    return (m[f"intercept[{center}]"] + m["age_per_10y_over_50"] * (f["age"] - 50.0) / 10.0
            + m["size_per_10mm_over_15"] * (f["size_mm"] - 15.0) / 10.0 + m["palpable_yes"] * (f["palpable"] == "yes")
            + _lexicon_logit(f) + m["microstructure_heterogeneity"] * f["heterogeneity"])


def _reader_birads(r: np.random.Generator, f: Mapping[str, Any]) -> str:
    if f["echo_pattern"] == "anechoic" and f["margin"] == "circumscribed" and r.random() < 0.85:
        return "2"
    size_term = RISK_MODEL["size_per_10mm_over_15"] * (f["size_mm"] - 15.0) / 10.0
    p = _sigmoid(_READER_INTERCEPT + _lexicon_logit(f) + size_term + r.normal(0.0, _READER_NOISE_SD))
    return BIRADS[int(np.searchsorted(_BIRADS_CUTS, p))]


# ------------------------------------------------------------------------------------------------
# Image formation
# ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _interpolation_matrix(n: int, cells: int) -> np.ndarray:
    """(n, cells + 3) Gaussian weights from a coarse grid (spacing n / cells) to n pixels, rows with unit
    L2 norm so that white coarse noise becomes a unit-variance smooth field."""
    spacing = n / cells
    nodes = (np.arange(cells + 3) - 1.0) * spacing
    weights = np.exp(-0.5 * ((np.arange(n)[:, None] + 0.5 - nodes[None, :]) / (0.6 * spacing)) ** 2)
    weights /= np.sqrt((weights**2).sum(axis=1, keepdims=True))
    weights.flags.writeable = False
    return weights.astype(np.float32)


def _smooth_noise(r: np.random.Generator, n: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-SD smooth random field (n x n) with about ``cells`` blobs across."""
    weights = _interpolation_matrix(n, cells)
    field = weights @ r.standard_normal((cells + 3, cells + 3), dtype=np.float32) @ weights.T
    return (field - field.mean()) / (field.std() + 1e-6)


@functools.lru_cache(maxsize=256)
def _kernel_norm(sigma: float) -> float:
    """L2 norm of scipy's normalised 1-D Gaussian kernel: blurring white noise scales its SD by this."""
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    w /= w.sum()
    return float(np.sqrt((w ** 2).sum()))


def _blur(field: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    sigma = round(sigma, 2)
    return ndimage.gaussian_filter1d(field, sigma, axis=axis, mode="reflect", truncate=4.0) / _kernel_norm(sigma)


def _lesion_radius(r: np.random.Generator, f: Mapping[str, Any], theta: np.ndarray) -> np.ndarray:
    """Normalised polar outline r(theta) (1 = the ellipse): harmonics for lobulation, spikes for spicules."""
    out = np.ones_like(theta)
    if f["shape"] == "irregular":
        for k in (2, 3, 4, 5):
            out += r.uniform(0.05, 0.14) * np.cos(k * theta + r.uniform(0, 2 * np.pi))
    else:
        out += 0.03 * np.cos(2 * theta + r.uniform(0, 2 * np.pi))
    margin = f["margin"]
    if margin == "microlobulated":
        k = int(r.integers(7, 12))
        out += r.uniform(0.07, 0.11) * np.abs(np.sin(0.5 * k * theta + r.uniform(0, np.pi))) - 0.06
    elif margin == "angular":
        k = int(r.integers(3, 6))
        phase = r.uniform(0, 2 * np.pi)
        tri = 2.0 / np.pi * np.arcsin(np.cos(k * theta + phase))  # triangle wave: sharp corners
        out += r.uniform(0.10, 0.18) * tri
    elif margin == "spiculated":
        for angle in r.uniform(0, 2 * np.pi, int(r.integers(6, 12))):
            d = np.angle(np.exp(1j * (theta - angle)))
            out += r.uniform(0.35, 0.8) * np.exp(-0.5 * (d / r.uniform(0.05, 0.09)) ** 2)
    elif margin == "indistinct":
        for k in (5, 7):
            out += 0.04 * np.cos(k * theta + r.uniform(0, 2 * np.pi))
    return np.maximum(out, 0.3)


def _lesion_echo(r: np.random.Generator, f: Mapping[str, Any], n: int) -> np.ndarray:
    """Echogenicity inside the lesion (n x n, before the outline cuts it)."""
    pattern = f["echo_pattern"]
    if pattern == "anechoic":
        base = np.full((n, n), 0.008, np.float32)
    elif pattern == "hypoechoic":
        base = 0.05 * np.exp(0.25 * _smooth_noise(r, n, 6))
    elif pattern == "isoechoic":
        base = 0.22 * np.exp(0.3 * _smooth_noise(r, n, 6))  # BI-RADS: as echogenic as subcutaneous fat
    elif pattern == "complex":
        base = np.where(_smooth_noise(r, n, 5) > 0.2, 0.008, 0.30).astype(np.float32)
    else:  # heterogeneous
        base = 0.10 * np.exp(0.8 * _smooth_noise(r, n, 10))
    # Microstructure heterogeneity (unrecorded): fine-grained mottling of the internal echoes.
    mottle_sd = 1.2 * _sigmoid(2.0 * f["heterogeneity"] - 0.5)
    return (base * np.exp(mottle_sd * _smooth_noise(r, n, max(8, n // 5)))).astype(np.float32)


def _undulation(r: np.random.Generator, x: np.ndarray, amplitude: float, period: float) -> np.ndarray:
    """A smooth, irregular 1-D profile (three incommensurate cosines) for a tissue boundary."""
    out = np.zeros_like(x)
    for k in (1.0, 1.7, 2.9):
        out += amplitude / k * np.cos(2 * np.pi * k * x / (period * r.uniform(0.7, 1.4)) + r.uniform(0, 2 * np.pi))
    return out


def _anatomy(r: np.random.Generator, f: Mapping[str, Any], n: int, y: np.ndarray, x: np.ndarray,
             depth_mm: float) -> tuple[np.ndarray, float]:
    """Background echogenicity map and the depth (mm) of the muscle fascia."""
    xs = x[0]
    age_factor = (f["age"] - 50.0) / 20.0
    skin = r.uniform(1.2, 2.0)
    fat_bottom = skin + r.uniform(4.0, 9.0) + 2.0 * age_factor + _undulation(r, xs, r.uniform(1.0, 2.5), 22.0)
    gland_bottom = fat_bottom + max(4.0, r.uniform(9.0, 15.0) - 3.0 * age_factor) + _undulation(r, xs, 1.5, 30.0)
    # The fascia is smoother than the gland: retromammary fat fills the space between them.
    fascia = ndimage.gaussian_filter1d(gland_bottom, 10.0 / (xs[1] - xs[0]), mode="nearest")
    muscle_top = fascia + np.max(gland_bottom - fascia) + r.uniform(0.8, 2.0) + 0.02 * r.uniform(-1, 1) * xs
    lobules = _smooth_noise(r, n, max(6, int(depth_mm / 4)))
    fat = 0.2 * np.exp(0.35 * lobules)
    gland_texture = _smooth_noise(r, n, max(8, int(depth_mm / 3)))
    gland = np.where(gland_texture < -0.9, 0.3, 1.0 * np.exp(0.35 * gland_texture))
    # Pectoral muscle: hypoechoic with oblique, interrupted bright striations (fibro-fatty septa); below
    # it the chest wall, dark and mottled, under a bright fascia line.
    muscle_bottom = muscle_top + r.uniform(6.0, 11.0)
    slope = r.uniform(-0.15, 0.15)
    # (the fat and gland fields are re-used for the muscle: the layers do not overlap)
    along = y - slope * x + 0.6 * np.sin(2 * np.pi * x / r.uniform(18, 35)) + 0.5 * lobules
    patchy = 1.0 / (1.0 + np.exp(-2.0 * gland_texture))
    striation = np.maximum(np.cos(2 * np.pi * along / r.uniform(1.4, 2.2)), 0.0) ** 4 * patchy
    muscle = 0.2 * (1.0 + 5.0 * striation)
    chest_wall = 0.07 * np.exp(0.4 * gland_texture)
    echo = np.where(y < fat_bottom, fat, np.where(y < gland_bottom, gland, np.where(y < muscle_top, fat,
                    np.where(y < muscle_bottom, muscle, chest_wall))))
    echo = np.where(y < skin - 0.8, 0.015, echo)
    echo = (echo + 2.5 * np.exp(-0.5 * ((y[:, :1] - skin) / 0.35) ** 2)
            + 1.2 * np.exp(-0.5 * ((y - muscle_top) / 0.35) ** 2)
            + 1.0 * np.exp(-0.5 * ((y - muscle_bottom) / 0.45) ** 2))
    # Cooper's ligaments: thin bright curved lines crossing the fat from the skin down to the gland.
    band = (y > skin) & (y < gland_bottom + 1.0)
    for _ in range(int(r.integers(2, 5))):
        x0, lean, bow = r.uniform(0, depth_mm), r.uniform(-0.8, 0.8), r.uniform(-4, 4)
        t = (y - skin) / (fat_bottom - skin + 1e-6)
        curve = x0 + lean * (y - skin) + bow * np.sin(np.pi * np.clip(t, 0, 1))
        echo = echo + band * 1.6 * np.exp(-0.5 * ((x - curve) / 0.3) ** 2)
    return echo.astype(np.float32), float(np.mean(muscle_top))


def _posterior_db(r: np.random.Generator, kind: str, mask: np.ndarray, sigma_px: float,
                  edge_shadows: bool) -> np.ndarray:
    """dB offsets from the lesion's attenuation: shadowing (negative), enhancement (positive), or both
    side by side. The offset grows with the path length through the lesion along each beam line (so it
    starts inside the lesion and follows its outline), and is blurred laterally by the beam width.
    ``edge_shadows``: thin refraction shadows below the lateral walls of a smooth, rounded lesion."""
    n = mask.shape[0]
    offset = np.zeros(mask.shape, np.float32)
    if not mask.any():
        return offset
    cols = np.nonzero(mask.any(axis=0))[0]
    beam = max(1.0, sigma_px, 0.02 * n)
    if kind != "none":
        path = np.cumsum(mask, axis=0, dtype=np.float32)
        path = np.sqrt(path / max(float(path[-1].max()), 1.0))
        if kind == "shadowing":
            amplitude = -r.uniform(12.0, 20.0) * np.ones(n)
        elif kind == "enhancement":
            amplitude = r.uniform(6.0, 10.0) * np.ones(n)
        else:
            amplitude = np.where(np.arange(n) < cols.mean(), -r.uniform(10.0, 16.0), r.uniform(6.0, 9.0))
            if r.random() < 0.5:
                amplitude = amplitude[::-1]
        offset += ndimage.gaussian_filter1d(path * amplitude[None, :].astype(np.float32), beam, axis=1)
    if edge_shadows:
        rows = np.nonzero(mask.any(axis=1))[0]
        start = np.clip((np.arange(n) - rows.mean()) / max(1.0, 0.25 * (rows[-1] - rows[0])), 0, 1)[:, None]
        x = np.arange(n)[None, :]
        lines = sum(np.exp(-0.5 * ((x - edge) / max(0.7, 0.5 * beam)) ** 2) for edge in (cols[0], cols[-1]))
        offset -= (r.uniform(6.0, 10.0) * start * lines).astype(np.float32)
    return offset


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


@functools.lru_cache(maxsize=32)
def _static_overlay(spec: CenterSpec, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Vendor logo box, scanner name, depth and gain, a depth scale with 5 mm ticks and the focus marker,
    drawn at >= 256 px and resampled to ``n``: returns read-only (value, alpha), float32 in [0, 1].
    Each center has its own layout (``CenterSpec.overlay_layout``)."""
    logo_corner, text_corner, scale_side = spec.overlay_layout
    canvas = max(256, 2 * n)
    value, alpha = Image.new("L", (canvas, canvas), 0), Image.new("L", (canvas, canvas), 0)
    font = _font(max(10, canvas // 14))
    pad = canvas // 64
    lines = [spec.scanner, f"D {spec.depth_mm / 10:.1f} cm  G {50 + spec.gain_db:.0f}%"]
    if text_corner[0] == logo_corner[0]:  # logo and text share the top or bottom edge: stack them
        lines = lines[1:]
    probe = ImageDraw.Draw(value)
    text = "\n".join(lines)
    left, top, right, bottom = probe.multiline_textbbox((0, 0), text, font=font, spacing=pad)
    text_xy = (pad if text_corner[1] == "l" else canvas - (right - left) - 4 * pad,
               pad if text_corner[0] == "t" else canvas - (bottom - top) - 2 * pad)
    logo_font = _font(max(10, canvas // 12))
    left, top, right, bottom = probe.textbbox((0, 0), spec.logo, font=logo_font)
    box_w, box_h = right - left + 3 * pad, bottom - top + 2 * pad
    box_x = pad if logo_corner[1] == "l" else canvas - box_w - 4 * pad
    box_y = pad if logo_corner[0] == "t" else canvas - box_h - pad
    if text_corner[0] == logo_corner[0] and text_corner[1] == logo_corner[1]:
        text_xy = (text_xy[0], box_y + box_h + pad if logo_corner[0] == "t" else box_y - (bottom - top) - 3 * pad)
    x_scale = canvas - 2 * pad if scale_side == "right" else 2 * pad
    direction = -1 if scale_side == "right" else 1
    ticks = [((x_scale, 0), (x_scale, canvas - 1))]
    for mm in range(0, int(spec.depth_mm) + 1, 5):
        y = mm / spec.depth_mm * (canvas - 1)
        ticks.append(((x_scale + direction * (14 if mm % 10 == 0 else 7) * canvas / 256, y), (x_scale, y)))
    focus_y = 0.45 * canvas
    arrow = [(x_scale + direction * 18 * canvas / 256, focus_y),
             (x_scale + direction * 28 * canvas / 256, focus_y - 6 * canvas / 256),
             (x_scale + direction * 28 * canvas / 256, focus_y + 6 * canvas / 256)]
    for layer, outline in ((value, 0), (alpha, 255)):  # text outlined in black for legibility
        draw = ImageDraw.Draw(layer)
        draw.rectangle((box_x, box_y, box_x + box_w, box_y + box_h), fill=40 if outline == 0 else 255,
                       outline=255, width=max(1, canvas // 200))
        draw.text((box_x + 1.5 * pad, box_y + pad - top), spec.logo, fill=255, font=logo_font)
        draw.multiline_text(text_xy, text, fill=255, font=font, spacing=pad, stroke_width=max(1, canvas // 256),
                            stroke_fill=outline)
        for a, b in ticks:
            draw.line([a, b], fill=255, width=max(2, canvas // 128))
        draw.polygon(arrow, fill=255)
    value, alpha = (np.asarray(im.resize((n, n), Image.Resampling.BOX), np.float32) / 255.0 for im in (value, alpha))
    value.flags.writeable = alpha.flags.writeable = False
    return value, alpha


def _burn_in(image: np.ndarray, r: np.random.Generator, spec: CenterSpec, lesion_box: tuple[int, int, int, int],
             calipers: bool) -> np.ndarray:
    """Blend the overlay into the 0..255 float image; calipers: '+' markers at the lesion's lateral ends."""
    n = image.shape[0]
    value, alpha = _static_overlay(spec, n)
    if calipers:
        value, alpha = value.copy(), alpha.copy()
        x0, y0, x1, y1 = lesion_box
        arm = max(2, n // 40)
        cy = (y0 + y1) // 2
        for cx in (x0 + int(r.integers(-1, 2)), x1 + int(r.integers(-1, 2))):
            cx, cy_ = int(np.clip(cx, arm, n - 1 - arm)), int(np.clip(cy, arm, n - 1 - arm))
            for layer in (value, alpha):
                layer[cy_, cx - arm:cx + arm + 1] = 1.0
                layer[cy_ - arm:cy_ + arm + 1, cx] = 1.0
    return image * (1.0 - alpha) + 250.0 * value * alpha


def _render(r: np.random.Generator, f: Mapping[str, Any], center: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    spec = CENTERS[center]
    depth = spec.depth_mm
    mm_per_px = depth / n
    coords = (np.arange(n, dtype=np.float32) + 0.5) * mm_per_px
    y, x = coords[:, None] * np.ones((1, n), np.float32), np.ones((n, 1), np.float32) * coords[None, :]
    echo, muscle_top = _anatomy(r, f, n, y, x, depth)

    # Lesion geometry: semi-axes from size, aspect ratio from orientation/shape, polar outline r(theta).
    if f["shape"] == "round":
        aspect = r.uniform(0.9, 1.05)
    elif f["orientation"] == "parallel":
        aspect = r.uniform(0.5, 0.8)
    else:
        aspect = r.uniform(1.15, 1.5)
    half_width = 0.5 * f["size_mm"] / max(1.0, aspect) / mm_per_px
    half_height = half_width * aspect
    # lesion_depth_frac: relative depth between the skin and the pectoral fascia (the lesion is in the breast)
    cy_px = float(np.clip(f["lesion_depth_frac"] * muscle_top / mm_per_px, half_height + 0.12 * n,
                          n - half_height - 0.1 * n))
    cx_px = r.uniform(0.35, 0.65) * n
    tilt = r.uniform(-0.25, 0.25)
    px = np.arange(n, dtype=np.float32) + 0.5
    dx, dy = px[None, :] - cx_px, px[:, None] - cy_px
    u = (dx * math.cos(tilt) + dy * math.sin(tilt)) / half_width
    v = (-dx * math.sin(tilt) + dy * math.cos(tilt)) / half_height
    rho, theta = np.hypot(u, v), np.arctan2(v, u)
    theta_grid = np.linspace(-np.pi, np.pi, 721)
    outline = np.interp(theta, theta_grid, _lesion_radius(r, f, theta_grid)).astype(np.float32)
    inside = outline - rho  # > 0 inside, in units of the semi-axes
    mask = inside > 0
    if not mask.any():
        mask[int(cy_px), int(cx_px)] = True
    edge = {"indistinct": 0.22, "spiculated": 0.08, "angular": 0.05}.get(f["margin"], 0.03)
    weight = 1.0 / (1.0 + np.exp(-np.clip(inside / edge, -30, 30)))
    lesion_echo = _lesion_echo(r, f, n)
    echo = weight * lesion_echo + (1.0 - weight) * echo
    if f["margin"] in ("spiculated", "angular") and r.random() < 0.6:  # echogenic halo
        echo = echo + 0.8 * np.exp(-0.5 * ((rho - outline) / 0.12) ** 2) * (inside < 0)
    elif f["margin"] == "circumscribed" and f["echo_pattern"] != "isoechoic":  # thin capsule
        echo = echo + 0.5 * np.exp(-0.5 * ((rho - outline) / 0.05) ** 2)

    # Complex scatterer field (fully developed speckle) plus coherent point reflectors.
    field = r.standard_normal((2, n, n), dtype=np.float32) * (echo * math.sqrt(0.5))[None]
    if f["calcifications"] == "present":
        ys, xs = np.nonzero(mask & (inside > 0.15))
        if ys.size:
            pick = r.choice(ys.size, size=min(ys.size, int(r.integers(3, 9))), replace=False)
            phase = r.uniform(0, 2 * np.pi, pick.size)
            field[0, ys[pick], xs[pick]] += 6.0 * np.cos(phase)
            field[1, ys[pick], xs[pick]] += 6.0 * np.sin(phase)

    # Depth-dependent PSF: axial from the pulse, lateral from the beam (narrowest at the focus).
    wavelength = SPEED_OF_SOUND_MM_PER_US / spec.frequency_mhz
    sigma_axial = PSF_SCALE_AXIAL * wavelength / mm_per_px
    sigma_focus = PSF_SCALE_LATERAL * wavelength / mm_per_px
    focus = float(np.clip(cy_px * mm_per_px + r.normal(0, 2.0), 0.25 * depth, 0.75 * depth))
    field = _blur(field, max(0.3, sigma_axial), axis=1)
    t_near = np.clip((focus - coords) / focus, 0, 1)[:, None]
    t_far = np.clip((coords - focus) / (depth - focus), 0, 1)[:, None]
    focus_row = int(np.searchsorted(coords, focus))
    # Spatial compounding: beams steered by different angles see the same scatterers with a different
    # lateral phase ramp, so each look has its own speckle with the same grain; looks add in intensity.
    intensity = np.zeros((n, n), np.float32)
    ramp = np.arange(n, dtype=np.float32)[None, :] * (2.0 / max(0.3, sigma_focus))
    for look in range(spec.compounding_looks):
        steer = look - 0.5 * (spec.compounding_looks - 1)
        if steer:
            cos, sin = np.cos(steer * ramp), np.sin(steer * ramp)
            look_field = np.stack([field[0] * cos + field[1] * sin, field[1] * cos - field[0] * sin])
        else:
            look_field = field
        # lateral blur per depth band (rows are independent, so each band blurs only its own rows)
        blurred = (1 - t_near - t_far) * _blur(look_field, max(0.3, sigma_focus), axis=2)
        blurred[:, :focus_row] += t_near[:focus_row] * _blur(look_field[:, :focus_row], max(0.3, 1.5 * sigma_focus), 2)
        blurred[:, focus_row:] += t_far[focus_row:] * _blur(look_field[:, focus_row:], max(0.3, 1.8 * sigma_focus), 2)
        intensity += blurred[0] ** 2 + blurred[1] ** 2
    envelope = np.sqrt(intensity / spec.compounding_looks)

    # Log compression; posterior features and attenuation with imperfect TGC act in dB.
    db = 20.0 * np.log10(envelope + 1e-4)
    edge_shadows = (f["margin"] == "circumscribed" and f["shape"] != "irregular"
                    and f["echo_pattern"] != "isoechoic" and r.random() < 0.5)
    db += _posterior_db(r, f["posterior"], mask, sigma_focus, edge_shadows)
    attenuation = 2.0 * ATTENUATION_DB_PER_CM_MHZ * spec.frequency_mhz * coords / 10.0
    knobs = np.interp(coords, np.linspace(0, depth, 8), r.normal(0, 1.5, 8))
    db += (-(1.0 - spec.tgc_compensation) * attenuation + knobs)[:, None]
    gray = (db + spec.gain_db - ECHO_REFERENCE_DB) / spec.dynamic_range_db + 1.0
    image = np.clip(gray * 255.0, 0, 255)

    rows, cols = np.nonzero(mask)
    box = (int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max()))
    image = _burn_in(image, r, spec, box, calipers=r.random() < spec.calipers)
    return image.astype(np.uint8), (mask.astype(np.uint8) * 255)


def simulate_case(rng_seed: int, center: str, image_size: int = 128) -> PhantomCase:
    """One patient: features, label and image, all from ``rng_seed`` (deterministic)."""
    if center not in CENTERS:
        raise ValueError(f"unknown center {center!r}; known: {sorted(CENTERS)}")
    if image_size < 32:
        raise ValueError(f"image_size {image_size} is too small (>= 32 pixels)")
    spec = CENTERS[center]
    r = np.random.default_rng(rng_seed)
    f = _sample_features(r, spec)
    true_risk = _sigmoid(risk_logit(f, center))
    label = LABELS[int(r.random() < true_risk)]
    birads = _reader_birads(r, f)
    measured_size = round(float(f["size_mm"] * math.exp(r.normal(0, 0.06))), 1)
    conditions: dict[str, Any] = {
        "cond_age": None if r.random() < MISSING_FRACTION else int(round(f["age"])),
        "cond_lesion_size_mm": measured_size,
        "cond_palpable": None if r.random() < MISSING_FRACTION else f["palpable"],
        "cond_birads": birads,
        "cond_shape": f["shape"],
        "cond_margin": f["margin"],
        "cond_orientation": f["orientation"],
        "cond_echo_pattern": f["echo_pattern"],
        "cond_posterior": f["posterior"],
        "cond_calcifications": f["calcifications"],
        "cond_scanner": spec.scanner,
    }
    image, mask = _render(r, f, center, image_size)
    return PhantomCase(image=image, mask=mask, conditions=conditions, label=label, true_risk=true_risk,
                       microstructure_heterogeneity=f["heterogeneity"])


# ------------------------------------------------------------------------------------------------
# Cohort
# ------------------------------------------------------------------------------------------------
def _counts(n_per_center: int | Mapping[str, int]) -> dict[str, int]:
    if isinstance(n_per_center, Mapping):
        unknown = set(n_per_center) - set(CENTERS)
        if unknown:
            raise ValueError(f"n_per_center names unknown center(s) {sorted(unknown)}; known: {sorted(CENTERS)}")
        counts = {c: int(n_per_center[c]) for c in CENTERS if c in n_per_center}
    else:
        counts = {c: int(n_per_center) for c in CENTERS}
    if any(v < 0 for v in counts.values()) or sum(counts.values()) == 0:
        raise ValueError(f"n_per_center must give at least one case and no negative counts, got {counts}")
    return counts


def generate_phantom_cohort(out_dir: str | Path, *, n_per_center: int | Mapping[str, int] = 100, seed: int = 0,
                            image_size: int = 128, progress: bool = True, overwrite: bool = False) -> Manifest:
    """Write ``images/``, ``masks/`` and ``phantom.csv`` (+ sidecar) into ``out_dir`` atomically.

    An ``out_dir`` that holds files this program did not write is refused before any work (see
    :func:`diffkd_study.io.atomic_dir`) unless ``overwrite``; a cohort it wrote earlier is replaced.
    """
    from diffkd_study.progress import progress_bar

    out_dir = Path(out_dir)
    counts = _counts(n_per_center)
    jobs = [(c, i) for c, k in counts.items() for i in range(k)]
    rows = []
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for center, index in progress_bar(jobs, desc="phantom cohort", unit="img", disable=not progress):
            case = simulate_case(derive_seed(seed, center, index), center, image_size)
            image_id = f"ph{center.removeprefix('center_')}_{index:05d}"
            Image.fromarray(case.image).save(tmp / "images" / f"{image_id}.png", compress_level=3)
            Image.fromarray(case.mask).save(tmp / "masks" / f"{image_id}.png", compress_level=3)
            rows.append({"image_id": image_id, "patient_id": f"{image_id}_pt", "dataset": "phantom",
                         "center": center, "image_path": f"images/{image_id}.png",
                         "mask_path": f"masks/{image_id}.png", "label": case.label,
                         **{k: (np.nan if v is None else v) for k, v in case.conditions.items()},
                         "true_risk": round(case.true_risk, 5)})
        manifest = Manifest(pd.DataFrame(rows), phantom_schema())
        write_manifest(manifest, tmp / "phantom.csv")
    manifest.path = out_dir / "phantom.csv"
    return manifest


def sample_grid(manifest: Manifest, root: str | Path, per_center: int = 4):
    """A figure: ``per_center`` cases per center (rows), mask outline in yellow, label and BI-RADS."""
    from matplotlib.figure import Figure

    root = Path(root)
    df = manifest.df
    centers = sorted(df["center"].unique())
    fig = Figure(figsize=(2.2 * per_center, 2.4 * len(centers)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(centers), per_center, squeeze=False))
    for row, center in zip(axes, centers, strict=True):
        chosen = df[df["center"] == center].head(per_center)
        for ax, (_, case) in zip(row, chosen.iterrows(), strict=False):
            ax.imshow(np.asarray(Image.open(root / case["image_path"])), cmap="gray", vmin=0, vmax=255)
            if isinstance(case.get("mask_path"), str):
                ax.contour(np.asarray(Image.open(root / case["mask_path"])) > 0, levels=[0.5], colors="yellow",
                           linewidths=0.6)
            ax.set_title(f"{case['label']}, BI-RADS {case.get('cond_birads', '?')}\n"
                         f"{case.get('cond_echo_pattern', '')}, {case.get('cond_margin', '')}", fontsize=7)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(center, fontsize=9)
    fig.suptitle("Simulated breast ultrasound (phantom cohort): samples per center")
    return fig
