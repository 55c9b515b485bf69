"""`mountfs pin [PATH]` and `mountfs unpin PATH`: keep files and folders downloaded.

With a running mount the request goes over the control socket and the mount downloads at
once (`--wait` waits until every pinned byte is here). Without one the pin is recorded in
the state directory and the content comes at the next mount or `mountfs sync`. The logic
is in `mountfs.sync.pinning`; this module only parses and prints.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from mountfs.cli.common import (
    ask_mount,
    device_of,
    human_size,
    json_option,
    print_json,
    state_option,
    state_path,
)
from mountfs.cli.core import main


def _print(pins: list[dict[str, Any]], totals: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json({"pins": pins, "totals": totals})
        return
    if not pins:
        click.echo("nothing is pinned")
        return
    table = Table("path", "kind", "files", "size", "downloaded")
    for pin in pins:
        missing = int(pin["missing_bytes"])
        done = "yes" if missing == 0 else f"{human_size(int(pin['bytes']) - missing)}"
        table.add_row(
            str(pin["path"]), str(pin["kind"]), str(pin["files"]), human_size(pin["bytes"]), done
        )
    Console().print(table)


def _with_totals(answer: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    return list(answer["pins"]), dict(answer["totals"])


@main.command()
@click.argument("path", required=False)
@state_option
@json_option
@click.option(
    "--wait",
    "wait",
    type=float,
    default=None,
    help="Wait up to SECONDS until everything pinned is downloaded (exit 1 if not).",
)
def pin(path: str | None, state_dir: Path | None, as_json: bool, wait: float | None) -> None:
    """Keep PATH (a file, or a folder and all below it) downloaded for offline use.

    PATH is a path on the mount, or a path inside the account (`docs/report.pdf`). Without
    PATH, list the pins and how much of them is downloaded.
    """
    from mountfs.sync import pinning

    state = state_path(state_dir)
    device_of(state_dir)
    if path is None:
        answer = ask_mount(state, {"cmd": "pins"}, timeout=30)
        if answer is not None:
            _print(*_with_totals(answer), as_json)
            return
        listed, totals = pinning.list_unmounted(state)
        _print([p.to_json() for p in listed], asdict(totals), as_json)
        return
    absolute = os.path.abspath(path)
    body = {"cmd": "pin", "path": path, "abs": absolute, "wait": wait or 0}
    answer = ask_mount(state, body, timeout=(wait or 0) + 30)
    if answer is None:
        from mountfs.sync.oneshot import sync_unmounted

        try:
            info = pinning.pin_unmounted(state, path, absolute)
        except pinning.PinError as exc:
            raise click.ClickException(str(exc)) from exc
        if wait is not None and not sync_unmounted(state, wait):
            raise click.ClickException(f"pinned {info.path}, but not downloaded after {wait:g}s")
        changed = info.to_json()
        note = "" if wait is not None else " (downloaded at the next mount or `mountfs sync`)"
    else:
        changed = answer["changed"]
        note = ""
    if as_json:
        print_json(changed)
        return
    click.echo(f"pinned {changed['path']}: {changed['files']} files, {_progress(changed)}{note}")


@main.command()
@click.argument("path")
@state_option
def unpin(path: str, state_dir: Path | None) -> None:
    """Stop keeping PATH downloaded; its content becomes ordinary, evictable cache."""
    from mountfs.sync import pinning

    state = state_path(state_dir)
    device_of(state_dir)
    absolute = os.path.abspath(path)
    answer = ask_mount(state, {"cmd": "unpin", "path": path, "abs": absolute}, timeout=30)
    if answer is None:
        try:
            changed = pinning.unpin_unmounted(state, path, absolute).to_json()
        except pinning.PinError as exc:
            raise click.ClickException(str(exc)) from exc
    else:
        changed = answer["changed"]
    click.echo(f"unpinned {changed['path']}")


def _progress(pin: dict[str, Any]) -> str:
    total = int(pin["bytes"])
    missing = int(pin["missing_bytes"])
    if missing == 0:
        return f"{human_size(total)}, all downloaded"
    return f"{human_size(total - missing)} of {human_size(total)} downloaded"
