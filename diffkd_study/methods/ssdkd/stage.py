"""Parameters of the SSD-KD dermoscopy stage (``notebooks/70_ssdkd_dermoscopy``): a light module, no torch import.

The runner parses the YAML section ``ssdkd_dermoscopy`` into :class:`SSDKDStageConfig` and passes every
field to the notebook as a papermill parameter of the same name (plus the common ones: ``manifest_path``,
``data_root``, ``run_dir``, ``image_size``, ``seed``, ...); the notebook rebuilds the dataclass with
:func:`diffkd_study.sections.section_from_parameters`, so the checks below run in both places.

Methods (:data:`METHODS`), every student the same network, seeds, epochs, optimiser and augmentation; each
method's objective is a recipe of registered losses (:func:`diffkd_study.methods.ssdkd.tasks.method_recipes`):

``ce``      the plain student: class-frequency weighted cross-entropy (WCE) only.
``kd``      Hinton KD as in D-KD's first two terms: ``(1 - kd_lambda) WCE + kd_lambda T^2 KL`` (T =
            ``kd_temperature``), so that ``diverse_kd`` minus ``kd`` isolates the relational terms.
``rkd``     WCE + ``lambd_rkd (25 L_dist + 50 L_angle)`` on the pooled embeddings (Park et al. 2019).
``dkd``     WCE + decoupled KD (Zhao et al. 2022; ``dkd_alpha``, ``dkd_beta``, ``dkd_temperature``; no
            warm-up, which mdistiller spreads over 20 of 240 CIFAR epochs).
``diverse_kd``  the official D-KD ("Diverse KD"): ``kd`` + ``lambd_rkd (25 L_dist + 50 L_angle) + lambd_crkd
            L_CRKD``.
``ssd_kd``  the official SSD-KD student objective on the 4-rotation batch layout, after the teacher's
            self-supervision head has been trained (stage A).

``kd_class_weighting`` (not in the official code; on in the CPU profile, off in the paper-like GPU
profile): the softened-output KL terms of ``kd``, ``dkd``, ``diverse_kd`` and ``ssd_kd`` average their
per-row KLs with the WCE class weight of each row's label, as the WCE averages its rows (see
:mod:`diffkd_study.methods.ssdkd.losses`). Off, those terms are plain batch means and only the WCE term,
weighted 0.5 (0.1 in SSD-KD) against ``0.9 T^2`` and ``2.7 T^2`` for the KLs, sees the class weights.

Profiles (:attr:`SSDKDStageConfig.PROFILES`, selected by ``profile``): the field defaults are the ``cpu``
profile (``configs/ham10000_ssdkd.yaml``); ``full`` is the paper-like GPU profile (``configs/ham10000_ssdkd_full.yaml``,
which also sets 224 px: all training lesions, 128 rows per step, 60 SS-head epochs with the official lr 1e-3
and a fresh augmented teacher pass every epoch, up to 150 epochs with early stopping after 15, the official
batch-mean KD terms and float32). Keys the section gives override its profile's values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from diffkd_study.devices import check_device_name
from diffkd_study.profiles import Profiles
from diffkd_study.training.initialisation import WEIGHT_PREFIXES, InitialisationConfig, check_student_weights
from diffkd_study.training.presets import AUGMENTATION_PRESETS, CLASS_WEIGHTINGS, check_choice

__all__ = [
    "METHODS",
    "SSDKDStageConfig",
]

METHODS: dict[str, str] = {
    "ce": "Plain student (WCE)",
    "kd": "Hinton KD",
    "rkd": "RKD",
    "dkd": "DKD",
    "diverse_kd": "D-KD (KD + RKD + Gram)",
    "ssd_kd": "SSD-KD",
}


def _ham_initialisation() -> InitialisationConfig:
    """The students' general distillation on HAM10000: every training image (the labelled subsample is only the
    CPU profile's supervised budget), 2 views, 4 epochs (about 12 min of MobileNetV2 at 96 px on one thread)."""
    return InitialisationConfig(views=2, epochs=4, whole_images=False)


