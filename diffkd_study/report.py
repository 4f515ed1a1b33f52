"""Run a study: prepare the data, execute each stage notebook with papermill, export HTML, build the index.

Layout of one run (``NAME`` from the config)::

    runs/NAME/data/          study manifest, validation report, generated phantom cohort
    reports/NAME/            NN_stage.ipynb (executed), NN_stage.html (reviewer, with code),
                             NN_stage.clinician.html (no code), figures/*.png|svg,
                             NN_stage.metrics.json, provenance.json, index.html

Every file is written under a temporary name and renamed when complete, and bad data stops the run
before anything is written under ``reports/NAME``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffkd_study.codedigest import module_file, module_hashes, notebook_modules
from diffkd_study.config import StudyConfig, load_config
from diffkd_study.data.cache import ALLOW_OUTSIDE_ROOT_ENV
from diffkd_study.data.study import DataPreparationError, StudyData, prepare_study_data
from diffkd_study.index_page import NO_FAVICON, write_index
from diffkd_study.io import set_aside, sha256_file, write_json, write_text
from diffkd_study.provenance import now_iso, run_provenance
from diffkd_study.repro import apply_thread_setting
from diffkd_study.runlock import RunLock
from diffkd_study.sections import ConfigError
from diffkd_study.stage_output import StageResult
from diffkd_study.stages import STAGE_NOTEBOOKS, STAGES, StageContext

CLINICIAN_REMOVED_TAGS = {"parameters", "injected-parameters", "reviewer-only"}


@dataclass
class RunResult:
    """What :func:`run_study` returns: the run's name, report folder, one result per stage and the total wall time."""

    name: str
    report_dir: Path
    stages: list[StageResult]
    wall_s: float

    @property
    def ok(self) -> bool:
        """True when no stage failed (skipped and re-used stages count as fine)."""
        return all(s.status != "failed" for s in self.stages)


