"""The stage registry: every stage of a study declared once, with everything the runner needs to know of it.

A stage (:class:`StageSpec`) is a numbered notebook plus its section dataclass: the YAML key named like
the stage (``data_audit``'s one setting is written ``data.audit_examples_per_group``) is parsed into an
instance of the section, and the notebook receives the run's common parameters, the common inputs the
stage declares (:data:`INPUTS`) and the section's fields as papermill parameters of the same name
(:func:`diffkd_study.report.stage_parameters`). A section whose notebook wants values derived from its
fields provides them with a method ``notebook_parameters(ctx)`` (the reader study: the read table's path
resolved against the project root, the simulated readers' counts), and a stage that may have nothing to
do says why with ``skip_reason()``.

``needs``: what the stage reads from earlier stages of the same run; :func:`diffkd_study.config.parse_config`
refuses a config whose ``stages`` lack every alternative of a need. ``workdirs``: the folders under
``runs/NAME`` where a training stage keeps its checkpoints and fits; ``--force STAGE`` moves them aside so
that it trains afresh. ``cv_pooled`` (:data:`POOLED_STAGE`) is the pooled analysis of a cross-validation study:
never listed in ``stages``, it runs in the study's own folder after every fold (:mod:`diffkd_study.cvrun`), and
its input ``cv_folds`` (the folds' ledger digests) makes it re-run whenever a fold's results change. Light module
(no torch import), like every section module it imports.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffkd_study.methods.comoto.stage import ComotoStageConfig
from diffkd_study.methods.diffkd.diffusion.stage import DiffusionStageConfig, SyntheticQualityStageConfig
from diffkd_study.methods.diffkd.stage import (
    BaselinesConfig,
    EvaluationConfig,
    ReaderStudyConfig,
    StudentStageConfig,
    TeacherStageConfig,
)
from diffkd_study.methods.ssdkd.stage import SSDKDStageConfig
from diffkd_study.sections import check_range, section_parameters
from diffkd_study.summary import SummaryStageConfig

__all__ = ["INPUTS", "KNOWN_STAGES", "POOLED_STAGE", "PREDICTING_STAGES", "STAGES", "STAGE_NOTEBOOKS", "CVPooledConfig",
           "DataAuditConfig", "Need", "StageContext", "StageSpec"]


@dataclass(frozen=True)
class DataAuditConfig:
    """The data audit's one setting (written ``data.audit_examples_per_group`` in the YAML)."""

    examples_per_group: int = 4  # example images shown per center and label

    def __post_init__(self) -> None:
        check_range("examples_per_group", self.examples_per_group, 1, 32)


@dataclass(frozen=True)
class CVPooledConfig:
    """The pooled cross-validation analysis (``55_cv_pooled``; YAML key ``cv_pooled``): the confidence level of
    the intervals, the family-wise alpha of the Holm-adjusted planned comparisons and the power at which their
    minimal detectable difference is given."""

    level: float = 0.95
    alpha: float = 0.05
    power: float = 0.8

    def __post_init__(self) -> None:
        check_range("level", self.level, 0.5, 0.999)
        check_range("alpha", self.alpha, 0.001, 0.5)
        check_range("power", self.power, 0.5, 0.99)


@dataclass(frozen=True)
class StageContext:
    """The run that a stage's notebook parameters are made from (see :data:`INPUTS`)."""

    run_dir: Path  # runs/NAME
    manifest_path: Path  # the split study manifest
    data_root: Path  # the folder its image paths are relative to
    project_root: Path
    data_root_base: Path | None  # --data-root; None for the phantom cohort
    image_size: int  # the study (training) resolution


#: The common inputs a stage may declare (``StageSpec.inputs``), each a notebook parameter of that name.
INPUTS: dict[str, Callable[[StageContext], Any]] = {
    "manifest_path": lambda ctx: str(ctx.manifest_path.resolve()),
    "predictions_dir": lambda ctx: str((ctx.run_dir / "predictions").resolve()),
    "data_root": lambda ctx: str(ctx.data_root.resolve()),
    "project_root": lambda ctx: str(ctx.project_root.resolve()),
    "data_root_base": lambda ctx: "" if ctx.data_root_base is None else str(ctx.data_root_base.resolve()),
    "image_size": lambda ctx: ctx.image_size,
    "validation_path": lambda ctx: str((ctx.run_dir / "data" / "validation.json").resolve()),
    "reader_study_dir": lambda ctx: str((ctx.run_dir / "reader_study").resolve()),
    "cv_folds": lambda ctx: _fold_ledgers(ctx.run_dir),
}


def _fold_ledgers(run_dir: Path) -> dict[str, str]:
    """``{fold-k: sha256 of its ledger}`` for the fold sub-studies under ``run_dir``, in fold order: a parameter
    of the pooled stage, so that its key (and so its re-execution) follows every change of a fold's results."""
    ledgers = [p for p in run_dir.glob("fold-*/stages.json") if p.parent.name.removeprefix("fold-").isdigit()]
    ledgers.sort(key=lambda p: int(p.parent.name.removeprefix("fold-")))
    return {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ledgers}
