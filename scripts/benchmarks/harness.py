"""The harness: collect every run's figure, then print medians and ratios and keep the raw data.

A benchmark module records *samples* (one value of one metric, measured once, in one
column) into a `Table`. The harness gives it a clock (`Stopwatch`) but runs nothing
itself, so each module decides what belongs inside its timed section. What the harness
owns is how figures are summarised and compared, so every table reads the same way:

- the figure shown is the **median** of the runs (robust to the odd stall of a noisy
  2-core machine), with the spread of the runs (`±` half the range, in % of the median);
- the **ratio** is `column ÷ reference`, where the reference is another column of the same
  table (`local` for the filesystem targets), or a fixed figure (the 1,000 QPS design
  target of the backend). The ratio is never inverted: ↑ marks metrics where higher is
  better, ↓ those where lower is better, and the colour says whether the column beats
  the reference;
- a benchmark that cannot run here (a missing tool, a module not written yet) is a
  *skip* with a reason, and one that raises is an *error*: the only thing that makes the
  command exit non-zero. A slow figure never does.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

__all__ = [
    "Benchmark",
    "ColumnReference",
    "FixedReference",
    "Metric",
    "Options",
    "Problem",
    "Report",
    "Sample",
    "Stopwatch",
    "Suite",
    "Table",
    "format_number",
    "machine_info",
]


WIDE = 160
"""Columns of the tables when stdout is not a terminal."""


@dataclass(frozen=True, slots=True)
class Options:
    """What the command line asked for; every suite reads its sizes from `quick`.

    Attributes:
        quick: the short run (smaller sizes, fewer runs, shorter durations).
        runs: how many times each benchmark runs per column; the table shows the median.
        workdir: where the temporary directories of the targets and servers go.
        cache_dir: where fixtures built once are kept between invocations.
        targets: the filesystem targets to compare, `local` first.
        clients: concurrent clients driving the backend.
        duration_s: how long each backend workload runs, per run.
    """

    quick: bool
    runs: int
    workdir: Path
    cache_dir: Path
    targets: tuple[str, ...]
    clients: int
    duration_s: float


@dataclass(frozen=True, slots=True)
class Benchmark:
    """A name that `--only` can select (`fs.ls`) and the line `--list` prints for it."""

    name: str
    summary: str


@dataclass(frozen=True, slots=True)
class Suite:
    """A group of benchmarks that share a set-up (mounts, a server) and one table.

    `run(report, options, selected)` measures the selected benchmarks (a subset of
    `benchmarks`, by name) and records into tables it asks `report` for. It may raise
    only for a failure of the whole suite; a failure of one benchmark is reported with
    `report.error()` and the others go on.
    """

    name: str
    benchmarks: tuple[Benchmark, ...]
    run: Callable[[Report, Options, tuple[str, ...]], None]


class Stopwatch:
    """`with Stopwatch() as sw: …` then `sw.seconds`: the wall time of the block.

    The one clock of every benchmark (`time.perf_counter`: monotonic, high resolution).
    """

    seconds: float

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seconds = time.perf_counter() - self._start


@dataclass(frozen=True, slots=True)
class Metric:
    """What one row of a table measures.

    Attributes:
        name: the row's label, e.g. `create` or `git clone`.
        unit: e.g. `ops/s`, `MB/s`, `s`.
        higher_is_better: True for throughputs, False for durations.
    """

    name: str
    unit: str
    higher_is_better: bool


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured value of `metric`; `note` says how it was measured (e.g. `cold cache`)."""

    metric: Metric
    value: float
    note: str = ""


@dataclass(frozen=True, slots=True)
class ColumnReference:
    """Ratios are taken against another column of the same table (e.g. `local`)."""

    column: str


@dataclass(frozen=True, slots=True)
class FixedReference:
    """Ratios are taken against fixed figures, e.g. `{"1,000 QPS target": 1000.0}`."""

    figures: tuple[tuple[str, float], ...]


Reference = ColumnReference | FixedReference


@dataclass(slots=True)
class _Cell:
    """Every run of one metric in one column, in the order they were measured."""

    values: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def median(self) -> float:
        return statistics.median(self.values)

    def spread(self) -> float:
        """Half the range of the runs, as a fraction of the median (0 for a single run)."""
        med = self.median()
        if len(self.values) < 2 or med == 0:
            return 0.0
        return (max(self.values) - min(self.values)) / 2 / abs(med)

    def note(self) -> str:
        """The note of the run closest to the median (notes may vary, e.g. CPU use)."""
        med = self.median()
        best = min(range(len(self.values)), key=lambda i: abs(self.values[i] - med))
        return self.notes[best]