def log(message: str) -> None:
    """Print ``message`` to stderr with the ``[diffkd-study HH:MM:SS]`` prefix, flushed at once."""
    print(f"[diffkd-study {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _offline(body: str, urls: list[str]) -> str:
    """The page without the scripts nbconvert's template loads from a CDN (require.js, MathJax): the reports
    show figures, tables and text, none of which needs them, and must read the same with no network."""
    for url in urls:
        body = re.sub(r'<script src="' + re.escape(url) + r'">\s*</script>\n?', "", body)
    return body.replace("<head>", f"<head>{NO_FAVICON}", 1)


def export_html(notebook_path: Path, out_path: Path, *, audience: str) -> None:
    """Export an executed notebook: ``reviewer`` keeps the code, ``clinician`` shows results only."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(notebook_path, as_version=4)
    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    if audience == "clinician":
        exporter.exclude_input = True
        remover = TagRemovePreprocessor(remove_cell_tags=CLINICIAN_REMOVED_TAGS, enabled=True)
        nb, _ = remover.preprocess(nb, {})
        for cell in nb.cells:
            if cell.cell_type == "code":
                # warnings and progress bars are for reviewers, not for clinical readers
                cell.outputs = [o for o in cell.outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    elif audience != "reviewer":
        raise ValueError(f"audience must be 'clinician' or 'reviewer', got {audience!r}")
    title = f"{notebook_path.stem} ({'clinician report' if audience == 'clinician' else 'reviewer report, with code'})"
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    write_text(out_path, _offline(body, [exporter.require_js_url, exporter.mathjax_url]))


def execute_stage(
    stage: str, notebook_dir: Path, report_dir: Path, parameters: dict[str, Any], *, progress: bool = True,
    verbose: bool = False,
) -> StageResult:
    """Execute ``stage``'s notebook with papermill into ``report_dir`` and export its two HTML pages.

    The notebook ``notebook_dir/<NN_stage>.ipynb`` runs with ``parameters`` injected (the kernel uses the
    inline matplotlib backend and plain-text progress bars); the executed notebook is kept as
    ``report_dir/<NN_stage>.ipynb`` even when a cell fails, then exported as ``.html`` (reviewer, with code)
    and ``.clinician.html`` (results only). ``progress`` shows papermill's cell bar, ``verbose`` streams the
    cells' output.

    Returns a :class:`~diffkd_study.stage_output.StageResult`: ``failed`` with the cell's error (a failing cell
    does not raise), else ``ok`` with the metrics JSON the notebook wrote at ``parameters["metrics_path"]``.
    Raises ``FileNotFoundError`` when the stage's notebook is missing.
    """
    import papermill as pm

    from diffkd_study.progress import PLAIN_PROGRESS_ENV, bar_options

    name = STAGE_NOTEBOOKS[stage]
    source = notebook_dir / f"{name}.ipynb"
    if not source.is_file():
        raise FileNotFoundError(f"stage {stage}: notebook {source} not found")
    executed = report_dir / f"{name}.ipynb"
    running = report_dir / f".{name}.{os.getpid()}.running.ipynb"  # unique: never another run's file
    started = time.perf_counter()
    error = None
    # The kernel inherits this process's environment. Its figures reach the notebook (and both HTML pages) only
    # through the inline backend, which an inherited MPLBACKEND (the Makefile's Agg) would replace; its progress
    # bars are saved as text, never as widgets, so tqdm's warning that widgets are missing (raised when a library,
    # huggingface_hub through timm, imports tqdm.auto in a kernel) is noise on the pages. Restored afterwards.
    no_widget_warning = "ignore:IProgress not found:Warning"
    kernel_env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline", PLAIN_PROGRESS_ENV: "1",
                  "PYTHONWARNINGS": ",".join(filter(None, (os.environ.get("PYTHONWARNINGS"), no_widget_warning)))}
    inherited = {key: os.environ.get(key) for key in kernel_env}
    os.environ.update(kernel_env)
    try:
        pm.execute_notebook(
            str(source), str(running), parameters=parameters, kernel_name="python3",
            progress_bar=progress and bar_options(), cwd=str(notebook_dir), language="python", log_output=verbose,
            # the kernel's own log (its transport warning, and the tracebacks it logs when a Ctrl-C closes
            # its channels mid-cell) is not the user's business: cell errors reach the runner as messages
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
        )
    except pm.PapermillExecutionError as err:
        error = f"{err.ename}: {err.evalue}"
    finally:
        for key, value in inherited.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        # the executed notebook is kept even when a cell failed: it shows the error in context
        if running.exists():
            running.replace(executed)
    wall = time.perf_counter() - started
    metrics_path = Path(parameters.get("metrics_path", ""))
    metrics = json.loads(metrics_path.read_text()) if error is None and metrics_path.is_file() else {}
    for audience, suffix in (("reviewer", ".html"), ("clinician", ".clinician.html")):
        export_html(executed, report_dir / f"{name}{suffix}", audience=audience)
    return StageResult(stage, name, "failed" if error else "ok", wall, error, metrics)


def stage_parameters(
    stage: str, config: StudyConfig, data: StudyData, report_dir: Path, run_dir: Path, project_root: Path = Path("."),
    data_root_base: str | Path | None = None,
) -> dict[str, Any]:
    """The papermill parameters of ``stage``: the common ones, the inputs it declares, and its section's.

    Every stage gets ``run_dir``, ``figures_dir``, ``metrics_path``, ``provenance_path`` and ``seed``;
    then the common inputs its :class:`~diffkd_study.stages.StageSpec` declares (``manifest_path``, the
    split study manifest; ``data_root``, the folder its paths are relative to; ``predictions_dir``;
    ``project_root``; ``data_root_base``, ``--data-root``, empty for the phantom cohort; ``image_size``, the
    study resolution; ... see :data:`~diffkd_study.stages.INPUTS`); then every field of its section (or what
    the section's ``notebook_parameters`` derives from them).
    """
    spec = STAGES[stage]
    common = {
        "run_dir": str(run_dir.resolve()),
        "figures_dir": str((report_dir / "figures").resolve()),
        "metrics_path": str((report_dir / f"{spec.notebook}.metrics.json").resolve()),
        "provenance_path": str((report_dir / f"{spec.notebook}.provenance.json").resolve()),
        "seed": config.seed,
    }
    ctx = StageContext(run_dir=run_dir, manifest_path=data.manifest_path, data_root=data.root,
                       project_root=Path(project_root),
                       data_root_base=None if data_root_base is None else Path(data_root_base),
                       image_size=config.data.resolution)
    return {**common, **spec.notebook_parameters(config.section(stage), ctx)}


@dataclass
class PlannedStage:
    """One stage of a run's plan: its key and inputs, the action (``run``, ``cached`` or ``skip``) and why,
    its papermill parameters and the ledger entry of its last successful run.
    """

    stage: str
    notebook: str
    key: str
    action: str  # "run" | "cached" | "skip"
    reason: str
    parameters: dict[str, Any]
    previous: dict[str, Any] | None  # the ledger entry of this stage's last successful run
    inputs: StageInputs | None = None


LEDGER = "stages.json"
#: What decides a stage's result, in the order the plan names a change.
INPUT_KINDS: tuple[str, ...] = ("config", "data", "code", "notebook", "upstream", "version")


def _digest(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class StageInputs:
    """What decides a stage's result: its parameters (the config slice, seeds, paths), the study data,
    the package code its notebook runs (every module it imports, transitively: see
    :mod:`diffkd_study.codedigest`), the notebook itself, the key of the stage before it (so that a
    change re-runs the stage and every later one) and the package version."""

    config: str
    data: str
    code: dict[str, str]  # module -> sha256 of its source
    notebook: str
    upstream: str
    version: str

    @classmethod
    def of(cls, stage: str, parameters: dict[str, Any], notebook: Path, data_sha: str, upstream: str) -> StageInputs:
        """The inputs of ``stage``: a digest of its ``parameters``, the data's sha256, the hashes of the package
        modules ``notebook`` imports, the notebook's sha256 (``missing`` when absent), ``upstream`` and the version.
        """
        from diffkd_study import __version__

        code = module_hashes(notebook_modules(notebook)) if notebook.is_file() else {}
        return cls(config=_digest(stage, json.dumps(parameters, sort_keys=True, default=str)), data=data_sha,
                   code=code, notebook=sha256_file(notebook) if notebook.is_file() else "missing",
                   upstream=upstream, version=__version__)

    @property
    def key(self) -> str:
        """The stage's cache key: one sha256 over every input."""
        return _digest(self.config, self.data, json.dumps(self.code, sort_keys=True), self.notebook, self.upstream,
                       self.version)

    def to_dict(self) -> dict[str, Any]:
        """The inputs as a JSON-ready dict (what the ledger records under ``inputs``)."""
        return dataclasses.asdict(self)

    def changes(self, previous: dict[str, Any] | None) -> list[str]:
        """Which inputs differ from the ``inputs`` a ledger entry recorded, in words."""
        if not previous:
            return ["recorded by an older version of the runner"]
        out = []
        for kind in INPUT_KINDS:
            if kind == "code":
                old = previous.get("code") or {}
                edited = sorted(m for m in self.code if m in old and old[m] != self.code[m])
                added = sorted(set(self.code) - set(old))
                dropped = sorted(set(old) - set(self.code))
                names = [module_file(m).relative_to(module_file("diffkd_study").parent.parent).as_posix()  # type: ignore[union-attr]
                         for m in edited + added]
                if names or dropped:
                    shown = names[:3] + ([f"{len(names) - 3} more"] if len(names) > 3 else [])
                    out.append("code (" + ", ".join(shown + [f"{m} no longer used" for m in dropped[:2]]) + ")")
            elif kind == "upstream":
                if previous.get("upstream") != self.upstream:
                    out.append("an earlier stage")
            elif previous.get(kind) != getattr(self, kind):
                out.append(kind)
        return out


def _read_ledger(run_dir: Path) -> dict[str, Any]:
    path = run_dir / LEDGER
    if not path.is_file():
        return {}
    try:
        ledger = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        log(f"warning: {path} is not valid JSON; every stage will run")
        return {}
    return ledger if isinstance(ledger, dict) else {}


def _report_files_exist(report_dir: Path, notebook: str) -> bool:
    return all((report_dir / f"{notebook}{s}").is_file() for s in (".ipynb", ".html", ".clinician.html"))


def _artifact_path(name: str, run_dir: Path, report_dir: Path) -> Path:
    """Ledger artifact names are ``run/<path under runs/NAME>`` or ``report/<path under reports/NAME>``."""
    area, _, rel = name.partition("/")
    return (run_dir if area == "run" else report_dir) / rel


def artifact_problems(artifacts: dict[str, str], run_dir: Path, report_dir: Path) -> list[str]:
    """Each recorded artifact that is missing or whose sha256 is not the one the stage recorded."""
    problems = []
    for name, sha in artifacts.items():
        path = _artifact_path(name, run_dir, report_dir)
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(path) != sha:
            problems.append(f"{name} was changed after the stage wrote it")
    return problems


def plan_stages(config: StudyConfig, data_sha: str, parameters: dict[str, dict[str, Any]], ledger: dict[str, Any],
                report_dir: Path, notebook_dir: Path, *, force: tuple[str, ...] = (),
                from_stage: str | None = None, run_dir: Path | None = None) -> list[PlannedStage]:
    """Decide for every stage whether it runs or its last result is re-used (see :func:`run_study`).

    A stage is re-used only when its key equals the one of its last successful run and every artifact
    that run recorded (run files, metrics JSON, report pages, figures) is present with the recorded
    sha256; otherwise the reason names what changed (config, data, code and which module, notebook,
    an earlier stage) or which artifact is missing or altered.
    """
    check_stage_names(config, force, from_stage)
    plan: list[PlannedStage] = []
    upstream = ""
    rerun_from = config.stages.index(from_stage) if from_stage else len(config.stages)
    for i, stage in enumerate(config.stages):
        notebook = STAGE_NOTEBOOKS[stage]
        params = parameters[stage]
        inputs = StageInputs.of(stage, params, notebook_dir / f"{notebook}.ipynb", data_sha, upstream)
        key = inputs.key
        upstream = key
        previous = ledger.get(stage)
        skip = config.skip_reason(stage)

        def planned(action: str, reason: str) -> PlannedStage:
            return PlannedStage(stage, notebook, key, action, reason, params, previous, inputs)  # noqa: B023

        if skip is not None:
            plan.append(planned("skip", skip))
        elif stage in force:
            retrain = " (its checkpoints are set aside: it trains afresh)" if STAGES[stage].workdirs else ""
            plan.append(planned("run", f"forced (--force){retrain}"))
        elif i >= rerun_from:
            plan.append(planned("run", f"re-run from {from_stage} (--from)"))
        elif previous is None:
            plan.append(planned("run", "never run"))
        elif previous.get("key") != key:
            changed = inputs.changes(previous.get("inputs"))
            plan.append(planned("run", "changed: " + "; ".join(changed or ["its key"])))
        elif not _report_files_exist(report_dir, notebook):
            plan.append(planned("run", "its report files are missing"))
        elif problems := artifact_problems(previous.get("artifacts") or {}, run_dir or Path(), report_dir):
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            plan.append(planned("run", f"{problems[0]}{more}"))
        else:
            plan.append(planned("cached", f"unchanged since {previous.get('finished')}"))
    return plan


def check_stage_names(config: StudyConfig, force: tuple[str, ...] = (), from_stage: str | None = None) -> None:
    """``--force``/``--from`` must name stages of this study: checked before any work is done."""
    unknown = [s for s in (*force, *([from_stage] if from_stage else [])) if s not in config.stages]
    if unknown:
        raise ConfigError(f"--force/--from name stage(s) {unknown} that this study does not run; its stages: "
                          f"{list(config.stages)}")


def format_plan(plan: list[PlannedStage]) -> str:
    """The plan as text, one numbered line per stage: name, action, reason and the last run's wall time."""
    width = max(len(p.stage) for p in plan)
    lines = []
    for i, p in enumerate(plan, 1):
        last = p.previous.get("wall_s") if p.previous else None
        timing = f" (last run {last:.0f} s)" if isinstance(last, (int, float)) else ""
        lines.append(f"{i:2d}. {p.stage:<{width}}  {p.action:<6}  {p.reason}{timing}")
    return "\n".join(lines)


def _eta(plan: list[PlannedStage], index: int) -> str:
    remaining = [p.previous.get("wall_s") if p.previous else None for p in plan[index:] if p.action == "run"]
    known = [w for w in remaining if isinstance(w, (int, float))]
    if not known:
        return ""
    text = f"about {sum(known) / 60:.1f} min left"
    return text + (" (plus stages never timed)" if len(known) < len(remaining) else "")


def _visible_files(folder: Path) -> list[Path]:
    """Files under ``folder`` outside hidden names (locks, temporary files, ``.superseded/``)."""
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)]


