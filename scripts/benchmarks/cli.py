"""The `scripts/bench` command line: pick suites and benchmarks, run them, print and save.

The exit status is 0 when every selected benchmark ran or was skipped with a reason,
1 when one raised (something broke), 2 for a usage error and 130 on Ctrl-C or SIGTERM;
never non-zero because a figure is slow. Mounts, servers and temporary directories are
released on every one of these paths.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import signal
import tempfile
from pathlib import Path

from . import backend_meta, chunks, cluster, fs, propagation, sharing, storage, transfers
from .harness import Options, Report, Suite
from .targets import TARGETS

__all__ = ["main"]

SUITES: tuple[Suite, ...] = (
    fs.SUITE,
    backend_meta.SUITE,
    chunks.SUITE,
    propagation.SUITE,
    sharing.SUITE,
    cluster.SUITE,
    transfers.SUITE,
    storage.SUITE,
)

FULL_RUNS, QUICK_RUNS = 5, 2
FULL_DURATION_S, QUICK_DURATION_S = 3.0, 1.0
DEFAULT_CLIENTS = 8


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Run the benchmarks of mountfs beside their comparisons and print "
        "medians and ratios. See docs/benchmarks.md for what each one measures.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and 2 runs")
    parser.add_argument(
        "--runs", type=int, help=f"runs per figure (default {FULL_RUNS}, quick {QUICK_RUNS})"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every run's figures here")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only these: a benchmark (fs.ls), a suite (fs) or a glob (backend.*); "
        "repeatable, or comma-separated",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"filesystem targets, comma-separated (default and choices: {','.join(TARGETS)})",
    )
    parser.add_argument(
        "--clients", type=int, default=DEFAULT_CLIENTS, help="concurrent backend clients"
    )
    parser.add_argument(
        "--duration",
        type=float,
        help=f"seconds per backend workload and run (default {FULL_DURATION_S:g}, "
        f"quick {QUICK_DURATION_S:g})",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where temporary directories go; its disk is the `local` target "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=_default_cache_dir(),
        help="where fixtures built once are kept (default: %(default)s)",
    )
    return parser


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mountfs-bench"


def select(patterns: list[str]) -> dict[str, tuple[str, ...]]:
    """Benchmark names per suite that match any pattern (all of them when none given).

    Raises:
        ValueError: a pattern that matches nothing (most likely a typo).
    """
    names = [b.name for suite in SUITES for b in suite.benchmarks]
    wanted = [p.strip() for item in patterns for p in item.split(",") if p.strip()]
    chosen = set(names) if not wanted else set()
    for pattern in wanted:
        matched = {n for n in names if _matches(n, pattern)}
        if not matched:
            raise ValueError(f"--only {pattern!r} matches no benchmark (see --list)")
        chosen |= matched
    return {
        suite.name: tuple(b.name for b in suite.benchmarks if b.name in chosen) for suite in SUITES
    }


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or name.startswith(pattern + ".") or fnmatch.fnmatchcase(name, pattern)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        for suite in SUITES:
            for bench in suite.benchmarks:
                print(f"{bench.name:<18} {bench.summary}")
        return 0
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    try:
        selection = select(args.only)
    except ValueError as exc:
        parser.error(str(exc))
    options = Options(
        quick=args.quick,
        runs=args.runs or (QUICK_RUNS if args.quick else FULL_RUNS),
        workdir=args.workdir,
        cache_dir=args.cache_dir,
        targets=targets,
        clients=args.clients,
        duration_s=args.duration or (QUICK_DURATION_S if args.quick else FULL_DURATION_S),
    )
    if options.runs < 1 or options.clients < 1 or options.duration_s <= 0:
        parser.error("--runs, --clients and --duration must be positive")
    return _run(options, selection, args.json)


def _run(options: Options, selection: dict[str, tuple[str, ...]], json_path: Path | None) -> int:
    # SIGTERM and SIGHUP unwind like Ctrl-C, so every mount and server is released.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.default_int_handler)
    settings = {
        "workdir": str(options.workdir),
        "cache_dir": str(options.cache_dir),
        "targets": list(options.targets),
        "clients": options.clients,
        "duration_s": options.duration_s,
        "selected": [name for names in selection.values() for name in names],
    }
    report = Report(quick=options.quick, runs=options.runs, settings=settings)
    options.workdir.mkdir(parents=True, exist_ok=True)
    try:
        for suite in SUITES:
            if selection[suite.name]:
                _run_suite(suite, report, options, selection[suite.name])
    except KeyboardInterrupt:
        report.print_tables()
        report.err.print("[red]interrupted[/red]: figures above are partial; no JSON written")
        return 130
    report.print_tables()
    if json_path is not None:
        report.write_json(json_path)
        report.err.print(f"figures written to {json_path}")
    return 1 if report.errors else 0


def _run_suite(suite: Suite, report: Report, options: Options, selected: tuple[str, ...]) -> None:
    try:
        suite.run(report, options, selected)
    except Exception as exc:
        report.error(suite.name, exc)
