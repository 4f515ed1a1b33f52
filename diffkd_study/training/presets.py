"""Named training settings as data, written once: the augmentation presets and the class-weighting schemes.

A leaf with no torch import, so that the stage sections (read when a config is loaded) check a user's
choice against the same names the trainer uses. :data:`AUGMENTATION_PRESETS` holds the arguments of each
:class:`~diffkd_study.training.augment.Augmentation` preset (the module docstring of
:mod:`diffkd_study.training.augment` explains each); :data:`CLASS_WEIGHTINGS` names the schemes of
:func:`~diffkd_study.training.data.class_weights_from_counts`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AUGMENTATION_PRESETS", "CLASS_WEIGHTINGS", "check_choice"]

AUGMENTATION_PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "ultrasound": {"hflip": 0.5, "affine_p": 1.0, "rotate_deg": 10.0, "scale": (0.9, 1.1), "shift": 0.05,
                   "gain_sd": 0.15, "gamma": (0.8, 1.25), "speckle": 0.15},
    "dermoscopy": {"hflip": 0.5, "vflip": 0.2, "affine_p": 0.25, "rotate_deg": 120.0, "scale": (1.0, 2.0),
                   "blur_p": 0.25, "blur_sigma": 1.5, "color_p": 0.25, "brightness": 15 / 255, "saturation": 0.1},
}
CLASS_WEIGHTINGS: tuple[str, ...] = ("balanced", "frequency", "none")


def check_choice(setting: str, value: str, choices: Any) -> None:
    """``ValueError`` ``"<setting> must be one of [...], got '<value>'"`` unless ``value`` is among ``choices``."""
    if value not in choices:
        raise ValueError(f"{setting} must be one of {list(choices)}, got {value!r}")