def stage_artifacts(stage: PlannedStage, run_dir: Path, report_dir: Path, since: float) -> dict[str, str]:
    """sha256 of what a stage produced: the manifests, tables, records and weights it wrote under the run
    folder, its report pages, metrics JSON and figures, plus what its previous run recorded and is still
    there (a re-used fit is not rewritten, yet still belongs to the stage). Prediction tables
    (``run/predictions/*.csv``) are not carried over: every execution of a stage writes those of the models it
    has now, so a table only an earlier execution wrote (a variant renamed or dropped since) is stale and must
    not reach the evaluation as one of the stage's models."""
    names = {f"run/{p.relative_to(run_dir).as_posix()}" for p in _visible_files(run_dir)
             if p.suffix in (".csv", ".json", ".safetensors") and p.name != LEDGER and p.stat().st_mtime >= since}
    names |= {f"report/figures/{p.relative_to(report_dir / 'figures').as_posix()}"
              for p in _visible_files(report_dir / "figures") if p.stat().st_mtime >= since}
    names |= {f"report/{stage.notebook}{suffix}" for suffix in (".ipynb", ".html", ".clinician.html", ".metrics.json")
              if (report_dir / f"{stage.notebook}{suffix}").is_file()}
    names |= {n for n in ((stage.previous or {}).get("artifacts") or {})
              if _artifact_path(n, run_dir, report_dir).is_file() and not _is_prediction_table(n)}
    return {n: sha256_file(_artifact_path(n, run_dir, report_dir)) for n in sorted(names)}