@dataclass(slots=True)
class _Row:
    benchmark: str
    metric: Metric
    cells: dict[str, _Cell] = field(default_factory=dict)


class Table:
    """The samples of one group of benchmarks, shown as one table.

    Rows appear in the order their metric was first recorded, columns likewise, so a
    module controls the layout just by the order it measures in.
    """

    def __init__(self, name: str, title: str, reference: Reference) -> None:
        self.name = name
        self.title = title
        self.reference = reference
        self._rows: dict[str, _Row] = {}
        self._columns: list[str] = []

    def add(self, benchmark: str, column: str, sample: Sample) -> None:
        """Record one run's value of `sample.metric`, measured by `benchmark`, in `column`."""
        row = self._rows.setdefault(sample.metric.name, _Row(benchmark, sample.metric))
        if row.metric != sample.metric:
            raise ValueError(f"metric {sample.metric.name!r} recorded with two definitions")
        if column not in self._columns:
            self._columns.append(column)
        cell = row.cells.setdefault(column, _Cell())
        cell.values.append(sample.value)
        cell.notes.append(sample.note)

    def is_empty(self) -> bool:
        return not self._rows

    def _ratio_columns(self) -> list[tuple[str, str, float | None]]:
        """(label, column, fixed reference figure or None when the reference is a column)."""
        if isinstance(self.reference, ColumnReference):
            ref = self.reference.column
            return [(f"{c} ÷ {ref}", c, None) for c in self._columns if c != ref]
        single = len(self._columns) == 1
        return [
            (f"÷ {label}" if single else f"{c} ÷ {label}", c, figure)
            for c in self._columns
            for label, figure in self.reference.figures
        ]

    def _ratio(self, row: _Row, column: str, figure: float | None) -> float | None:
        cell = row.cells.get(column)
        if cell is None:
            return None
        if figure is None:
            assert isinstance(self.reference, ColumnReference)
            ref_cell = row.cells.get(self.reference.column)
            if ref_cell is None or ref_cell.median() == 0:
                return None
            return cell.median() / ref_cell.median()
        return cell.median() / figure

    def render(self, runs_label: str) -> RichTable:
        """The rich table: value columns (median ± spread), then ratio columns, then notes."""
        table = RichTable(title=f"{self.title} — {runs_label}", title_justify="left")
        table.add_column("benchmark")
        table.add_column("unit")
        for column in self._columns:
            table.add_column(column, justify="right")
        ratio_columns = self._ratio_columns()
        for label, _, _ in ratio_columns:
            table.add_column(label, justify="right")
        table.add_column("notes", style="dim")
        for row in self._rows.values():
            arrow = "↑" if row.metric.higher_is_better else "↓"
            values = [_value_text(row.cells.get(c)) for c in self._columns]
            ratios = [
                _ratio_text(self._ratio(row, c, fig), row.metric.higher_is_better)
                for _, c, fig in ratio_columns
            ]
            notes = _notes_text(row)
            table.add_row(row.metric.name, f"{row.metric.unit} {arrow}", *values, *ratios, notes)
        return table

    def to_json(self) -> dict[str, Any]:
        """Every run's raw values plus the medians and ratios, as plain JSON."""
        reference: dict[str, Any]
        if isinstance(self.reference, ColumnReference):
            reference = {"column": self.reference.column}
        else:
            reference = {"figures": dict(self.reference.figures)}
        rows = []
        for row in self._rows.values():
            rows.append(
                {
                    "benchmark": row.benchmark,
                    "metric": row.metric.name,
                    "unit": row.metric.unit,
                    "higher_is_better": row.metric.higher_is_better,
                    "results": {
                        c: {"runs": cell.values, "notes": cell.notes, "median": cell.median()}
                        for c, cell in row.cells.items()
                    },
                    "ratios": {
                        label: self._ratio(row, c, fig) for label, c, fig in self._ratio_columns()
                    },
                }
            )
        return {
            "name": self.name,
            "title": self.title,
            "columns": list(self._columns),
            "reference": reference,
            "rows": rows,
        }


def _notes_text(row: _Row) -> str:
    """One note when every column agrees, else one per column."""
    notes = {column: cell.note() for column, cell in row.cells.items() if cell.note()}
    if len(set(notes.values())) <= 1:
        return next(iter(notes.values()), "")
    return "; ".join(f"{column}: {note}" for column, note in notes.items())


