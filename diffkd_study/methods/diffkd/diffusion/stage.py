"""Sections of the two stage-1 stages: ``diffusion`` (notebook 10) and ``synthetic_quality`` (notebook 20).

This module is light on purpose (no torch or diffusers import): ``diffkd_study.config`` imports it to
parse a study config. The work itself is in :mod:`diffkd_study.methods.diffkd.diffusion.workflow` and
:mod:`diffkd_study.methods.diffkd.diffusion.quality`.

Artifacts (all under the run folder ``runs/NAME``)
--------------------------------------------------
``diffusion/``
    ``checkpoint-<step>/`` (see :mod:`diffkd_study.methods.diffkd.diffusion.train`; every ``checkpoint_every`` steps
    and every ``checkpoint_minutes`` of wall-clock time; a re-run with the same section resumes from the
    latest one, and a finished run is not trained again; one written by other training code is moved
    to ``.superseded/<UTC time>/`` with the run's other files, and training starts afresh), ``loss.csv``
    (one row per optimizer step: ``step, loss``) and ``training.json`` (steps, wall time and images/s of
    the last call, the checkpoint used and its sha256, the training configuration).
``synthetic/``
    The synthetic set as a manifest folder: ``synthetic.csv`` + ``synthetic.schema.yaml`` (the study
    manifest's schema: same dataset, label set and declared conditions), ``images/*.png`` (uint8) and,
    for mask-conditioned models, ``masks/*.png`` (0/255, the conditioning mask). Every row has
    ``split=train``, ``synthetic=1``, the conditions it was generated from (conditions the model does not
    use are left empty), ``source_image_id`` / ``source_center`` (the training row whose conditions and
    mask were used), ``sampler``, ``steps``, ``guidance``, ``seed`` and ``checkpoint_sha256``.
    ``generation.json`` records how the set was made; a re-run with the same checkpoint and settings
    keeps the existing set (sampling is deterministic, so it would be identical).
    The synthetic-quality stage adds ``memorization.csv`` (one row per synthetic image: nearest training
    image and distance in domain-feature and in pixel space, the thresholds, ``flagged``) and
    ``augmentation.csv`` + sidecar: the synthetic manifest without the flagged rows (with
    ``exclude_flagged: false``, all rows). Its paths are relative to ``synthetic/``, like those of
    ``synthetic.csv``. **This is the table the teacher stage mixes with the real training images.**

Domain
------
``crop: lesion`` trains and samples the classifier's own input: the lesion-centred square of
every training image (the mask's box widened by ``crop_margin`` of its longer side, kept inside the image as
:mod:`diffkd_study.data.cache` does for the classifier), with the lesion mask in the square's coordinates as
the mask condition. The synthetic rows say so (``synthetic_crop=lesion``), and the classifier stages read them
as they are (no second crop) through the same resize chain as the real crops (``via`` = this resolution,
:class:`diffkd_study.methods.diffkd.stage.TrainingSection`). ``crop: none`` trains on whole frames stretched to
the diffusion resolution (the figures' option; a classifier on lesion crops then cuts the box out of a small
synthetic frame and upsamples it, so synthetic crops are blurrier than real ones: a resolution cue).
``crop: auto`` (the default) is resolved by the study config: ``lesion`` with the teacher's ``crop_margin`` when
the teacher section has ``crop: lesion``, else ``none`` (also ``none`` for a section read outside a study).

Resolution
----------
The diffusion model trains and samples at its own resolution (``diffusion_image_size``; the profile's:
32 px smoke, 64 px demo, 128 px full), which may be below the study resolution
(``image_size``, e.g. 128 px for the phantom demo, 224 px for BUS-BRA). The synthetic PNGs are written at
the diffusion resolution and are **not** upsampled here: a consumer loads them with
``ManifestDataset(manifest, root=run_dir / "synthetic", size=image_size)``, whose preprocessing resizes
every image (bilinear, ``stretch``) and mask (nearest) to the study resolution exactly as it resizes the
real images. Their effective detail is that of the diffusion resolution, which the reports state. The
quality metrics compare synthetic and real images at the diffusion resolution (the real images are
loaded at that size), so neither set has an advantage of detail.

Class counts
------------
``class_counts`` (``["benign=120", "malignant=120"]``) fixes the number per label. Otherwise ``label_mix``
decides: ``prior`` (the default) follows the real training split's label proportions (largest-remainder
rounding), ``n_synthetic`` images in all (0: as many as the real training images), so synthetic images
change the amount of data but not the class prior a classifier learns; ``balanced`` gives every label
``n_per_class`` images (0: as many as the most frequent label has training images), which shifts the prior
(with a blurrier synthetic set that once made blur a malignancy cue). Conditions and
masks are whole training rows drawn with replacement within each label (the empirical joint
distribution), or the rows of ``condition_table`` (a CSV with ``label``, the ``cond_*`` columns and, for
mask-conditioned models, ``mask_path`` relative to the study's data folder).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from diffkd_study.devices import check_device_name
from diffkd_study.methods.diffkd.diffusion.names import (
    BETA_SCHEDULES,
    DOMAIN_RESIZE_MODES,
    NUM_TRAIN_TIMESTEPS,
    PREDICTION_TYPES,
    SAMPLERS,
)
from diffkd_study.profiles import Profiles

#: the diffusion section's crops: auto (resolved by the study config) or a domain of DOMAIN_RESIZE_MODES
DIFFUSION_CROPS: tuple[str, ...] = ("auto", *DOMAIN_RESIZE_MODES)
#: how the synthetic set's labels are mixed (see "Class counts")
LABEL_MIXES: tuple[str, ...] = ("prior", "balanced")
_CLASS_COUNT = re.compile(r"^\s*(?P<label>[^=]+?)\s*=\s*(?P<count>\d+)\s*$")


def _probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


def parse_class_counts(entries: tuple[str, ...] | list[str]) -> dict[str, int]:
    """``["benign=120", "malignant=80"]`` -> ``{"benign": 120, "malignant": 80}`` (each label once)."""
    counts: dict[str, int] = {}
    for entry in entries:
        match = _CLASS_COUNT.match(str(entry))
        if match is None:
            raise ValueError(f"class_counts entry {entry!r} is not of the form 'label=count' (count >= 0)")
        label = match["label"]
        if label in counts:
            raise ValueError(f"class_counts names label {label!r} twice")
        counts[label] = int(match["count"])
    if counts and sum(counts.values()) == 0:
        raise ValueError("class_counts asks for no image at all")
    return counts


@dataclass(frozen=True)
class DiffusionStageConfig:
    """The ``diffusion`` section: train the conditional diffusion model, then sample the synthetic set.

    ``profile`` names the UNet (:data:`diffkd_study.methods.diffkd.diffusion.unet.UNET_PROFILES`) and, while the
    section is parsed, the training preset of :attr:`PROFILES` (its resolution, steps, batch, learning rate,
    warm-up, EMA decay and checkpoint interval; keys the section gives override them). The field defaults are
    the ``demo`` profile's. ``smoke``: tests (seconds). ``demo``: the phantom demo, 500 steps of 16 images at
    64 px: about 2 min on 2 idle CPU cores (0.24 s per step; 0.4 s on one core); the learning rate is 1e-3
    because this small model gets only 500 steps (at 3e-4, 600 steps left visibly noisier samples). Real data
    on a CPU uses the demo UNet with more steps set in the study config (``configs/busbra_external.yaml``).
    ``full``: 128 px on a GPU.
    """

    PROFILES: ClassVar[Profiles] = Profiles({
        "smoke": {"diffusion_image_size": 32, "batch_size": 4, "max_steps": 6, "learning_rate": 2e-4,
                  "warmup_steps": 0, "ema_decay": 0.999, "checkpoint_every": 3},
        "demo": {},  # the field defaults
        # full: 128 px, channels-last (diffkd_study.layout.MEMORY_FORMAT). Expected time not measured on a GPU (none available);
        # on one CPU thread (loaded 2-core machine) the full UNet (26.7 M parameters) trains at ~0.2 images/s
        # (channels-last 1.1x contiguous; the demo UNet 1.06-1.09x, benchmarks/training_throughput.py): 60,000
        # steps of 64 images would take months on a CPU, so this profile needs the GPU.
        "full": {"diffusion_image_size": 128, "batch_size": 64, "max_steps": 60_000, "learning_rate": 1e-4,
                 "warmup_steps": 1000, "ema_decay": 0.9999, "checkpoint_every": 5000},
    })

    profile: str = "demo"
    diffusion_image_size: int = 64  # px
    crop: str = "auto"  # lesion: the classifier's lesion-centred square; none: whole frames (see "Domain")
    crop_margin: float = 0.25  # crop: lesion; must equal the classifier stages' crop_margin
    conditions: tuple[str, ...] = ()  # cond_* columns; empty = every condition the manifest declares
    mask_conditioning: bool = True  # the lesion mask as an extra input channel (rows without one: none)
    max_steps: int = 500
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 50  # linear learning-rate warm-up, then cosine decay
    ema_decay: float = 0.995
    checkpoint_every: int = 250
    checkpoint_minutes: float = 10.0  # also a checkpoint after this much wall-clock time; 0 = off
    prediction_type: str = "epsilon"
    beta_schedule: str = "squaredcos_cap_v2"
    # classifier-free-guidance dropout, per modality (each categorical condition independently)
    label_dropout: float = 0.1
    condition_dropout: float = 0.1
    numeric_dropout: float = 0.1
    mask_dropout: float = 0.1
    resume: bool = True  # continue from the latest checkpoint; false: delete the checkpoints and start over
    sampler: str = "dpmsolver++"
    sampling_steps: int = 20
    guidance_scale: float = 2.0
    sample_batch_size: int = 32
    label_mix: str = "prior"  # prior: the real training proportions; balanced: n_per_class per label
    n_synthetic: int = 0  # label_mix prior: images in all (0: as many as the real training images)
    n_per_class: int = 0  # label_mix balanced: per label (0: as many as the largest training class)
    class_counts: tuple[str, ...] = ()  # "label=count" entries; override n_per_class
    condition_table: str = ""  # CSV of conditions to sample (relative to the project root or absolute)
    device: str = "auto"

    def __post_init__(self) -> None:
        self.PROFILES.preset(self.profile)  # "profile must be one of [...]"
        if self.diffusion_image_size < 16 or self.diffusion_image_size % 16:
            raise ValueError(f"diffusion_image_size must be a multiple of 16 >= 16, got {self.diffusion_image_size}")
        bad = [c for c in self.conditions if not c.startswith("cond_")]
        if bad:
            raise ValueError(f"conditions {bad} are not condition columns (cond_*)")
        if len(set(self.conditions)) != len(self.conditions):
            raise ValueError(f"conditions lists a column twice: {list(self.conditions)}")
        for name in ("max_steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "n_per_class"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.checkpoint_minutes >= 0:
            raise ValueError(f"checkpoint_minutes must be >= 0 (0 = off), got {self.checkpoint_minutes}")
        if not 0.0 < self.learning_rate <= 1.0:
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        for name in ("label_dropout", "condition_dropout", "numeric_dropout", "mask_dropout"):
            _probability(name, getattr(self, name))
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if not 1 <= self.sampling_steps <= NUM_TRAIN_TIMESTEPS:
            raise ValueError(f"sampling_steps must be in [1, {NUM_TRAIN_TIMESTEPS}], got {self.sampling_steps}")
        if not 0.0 <= self.guidance_scale <= 20.0:
            raise ValueError(f"guidance_scale must be in [0, 20] (1 = no guidance), got {self.guidance_scale}")
        if self.sample_batch_size < 1:
            raise ValueError(f"sample_batch_size must be >= 1, got {self.sample_batch_size}")
        parse_class_counts(self.class_counts)
        if self.condition_table and (self.class_counts or self.n_per_class):
            raise ValueError("give either condition_table or class_counts / n_per_class, not both")
        if self.crop not in DIFFUSION_CROPS or not 0 <= self.crop_margin <= 4:
            raise ValueError(f"crop must be one of {DIFFUSION_CROPS} and crop_margin in [0, 4]")
        if self.label_mix not in LABEL_MIXES:
            raise ValueError(f"label_mix must be one of {LABEL_MIXES}, got {self.label_mix!r}")
        if self.n_synthetic < 0:
            raise ValueError(f"n_synthetic must be >= 0, got {self.n_synthetic}")
        if self.label_mix == "prior" and self.n_per_class:
            raise ValueError("n_per_class is the balanced mix's count: with label_mix: prior give n_synthetic")
        if self.label_mix == "balanced" and self.n_synthetic:
            raise ValueError("n_synthetic is the prior mix's count: with label_mix: balanced give n_per_class")
        check_device_name(self.device)


@dataclass(frozen=True)
class SyntheticQualityStageConfig:
    """The ``synthetic_quality`` section: fidelity, faithfulness and memorization of the synthetic set."""

    reference_splits: tuple[str, ...] = ("test",)  # the real images the synthetic set is compared with
    kid_subsets: int = 100
    kid_subset_size: int = 0  # KID SD over subsets of this many images; 0: min(1000, n_generated // 2, n_real // 2)
    guidance_sweep: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)  # scales of the FID-vs-guidance sweep
    sweep_images: int = 64  # images sampled per scale of the sweep
    min_group_size: int = 10  # per-class / per-center FID only where every set has at least this many
    faithfulness_min_per_level: int = 10  # training images per level for a condition's probe
    memorization_percentile: float = 1.0  # flag at or below this percentile of real-vs-real NN distances
    memorization_pixel_size: int = 32
    exclude_flagged: bool = True  # leave flagged images out of augmentation.csv
    grid_images: int = 4  # image pairs per row of the sample grids
    grid_condition: str = ""  # condition of the per-level grid; empty = the model's first categorical one
    feature_batch_size: int = 32
    device: str = "auto"

    def __post_init__(self) -> None:
        known = ("train", "val", "test", "external")
        bad = [s for s in self.reference_splits if s not in known]
        if bad or not self.reference_splits:
            raise ValueError(f"reference_splits must name at least one of {known}; got {list(self.reference_splits)}")
        if "train" in self.reference_splits:
            raise ValueError("reference_splits must not include 'train': the synthetic set is compared with real "
                             "images the diffusion model has not seen")
        if self.kid_subsets < 1 or self.kid_subset_size < 0:
            raise ValueError("kid_subsets must be >= 1 and kid_subset_size >= 0 (0 = automatic)")
        if any(not 0.0 <= s <= 20.0 for s in self.guidance_sweep):
            raise ValueError(f"guidance_sweep scales must lie in [0, 20], got {list(self.guidance_sweep)}")
        if len(set(self.guidance_sweep)) != len(self.guidance_sweep):
            raise ValueError(f"guidance_sweep lists a scale twice: {list(self.guidance_sweep)}")
        if self.guidance_sweep and self.sweep_images < 4:
            raise ValueError(f"sweep_images must be >= 4 for an FID, got {self.sweep_images}")
        if self.min_group_size < 2 or self.faithfulness_min_per_level < 2:
            raise ValueError("min_group_size and faithfulness_min_per_level must be >= 2")
        if not 0.0 <= self.memorization_percentile <= 50.0:
            raise ValueError(f"memorization_percentile must lie in [0, 50], got {self.memorization_percentile}")
        if self.memorization_pixel_size < 8:
            raise ValueError(f"memorization_pixel_size must be >= 8, got {self.memorization_pixel_size}")
        if not 1 <= self.grid_images <= 16:
            raise ValueError(f"grid_images must be in [1, 16], got {self.grid_images}")
        if self.grid_condition and not self.grid_condition.startswith("cond_"):
            raise ValueError(f"grid_condition must be a condition column (cond_*), got {self.grid_condition!r}")
        if self.feature_batch_size < 1:
            raise ValueError(f"feature_batch_size must be >= 1, got {self.feature_batch_size}")
        check_device_name(self.device)
