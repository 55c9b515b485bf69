"""`scripts/bench` runs end to end and keeps its figures in the documented JSON shape.

One fast benchmark (`ls -l` of a folder, quick sizes) through the real entry point, on
every filesystem target this machine has; the figures themselves are not judged (a
benchmark never fails on a slow figure), only that they exist, are positive and that the
ratio to `local` is what the medians say.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench"


def test_quick_run_writes_medians_and_ratios(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    result = subprocess.run(
        [
            *(str(BENCH), "--quick", "--only", "fs.ls", "--json", str(out)),
            *("--workdir", str(tmp_path), "--targets", "local,bindfs,mountfs"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(out.read_text())

    assert figures["quick"] is True
    assert figures["runs"] == 2
    assert figures["machine"]["nproc"] >= 1
    assert figures["machine"]["python"]
    assert figures["errors"] == []
    assert figures["settings"]["selected"] == ["fs.ls"]
    (group,) = figures["groups"]
    assert group["name"] == "fs"
    assert group["reference"] == {"column": "local"}
    (row,) = group["rows"]
    assert (row["metric"], row["unit"], row["higher_is_better"]) == ("ls -l", "s", False)
    skipped = {s["benchmark"] for s in figures["skipped"]}
    targets = ("local", "bindfs", "mountfs")
    expected_columns = [c for c in targets if f"fs target {c}" not in skipped]
    assert group["columns"] == expected_columns
    for column in expected_columns:
        cell = row["results"][column]
        assert len(cell["runs"]) == 2
        assert all(value > 0 for value in cell["runs"])
        assert min(cell["runs"]) <= cell["median"] <= max(cell["runs"])
    medians = row["results"]
    for column in expected_columns[1:]:
        ratio = row["ratios"][f"{column} ÷ local"]
        assert ratio == medians[column]["median"] / medians["local"]["median"]
    assert "ls -l" in result.stdout  # the table was printed


def test_unknown_benchmark_is_a_usage_error() -> None:
    result = subprocess.run(
        [str(BENCH), "--only", "no-such-benchmark"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "matches no benchmark" in result.stderr
