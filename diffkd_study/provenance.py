"""Run provenance: what produced a report, so that a reviewer can tell exactly what they are reading."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

PACKAGES: tuple[str, ...] = (
    "diffkd-study",
    "torch",
    "torchvision",
    "timm",
    "diffusers",
    "torch-fidelity",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "statsmodels",
    "pillow",
    "matplotlib",
    "seaborn",
    "papermill",
    "nbconvert",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution in ``names`` (None when not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(repo: str | Path = ".") -> dict[str, Any]:
    """Commit SHA and whether the working tree has uncommitted changes (None outside a git checkout)."""

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(
                ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout.strip()

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha, "dirty": None if status is None else bool(status)}


def hardware() -> dict[str, Any]:
    """Platform, Python, CPU count, host name, memory (GB) and, when torch is installed, CUDA, GPUs and torch
    threads."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "hostname": platform.node(),
    }
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gb"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        info["memory_gb"] = None
    try:
        import torch

        info["cuda"] = torch.cuda.is_available()
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["cuda"] = None
    return info


def now_iso() -> str:
    """The current local time with its UTC offset, ISO 8601 to the second."""
    return dt.datetime.now(dt.UTC).astimezone().isoformat(timespec="seconds")


def run_provenance(
    config: dict[str, Any],
    seed: int,
    inputs: dict[str, str],
    repo: str | Path = ".",
) -> dict[str, Any]:
    """The provenance record of a run: config, seed, git state, versions, input sha256, hardware."""
    return {
        "config": config,
        "seed": seed,
        "git": git_state(repo),
        "packages": package_versions(),
        "inputs_sha256": inputs,
        "hardware": hardware(),
        "env": {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "OMP_NUM_THREADS", "CI")},
        "started": now_iso(),
    }