def format_number(value: float) -> str:
    """Three significant digits or more, with thousands separators: 12,345 / 123 / 1.23."""
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _value_text(cell: _Cell | None) -> Text:
    if cell is None:
        return Text("—", style="dim")
    text = Text(format_number(cell.median()))
    if len(cell.values) > 1:
        text.append(f" ±{cell.spread() * 100:.0f}%", style="dim")
    return text


def _ratio_text(ratio: float | None, higher_is_better: bool) -> Text:
    if ratio is None:
        return Text("—", style="dim")
    better = ratio >= 1 if higher_is_better else ratio <= 1
    return Text(f"{ratio:.2f}×", style="green" if better else "red")


@dataclass(frozen=True, slots=True)
class Problem:
    """A benchmark that was skipped (with the reason) or that raised (with the traceback)."""

    benchmark: str
    message: str


class Report:
    """Everything one invocation measured: tables, skips, errors, and how to show them.

    Progress and skip/error messages go to stderr as they happen, tables to stdout at
    the end, so `scripts/bench > figures.txt` keeps only the tables.
    """

    def __init__(self, *, quick: bool, runs: int, settings: dict[str, Any]) -> None:
        self.quick = quick
        self.runs = runs
        self.settings = settings
        self.started_at = time.time()
        self.load_at_start = os.getloadavg()[0]
        self.tables: list[Table] = []
        self.skipped: list[Problem] = []
        self.errors: list[Problem] = []
        # Piped or redirected output (a log, docs) gets a wide table instead of rich's 80.
        self.out = Console() if sys.stdout.isatty() else Console(width=WIDE)
        self.err = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=WIDE)

    def table(self, name: str, title: str, reference: Reference) -> Table:
        table = Table(name, title, reference)
        self.tables.append(table)
        return table

    def progress(self, message: str) -> None:
        self.err.print(f"[dim]· {message}[/dim]", highlight=False)

    def skip(self, benchmark: str, reason: str) -> None:
        """Record that `benchmark` cannot run on this machine right now, and why."""
        self.skipped.append(Problem(benchmark, reason))
        self.err.print(f"[yellow]skipped[/yellow] {benchmark}: {reason}", highlight=False)

    def error(self, benchmark: str, exc: BaseException) -> None:
        """Record that `benchmark` broke; this is what makes the command exit non-zero."""
        text = "".join(traceback.format_exception(exc))
        self.errors.append(Problem(benchmark, text))
        self.err.print(f"[red]error[/red] in {benchmark}:\n{text}", highlight=False)

    def print_tables(self) -> None:
        runs_label = f"median of {self.runs} run{'s' if self.runs != 1 else ''}"
        runs_label += " (quick)" if self.quick else ""
        for table in self.tables:
            if not table.is_empty():
                self.out.print(table.render(runs_label))
        for problem in self.skipped:
            self.out.print(f"[yellow]skipped[/yellow] {problem.benchmark}: {problem.message}")
        for problem in self.errors:
            self.out.print(f"[red]error[/red] in {problem.benchmark} (traceback above)")
        self.out.print(self._load_line(), highlight=False)

    def _load_line(self) -> str:
        """Other work on the machine skews every figure; say how busy it was."""
        cpus = os.cpu_count() or 1
        start, end = self.load_at_start, os.getloadavg()[0]
        line = f"load average (1 min): {start:.2f} at the start, {end:.2f} at the end, {cpus} CPUs"
        if max(start, end) >= cpus:
            return f"[yellow]{line}: the machine was busy, expect noisy figures[/yellow]"
        return f"[dim]{line}[/dim]"

    def to_json(self) -> dict[str, Any]:
        return {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at)),
            "duration_s": time.time() - self.started_at,
            "quick": self.quick,
            "runs": self.runs,
            "settings": self.settings,
            "machine": {
                **machine_info(),
                "loadavg_1min_start": self.load_at_start,
                "loadavg_1min_end": os.getloadavg()[0],
            },
            "groups": [t.to_json() for t in self.tables if not t.is_empty()],
            "skipped": [{"benchmark": p.benchmark, "reason": p.message} for p in self.skipped],
            "errors": [{"benchmark": p.benchmark, "traceback": p.message} for p in self.errors],
        }

    def write_json(self, path: Path) -> None:
        """Write the figures atomically, so an interrupted run never leaves half a file."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        tmp.replace(path)


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare figures across machines."""
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "mem_total_bytes": _mem_total(),
        "kernel": platform.release(),
        "system": platform.system(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "hostname": platform.node(),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _mem_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
