"""Settings of a student's starting point by general distillation (light module: no torch import).

No offline ImageNet weights exist for the compact students (PP-LCNet x0.35, MobileNetV2). Training them from
random weights left a 0.2 AUC gap to the ImageNet teacher on BUS-BRA, which made the distillation comparison
meaningless. General distillation (as TinyBERT's and DistilBERT's task-agnostic stage; Sanh et al. 2019, Jiao
et al. 2020) gives them a starting point offline: the student learns the packaged ImageNet EfficientNet-Lite2's
representation on the study's own *training* images, without labels. :mod:`diffkd_study.training.general_distillation` runs
it; this module holds its section (:class:`InitialisationConfig`) and the weight words the stages accept.

Student weights in a stage section:

``distilled``
    the stage makes (or re-uses, when code, settings and images are unchanged) the general-distillation
    initialisation of its student on the training split, and every student of the stage starts from it;
``none``
    random weights (timm's initialisation), the ablation "from scratch";
any weight-source string
    ``package:...``, ``file:PATH#sha256=HEX`` or ``distilled:PATH#sha256=HEX`` (an initialisation made
    elsewhere) as :mod:`diffkd_study.models.pretrained` reads them.

Choices of ours (no paper prescribes them): the objective is ``feature_weight x (1 - cos(A f_s, f_t)) +
logit_weight x T^2 KL(softmax(z_t / T) || softmax(z_s / T))`` with ``f`` the pooled pre-logit features, ``A``
a linear adapter from the student's width to the teacher's (1,280), ``z`` the 1,000 ImageNet logits (the
student gets a 1,000-class head for this stage; the study's head replaces it) and ``T = 2``. Every image
is seen in ``views`` fixed views: as it is, mirrored left-right, and ``views - 2`` draws of the study's
augmentation; the teacher's outputs for these views are computed once and cached in memory, so that the
student's epochs cost only its own forward and backward passes (the teacher's forward pass is 2/3 of a
distillation step on this CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

from diffkd_study.sections import check_range

#: the student-weights word that asks a stage for its general-distillation initialisation
DISTILLED = "distilled"
#: weight-source prefixes a stage section accepts besides ``none`` and ``distilled``
WEIGHT_PREFIXES: tuple[str, ...] = ("package:", "file:", "distilled:")

__all__ = ["DISTILLED", "InitialisationConfig", "WEIGHT_PREFIXES", "check_student_weights"]


def check_student_weights(field: str, value: str) -> None:
    """Raise ``ValueError`` naming ``field`` unless ``value`` is ``none``, ``distilled`` or a weight-source string."""
    if value not in ("none", DISTILLED) and not value.startswith(WEIGHT_PREFIXES):
        raise ValueError(f"{field}: expected 'none', 'distilled', 'package:NAME', 'file:PATH#sha256=HEX' or "
                         f"'distilled:PATH#sha256=HEX', got {value!r}")


@dataclass(frozen=True)
class InitialisationConfig:
    """How the general-distillation initialisation is made (see the module docstring for the objective).

    ``views``: fixed views per training image (1: as it is; 2: and mirrored; more: and draws of ``augment``);
    ``epochs`` passes of the student over all views, AdamW at ``lr`` with a linear warm-up over
    ``warmup_epochs`` and a cosine decay; ``whole_images``: for a lesion-crop study, also the whole training
    frames (resized like the whole-image study), besides the crops, as unlabeled images.
    """

    teacher_model: str = "tf_efficientnet_lite2"
    teacher_weights: str = "package:efficientnet-lite2"
    views: int = 4
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    feature_weight: float = 1.0
    logit_weight: float = 1.0
    temperature: float = 2.0
    whole_images: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.teacher_weights.startswith("package:") and not self.teacher_weights.startswith("file:"):
            raise ValueError(f"teacher_weights: the teacher must hold ImageNet weights ('package:...' or "
                             f"'file:PATH#sha256=HEX'), got {self.teacher_weights!r}")
        check_range("views", self.views, 1, 64)
        check_range("epochs", self.epochs, 1, 1000)
        check_range("batch_size", self.batch_size, 2, 4096)
        check_range("lr", self.lr, 1e-8, 1.0)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("warmup_epochs", self.warmup_epochs, 0.0)
        check_range("feature_weight", self.feature_weight, 0.0)
        check_range("logit_weight", self.logit_weight, 0.0)
        check_range("temperature", self.temperature, 0.1, 100.0)
        if self.feature_weight == 0 and self.logit_weight == 0:
            raise ValueError("feature_weight and logit_weight are both 0: nothing to learn")