def _is_prediction_table(name: str) -> bool:
    prefix = "run/predictions/"
    return name.startswith(prefix) and name.endswith(".csv") and "/" not in name[len(prefix):]


def produced_models(ledger: dict[str, Any], stages: tuple[str, ...]) -> list[str]:
    """The models whose predictions the given stages recorded (``run/predictions/<model>.csv``)."""
    prefix = "run/predictions/"
    return sorted({n[len(prefix):-len(".csv")] for stage in stages for n in (ledger.get(stage, {}).get("artifacts") or {})
                   if _is_prediction_table(n)})


def _default_models(config: StudyConfig, stage: str, parameters: dict[str, Any], ledger: dict[str, Any]) -> None:
    """``evaluation.models`` empty means every model the stages before it produced, named explicitly so
    that a missing prediction table is an error in the evaluation rather than a model silently left out."""
    if stage == "evaluation" and not config.section("evaluation").models:
        produced = produced_models(ledger, config.stages[:config.stages.index(stage)])
        if produced:
            parameters["models"] = produced


def set_aside_stage(run_dir: Path, stage: str) -> Path | None:
    """Move a stage's checkpoint folders (``StageSpec.workdirs``) into ``runs/NAME/.superseded/<UTC time>/``
    so that it trains afresh; nothing is deleted. Returns where they went (None: nothing to move)."""
    present = [f for f in STAGES[stage].workdirs if (run_dir / f).exists()]
    return set_aside(run_dir, present) if present else None


