"""diffkd-study: a reproducible study package for knowledge distillation in medical imaging.

Importing the package sets ``HF_HUB_OFFLINE=1`` (unless the user already chose a value) so that no
code path downloads weights from a model hub at run time; pretrained weights come from installed
packages or local files checked by sha256.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

__version__ = "0.1.0"
