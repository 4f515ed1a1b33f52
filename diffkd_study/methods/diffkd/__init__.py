"""DiffKD-DCIS: the conditional diffusion model (:mod:`~diffkd_study.methods.diffkd.diffusion`), the teacher and
student stages, the baselines, the multi-center evaluation, and the section dataclasses of these stages."""
