"""The study at a glance (stage ``summary``, notebook ``90_summary``): headline numbers gathered from the
metrics every earlier stage wrote, the headline ROC figure, and the limitations of the run.

Light module (no torch import): the section dataclass is parsed by ``diffkd_study.config`` and the
helpers read JSON only.

Headline models: the teacher trained on real + synthetic images (``teacher_real+syn``, else
``teacher_real``) and the distilled student of the full method (``student_diffkd``, else the first
student), each with its primary training seed (``eval.evaluate.primary_seeds``).

``headline.json`` (in the report folder) is what ``diffkd-study report compare`` reads: per model
and test set the AUC with its DeLong interval and n; the synthetic-image FID against its floor; the
efficiency ratios; the wall time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SummaryStageConfig", "collect_limitations", "headline_models", "read_stage_metrics"]

TEACHER_PREFERENCE: tuple[str, ...] = ("teacher_real+syn", "teacher_real")
STUDENT_PREFERENCE: tuple[str, ...] = ("student_diffkd", "student_diffkd+syn", "student_kd_real", "student_scratch")


@dataclass(frozen=True)
class SummaryStageConfig:
    teacher: str = ""  # empty: the first of TEACHER_PREFERENCE with predictions
    student: str = ""  # empty: the first of STUDENT_PREFERENCE with predictions
    band_resamples: int = 500

    def __post_init__(self) -> None:
        if self.band_resamples < 100:
            raise ValueError("band_resamples must be >= 100")


def headline_models(available: Sequence[str], teacher: str = "", student: str = "") -> dict[str, str]:
    """``{"teacher": name, "student": name}`` for the models that have predictions (either may be missing);
    a model named in the config must exist."""
    out = {}
    for role, named, preference in (("teacher", teacher, TEACHER_PREFERENCE), ("student", student, STUDENT_PREFERENCE)):
        if named:
            if named not in available:
                raise ValueError(f"summary.{role}: no predictions for {named!r}; available: {sorted(available)}")
            out[role] = named
            continue
        found = next((m for m in preference if m in available), None)
        if found is not None:
            out[role] = found
    return out


def read_stage_metrics(report_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every ``NN_stage.metrics.json`` of the report folder, keyed by notebook name (``50_evaluation``)."""
    out = {}
    for path in sorted(Path(report_dir).glob("[0-9][0-9]_*.metrics.json")):
        name = path.name.removesuffix(".metrics.json")
        if name == "90_summary":
            continue
        out[name] = json.loads(path.read_text(encoding="utf-8"))
    return out


def collect_limitations(stage_metrics: Mapping[str, Mapping[str, Any]], extra: Sequence[str] = ()) -> list[str]:
    """The limitations each stage reported (index section, or top-level for the data audit), de-duplicated,
    in stage order, after ``extra``."""
    seen: dict[str, None] = dict.fromkeys(extra)
    for metrics in stage_metrics.values():
        section = metrics.get("index_section") or {}
        for item in [*metrics.get("limitations", []), *section.get("limitations", [])]:
            seen.setdefault(str(item), None)
    return list(seen)
