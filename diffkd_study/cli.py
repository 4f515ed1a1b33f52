"""``diffkd-study`` command line.

    diffkd-study run CONFIG [--data-root DIR]            run a study (papermill notebooks -> reports/NAME/)
        [--dry-run] [--force STAGE] [--from STAGE]       plan only; re-execute one stage; re-run from a stage
    diffkd-study lab NAME [--no-browser ...]             JupyterLab on a run's executed notebooks, to step through
    diffkd-study report compare RUN_A RUN_B              two runs' headline metrics side by side
    diffkd-study data validate MANIFEST --root DIR       check a manifest; non-zero exit on errors
    diffkd-study data build NAME --root DIR --out CSV    manifest from an official public release
    diffkd-study data split MANIFEST --out CSV ...       patient-grouped (and external) split
    diffkd-study data combine A.csv=dirA B.csv=dirB --out CSV   one multi-center manifest
    diffkd-study data cache MANIFEST --root DIR ...      preprocessing cache at training resolution
    diffkd-study phantom --out DIR                       the built-in simulated ultrasound cohort

Any folder will do: the notebooks, and a relative CONFIG not found here, are taken from the project
folder (the one holding notebooks/ and configs/, where the package was installed from with
``pip install -e``), and reports/ and runs/ default to that folder too.

No command deletes or overwrites what it did not write: an existing output file, or a folder holding
files of someone else, is refused unless ``--overwrite`` is given.

Exit codes: 0 success, 1 a stage or check failed, 2 bad input (missing file, invalid config/manifest),
3 the system refused (disk full, permission denied, folder in use), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence
from pathlib import Path

import diffkd_study
from diffkd_study.stages import KNOWN_STAGES, STAGES


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows every option's default, except the empty ones (no value, off, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if action.help is None or default is None or default is False or default == [] or default is argparse.SUPPRESS:
            return action.help
        if isinstance(default, (list, tuple)):
            shown = " ".join(str(value) for value in default).replace("%", "%%")
            return f"{action.help} (default: {shown})"
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """The command's parser; its subcommands are built with the same class, so their help shows defaults too."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def _has_notebooks(folder: Path) -> bool:
    return any((folder / "notebooks" / f"{spec.notebook}.ipynb").is_file() for spec in STAGES.values())


def project_root() -> Path | None:
    """The folder holding the stage notebooks: the current folder when it has them, else the source checkout
    the package is installed from (``pip install -e``); None when neither has them."""
    for folder in (Path("."), Path(diffkd_study.__file__).resolve().parents[1]):
        if _has_notebooks(folder):
            return folder
    return None


def _project_dir(given: str | None, name: str) -> Path:
    """``given`` as typed (relative to the current folder), else the project's ``name`` folder."""
    return Path(given) if given is not None else (project_root() or Path(".")) / name


def resolve_config(config: str | Path, root: Path) -> Path:
    """``config`` as given when it exists (relative paths from the current folder), else under the project."""
    path = Path(config)
    if path.exists() or path.is_absolute():
        return path
    if (root / path).exists():
        return root / path
    where = Path.cwd() if root.resolve() == Path.cwd() else f"{Path.cwd()} nor in the project folder {root.resolve()}"
    raise FileNotFoundError(f"config {config} not found in {where}")


def _check_outputs(args: argparse.Namespace, *paths: str | Path | None) -> None:
    """Refuse, before any work, to write over files the user has (``--overwrite`` allows it)."""
    from diffkd_study.io import OutputExistsError

    for path in paths:
        if path is None or getattr(args, "overwrite", False):
            continue
        path = Path(path)
        if path.is_dir():
            raise OutputExistsError(f"{path} is a folder: give a file path for the output")
        if path.exists():
            raise OutputExistsError(f"{path} already exists: nothing was written; choose another output path or "
                                    "pass --overwrite to replace it")


def _manifest_outputs(out: str) -> tuple[Path, Path]:
    from diffkd_study.data.schema import sidecar_path

    return Path(out), sidecar_path(Path(out))


def _cmd_validate(args: argparse.Namespace) -> int:
    from diffkd_study.data.schema import read_manifest
    from diffkd_study.data.validate import validate_manifest
    from diffkd_study.io import write_json

    _check_outputs(args, args.json)
    manifest = read_manifest(args.manifest)
    report = validate_manifest(
        manifest, args.root, check_files=not args.no_files,
        lesion_free_labels=tuple(args.lesion_free_labels), progress=not args.quiet,
        allow_outside_root=args.allow_outside_root,
    )
    print(report.format())
    if args.json:
        write_json(args.json, {"summary": report.summary(), "problems": [p.__dict__ for p in report.problems]})
    return 0 if report.ok else 1