# what the training and method stages receive: the data, where predictions go, and where to resolve paths
_RUN_INPUTS = ("manifest_path", "predictions_dir", "data_root", "project_root", "data_root_base", "image_size")


@dataclass(frozen=True)
class Need:
    """One of ``stages`` must run before the stage that has this need, because ``reads`` says so.

    ``stages`` empty: any stage that writes predictions (:data:`PREDICTING_STAGES`; filled in by the registry).
    """

    reads: str  # completes "it reads ...", for the error message
    stages: tuple[str, ...] = ()


@dataclass(frozen=True)
class StageSpec:
    """A stage: its notebook, its section, what it needs from earlier stages, what it owns and receives."""

    name: str
    notebook: str  # notebooks/<notebook>.ipynb; its number sets the run order
    section: type  # the section dataclass (the YAML key named like the stage)
    needs: tuple[Need, ...] = ()
    workdirs: tuple[str, ...] = ()  # folders under runs/NAME with its checkpoints and fits (set aside by --force)
    inputs: tuple[str, ...] = ()  # the common inputs (names of INPUTS) its notebook receives
    writes_predictions: bool = False  # it writes prediction tables into runs/NAME/predictions

    def __post_init__(self) -> None:
        unknown = [name for name in self.inputs if name not in INPUTS]
        if unknown:
            raise ValueError(f"stage {self.name}: unknown inputs {unknown}; known: {list(INPUTS)}")

    def notebook_parameters(self, section: Any, ctx: StageContext) -> dict[str, Any]:
        """The declared inputs and the section's parameters (its fields, or what its ``notebook_parameters``
        derives from them)."""
        derived = getattr(section, "notebook_parameters", None)
        own = derived(ctx) if derived is not None else section_parameters(section)
        return {**{name: INPUTS[name](ctx) for name in self.inputs}, **own}


def _registry(*specs: StageSpec) -> dict[str, StageSpec]:
    """``{name: spec}`` in run order (by notebook number); a need without stages names the predicting stages."""
    ordered = sorted(specs, key=lambda spec: spec.notebook)
    predicting = tuple(spec.name for spec in ordered if spec.writes_predictions)
    return {spec.name: dataclasses.replace(spec, needs=tuple(
        need if need.stages else dataclasses.replace(need, stages=predicting) for need in spec.needs))
        for spec in ordered}


STAGES: dict[str, StageSpec] = _registry(
    StageSpec("data_audit", "00_data_audit", DataAuditConfig, inputs=("manifest_path", "data_root", "validation_path")),
    StageSpec("diffusion", "10_diffusion", DiffusionStageConfig, inputs=_RUN_INPUTS,
              workdirs=("diffusion", "synthetic")),
    StageSpec("synthetic_quality", "20_synthetic_quality", SyntheticQualityStageConfig, inputs=_RUN_INPUTS,
              needs=(Need("the synthetic images and the diffusion checkpoint", ("diffusion",)),)),
    StageSpec("teacher", "30_teacher", TeacherStageConfig, inputs=_RUN_INPUTS, workdirs=("teacher",),
              writes_predictions=True),
    StageSpec("student", "40_student", StudentStageConfig, inputs=_RUN_INPUTS, workdirs=("student",),
              writes_predictions=True,
              needs=(Need("the teachers' training records and checkpoints", ("teacher",)),)),
    StageSpec("baselines", "45_baselines", BaselinesConfig,
              inputs=("manifest_path", "predictions_dir", "data_root", "image_size"), writes_predictions=True),
    StageSpec("evaluation", "50_evaluation", EvaluationConfig,
              inputs=("manifest_path", "predictions_dir", "image_size"), needs=(Need("their predictions"),)),
    StageSpec("cv_pooled", "55_cv_pooled", CVPooledConfig, inputs=("manifest_path", "cv_folds")),
    StageSpec("reader_study", "60_reader_study", ReaderStudyConfig,
              inputs=("manifest_path", "predictions_dir", "reader_study_dir"),
              needs=(Need("the predictions of the model it compares"),)),
    StageSpec("ssdkd_dermoscopy", "70_ssdkd_dermoscopy", SSDKDStageConfig, inputs=_RUN_INPUTS, workdirs=("ssdkd",)),
    StageSpec("comoto_dbt", "80_comoto_dbt", ComotoStageConfig, inputs=_RUN_INPUTS, workdirs=("comoto",)),
    StageSpec("summary", "90_summary", SummaryStageConfig, inputs=_RUN_INPUTS, needs=(Need("their predictions"),)),
)
#: The order stages run in (each reads only what earlier stages wrote): by notebook number.
KNOWN_STAGES: tuple[str, ...] = tuple(STAGES)
STAGE_NOTEBOOKS: dict[str, str] = {name: spec.notebook for name, spec in STAGES.items()}
#: The pooled analysis of a cross-validation study: run by the driver after the folds, never listed in ``stages``.
POOLED_STAGE = "cv_pooled"
#: The stages that write prediction tables into runs/NAME/predictions.
PREDICTING_STAGES: tuple[str, ...] = tuple(name for name, spec in STAGES.items() if spec.writes_predictions)
