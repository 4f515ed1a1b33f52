"""Config sections of the DiffKD study's stages: teacher (``30_teacher``), student (``40_student``),
baselines (``45_baselines``), evaluation (``50_evaluation``) and reader study (``60_reader_study``).

Light module (no torch import): ``diffkd_study.config`` parses the YAML sections ``teacher:``,
``student:``, ``baselines:``, ``evaluation:`` and ``reader_study:`` into these dataclasses, and every
field becomes a notebook parameter (the reader study's are derived: :meth:`ReaderStudyConfig.notebook_parameters`).

Variants (the "partial combinations" DiffKD-DCIS compares; the grid is ours, the paper's is
unpublished):

teacher
    ``real``      trained on the real training images only;
    ``real+syn``  trained on real + synthetic images (stage 1), ``synthetic_ratio`` synthetic images
                  per real one in every epoch.
student
    ``alone``       the compact network alone, real images, no teacher;
    ``kd_real``     distilled from the ``real`` teacher, real images;
    ``diffkd``      distilled from the ``real+syn`` teacher, real images (the full three-stage method);
    ``diffkd+syn``  as ``diffkd``, the student also sees the synthetic images.

Initialisation: every student of the stage starts from the same weights, ``weights``; by default
``distilled``, the general-distillation initialisation the stage makes on the training images (see
:mod:`diffkd_study.training.initialisation`; its settings are the ``initialisation`` block). The variants named
in ``scratch_variants`` are trained a second time from random weights, as the ablation "from scratch":
model ``student_<variant>-scratch``, e.g. ``student_alone-scratch``.

Variants that need synthetic images are skipped, with the reason in the report, when the run has none
and ``synthetic`` is ``auto`` (an error when it is ``required``). A student of seed ``s`` learns from
the teacher of seed ``s`` when the teacher stage trained that seed, else from its first seed.

Input: the whole image resized to the study resolution (``crop: none``); the lesion's region of
interest (``crop: lesion``): the square around the bounding box of the lesion mask, widened by
``crop_margin`` of its longer side on every side, kept inside the image, resized to the study resolution
(rows without a mask keep the whole image); ``crop: jittered``, that square perturbed like a rough manual
box (seeded per image; centre shift up to 15% of the box's longer side per axis, side x 0.8-1.25,
:data:`diffkd_study.data.cache.JITTER_SHIFT`/``JITTER_SCALE``); or ``crop: whole``, the full frame with its
aspect kept (letterboxed). ``lesion`` uses the expert mask of every image, test images included, so such a
model classifies a lesion that a reader has outlined (how BUS-BRA and BrEaST are annotated); ``jittered``
and ``whole`` (:data:`OUTLINE_FREE_CROPS`) are the standalone-reader modes. ``extra_crops`` trains the
``crop_variants`` again in other crops (models ``teacher_real-whole``, ``student_alone-jittered``, ...), so one
study reports every mode; variants that use synthetic images stay in ``crop`` (the synthetic lesion crops are
centred on the outline's box). ``via`` (set by the study to the diffusion resolution when the diffusion
model makes lesion crops) resizes every input to ``via`` px first: real and synthetic crops then reach the
network through the same chain. Teacher and student must use the same input (the student stage checks it
against the teacher's records): the teacher sees what the student sees during distillation.

Synthetic images come from ``{run_dir}/synthetic/augmentation.csv`` (the synthetic set without the
images the memorization audit flagged) or, when the synthetic-quality stage has not run, from
``{run_dir}/synthetic/synthetic.csv`` (the report then says that they were not audited). They are
read through the preprocessing cache: lesion-crop synthetic images (``synthetic_crop=lesion``) as they are,
through the same ``via`` chain as the real crops; whole-frame ones are cropped like real frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffkd_study.devices import check_device_name
from diffkd_study.sections import FieldError, check_range
from diffkd_study.training.initialisation import DISTILLED, InitialisationConfig, check_student_weights
from diffkd_study.training.presets import AUGMENTATION_PRESETS, CLASS_WEIGHTINGS, check_choice

TEACHER_VARIANTS: dict[str, bool] = {"real": False, "real+syn": True}  # variant -> trained with synthetic images
# student variant -> (teacher variant or None, student sees synthetic images)
STUDENT_VARIANTS: dict[str, tuple[str | None, bool]] = {
    "alone": (None, False),
    "kd_real": ("real", False),
    "diffkd": ("real+syn", False),
    "diffkd+syn": ("real+syn", True),
}
#: the name suffix of a student variant trained from random weights (``scratch_variants``): student_alone-scratch
SCRATCH_SUFFIX = "-scratch"


def crop_suffix(crop: str) -> str:
    """The name suffix of a variant trained in one of ``extra_crops``: ``teacher_real-whole``, ``student_alone-jittered``."""
    return f"-{crop}"
SYNTHETIC_MODES: tuple[str, ...] = ("auto", "none", "required")
LAUNCHERS: tuple[str, ...] = ("inline", "torchrun")
CROPS: tuple[str, ...] = ("none", "lesion", "jittered", "whole")
#: crop -> the preprocessing's resize mode (diffkd_study.data.cache): whole keeps the frame's aspect (letterbox)
CROP_RESIZE_MODES: dict[str, str] = {"none": "stretch", "lesion": "lesion", "jittered": "jittered", "whole": "pad"}
#: crops that need no expert outline at test time (a standalone reader's input; jittered uses a rough box)
OUTLINE_FREE_CROPS: tuple[str, ...] = ("jittered", "whole")
#: the baselines of :mod:`diffkd_study.methods.diffkd.baselines` (its ``BASELINES`` is this tuple)
BASELINE_MODELS: tuple[str, ...] = ("clinical", "image_features", "box_geometry")


@dataclass(frozen=True)
class TrainingSection:
    """Settings shared by the teacher and student stages (see :class:`diffkd_study.training.trainer.FitConfig`).

    Its defaults are the stages' own choices: every field of the training recipe is passed to ``FitConfig``,
    which has no default for it. Of the settings ``FitConfig`` does default, those exposed here
    (``eval_batch_size``, ``device``, ``checkpoint_minutes``) default to the same values; the fits take ``amp``
    (bf16 autocast on CUDA) from ``FitConfig``.
    """

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
    crop: str = "none"  # none | lesion | jittered | whole (see "Input" above)
    crop_margin: float = 0.25
    via: int = 0  # > 0: every input resized to via x via first (the diffusion resolution; 0: one resize)
    extra_crops: tuple[str, ...] = ()  # also trained and scored in these crops: <kind>_<variant>-<crop>
    crop_variants: tuple[str, ...] = ()  # the variants of extra_crops (empty: those needing no synthetic image)
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
        check_choice("class_weighting", self.class_weighting, CLASS_WEIGHTINGS)
        check_choice("augment", self.augment, AUGMENTATION_PRESETS)
        check_device_name(self.device)
        if self.launcher not in LAUNCHERS or self.nproc < 1:
            raise ValueError(f"launcher must be one of {LAUNCHERS} and nproc >= 1")
        if self.crop not in CROPS or not 0 <= self.crop_margin <= 4:
            raise ValueError(f"crop must be one of {CROPS} and crop_margin in [0, 4]")
        if self.via < 0:
            raise ValueError(f"via must be >= 0 (0: resize once), got {self.via}")
        bad = [c for c in self.extra_crops if c not in CROPS or c == self.crop]
        if bad or len(set(self.extra_crops)) != len(self.extra_crops):
            raise FieldError("extra_crops", f"{list(self.extra_crops)}: name crops of {list(CROPS)} other than "
                             f"crop ({self.crop!r}), each once")
        unknown = [v for v in self.crop_variants if v not in self.variants]
        if unknown:
            raise FieldError("crop_variants", f"{unknown} are not variants of this stage ({list(self.variants)})")
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
    """The teacher stage's section: the network, its offline weights, the variants (``real``, ``real+syn``)
    and the learning rate, plus the training settings shared with the student stage."""

    model: str = "tf_efficientnet_lite2"
    weights: str = "package:efficientnet-lite2"
    variants: tuple[str, ...] = ("real", "real+syn")
    lr: float = 3e-4

    def __post_init__(self) -> None:
        self._check(TEACHER_VARIANTS)


@dataclass(frozen=True)
class LossTerm:
    """One term of the student's objective: its weight and the constructor arguments of the registered loss
    it names (see :class:`StudentStageConfig`)."""

    weight: float = 1.0
    params: dict[str, int | float | bool | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_range("weight", self.weight, 0.0)


def hinton_kd_objective() -> dict[str, LossTerm]:
    """The default student objective: ``0.5 CE + 0.5 T^2 KL`` at ``T = 4`` (Hinton KD)."""
    return {"ce": LossTerm(weight=0.5), "kd": LossTerm(weight=0.5, params={"temperature": 4.0})}


@dataclass(frozen=True)
class StudentStageConfig(TrainingSection):
    """The student stage's section.

    ``loss`` is the distillation objective as a recipe (torchdistill style): each key names a registered
    loss (``diffkd_study.loss_catalog.LOSSES``: ``ce``, ``kd``, ``dkd``, ``fitnet``, ``at``, ``rkd``, ...),
    each value gives its ``weight`` (default 1) and its constructor ``params``; the objective is the
    weighted sum, its terms built (and logged) in the order written. The default is Hinton KD::

        loss:
          ce: {weight: 0.5}                               # class-weighted by class_weighting
          kd: {weight: 0.5, params: {temperature: 4.0}}   # T^2 KL(teacher || student) at T = 4

    Other objectives: ``dkd: {weight: 0.5, params: {temperature: 4.0}}`` (decoupled KD) in place of
    ``kd``; a feature term next to them, ``at: {weight: 10.0}`` (attention transfer) or ``fitnet: {weight:
    100.0, params: {use_relu: false}}`` (FitNets hint through an adapter built from the two networks). The
    stage's class weights go to the terms whose loss takes them (``ce``); the features a term reads are
    hooked and its adapter built from what the registered loss declares. Loss names and parameters are
    checked when the student stage starts (the registry needs torch; this module does not import it).
    """

    model: str = "lcnet_035"
    weights: str = DISTILLED
    variants: tuple[str, ...] = ("alone", "kd_real", "diffkd", "diffkd+syn")
    lr: float = 2e-3
    loss: dict[str, LossTerm] = field(default_factory=hinton_kd_objective)
    initialisation: InitialisationConfig = field(default_factory=InitialisationConfig)
    scratch_variants: tuple[str, ...] = ()  # also trained from random weights: student_<variant>-scratch

    def __post_init__(self) -> None:
        self._check(STUDENT_VARIANTS)
        check_student_weights("weights", self.weights)
        extra = [v for v in self.scratch_variants if v not in self.variants]
        if extra or len(set(self.scratch_variants)) != len(self.scratch_variants):
            raise FieldError("scratch_variants", f"{list(self.scratch_variants)}: name variants of this stage "
                             f"({list(self.variants)}), each once")
        if self.scratch_variants and self.weights == "none":
            raise FieldError("scratch_variants", "the students already start from random weights (weights: none)")
        if not self.loss:
            raise FieldError("loss", "name at least one term, e.g. {ce: {weight: 0.5}, kd: {weight: 0.5}}")
        if any(not isinstance(term, LossTerm) for term in self.loss.values()):
            raise FieldError("loss", f"each term must be a LossTerm (weight, params); got {self.loss!r}")
        if all(term.weight == 0 for term in self.loss.values()):
            raise FieldError("loss", "every term has weight 0: nothing to optimise")


@dataclass(frozen=True)
class BaselinesConfig:
    """The ``baselines`` section: which simple models to fit (:data:`BASELINE_MODELS`) and the clinical one's inputs."""

    models: tuple[str, ...] = BASELINE_MODELS
    clinical_conditions: tuple[str, ...] = ()  # empty: every condition recorded in the training split

    def __post_init__(self) -> None:
        for model in self.models:
            if model not in BASELINE_MODELS:
                raise FieldError("models", f"unknown baseline {model!r}; known: {list(BASELINE_MODELS)}")
        if not self.models:
            raise FieldError("models", "name at least one baseline")
        bad = [c for c in self.clinical_conditions if not c.startswith("cond_")]
        if bad:
            raise FieldError("clinical_conditions", f"{bad} are not condition columns (cond_*)")


