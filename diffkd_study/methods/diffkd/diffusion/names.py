"""The names of what the diffusion code implements, written once: the samplers of
:func:`~diffkd_study.methods.diffkd.diffusion.sample.make_sampler`, the prediction targets and noise schedules
of :class:`~diffkd_study.methods.diffkd.diffusion.train.TrainConfig`, and the length of the training schedule.

A leaf with no imports, so that the stage section (:mod:`~diffkd_study.methods.diffkd.diffusion.stage`, read
when a config is loaded) checks a user's choice against the same tuples the training and sampling code use,
without importing torch, and without putting the section module into the code digest of a diffusion fit.
"""

from __future__ import annotations

__all__ = ["BETA_SCHEDULES", "DOMAIN_RESIZE_MODES", "NUM_TRAIN_TIMESTEPS", "PREDICTION_TYPES", "SAMPLERS"]

SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpmsolver++")
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction")
BETA_SCHEDULES: tuple[str, ...] = ("squaredcos_cap_v2", "linear")
NUM_TRAIN_TIMESTEPS = 1000
#: the diffusion model's domain (TrainConfig.crop) -> the preprocessing's resize mode: whole frames stretched to
#: the diffusion resolution, or the classifier's lesion-centred squares
DOMAIN_RESIZE_MODES: dict[str, str] = {"none": "stretch", "lesion": "lesion"}