@dataclass(frozen=True)
class SSDKDStageConfig:
    """The stage's own parameters (see the module docstring for the methods).

    Data: ``train_fraction`` < 1 keeps that share of the training *lesions* of every class (seeded by
    the study seed, the same subset for every method and seed; validation and test are never
    subsampled). Optimisation: the shared trainer (AdamW, warm-up + cosine, early stopping on the
    validation balanced accuracy); ``batch_size`` counts network rows per step, so an SSD-KD step holds
    ``batch_size / 4`` images x 4 rotations, as the official 32 x 4 = 128 rows (so SSD-KD takes 4 times
    as many steps per epoch as the other students, each on as many rows). SS head (stage A): batches of
    the same ``batch_size / 4`` images x 4 rotations (the official code uses 32 images in both stages),
    SGD (momentum 0.9, weight decay 1e-3), learning rate divided by 10 at 50% and 75% of
    ``ss_head_epochs`` (the official 30 and 45 of 60), best epoch by validation SS loss;
    ``ss_head_views`` > 0 caches that many augmented passes of teacher embeddings and cycles through
    them (0 = a fresh augmented pass every epoch, as the official code).
    """

    PROFILES: ClassVar[Profiles] = Profiles({
        "cpu": {},  # the field defaults: 96 px (the config's image_size), 25% of the training lesions, 1 thread
        "full": {
            "seeds": (0, 1, 2),
            "train_fraction": 1.0,
            "batch_size": 128,  # SSD-KD: 32 images x 4 rotations, as the official code
            "teacher_epochs": 150,
            "student_epochs": 150,
            "warmup_epochs": 2.0,
            "patience": 15,  # the official early stop
            "min_epochs": 10,
            "ss_head_epochs": 60,  # official
            "ss_head_lr": 0.001,  # official
            "ss_head_views": 0,  # a fresh augmented teacher pass every epoch (official)
            "kd_class_weighting": False,  # official: KD terms are batch means; only the WCE sees the class weights
            "bootstrap": 2000,
            "eval_batch_size": 256,
            "efficiency_runs": 30,
            "amp": False,  # float32 as the official code (the relational terms are sensitive to bf16)
            "threads": 0,  # torch's default
        },
    })

    profile: str = "cpu"
    teacher_model: str = "tf_efficientnet_lite2"  # the deepest offline ImageNet model (the paper: ResNet-50)
    teacher_weights: str = "package:efficientnet-lite2"
    student_model: str = "mobilenetv2_100"  # MobileNetV2 as in the paper, trained from scratch
    student_weights: str = "distilled"  # general distillation of the teacher's ImageNet weights on training images
    initialisation: InitialisationConfig = field(default_factory=_ham_initialisation)
    methods: tuple[str, ...] = tuple(METHODS)
    seeds: tuple[int, ...] = (0, 1)
    train_fraction: float = 0.25  # share of the training lesions of every class (validation and test complete)
    class_weighting: str = "frequency"
    augment: str = "dermoscopy"
    batch_size: int = 32  # rows per step; SSD-KD: 8 images x 4 rotations
    teacher_epochs: int = 10
    teacher_lr: float = 3e-4
    student_epochs: int = 5
    student_lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    grad_clip: float = 5.0
    patience: int = 3
    min_epochs: int = 2
    ss_head_epochs: int = 10  # official 60
    ss_head_lr: float = 0.01  # official 1e-3 over 60 epochs
    ss_head_views: int = 1  # one augmented teacher pass, cached (official: a fresh pass every epoch)
    kd_lambda: float = 0.5  # D-KD class defaults (lambda 0.5, T 5), also used by the Hinton KD student
    kd_temperature: float = 5.0
    kd_class_weighting: bool = True  # not official: the KD terms' rows averaged with the WCE class weights
    lambd_rkd: float = 1.0  # README / script values (commit 98963d4; the class default lambd_crkd is 1e4)
    lambd_crkd: float = 1000.0
    dkd_alpha: float = 1.0
    dkd_beta: float = 8.0
    dkd_temperature: float = 4.0
    bootstrap: int = 1000
    eval_batch_size: int = 64
    efficiency_runs: int = 20
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU); the official code trains in float32
    threads: int = 1  # torch CPU threads (1 on a shared CPU); 0 = leave torch's default

    def __post_init__(self) -> None:
        self.PROFILES.preset(self.profile)  # "profile must be one of [...]"
        for name in ("teacher_model", "student_model"):
            if not getattr(self, name):
                raise ValueError(f"{name}: name a timm model")
        if self.teacher_weights != "none" and not self.teacher_weights.startswith(WEIGHT_PREFIXES):
            raise ValueError(f"teacher_weights: expected 'none', 'package:NAME' or 'file:PATH#sha256=HEX', "
                             f"got {self.teacher_weights!r}")
        check_student_weights("student_weights", self.student_weights)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods: unknown {unknown}; choose from {list(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods: list each method once, got {list(self.methods)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds: list at least one non-negative seed, each once; got {list(self.seeds)}")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        check_choice("class_weighting", self.class_weighting, CLASS_WEIGHTINGS)
        if not isinstance(self.kd_class_weighting, bool):
            raise ValueError(f"kd_class_weighting must be true or false, got {self.kd_class_weighting!r}")
        if self.kd_class_weighting and self.class_weighting == "none":
            raise ValueError("kd_class_weighting weights the KD terms by the WCE class weights, but class_weighting "
                             "is 'none': set class_weighting to frequency or balanced, or kd_class_weighting: false")
        check_choice("augment", self.augment, AUGMENTATION_PRESETS)
        if self.batch_size < 8 or self.batch_size % 4:
            raise ValueError(f"batch_size must be a multiple of 4 and >= 8 (SSD-KD packs batch_size / 4 images x 4 "
                             f"rotations, at least 2 images), got {self.batch_size}")
        for name in ("teacher_epochs", "student_epochs", "ss_head_epochs", "min_epochs", "eval_batch_size",
                     "efficiency_runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("teacher_lr", "student_lr", "ss_head_lr", "grad_clip", "kd_temperature", "dkd_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "warmup_epochs", "patience", "ss_head_views", "lambd_rkd", "lambd_crkd",
                     "dkd_alpha", "dkd_beta", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.kd_lambda <= 1.0:
            raise ValueError(f"kd_lambda must be in [0, 1], got {self.kd_lambda}")
        if self.bootstrap < 100:
            raise ValueError(f"bootstrap must be >= 100 resamples, got {self.bootstrap}")
        check_device_name(self.device)

    def method_title(self, method: str) -> str:
        """The display name of student method ``method`` (``KeyError`` for an unknown one)."""
        return METHODS[method]