class StudyInterrupted(Exception):
    """The user interrupted a run (Ctrl-C); the message says where and that the same command resumes."""


def run_study(
    config_path: str | Path,
    *,
    data_root: str | Path | None = None,
    reports_dir: str | Path = "reports",
    runs_dir: str | Path = "runs",
    project_root: str | Path = ".",
    progress: bool = True,
    force: tuple[str, ...] = (),
    from_stage: str | None = None,
    dry_run: bool = False,
    verbose: bool = False,
    fold: int | None = None,
) -> RunResult:
    """Run the stages of a study config; raises ``DataPreparationError`` (nothing written) on bad data.

    Before any work: the config, its ``--force``/``--from`` names and what can be checked on the
    manifests' tables are checked (:mod:`diffkd_study.preflight`); torch's threads are set from
    ``OMP_NUM_THREADS`` or the process's CPU affinity and exported to every notebook kernel; the run
    folder is locked (:class:`~diffkd_study.runlock.RunLock`).

    Caching: every stage has a key (:class:`StageInputs`: config slice, data, the package code its
    notebook imports, the notebook, the stage before it); a stage whose key equals that of its last
    successful run, and whose recorded artifacts are all present and unaltered (sha256), is not executed
    again (``cached``). ``force`` re-executes the named stages and, for training stages, sets their
    checkpoints aside first (:func:`set_aside_stage`), so they train afresh; later stages keep their results
    unless their own key changed. ``from_stage`` re-executes that stage and every later one (training
    re-uses fits whose own signature is unchanged). The ledger ``runs/NAME/stages.json`` is updated
    after each successful stage, so a run that is interrupted or fails resumes at the first stage that
    has not finished (training stages themselves resume from their checkpoints). A config with a ``cv`` section
    runs its stages once per fold into ``fold-k/`` sub-folders, then the pooled report (:mod:`diffkd_study.cvrun`).
    The first failed stage
    stops the run: its executed notebook is kept, its error is shown in the index, later stages are not
    run, and the command exits non-zero. ``dry_run`` prints the plan and changes nothing. ``fold`` (a config with a
    ``cv`` section) runs that fold's sub-study alone, without the pooled stage, so folds can run side by side.

    Returns a :class:`RunResult` (one :class:`~diffkd_study.stage_output.StageResult` per stage). Raises
    ``ConfigError`` for a bad config or ``--force``/``--from`` name, ``RunLockedError`` when another run
    holds the run folder, and :class:`StudyInterrupted` on Ctrl-C (the finished stages are kept).
    """
    from diffkd_study.preflight import preflight

    config = load_config(config_path)
    check_stage_names(config, tuple(force), from_stage)
    if fold is not None and config.cv is None:
        raise ConfigError(f"{config_path}: --fold {fold} needs a config with a cv section (cv: {{folds: K}})")
    project_root = Path(project_root)
    for warning in preflight(config, project_root=project_root,
                             data_root=None if data_root is None else Path(data_root)):
        log(f"warning: {warning}")
    threads, source = apply_thread_setting()
    # the study's opt-in reaches every reader of its images, in this process and in the notebook kernels
    if config.data.allow_paths_outside_root:
        os.environ[ALLOW_OUTSIDE_ROOT_ENV] = "1"
    else:
        os.environ.pop(ALLOW_OUTSIDE_ROOT_ENV, None)
    run_dir = Path(runs_dir) / config.name
    report_dir = Path(reports_dir) / config.name
    log(f"study {config.name!r}: stages {', '.join(config.stages)}; run folder {run_dir}, reports {report_dir}; "
        f"{threads} thread(s) per process (from {source})")

    def run_one(study: StudyConfig, study_run: Path, study_report: Path) -> RunResult:
        return _run_study(study, config_path, study_run, study_report, project_root, data_root, progress,
                          tuple(s for s in force if s in study.stages),
                          from_stage if from_stage in study.stages else None, dry_run, verbose)

    def dispatch() -> RunResult:  # a config with a cv section: every stage per fold, then the pooled report
        if config.cv is None:
            return run_one(config, run_dir, report_dir)
        from diffkd_study.cvrun import run_cross_validation

        return run_cross_validation(config, run_dir, report_dir, run_one, data_root=data_root,
                                    project_root=project_root, progress=progress, dry_run=dry_run, only_fold=fold)

    if dry_run or fold is not None:  # one fold locks its own folder (cvrun), so that folds can run side by side
        return dispatch()
    with RunLock(run_dir) as lock:
        if lock.stale:
            log(f"note: took over the lock of a run that ended without releasing it (pid {lock.stale.get('pid')}, "
                f"started {lock.stale.get('started')})")
        return dispatch()


