"""``diffkd-study`` command line.

    diffkd-study run CONFIG [--data-root DIR]            run a study (papermill notebooks -> reports/NAME/)
        [--dry-run] [--force STAGE] [--from STAGE]       plan only; re-execute one stage; re-run from a stage
    diffkd-study report compare RUN_A RUN_B              two runs' headline metrics side by side
    diffkd-study data validate MANIFEST --root DIR       check a manifest; non-zero exit on errors
    diffkd-study data build NAME --root DIR --out CSV    manifest from an official public release
    diffkd-study data split MANIFEST --out CSV ...       patient-grouped (and external) split
    diffkd-study data combine A.csv=dirA B.csv=dirB --out CSV   one multi-center manifest
    diffkd-study data cache MANIFEST --root DIR ...      preprocessing cache at training resolution
    diffkd-study phantom --out DIR                       the built-in simulated ultrasound cohort

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
                        resize_mode=args.resize_mode, cache_dir=args.cache_dir, progress=True,
                        allow_outside_root=args.allow_outside_root)
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

    result = run_study(args.config, data_root=args.data_root, reports_dir=args.reports_dir, runs_dir=args.runs_dir,
                       force=tuple(args.force), from_stage=args.from_stage, dry_run=args.dry_run, verbose=args.verbose)
    if args.dry_run:
        return 0
    failed = [s.stage for s in result.stages if s.status == "failed"]
    if failed:
        print(f"failed stage(s): {', '.join(failed)}; see {result.report_dir / 'index.html'}", file=sys.stderr)
        return 1
    print(f"{result.report_dir / 'index.html'}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from diffkd_study.compare import compare_runs, write_comparison

    _check_outputs(args, args.out)
    table = compare_runs(args.run_a, args.run_b, reports_dir=args.reports_dir)
    print(table.to_string(index=False))
    out = args.out or Path(args.reports_dir) / f"compare_{Path(args.run_a).name}_vs_{Path(args.run_b).name}.html"
    print(f"wrote {write_comparison(table, args.run_a, args.run_b, out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffkd-study", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a study config (papermill notebooks -> reports/NAME/)")
    run.add_argument("config", help="study config YAML, e.g. configs/demo.yaml")
    run.add_argument("--data-root", help="folder holding the datasets named by the config's manifests")
    run.add_argument("--reports-dir", default="reports")
    run.add_argument("--runs-dir", default="runs", help="where run artifacts (data, checkpoints) go")
    run.add_argument("--force", action="append", default=[], metavar="STAGE",
                     help="re-execute this stage even if unchanged, a training stage from scratch (its old "
                          "checkpoints are moved to runs/NAME/.superseded/); repeatable; later stages are re-used "
                          "unless their own inputs changed")
    run.add_argument("--from", dest="from_stage", metavar="STAGE",
                     help="re-execute this stage and every stage after it (training re-uses its fits when their "
                          "code, config and data are unchanged; --force retrains)")
    run.add_argument("--dry-run", action="store_true", help="print which stages would run or be re-used, and stop")
    run.add_argument("--verbose", action="store_true", help="stream every notebook cell's output to the terminal")
    run.set_defaults(func=_cmd_run)

    report = sub.add_parser("report", help="reports: compare two runs")
    report_sub = report.add_subparsers(dest="report_command", required=True)
    compare = report_sub.add_parser("compare", help="two runs' headline metrics side by side")
    compare.add_argument("run_a", help="run name (under --reports-dir) or report folder")
    compare.add_argument("run_b")
    compare.add_argument("--reports-dir", default="reports")
    compare.add_argument("--out", help="HTML file (default: REPORTS_DIR/compare_A_vs_B.html)")
    compare.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    compare.set_defaults(func=_cmd_compare)

    data = sub.add_parser("data", help="manifests: validate, build, split, cache")
    data_sub = data.add_subparsers(dest="data_command", required=True)

    validate = data_sub.add_parser("validate", help="check a manifest and its files")
    validate.add_argument("manifest")
    validate.add_argument("--root", required=True, help="data root the manifest's paths are relative to")
    validate.add_argument("--no-files", action="store_true", help="check the table only, not the image files")
    validate.add_argument("--lesion-free-labels", nargs="*", default=["normal"],
                          help="labels whose masks may be empty (default: normal)")
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
    split.add_argument("--out", required=True)
    split.add_argument("--val-frac", type=float, default=0.15)
    split.add_argument("--test-frac", type=float, default=0.2)
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--external", nargs="*", default=[], metavar="COLUMN=VALUES",
                       help="rows to hold out as external, e.g. center=center_C or dataset=breast-lesions-usg")
    split.add_argument("--exclude-labels", nargs="*", default=[], help="labels to drop, e.g. normal")
    split.add_argument("--overwrite", action="store_true", help="replace an existing output manifest")
    split.set_defaults(func=_cmd_split)

    combine = data_sub.add_parser("combine", help="combine manifests into one multi-center manifest")
    combine.add_argument("parts", nargs="+", metavar="MANIFEST=SUBFOLDER",
                         help="each manifest with its dataset folder under the common data root")
    combine.add_argument("--out", required=True)
    combine.add_argument("--dataset", default=None, help="name of the combined dataset (default: joined names)")
    combine.add_argument("--rename-condition", nargs="*", default=[], metavar="OLD=NEW",
                         help="merge differently named conditions, e.g. cond_bi_rads=cond_birads")
    combine.add_argument("--overwrite", action="store_true", help="replace an existing output manifest")
    combine.set_defaults(func=_cmd_combine)

    cache = data_sub.add_parser("cache", help="decode and resize once into a memory-mapped cache")
    cache.add_argument("manifest")
    cache.add_argument("--root", required=True)
    cache.add_argument("--size", type=int, default=128)
    cache.add_argument("--mode", choices=["L", "RGB"], default="L")
    cache.add_argument("--resize-mode", choices=["stretch", "pad"], default="stretch")
    cache.add_argument("--cache-dir", default=None)
    cache.add_argument("--allow-outside-root", action="store_true",
                       help="read image/mask paths that lead outside --root (absolute, ../ or symlinks); "
                            "refused by default")
    cache.set_defaults(func=_cmd_cache)

    phantom = sub.add_parser("phantom", help="generate the built-in simulated breast-ultrasound cohort")
    phantom.add_argument("--out", required=True)
    phantom.add_argument("--n-per-center", type=int, default=100)
    phantom.add_argument("--seed", type=int, default=0)
    phantom.add_argument("--size", type=int, default=128)
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
    from diffkd_study.config import ConfigError
    from diffkd_study.data.schema import SchemaError
    from diffkd_study.data.study import DataPreparationError
    from diffkd_study.report import StudyInterrupted
    from diffkd_study.runlock import RunLockedError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DataPreparationError as err:
        print(f"error: the study data did not validate; nothing was written to the report folder.\n{err}",
              file=sys.stderr)
        return 2
    except StudyInterrupted as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("stopped: interrupted by the user; nothing half-written was kept", file=sys.stderr)
        return 130
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


if __name__ == "__main__":
    raise SystemExit(main())
