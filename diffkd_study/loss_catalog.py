"""The complete loss registry: every registered loss of the generic layer and of every method, in one place.

:data:`~diffkd_study.distill.losses.LOSSES` lives in the generic layer (``distill/``) and holds the
published losses registered there (``ce``, ``kd``, ``dkd``, ``fitnet``, ``at`` in :mod:`~diffkd_study.distill.losses`,
``rkd`` in :mod:`~diffkd_study.distill.relational`); each method package
registers its own terms from its loss module (:mod:`diffkd_study.methods.ssdkd.losses`,
:mod:`diffkd_study.methods.comoto.lesion`), which imports the registry from ``distill/``. This module,
above both layers, imports all of them, so after ``from diffkd_study.loss_catalog import LOSSES`` every
name is registered; neither layer imports the other back. A stage whose objective is written in a
config (any registered name) builds and describes it through this module.

Adding a loss: write the class in the generic layer (a published standard used by two methods) or in its
method's loss module, register it with ``@LOSSES.register(name)``, give it a one-line ``description``
template (``tests/unit/distill/test_losses.py`` checks every registered loss for one), and, for a new
method module, import it below.
"""

from __future__ import annotations

from diffkd_study.distill import relational as _relational  # noqa: F401  (registers rkd)
from diffkd_study.distill.composite import build_loss, describe_objective
from diffkd_study.distill.losses import LOSSES
from diffkd_study.methods.comoto import lesion as _comoto_losses  # noqa: F401  (registers lskd, image_kd, impa)
from diffkd_study.methods.ssdkd import losses as _ssdkd_losses  # noqa: F401  (registers crkd, diverse_kd, ssd_*)

__all__ = ["LOSSES", "build_loss", "describe_objective"]