@dataclass(frozen=True)
class EvaluationConfig:
    """The ``evaluation`` section: the models compared, the resamples of the intervals, the subgroups, the
    operating-point targets and the manifest column that says how each diagnosis was verified (the external
    sets are reported again on the cases verified by ``verified_value``; skipped when the column is absent)."""

    models: tuple[str, ...] = ()  # empty: every prediction table in runs/NAME/predictions
    bootstrap: int = 2000  # resamples of the patient-cluster bootstrap AUC intervals (a check beside DeLong's)
    band_resamples: int = 500  # resamples of the pointwise ROC bands
    subgroups: tuple[str, ...] = ("center", "cond_birads", "age_band")
    sensitivity_target: float = 0.9
    specificity_target: float = 0.9
    efficiency_runs: int = 30
    efficiency_threads: int = 1
    verification_column: str = "cond_verification"  # how each diagnosis was verified (e.g. biopsy / follow-up)
    verified_value: str = "biopsy"  # the external sets are reported again on the cases verified this way

    def __post_init__(self) -> None:
        for name in ("verification_column", "verified_value"):
            if not getattr(self, name).strip():
                raise FieldError(name, f"expected a non-empty name, got {getattr(self, name)!r}")
        check_range("bootstrap", self.bootstrap, 100, 100_000)
        check_range("band_resamples", self.band_resamples, 100, 100_000)
        check_range("sensitivity_target", self.sensitivity_target, 0.5, 1.0)
        check_range("specificity_target", self.specificity_target, 0.5, 1.0)
        check_range("efficiency_runs", self.efficiency_runs, 2, 1000)
        check_range("efficiency_threads", self.efficiency_threads, 1, 256)