def _run_study(config: StudyConfig, config_path: str | Path, run_dir: Path, report_dir: Path, project_root: Path,
               data_root: str | Path | None, progress: bool, force: tuple[str, ...], from_stage: str | None,
               dry_run: bool, verbose: bool) -> RunResult:
    started = time.perf_counter()
    notebook_dir = project_root / "notebooks"
    if dry_run:
        study_json = run_dir / "data" / "study.json"
        if not study_json.is_file():
            print("data not prepared yet: every stage would run\n"
                  + "\n".join(f"{i:2d}. {s}" for i, s in enumerate(config.stages, 1)))
            return RunResult(config.name, report_dir, [], 0.0)
        data = StudyData(manifest_path=run_dir / "data" / "study.csv", root=Path(json.loads(
            study_json.read_text())["root"]), validation=None, inputs_sha256={})  # type: ignore[arg-type]
    else:
        log("preparing data (generate or read manifests, split, validate)")
        try:
            data = prepare_study_data(config, run_dir, data_root=data_root, project_root=project_root,
                                      progress=progress)
        except KeyboardInterrupt:
            raise StudyInterrupted("interrupted while preparing the data; nothing was recorded. Run the same "
                                   "command again to start over") from None
        log(f"data ready: {data.validation.summary()}")
    data_sha = json.loads((run_dir / "data" / "study.json").read_text())["manifest_content_sha256"]
    ledger = _read_ledger(run_dir)
    parameters = {stage: stage_parameters(stage, config, data, report_dir, run_dir, project_root, data_root)
                  for stage in config.stages}
    for stage in config.stages:
        _default_models(config, stage, parameters[stage], ledger)
    plan = plan_stages(config, data_sha, parameters, ledger, report_dir, notebook_dir, force=force,
                       from_stage=from_stage, run_dir=run_dir)
    print(format_plan(plan), file=sys.stderr if not dry_run else sys.stdout, flush=True)
    if dry_run:
        return RunResult(config.name, report_dir, [], 0.0)

    (report_dir / "figures").mkdir(parents=True, exist_ok=True)
    provenance = run_provenance(config.to_dict(), config.seed, data.inputs_sha256, repo=project_root)
    provenance["config_path"] = str(config_path)
    provenance["data_root"] = str(data.root.resolve())
    write_json(report_dir / "provenance.json", provenance)

    results: list[StageResult] = []
    failed = False
    upstream = ""
    for i, item in enumerate(plan, 1):
        stage = item.stage
        where = f"stage {i}/{len(plan)} {stage}"
        if item.action == "skip":
            results.append(StageResult(stage, item.notebook, "skipped", 0.0, item.reason))
            log(f"{where}: skipped ({item.reason})")
            upstream = item.key
            continue
        if failed:
            results.append(StageResult(stage, item.notebook, "skipped", 0.0, "not run: an earlier stage failed"))
            continue
        if item.action == "cached":
            metrics_path = Path(item.parameters["metrics_path"])
            metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
            results.append(StageResult(stage, item.notebook, "cached", float(item.previous.get("wall_s", 0.0)),
                                       None, metrics))
            log(f"{where}: re-used ({item.reason})")
            upstream = item.key
            continue
        # what the earlier stages of this run produced decides some parameters (evaluation.models) and
        # every later key: recompute them now, so the ledger records what this execution really used
        _default_models(config, stage, item.parameters, ledger)
        item.inputs = StageInputs.of(stage, item.parameters, notebook_dir / f"{item.notebook}.ipynb", data_sha,
                                     upstream)
        item.key = upstream = item.inputs.key
        if stage in force and (moved := set_aside_stage(run_dir, stage)) is not None:
            log(f"{where}: its earlier checkpoints are set aside in {moved} (--force trains afresh)")
        eta = _eta(plan, i - 1)
        log(f"{where}: executing notebooks/{item.notebook}.ipynb ({item.reason})" + (f"; {eta}" if eta else ""))
        stage_started, stage_clock = now_iso(), time.time()
        stage_provenance = {**provenance, "stage": stage, "stage_key": item.key, "stage_started": stage_started,
                            "parameters": item.parameters}
        write_json(report_dir / f"{item.notebook}.provenance.json", stage_provenance)
        try:
            result = execute_stage(stage, notebook_dir, report_dir, item.parameters, progress=progress,
                                   verbose=verbose)
        except KeyboardInterrupt:
            result = StageResult(stage, item.notebook, "failed", time.time() - stage_clock,
                                 "KeyboardInterrupt: interrupted by the user")
        except Exception as err:  # a broken stage is reported in the index, not hidden
            result = StageResult(stage, item.notebook, "failed", time.time() - stage_clock,
                                 f"{type(err).__name__}: {err}")
            log(traceback.format_exc())
        interrupted = (result.error or "").startswith("KeyboardInterrupt")
        stage_provenance.update({"stage_finished": now_iso(), "wall_s": round(result.wall_s, 2),
                                 "status": "interrupted" if interrupted else result.status, "error": result.error})
        if result.status == "ok":
            artifacts = stage_artifacts(item, run_dir, report_dir, stage_clock)
            stage_provenance["artifacts_sha256"] = artifacts
            if not Path(item.parameters["metrics_path"]).is_file():
                result.error = "the notebook finished without writing its metrics file: its results are not in the index"
        write_json(report_dir / f"{item.notebook}.provenance.json", stage_provenance)
        if result.status == "ok":
            ledger[stage] = {"key": item.key, "inputs": item.inputs.to_dict(),
                             "finished": stage_provenance["stage_finished"], "wall_s": round(result.wall_s, 2),
                             "notebook": item.notebook, "artifacts": stage_provenance["artifacts_sha256"]}
        else:
            ledger.pop(stage, None)
        write_json(run_dir / LEDGER, ledger)
        if interrupted:
            raise StudyInterrupted(f"interrupted during {where}; the stages before it are saved and its training "
                                   "resumes from its last checkpoint: run the same command again to continue")
        results.append(result)
        log(f"stage {stage}: {result.status} in {result.wall_s:.1f} s" + (f" ({result.error})" if result.error else ""))
        if result.status != "ok":
            failed = True

    wall = time.perf_counter() - started
    provenance["finished"] = now_iso()
    provenance["wall_s"] = round(wall, 2)
    provenance["stages"] = [r.to_dict() for r in results]
    write_json(report_dir / "provenance.json", provenance)
    write_index(report_dir, config, provenance, results)
    log(f"report: {report_dir / 'index.html'} ({wall:.1f} s)")
    return RunResult(config.name, report_dir, results, wall)


__all__ = ["DataPreparationError", "RunResult", "StudyInterrupted", "export_html", "run_study"]