def _cmd_build(args: argparse.Namespace) -> int:
    from diffkd_study.data.builders import BUILDERS, build_manifest
    from diffkd_study.data.schema import write_manifest

    if args.name not in BUILDERS:
        print(f"error: unknown dataset {args.name!r}; known: {', '.join(BUILDERS.names())}", file=sys.stderr)
        return 2
    _check_outputs(args, *_manifest_outputs(args.out))
    manifest = build_manifest(args.name, Path(args.root))
    path = write_manifest(manifest, args.out)
    print(f"wrote {path} ({len(manifest.df)} rows) and its schema sidecar")
    return 0


def _parse_external(items: Sequence[str]) -> dict[str, list[str]]:
    external: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--external expects COLUMN=VALUE[,VALUE...], got {item!r}")
        column, values = item.split("=", 1)
        external.setdefault(column, []).extend(v for v in values.split(",") if v)
    return external


def _cmd_split(args: argparse.Namespace) -> int:
    from diffkd_study.data.schema import read_manifest, write_manifest
    from diffkd_study.data.splits import external_split, grouped_stratified_split, split_table

    _check_outputs(args, *_manifest_outputs(args.out))
    manifest = read_manifest(args.manifest)
    options = {"val_frac": args.val_frac, "test_frac": args.test_frac, "seed": args.seed,
               "exclude_labels": args.exclude_labels}
    external = _parse_external(args.external)
    if external:
        result = external_split(manifest, external=external, **options)
    else:
        result = grouped_stratified_split(manifest, **options)
    write_manifest(result, args.out)
    print(split_table(result).to_string())
    return 0


def _cmd_combine(args: argparse.Namespace) -> int:
    from diffkd_study.data.schema import read_manifest, write_manifest
    from diffkd_study.data.splits import combine_manifests

    _check_outputs(args, *_manifest_outputs(args.out))
    parts = []
    for item in args.parts:
        if "=" not in item:
            raise ValueError(f"expected MANIFEST=SUBFOLDER (the dataset's folder under the common root), got {item!r}")
        path, folder = item.split("=", 1)
        parts.append((read_manifest(path), folder))
    renames = dict(_parse_pairs(args.rename_condition, "--rename-condition"))
    combined = combine_manifests(parts, rename_conditions=renames or None, dataset=args.dataset)
    write_manifest(combined, args.out)
    print(f"wrote {args.out}: {len(combined.df)} rows from {len(parts)} manifests")
    return 0


