"""Config sections of the teacher (``30_teacher``) and student (``40_student``) stages.

Light module (no torch import): ``diffkd_study.config`` parses the YAML sections ``teacher:`` and
``student:`` into these dataclasses, and every field becomes a notebook parameter.

Variants (the "partial combinations" DiffKD-DCIS compares; the grid is ours, the paper's is
unpublished):

teacher
    ``real``      trained on the real training images only;
    ``real+syn``  trained on real + synthetic images (stage 1), ``synthetic_ratio`` synthetic images
                  per real one in every epoch.
student
    ``scratch``     the compact network alone, real images, no teacher;
    ``kd_real``     distilled from the ``real`` teacher, real images;
    ``diffkd``      distilled from the ``real+syn`` teacher, real images (the full three-stage method);
    ``diffkd+syn``  as ``diffkd``, the student also sees the synthetic images.

Variants that need synthetic images are skipped, with the reason in the report, when the run has none
and ``synthetic`` is ``auto`` (an error when it is ``required``). A student of seed ``s`` learns from
the teacher of seed ``s`` when the teacher stage trained that seed, else from its first seed.

Input: the whole image resized to the study resolution (``crop: none``), or the lesion's region of
interest (``crop: lesion``): the square around the bounding box of the lesion mask, widened by
``crop_margin`` of its longer side on every side, resized to the study resolution (rows without a mask
keep the whole image). The crop uses the expert mask of every image, test images included, so a
lesion-crop model classifies a lesion that a reader has outlined (how BUS-BRA and BrEaST are
annotated); the report says so. Teacher and student must use the same input (the student stage
checks it against the teacher's records): the teacher sees what the student sees during distillation.

Synthetic images come from ``{run_dir}/synthetic/augmentation.csv`` (the synthetic set without the
images the memorization audit flagged) or, when the synthetic-quality stage has not run, from
``{run_dir}/synthetic/synthetic.csv`` (the report then says that they were not audited). They are
read at the study resolution through the preprocessing cache (a 64 px synthetic image is upsampled to
a 128 px study with the same bilinear filter as every real image).
"""

from __future__ import annotations

from dataclasses import dataclass

TEACHER_VARIANTS: dict[str, bool] = {"real": False, "real+syn": True}  # variant -> trained with synthetic images
# student variant -> (teacher variant or None, student sees synthetic images)
STUDENT_VARIANTS: dict[str, tuple[str | None, bool]] = {
    "scratch": (None, False),
    "kd_real": ("real", False),
    "diffkd": ("real+syn", False),
    "diffkd+syn": ("real+syn", True),
}
SYNTHETIC_MODES: tuple[str, ...] = ("auto", "none", "required")
CLASS_WEIGHTING: tuple[str, ...] = ("balanced", "frequency", "none")
LAUNCHERS: tuple[str, ...] = ("inline", "torchrun")
DISTILL_LOSSES: tuple[str, ...] = ("kd", "dkd", "kd+fitnet", "kd+at")
CROPS: tuple[str, ...] = ("none", "lesion")


@dataclass(frozen=True)
class TrainingSection:
    """Settings shared by the teacher and student stages (see :class:`diffkd_study.training.trainer.FitConfig`)."""

    model: str = ""
    weights: str = "none"
    variants: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    epochs: int = 12
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    grad_clip: float = 5.0
    patience: int = 5
    min_epochs: int = 3
    augment: str = "ultrasound"
    class_weighting: str = "balanced"
    synthetic: str = "auto"
    synthetic_ratio: float = 0.5
    eval_batch_size: int = 64
    device: str = "auto"
    launcher: str = "inline"  # inline: in the notebook's kernel; torchrun: `torchrun --nproc-per-node nproc`
    nproc: int = 1
    crop: str = "none"  # none: the whole image; lesion: the lesion-centred square from the mask (see below)
    crop_margin: float = 0.25
    checkpoint_minutes: float = 10.0  # also checkpoint mid-epoch after this much wall-clock time; 0 = off

    def _check(self, known: dict) -> None:
        if not self.model:
            raise ValueError("model: name a timm model")
        if not self.variants:
            raise ValueError(f"variants: name at least one of {list(known)}")
        unknown = [v for v in self.variants if v not in known]
        if unknown:
            raise ValueError(f"variants: unknown {unknown}; known: {list(known)}")
        if len(set(self.variants)) != len(self.variants) or len(set(self.seeds)) != len(self.seeds) or not self.seeds:
            raise ValueError("variants and seeds: list each once, at least one seed")
        if self.synthetic not in SYNTHETIC_MODES:
            raise ValueError(f"synthetic must be one of {SYNTHETIC_MODES}, got {self.synthetic!r}")
        if self.class_weighting not in CLASS_WEIGHTING:
            raise ValueError(f"class_weighting must be one of {CLASS_WEIGHTING}, got {self.class_weighting!r}")
        if self.launcher not in LAUNCHERS or self.nproc < 1:
            raise ValueError(f"launcher must be one of {LAUNCHERS} and nproc >= 1")
        if self.crop not in CROPS or not 0 <= self.crop_margin <= 4:
            raise ValueError(f"crop must be one of {CROPS} and crop_margin in [0, 4]")
        if self.launcher == "inline" and self.nproc != 1:
            raise ValueError("nproc > 1 needs launcher: torchrun")
        for name in ("epochs", "batch_size", "eval_batch_size", "min_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.batch_size < 2 or self.lr <= 0 or self.synthetic_ratio < 0 or self.patience < 0:
            raise ValueError("batch_size must be >= 2, lr > 0, synthetic_ratio >= 0, patience >= 0")
        if not self.checkpoint_minutes >= 0:
            raise ValueError(f"checkpoint_minutes must be >= 0 (0 = at the end of each epoch only), "
                             f"got {self.checkpoint_minutes}")


@dataclass(frozen=True)
class TeacherStageConfig(TrainingSection):
    model: str = "tf_efficientnet_lite2"
    weights: str = "package:efficientnet-lite2"
    variants: tuple[str, ...] = ("real", "real+syn")
    lr: float = 3e-4

    def __post_init__(self) -> None:
        self._check(TEACHER_VARIANTS)


@dataclass(frozen=True)
class StudentStageConfig(TrainingSection):
    model: str = "lcnet_035"
    weights: str = "none"
    variants: tuple[str, ...] = ("scratch", "kd_real", "diffkd", "diffkd+syn")
    lr: float = 2e-3
    loss: str = "kd"  # kd: CE + Hinton KD; dkd: CE + decoupled KD; kd+fitnet / kd+at: plus a feature term
    ce_weight: float = 0.5
    kd_weight: float = 0.5
    temperature: float = 4.0
    feature_weight: float = 0.0  # weight of the feature term of kd+fitnet / kd+at

    def __post_init__(self) -> None:
        self._check(STUDENT_VARIANTS)
        if self.loss not in DISTILL_LOSSES:
            raise ValueError(f"loss must be one of {DISTILL_LOSSES}, got {self.loss!r}")
        if self.temperature <= 0 or min(self.ce_weight, self.kd_weight, self.feature_weight) < 0:
            raise ValueError("temperature must be > 0 and the loss weights >= 0")
        if self.loss in ("kd+fitnet", "kd+at") and self.feature_weight == 0:
            raise ValueError(f"loss {self.loss} needs feature_weight > 0")