@dataclass(frozen=True)
class ReaderSimulation:
    """Simulated readers (phantom cohort only): how many junior and senior readers read the test images."""

    n_junior: int = 4
    n_senior: int = 4

    def __post_init__(self) -> None:
        check_range("n_junior", self.n_junior, 1, 50)
        check_range("n_senior", self.n_senior, 1, 50)
        if self.n_junior + self.n_senior < 2:
            raise ValueError("the ORH analysis needs at least 2 readers")


@dataclass(frozen=True)
class ReaderStudyConfig:
    """The ``reader_study`` section: simulated readers or a read table of real readers, and the model compared.

    Without either the stage is skipped (:meth:`skip_reason`). That readers are simulated only for the
    phantom cohort is checked by :func:`diffkd_study.config.parse_config`, which knows the data.
    """

    simulate: ReaderSimulation | None = None  # simulated readers: phantom cohort only
    reads: str | None = None  # a read table (CSV) of real readers, relative to the project root or absolute
    model: str | None = None  # the model compared with the readers; default: best baseline by validation AUC

    def __post_init__(self) -> None:
        if self.simulate is not None and self.reads is not None:
            raise ValueError("give either 'simulate' (phantom cohort) or 'reads' (a read table), not both")
        if self.reads is not None and not self.reads.strip():
            raise FieldError("reads", f"expected the path of a read-table CSV, got {self.reads!r}")

    def skip_reason(self) -> str | None:
        """Why the runner skips the stage (no readers to compare with), or None when it runs."""
        if self.simulate is None and self.reads is None:
            return ("no read table given (reader_study.reads): the reader study needs real readers' reads "
                    "for this data; readers are simulated only for the phantom cohort")
        return None

    def notebook_parameters(self, ctx: Any) -> dict[str, Any]:
        """The notebook's parameters derived from the section: ``reads_path`` (the read table resolved against
        ``ctx.project_root``, a :class:`diffkd_study.stages.StageContext`; empty when none), ``simulate`` and
        the simulated readers' ``n_junior`` / ``n_senior`` (0 when not simulated), ``model`` (empty: the default)."""
        reads = ""
        if self.reads is not None:
            path = Path(self.reads)
            reads = str((path if path.is_absolute() else Path(ctx.project_root) / path).resolve())
        return {
            "reads_path": reads,
            "simulate": self.simulate is not None,
            "n_junior": self.simulate.n_junior if self.simulate else 0,
            "n_senior": self.simulate.n_senior if self.simulate else 0,
            "model": self.model or "",
        }
