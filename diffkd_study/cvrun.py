"""Run a cross-validation study (a config with ``cv: {folds: K}``): every stage once per fold, then the pooled report.

Layout (``NAME`` from the config)::

    runs/NAME/data/study.csv      every image once: internal images with their test fold (cv_fold), external
    runs/NAME/fold-k/             fold k's sub-study: its own split (data/), checkpoints, predictions, ledger
    reports/NAME/fold-k/          fold k's reports and index.html
    runs/NAME/cv/                 the pooled tables (out-of-fold and per-fold predictions, AUCs, comparisons)
    reports/NAME/55_cv_pooled.*   the pooled report; reports/NAME/index.html links every fold and it

Fold k's sub-study is the study's config with ``fold = k``: its data preparation makes fold k's internal
patients its ``test`` split and splits the remaining internal patients into training and validation
(:func:`diffkd_study.data.folds.fold_split`), so diffusion, teachers, students and baselines are retrained per
fold from that fold's training patients only; caching and resuming work per fold as in any run. The folds run
in order and the first failed fold stops the run (the same command resumes). Then the pooled stage
(``cv_pooled``, ``notebooks/55_cv_pooled``) runs in the study's own folder; its key follows every fold's
ledger, so it re-runs whenever a fold's results change.

One fold alone (``diffkd-study run CONFIG --fold k``, ``only_fold``): the study's data and folds are prepared
(under the study folder's lock, briefly; a fold run started at the same moment waits for it), then fold k's
sub-study runs under the lock of its own folder and the pooled stage is not run. Two folds can so run side by
side, one per core; the plain command afterwards finds their stages cached and runs the pooled stage. Every
fold, in either way, holds its folder's lock while it runs.

The runner (:func:`diffkd_study.report.run_study`) calls :func:`run_cross_validation` with a function that
runs one (sub-)study into given folders; this module imports nothing of the runner.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from diffkd_study.config import StudyConfig
from diffkd_study.data.folds import fold_folder
from diffkd_study.data.study import prepare_study_data
from diffkd_study.index_page import write_index
from diffkd_study.provenance import now_iso
from diffkd_study.stage_output import StageResult
from diffkd_study.stages import POOLED_STAGE, STAGE_NOTEBOOKS

__all__ = ["fold_config", "fold_timings", "pooled_config", "run_cross_validation"]

#: runs one (sub-)study: (config, its run folder, its report folder) -> the runner's RunResult
StudyRunner = Callable[[StudyConfig, Path, Path], Any]
#: the purpose a fold run records in the study folder's lock while it prepares the data and folds
PREPARING = "preparing the study's data and folds"


def _log(message: str) -> None:
    print(f"[diffkd-study {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fold_config(config: StudyConfig, fold: int) -> StudyConfig:
    """Fold ``fold``'s sub-study: the study's config with ``fold`` set (its data preparation then splits by fold)."""
    if config.cv is None or not 1 <= fold <= config.cv.folds:
        raise ValueError(f"fold {fold} is not a fold of this study (cv: {config.cv})")
    return dataclasses.replace(config, fold=fold)


def pooled_config(config: StudyConfig) -> StudyConfig:
    """The study's own run after its folds: the pooled stage alone, in the study's run and report folders."""
    return dataclasses.replace(config, stages=(POOLED_STAGE,))


def fold_timings(run_dir: str | Path) -> list[dict[str, Any]]:
    """Wall time of every stage of every fold, from the folds' ledgers (``runs/NAME/fold-k/stages.json``):
    one record per fold with ``fold``, ``total_s`` and one key per stage (its last successful run's seconds)."""
    out = []
    for ledger in sorted(Path(run_dir).glob("fold-*/stages.json"), key=lambda p: int(p.parent.name.split("-")[1])):
        entries = json.loads(ledger.read_text(encoding="utf-8"))
        walls = {stage: float(entry.get("wall_s", 0.0)) for stage, entry in entries.items()}
        out.append({"fold": ledger.parent.name, "total_s": round(sum(walls.values()), 2), **walls})
    return out


def _prefixed(fold: int, stages: list[StageResult]) -> list[StageResult]:
    return [dataclasses.replace(r, stage=f"{fold_folder(fold)}/{r.stage}") for r in stages]


def run_cross_validation(config: StudyConfig, run_dir: Path, report_dir: Path, run_one: StudyRunner, *,
                         data_root: str | Path | None = None, project_root: str | Path = ".", progress: bool = True,
                         dry_run: bool = False, only_fold: int | None = None) -> Any:
    """Prepare the folds, run every fold's sub-study with ``run_one``, then the pooled stage; return the result.

    The result is the pooled run's (``run_one``'s type), with every fold's stage results in front, named
    ``fold-k/<stage>``, and the total wall time. A failed fold stops the run: later folds and the pooled stage
    are not run, and the study's index says which fold failed. ``dry_run`` prints each fold's plan and the
    pooled stage's, and changes nothing. Raises ``DataPreparationError`` when the folds cannot be made.
    """
    if config.cv is None:
        raise ValueError("run_cross_validation needs a config with a cv section")
    from diffkd_study.runlock import RunLock

    started = time.perf_counter()
    folds = config.cv.folds
    if only_fold is not None and not 1 <= only_fold <= folds:
        raise ValueError(f"--fold {only_fold}: this study has folds 1..{folds} (cv: {{folds: {folds}}})")
    if not dry_run:
        _log(f"cross-validation: {folds} patient-grouped folds; preparing the study's data and folds")
        # a fold run started beside another waits while that one prepares (seconds), instead of failing
        preparing = RunLock(run_dir, purpose=PREPARING, wait_while=PREPARING, on_wait=lambda holder: _log(
            f"waiting for pid {holder.get('pid', '?')} to finish {PREPARING}"))
        with preparing if only_fold is not None else nullcontext():
            prepare_study_data(config, run_dir, data_root=data_root, project_root=project_root, progress=progress)
    stages: list[StageResult] = []
    last = None
    for fold in range(1, folds + 1) if only_fold is None else (only_fold,):
        if not dry_run:
            _log(f"cross-validation fold {fold}/{folds}: {run_dir / fold_folder(fold)}")
        else:
            print(f"fold {fold}/{folds}:")
        fold_started = time.perf_counter()
        with nullcontext() if dry_run else RunLock(run_dir / fold_folder(fold)):
            last = run_one(fold_config(config, fold), run_dir / fold_folder(fold), report_dir / fold_folder(fold))
        stages += _prefixed(fold, last.stages)
        if dry_run:
            continue
        _log(f"cross-validation fold {fold}/{folds}: {'done' if last.ok else 'failed'} in "
             f"{time.perf_counter() - fold_started:.1f} s")
        if not last.ok:
            skipped = StageResult(POOLED_STAGE, STAGE_NOTEBOOKS[POOLED_STAGE], "skipped", 0.0,
                                  f"not run: fold {fold} failed (its report: {fold_folder(fold)}/index.html)")
            provenance = {"config_path": str(config.source_path), "seed": config.seed, "started": now_iso(),
                          "finished": now_iso(), "wall_s": round(time.perf_counter() - started, 2)}
            (report_dir / "figures").mkdir(parents=True, exist_ok=True)
            write_index(report_dir, pooled_config(config), provenance, [skipped])
            return dataclasses.replace(last, name=config.name, report_dir=report_dir, stages=[*stages, skipped],
                                       wall_s=time.perf_counter() - started)
    if only_fold is not None:
        assert last is not None
        return dataclasses.replace(last, stages=stages, wall_s=time.perf_counter() - started)
    if dry_run:
        print(f"pooled analysis ({POOLED_STAGE}):")
    pooled = run_one(pooled_config(config), run_dir, report_dir)
    return dataclasses.replace(pooled, stages=[*stages, *pooled.stages], wall_s=time.perf_counter() - started)