def _parse_pairs(items: Sequence[str], option: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        if "=" not in item:
            raise ValueError(f"{option} expects OLD=NEW, got {item!r}")
        old, new = item.split("=", 1)
        pairs.append((old, new))
    return pairs


def _cmd_cache(args: argparse.Namespace) -> int:
    from diffkd_study.data.cache import build_cache
    from diffkd_study.data.schema import read_manifest

    cache = build_cache(read_manifest(args.manifest), Path(args.root), size=args.size, mode=args.mode,
                        resize_mode=args.resize_mode, roi_margin=args.roi_margin, cache_dir=args.cache_dir,
                        progress=True, allow_outside_root=args.allow_outside_root)
    print(f"cache ready: {cache.path}")
    return 0


def _cmd_phantom(args: argparse.Namespace) -> int:
    from diffkd_study.data.phantom import generate_phantom_cohort

    manifest = generate_phantom_cohort(Path(args.out), n_per_center=args.n_per_center, seed=args.seed,
                                       image_size=args.size, progress=True, overwrite=args.overwrite)
    print(f"wrote {len(manifest.df)} images and {manifest.path}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from diffkd_study.report import run_study

    root = project_root()
    if root is None:
        installed = Path(diffkd_study.__file__).resolve().parents[1]
        raise FileNotFoundError(f"the stage notebooks (notebooks/NN_*.ipynb) are neither in the current folder "
                                f"({Path.cwd()}) nor at {installed}, where diffkd_study is installed from: run "
                                "diffkd-study in the project folder (the one holding notebooks/ and configs/), or "
                                "install the package from it with pip install -e")
    result = run_study(resolve_config(args.config, root), data_root=args.data_root, project_root=root,
                       reports_dir=_project_dir(args.reports_dir, "reports"),
                       runs_dir=_project_dir(args.runs_dir, "runs"), force=tuple(args.force),
                       from_stage=args.from_stage, dry_run=args.dry_run, verbose=args.verbose, fold=args.fold)
    if args.dry_run:
        return 0
    failed = [s.stage for s in result.stages if s.status == "failed"]
    if failed:
        print(f"failed stage(s): {', '.join(failed)}; see {result.report_dir / 'index.html'}", file=sys.stderr)
        return 1
    print(f"{result.report_dir / 'index.html'}")
    return 0


def executed_run(run: str, reports_dir: str | Path) -> Path:
    """The report folder of ``run`` (a run name under ``reports_dir``, or a path with a slash) holding its executed
    notebooks: the parameter-filled copies papermill wrote, which re-run as they are (their parameters are
    absolute paths), unlike notebooks/NN_*.ipynb, whose parameters are empty."""
    folder = Path(run) if "/" in run else Path(reports_dir) / run
    if not any(folder.glob("[0-9][0-9]_*.ipynb")):
        runs = sorted({p.parent.name for p in Path(reports_dir).glob("*/[0-9][0-9]_*.ipynb")})
        known = f"runs with executed notebooks there: {', '.join(runs)}" if runs else "no run has any there yet"
        raise FileNotFoundError(f"no executed notebooks (NN_stage.ipynb) for run {run!r} in {folder}; {known}. Run "
                                "the study first (diffkd-study run CONFIG), or pass --reports-dir")
    return folder


def lab_argv(folder: Path, jupyter_args: Sequence[str] = ()) -> list[str]:
    """The command that opens JupyterLab, from this environment, on ``folder``; ``jupyter_args`` go to it."""
    import importlib.util

    if importlib.util.find_spec("jupyterlab") is None:
        raise FileNotFoundError(f"JupyterLab is not installed in this environment ({sys.prefix}): install it with "
                                f"{sys.executable} -m pip install jupyterlab")
    return [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder.resolve()}", *jupyter_args]


def _cmd_lab(args: argparse.Namespace) -> int:
    import os

    folder = executed_run(args.run, _project_dir(args.reports_dir, "reports"))
    argv = lab_argv(folder, args.jupyter_args)
    print(f"JupyterLab on {folder}: Run All re-executes a stage with this run's parameters and "
          "rewrites its outputs; the next diffkd-study run notices and re-executes what changed", file=sys.stderr,
          flush=True)
    os.execv(argv[0], argv)  # JupyterLab replaces this process: Ctrl-C and its exit code are its own


def _cmd_compare(args: argparse.Namespace) -> int:
    from diffkd_study.compare import compare_runs, write_comparison

    _check_outputs(args, args.out)
    reports_dir = _project_dir(args.reports_dir, "reports")
    table = compare_runs(args.run_a, args.run_b, reports_dir=reports_dir)
    print(table.to_string(index=False))
    out = args.out or reports_dir / f"compare_{Path(args.run_a).name}_vs_{Path(args.run_b).name}.html"
    print(f"wrote {write_comparison(table, args.run_a, args.run_b, out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``diffkd-study`` argument parser: every subcommand of the module docstring with its options.

    Each subcommand sets ``func`` to the handler :func:`main` calls; help texts show the defaults.
    """
    from diffkd_study.data.cache import CACHE_DIR_ENV, MODES, RESIZE_MODES, Preprocessing

    parser = _Parser(prog="diffkd-study", description=__doc__.replace("``", ""))
    parser.add_argument("--version", action="version", version=f"%(prog)s {diffkd_study.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    stages = ", ".join(KNOWN_STAGES)
    reports_help = "folder of the run reports (default: reports/ of the project folder)"

    run = sub.add_parser("run", help="run a study config (papermill notebooks -> reports/NAME/)",
                         description="Run a study config: papermill executes the stage notebooks into reports/NAME/.")
    run.add_argument("config", help="study config YAML, e.g. configs/demo.yaml (from the current folder, else from "
                                    "the project folder)")
    run.add_argument("--data-root", help="folder holding the datasets named by the config's manifests")
    run.add_argument("--reports-dir", help=reports_help)
    run.add_argument("--runs-dir", help="where run artifacts (data, checkpoints) go (default: runs/ of the project "
                                        "folder)")
    run.add_argument("--force", action="append", default=[], metavar="STAGE",
                     help="re-execute this stage even if unchanged, a training stage from scratch (its old "
                          "checkpoints are moved to runs/NAME/.superseded/); repeatable; later stages are re-used "
                          f"unless their own inputs changed. STAGE: one of the config's stages ({stages})")
    run.add_argument("--from", dest="from_stage", metavar="STAGE",
                     help="re-execute this stage and every stage after it (training re-uses its fits when their "
                          "code, config and data are unchanged; --force retrains). STAGE: as for --force")
    run.add_argument("--fold", type=int, metavar="K",
                     help="a config with a cv section: run fold K's stages only (no pooled report), e.g. two folds "
                          "side by side in two shells; the plain command then re-uses them and pools")
    run.add_argument("--dry-run", action="store_true", help="print which stages would run or be re-used, and stop")
    run.add_argument("--verbose", action="store_true", help="stream every notebook cell's output to the terminal")
    run.set_defaults(func=_cmd_run)

    lab = sub.add_parser("lab", help="open JupyterLab on a run's executed notebooks, to step through them",
                         description="Open JupyterLab on reports/NAME/, where papermill wrote each stage notebook\n"
                                     "with its parameters filled in: Run All re-executes it as the run did. (The\n"
                                     "notebooks/ originals have empty parameters: diffkd-study run fills them in.)",
                         usage="%(prog)s [-h] [--reports-dir REPORTS_DIR] NAME [JUPYTER-LAB OPTIONS]",
                         epilog="Any other option goes to jupyter lab, e.g. --no-browser --port=8890 (a value after\n"
                                "=, so that it is not taken for NAME).")
    lab.add_argument("run", metavar="NAME", help="run name (under --reports-dir) or report folder, e.g. demo")
    lab.add_argument("--reports-dir", help=reports_help)
    lab.set_defaults(func=_cmd_lab)

    report = sub.add_parser("report", help="reports: compare two runs")
    report_sub = report.add_subparsers(dest="report_command", required=True)
    compare = report_sub.add_parser("compare", help="two runs' headline metrics side by side")
    compare.add_argument("run_a", help="run name (under --reports-dir) or report folder")
    compare.add_argument("run_b")
    compare.add_argument("--reports-dir", help=reports_help)
    compare.add_argument("--out", help="HTML file (default: REPORTS_DIR/compare_A_vs_B.html)")
    compare.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    compare.set_defaults(func=_cmd_compare)

    data = sub.add_parser("data", help="manifests: validate, build, split, combine, cache")
    data_sub = data.add_subparsers(dest="data_command", required=True)

    validate = data_sub.add_parser("validate", help="check a manifest and its files")
    validate.add_argument("manifest")
    validate.add_argument("--root", required=True, help="data root the manifest's paths are relative to")
    validate.add_argument("--no-files", action="store_true", help="check the table only, not the image files")
    validate.add_argument("--lesion-free-labels", nargs="*", default=["normal"],
                          help="labels whose masks may be empty")
    validate.add_argument("--allow-outside-root", action="store_true",
                          help="read image/mask paths that lead outside --root (absolute, ../ or symlinks); "
                               "refused by default")
    validate.add_argument("--json", help="also write the problems as JSON to this file")
    validate.add_argument("--quiet", action="store_true", help="no progress bar")
    validate.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    validate.set_defaults(func=_cmd_validate)

    build = data_sub.add_parser("build", help="build a manifest from an official public release")
    build.add_argument("name", help="bus-bra, breast-lesions-usg, busi, ham10000, mini-mias, bcs-dbt-slices")
    build.add_argument("--root", required=True, help="the release's folder (official layout)")
    build.add_argument("--out", required=True, help="output CSV; the schema sidecar is written next to it")
    build.add_argument("--overwrite", action="store_true", help="replace an existing output manifest")
    build.set_defaults(func=_cmd_build)

    split = data_sub.add_parser("split", help="patient-grouped stratified split, optionally with external data")
    split.add_argument("manifest")
    split.add_argument("--out", required=True, help="output CSV; the schema sidecar is written next to it")
    split.add_argument("--val-frac", type=float, default=0.15, help="fraction of patients for validation")
    split.add_argument("--test-frac", type=float, default=0.2, help="fraction of patients for the internal test set")
    split.add_argument("--seed", type=int, default=0, help="seed of the random assignment of patients")
    split.add_argument("--external", nargs="*", default=[], metavar="COLUMN=VALUES",
                       help="rows to hold out as external, e.g. center=center_C or dataset=breast-lesions-usg")
    split.add_argument("--exclude-labels", nargs="*", default=[], help="labels to drop, e.g. normal")
    split.add_argument("--overwrite", action="store_true", help="replace an existing output manifest")
    split.set_defaults(func=_cmd_split)

    combine = data_sub.add_parser("combine", help="combine manifests into one multi-center manifest")
    combine.add_argument("parts", nargs="+", metavar="MANIFEST=SUBFOLDER",
                         help="each manifest with its dataset folder under the common data root")
    combine.add_argument("--out", required=True, help="output CSV; the schema sidecar is written next to it")
    combine.add_argument("--dataset", default=None, help="name of the combined dataset (default: joined names)")
    combine.add_argument("--rename-condition", nargs="*", default=[], metavar="OLD=NEW",
                         help="merge differently named conditions, e.g. cond_bi_rads=cond_birads")
    combine.add_argument("--overwrite", action="store_true", help="replace an existing output manifest")
    combine.set_defaults(func=_cmd_combine)

    cache = data_sub.add_parser("cache", help="decode and resize once into a memory-mapped cache")
    cache.add_argument("manifest")
    cache.add_argument("--root", required=True, help="data root the manifest's paths are relative to")
    cache.add_argument("--size", type=int, default=128, help="side of the cached square images, in pixels")
    cache.add_argument("--mode", choices=MODES, default="L", help="L: grayscale, RGB: colour")
    cache.add_argument("--resize-mode", choices=RESIZE_MODES, default="stretch",
                       help="stretch: to the size, whatever the aspect; pad: letterbox, keeping the aspect; "
                            "lesion: the square around the row's lesion mask, then stretch")
    cache.add_argument("--roi-margin", type=float, default=Preprocessing.roi_margin,
                       help="--resize-mode lesion: margin on each side of the lesion's bounding box, as a fraction of "
                            "its longer side")
    cache.add_argument("--cache-dir", help=f"where caches are kept (default: ${CACHE_DIR_ENV}, else .cache/diffkd_study in the "
                            "project folder)")
    cache.add_argument("--allow-outside-root", action="store_true",
                       help="read image/mask paths that lead outside --root (absolute, ../ or symlinks); "
                            "refused by default")
    cache.set_defaults(func=_cmd_cache)

    phantom = sub.add_parser("phantom", help="generate the built-in simulated breast-ultrasound cohort")
    phantom.add_argument("--out", required=True, help="folder to write the images, masks and manifest into")
    phantom.add_argument("--n-per-center", type=int, default=100, help="images per simulated center")
    phantom.add_argument("--seed", type=int, default=0, help="seed of the simulation")
    phantom.add_argument("--size", type=int, default=128, help="side of the square images, in pixels")
    phantom.add_argument("--overwrite", action="store_true",
                         help="replace --out even if it holds files this program did not write")
    phantom.set_defaults(func=_cmd_phantom)
    return parser


def _os_error(err: OSError) -> str:
    where = f": {err.filename}" if err.filename else ""
    if err.errno == errno.ENOSPC:
        return (f"the disk is full{where}; nothing half-written was kept: free some space and run the same command "
                "again (finished work is re-used)")
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied{where}: choose a folder you can write to (e.g. --reports-dir, --runs-dir, --out)"
    if err.errno == errno.EROFS:
        return f"read-only file system{where}: choose a writable folder (e.g. --reports-dir, --runs-dir, --out)"
    return f"{err.strerror or err}{where}" if err.strerror else str(err)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``diffkd-study`` command with ``argv`` (default: ``sys.argv[1:]``) and return the exit code.

    Errors are printed as one ``error:`` line instead of a traceback and mapped to the exit codes of the
    module docstring: 2 for bad input (config, schema, manifest, missing or existing file), 3 for a refusal
    of the system (disk full, permission denied, run folder locked), 130 for an interruption. Unknown options
    are an argparse error (exit 2) except for ``lab``, which passes them on to JupyterLab.
    """
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)  # first: --help and --version need none of the imports below
    if args.command == "lab":
        args.jupyter_args = unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    from diffkd_study.data.schema import SchemaError
    from diffkd_study.data.study import DataPreparationError
    from diffkd_study.report import StudyInterrupted
    from diffkd_study.runlock import RunLockedError
    from diffkd_study.sections import ConfigError

    try:
        return args.func(args)
    except DataPreparationError as err:
        print(f"error: the study data did not validate; nothing was written to the report folder.\n{err}",
              file=sys.stderr)
        return 2
    except StudyInterrupted as err:
        print(f"stopped: {err}", file=sys.stderr)
        return _interrupted()
    except KeyboardInterrupt:
        print("stopped: interrupted by the user; nothing half-written was kept", file=sys.stderr)
        return _interrupted()
    except RunLockedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except (ConfigError, SchemaError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
            ValueError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {_os_error(err)}", file=sys.stderr)
        return 3


def _interrupted() -> int:
    """Exit status 130 after a Ctrl-C, with the one ``stopped:`` line as the last word: the notebook client's
    tasks that the interruption left behind (a dead kernel's cell, a closed zmq socket) would otherwise be logged
    by asyncio, with their tracebacks, when they are garbage-collected at exit."""
    import logging

    logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
