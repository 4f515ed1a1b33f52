"""Parameters of the CoMoTo stage (``notebooks/80_comoto_dbt``): a light module, no torch import.

The runner parses the YAML section ``comoto_dbt`` into :class:`ComotoStageConfig` and passes every
field to the notebook as a papermill parameter of the same name; the notebook rebuilds the dataclass
with :func:`diffkd_study.sections.section_from_parameters`, so the checks below run in both places.

Methods (:data:`METHODS`; ``docs/methods/comoto.md`` §2.3 and §2.4)
    ``dbt_only``     the backbone's own initialisation (ImageNet for the default backbone), DBT only.
    ``pretraining``  CoMoTo's "pre-training" baseline: initialised from the mammography teacher
                     (trained with ImPA, as the official teacher checkpoint is: ``intra_align: true``),
                     fine-tuned on DBT, no KD (``distill_mode: pretraining``).
    ``image_kd``     the same initialisation + image-level KD from that teacher (all spatial positions).
    ``lskd``         LsKD without ImPA: teacher trained with the detection loss only; the student is
                     initialised from it and distils its lesion points (the ablation of ImPA).
    ``comoto``       full CoMoTo: ImPA teacher, initialisation from it, LsKD.
    The official ``main.py --dbt`` always initialises the student from the teacher checkpoint, so
    every KD variant above does too; only ``dbt_only`` (not in the official code) does not.

Budget (the same for every method in a fold and regime, and the same seed)
    ``steps = max(min_steps, epochs * ceil(n_train_images / batch_size))``. The official code trains
    50 epochs (teacher and student) with no minimum; the CPU profile adds a minimum so that the
    10% regime (about 9 slices) gets enough updates to learn at all.

Profiles (:attr:`ComotoStageConfig.PROFILES`, selected by ``profile``; the detector, optimisation and budget
settings, :data:`SETTINGS`)
    ``cpu`` (default, the field defaults): sized for a 2-core CPU (the measured run is documented in the
    notebook); ``full``: paper-like settings for a GPU (final official ``configs.json``: SGD lr 5e-5,
    momentum 0.9, step decay at epoch 30 of 50, batch 8, 50 epochs, anchors 32..512, 4 head convolutions,
    stride-32 features of the largest offline ImageNet backbone at 1024 px). The paper's ResNet-50 has no
    offline ImageNet weights here: set ``backbone: resnet50`` and ``weights: file:PATH#sha256=HEX`` (timm
    key layout) to use one. Keys given in the section override the profile's values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from diffkd_study.devices import check_device_name
from diffkd_study.metrics.froc import SENSITIVITY_METHODS
from diffkd_study.profiles import Profiles
from diffkd_study.sections import section_parameters

__all__ = [
    "METHODS",
    "METHOD_NAMES",
    "DETECTOR_SETTINGS",
    "SETTINGS",
    "ComotoStageConfig",
    "MethodSpec",
    "resolve_teacher_paths",
]


@dataclass(frozen=True)
class MethodSpec:
    """How a student is built: its initialisation, which teacher it uses, and its KD term."""

    name: str
    title: str
    init: str  # "backbone" (the profile's weights) | "teacher"
    teacher: str | None  # "impa" | "plain" | None
    kd: str  # "none" | "lskd" | "image"


METHODS: dict[str, MethodSpec] = {
    "dbt_only": MethodSpec("dbt_only", "DBT only", "backbone", None, "none"),
    "pretraining": MethodSpec("pretraining", "Pre-training", "teacher", "impa", "none"),
    "image_kd": MethodSpec("image_kd", "Image-level KD", "teacher", "impa", "image"),
    "lskd": MethodSpec("lskd", "LsKD without ImPA", "teacher", "plain", "lskd"),
    "comoto": MethodSpec("comoto", "CoMoTo (LsKD + ImPA)", "teacher", "impa", "lskd"),
}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
#: The fields that build the detector (:class:`~diffkd_study.methods.comoto.detector.DetectorSpec`).
DETECTOR_SETTINGS: tuple[str, ...] = (
    "backbone", "weights", "feature_stage", "head_channels", "head_convs", "anchor_sizes", "aspect_ratios",
    "detector_image_size", "score_thresh", "nms_thresh", "detections_per_img")
#: The detector, optimisation and budget settings (what the profiles preset), in the order of the cache keys.
SETTINGS: tuple[str, ...] = DETECTOR_SETTINGS + (
    "batch_size", "optimizer", "lr", "momentum", "weight_decay", "warmup_steps", "lr_step_fraction", "lr_gamma",
    "grad_clip", "flip_prob", "teacher_epochs", "teacher_min_steps", "student_epochs", "student_min_steps")
#: field -> its name in ``DetectorSpec`` and in the cache keys, where they differ (the study's ``image_size``
#: is another notebook parameter)
_SPEC_NAMES = {"detector_image_size": "image_size"}


@dataclass(frozen=True)
class ComotoStageConfig:
    """The ``comoto_dbt`` section (see the module notes; every field is a notebook parameter)."""

    PROFILES: ClassVar[Profiles] = Profiles({
        "cpu": {},  # the field defaults
        "full": {  # paper-like (final official configs.json); for a GPU
            "backbone": "tf_efficientnet_lite2",
            "weights": "package:efficientnet-lite2",
            "feature_stage": -1,  # the last stage (stride 32), as CoMoTo's C5
            "head_convs": 4,
            "anchor_sizes": (32, 64, 128, 256, 512),
            "detector_image_size": 1024,
            "detections_per_img": 100,
            "batch_size": 8,
            "optimizer": "sgd",
            "lr": 5e-5,
            "weight_decay": 0.0,
            "warmup_steps": 0,
            "grad_clip": 0.0,
            "teacher_epochs": 50,
            "student_epochs": 50,
            "student_min_steps": 0,
        },
    }, note="; `image_size` is now `detector_image_size`")

    teacher_manifest: str = "data_manifests/mini-mias.csv"  # relative to the project root, or absolute
    teacher_root: str = "mini-mias"  # relative to --data-root, or absolute
    teacher_holdout_frac: float = 0.2  # mammography patients held out to check the teacher
    # stored / release pixel size of the teacher images: mini-MIAS 512 / 1024, so the 100 px reach is 50 px
    # of the stored 512-px films (2 cm at the release's 200 um pixels; used for the teacher hold-out check only)
    teacher_release_scale: float = 0.5
    methods: tuple[str, ...] = METHOD_NAMES
    regimes: tuple[float, ...] = (0.1, 0.25, 1.0)  # fractions of each fold's DBT training patients
    folds: int = 5
    profile: str = "cpu"
    # detector (diffkd_study.methods.comoto.detector.DetectorSpec); the defaults are the cpu profile's
    backbone: str = "tf_efficientnet_lite0"
    weights: str = "package:efficientnet-lite0"  # ImageNet, installed offline with the package
    feature_stage: int = 3  # blocks.4 of EfficientNet-Lite0: 112 channels at stride 16 (one level, as CoMoTo)
    head_channels: int = 0
    head_convs: int = 2
    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    detector_image_size: int = 256  # px: images are letterboxed to this square
    score_thresh: float = 0.001
    nms_thresh: float = 0.5
    detections_per_img: int = 20
    # optimisation (teacher and student alike, as in the official configs.json)
    batch_size: int = 4
    optimizer: str = "adamw"
    lr: float = 3e-4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    lr_step_fraction: float = 0.6  # lr * lr_gamma after this fraction of the steps (official: epoch 30 of 50)
    lr_gamma: float = 0.1
    grad_clip: float = 10.0  # max gradient norm; 0 = no clipping
    flip_prob: float = 0.5  # horizontal flip (official RandFlipd prob 0.5)
    # budget
    teacher_epochs: int = 5
    teacher_min_steps: int = 0
    student_epochs: int = 4
    student_min_steps: int = 40
    # distillation and evaluation
    alpha: float = 2.0  # LsKD / image-level KD weight
    temperature: float = 4.0
    beta: float = 2.0  # ImPA weight
    num_points: int = 9
    hit_min_distance: float = 100.0  # pixels of the full-resolution release (official BCS-DBT metric)
    scale_column: str = "scale"  # manifest column: stored / release pixel size (BCS-DBT slices: 0.5)
    fps_per_image: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)
    sensitivity_method: str = "interpolate"
    example_slices: int = 4
    device: str = "auto"

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must name each of {list(METHODS)} at most once; got {list(self.methods)}")
        if not self.regimes or any(not 0 < r <= 1 for r in self.regimes) or \
                list(self.regimes) != sorted(set(self.regimes)):
            raise ValueError(f"regimes must be increasing fractions in (0, 1]; got {list(self.regimes)}")
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2; got {self.folds}")
        self.PROFILES.preset(self.profile)  # "profile must be one of [...]"
        if self.detector_image_size < 64 or self.detector_image_size % 32:
            raise ValueError(f"detector_image_size must be a multiple of 32 and >= 64; got {self.detector_image_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}; got {self.optimizer!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError("lr must be > 0, weight_decay >= 0 and momentum in [0, 1)")
        if not 0 < self.lr_step_fraction <= 1 or not 0 < self.lr_gamma <= 1:
            raise ValueError("lr_step_fraction and lr_gamma must be in (0, 1]")
        if self.warmup_steps < 0 or self.grad_clip < 0 or not 0 <= self.flip_prob <= 1:
            raise ValueError("warmup_steps and grad_clip must be >= 0 and flip_prob in [0, 1]")
        budget = (self.teacher_epochs, self.teacher_min_steps, self.student_epochs, self.student_min_steps)
        if min(budget) < 0 or self.teacher_epochs + self.teacher_min_steps == 0 or \
                self.student_epochs + self.student_min_steps == 0:
            raise ValueError("epochs and min_steps must be >= 0, and each model needs at least one step")
        if not 0 <= self.teacher_holdout_frac < 1:
            raise ValueError(f"teacher_holdout_frac must be in [0, 1); got {self.teacher_holdout_frac}")
        if not self.teacher_release_scale > 0 or self.hit_min_distance < 0:
            raise ValueError("teacher_release_scale must be > 0 and hit_min_distance >= 0")
        if not self.temperature > 0 or self.alpha < 0 or self.beta < 0:
            raise ValueError("temperature must be > 0, alpha and beta >= 0")
        if self.num_points not in (1, 4, 5, 9):
            raise ValueError(f"num_points must be 1, 4, 5 or 9; got {self.num_points}")
        if not self.fps_per_image or any(k <= 0 for k in self.fps_per_image):
            raise ValueError(f"fps_per_image must be positive FP rates; got {list(self.fps_per_image)}")
        if self.sensitivity_method not in SENSITIVITY_METHODS:
            raise ValueError(f"sensitivity_method must be one of {list(SENSITIVITY_METHODS)}")
        check_device_name(self.device)
        if self.example_slices < 0:
            raise ValueError("example_slices must be >= 0")

    @property
    def teachers_needed(self) -> tuple[str, ...]:
        """The teacher variants the chosen methods use, in a fixed order."""
        used = {METHODS[m].teacher for m in self.methods}
        return tuple(kind for kind in ("plain", "impa") if kind in used)

    def detector_fields(self) -> dict[str, Any]:
        """The keyword arguments of ``DetectorSpec``."""
        return {_SPEC_NAMES.get(name, name): getattr(self, name) for name in DETECTOR_SETTINGS}

    def settings_dict(self) -> dict[str, Any]:
        """The :data:`SETTINGS` as a JSON-friendly dict (part of every teacher's and student's cache key; the
        detector size under its key ``image_size``, as before the profiles were flat, so cached runs stay valid)."""
        literal = section_parameters(self)
        return {_SPEC_NAMES.get(name, name): literal[name] for name in SETTINGS}

    def teacher_dict(self) -> dict[str, Any]:
        """The settings a teacher depends on (all but the student budget): changing only the student
        budget keeps trained teachers valid."""
        return {k: v for k, v in self.settings_dict().items() if k not in ("student_epochs", "student_min_steps")}


def resolve_teacher_paths(
    config: ComotoStageConfig, project_root: str | Path, data_root_base: str | Path | None
) -> tuple[Path, Path]:
    """The teacher manifest (against ``project_root``) and its image folder (against ``data_root_base``)."""
    manifest = Path(config.teacher_manifest).expanduser()
    if not manifest.is_absolute():
        manifest = Path(project_root) / manifest
    if not manifest.is_file():
        raise FileNotFoundError(
            f"teacher_manifest {manifest} not found (comoto_dbt.teacher_manifest, relative to the project root "
            f"{project_root}); build it with `diffkd-study data build mini-mias --root DIR --out {config.teacher_manifest}`"
        )
    root = Path(config.teacher_root).expanduser()
    if not root.is_absolute():
        if not data_root_base:
            raise FileNotFoundError(
                f"teacher_root {config.teacher_root!r} is relative but no --data-root was given; "
                "pass --data-root or make comoto_dbt.teacher_root absolute"
            )
        root = Path(data_root_base) / root
    if not root.is_dir():
        raise FileNotFoundError(f"teacher_root {root} is not a directory (comoto_dbt.teacher_root)")
    return manifest.resolve(), root.resolve()
