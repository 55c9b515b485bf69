"""`mountfs pause`, `resume`, `cancel PATH` and `cp SRC DST`; the transfer bars of `status`.

With a running mount, pause/resume/cancel go over the control socket and act at once;
without one they change the state directory (the pause flag; the file's state under the
lock), so they work either way. The logic is in `mountfs.sync.controls`,
`mountfs.sync.transfers` and `mountfs.sync.copy`; this module parses and prints.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import trio
from rich.console import Console, Group
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from mountfs.cli.common import (
    ask_mount,
    bwlimit_option,
    device_of,
    human_size,
    json_option,
    print_json,
    run_async,
    state_option,
    state_path,
    transfers_option,
)
from mountfs.cli.core import main
from mountfs.sync.transfers import PAUSE_FLAG, Transfers

T = TypeVar("T")

__all__ = ["transfers_view", "watch_status"]


@main.command()
@state_option
def pause(state_dir: Path | None) -> None:
    """Pause every upload and download of this device (until `mountfs resume`).

    Takes effect within a second, also in the middle of a chunk, and stays in effect when
    the mount restarts. Reads of files in the mount still fetch what they need.
    """
    from mountfs.sync.transfers import write_flag

    state = state_path(state_dir)
    device_of(state_dir)
    if ask_mount(state, {"cmd": "pause"}) is None:
        write_flag(state / PAUSE_FLAG, paused=True)
    click.echo("transfers paused (`mountfs resume` to go on)")


@main.command()
@state_option
def resume(state_dir: Path | None) -> None:
    """Resume the transfers that `mountfs pause` stopped, from where they stopped."""
    from mountfs.sync.transfers import write_flag

    state = state_path(state_dir)
    device_of(state_dir)
    if ask_mount(state, {"cmd": "resume"}) is None:
        write_flag(state / PAUSE_FLAG, paused=False)
    click.echo("transfers resumed")


@main.command()
@click.argument("path")
@state_option
@json_option
def cancel(path: str, state_dir: Path | None, as_json: bool) -> None:
    """Drop the pending upload of the file PATH.

    PATH is a path on the mount, `cloud:/dir/file`, or a path inside the account. The file
    goes back to its last synced revision, or goes away if it never synced; its local
    content is kept in the state directory's trash for 7 days (the path is printed).
    """
    from mountfs.sync import controls

    state = state_path(state_dir)
    device_of(state_dir)
    absolute = os.path.abspath(path)
    answer = ask_mount(state, {"cmd": "cancel", "path": path, "abs": absolute})
    if answer is None:
        try:
            done = controls.cancel_unmounted(state, path, absolute).to_json()
        except controls.CancelError as exc:
            raise click.ClickException(str(exc)) from exc
    else:
        done = answer["cancelled"]
    if as_json:
        print_json(done)
        return
    what = (
        "back to its last synced revision"
        if done["outcome"] == "reverted"
        else "removed (it had never synced)"
    )
    click.echo(f"cancelled the upload of {done['path']}: {what}")
    click.echo(f"its local content is kept for {controls.TRASH_DAYS} days in {done['trash']}")


@main.command()
@click.argument("source")
@click.argument("target")
@state_option
@json_option
@bwlimit_option
@transfers_option
def cp(
    source: str,
    target: str,
    state_dir: Path | None,
    as_json: bool,
    bandwidth: Any,
    in_flight: int,
) -> None:
    """Copy a file between this machine and the account, without a mount.

    One of SOURCE and TARGET is `cloud:/path` (in the account), the other a local path; a
    folder as TARGET keeps the name. Content is chunked, deduplicated and encrypted as the
    mount does it. Run the same command again after an interruption: it resumes, sending
    or fetching only what is missing. `mountfs pause` and `resume` act on it too.
    """
    from mountfs.sync import copy
    from mountfs.sync.session import Transport

    if copy.is_remote(source) == copy.is_remote(target):
        raise click.UsageError("one of SOURCE and TARGET must be cloud:/path, the other local")
    state = state_path(state_dir)
    device = device_of(state_dir)
    transfers = Transfers(state, bandwidth, in_flight)
    show = not as_json and Console(stderr=True).is_terminal

    async def run() -> copy.Copied:
        transport = Transport.open(device, transfers)
        try:

            async def work() -> copy.Copied:
                t = transport
                if copy.is_remote(target):
                    return await copy.upload(
                        t.api, t.blocks, t.pipeline, transfers, Path(source), target
                    )
                return await copy.download(
                    t.api, t.blocks, t.pipeline, transfers, source, Path(target)
                )

            return await _with_progress(transfers, work, show)
        finally:
            await transport.aclose()

    try:
        done = run_async(run)
    except copy.CopyError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        print_json(
            {
                "source": done.source,
                "target": done.target,
                "size": done.size,
                "sent_bytes": done.sent_bytes,
                "reused_chunks": done.reused_chunks,
                "chunks": done.chunks,
            }
        )
        return
    click.echo(
        f"copied {done.source} to {done.target}: {human_size(done.size)}, "
        f"{human_size(done.sent_bytes)} sent, {done.reused_chunks} of {done.chunks} chunks "
        "already there"
    )


async def _with_progress(transfers: Transfers, work: Callable[[], Awaitable[T]], show: bool) -> T:
    """Run `work` with the pause flag watched and, in a terminal, a live progress bar."""
    result: list[T] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transfers.gate.watch)
        if show:
            nursery.start_soon(_bars, transfers)
        result.append(await work())
        nursery.cancel_scope.cancel()
    return result[0]


def _progress_bars() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


async def _bars(transfers: Transfers) -> None:
    tasks: dict[str, TaskID] = {}
    with _progress_bars() as bars:
        while True:
            for info in transfers.progress.snapshot():
                label = f"{'↑' if info.direction == 'upload' else '↓'} {info.path}"
                if transfers.gate.paused:
                    label += " (paused)"
                task = tasks.get(info.path)
                if task is None:
                    task = tasks[info.path] = bars.add_task(label, total=info.bytes_total)
                bars.update(task, completed=info.bytes_done, description=label)
            await trio.sleep(0.2)


def transfers_view(report: Any) -> Group:
    """The transfers of a status report as progress bars (bytes, rate, ETA)."""
    parts: list[Any] = []
    if report.paused:
        parts.append(Text.from_markup("transfers: [bold yellow]paused[/] (`mountfs resume`)"))
    if not report.transfers:
        parts.append(Text("no transfers"))
        return Group(*parts)
    table = Table(show_header=True, box=None)
    for column in ("", "file", "progress", "done", "rate", "left"):
        table.add_column(column)
    for item in report.transfers:
        total = max(int(item["bytes_total"]), 1)
        share = min(int(item["bytes_done"]) / total, 1.0)
        filled = int(share * 24)
        eta = item.get("eta_s")
        left = "–" if eta is None else f"{int(eta) // 60}:{int(eta) % 60:02d}"
        table.add_row(
            "↑" if item["direction"] == "upload" else "↓",
            str(item["path"]),
            f"{'█' * filled}{'░' * (24 - filled)} {share:4.0%}",
            f"{human_size(int(item['bytes_done']))} / {human_size(int(item['bytes_total']))}",
            f"{human_size(int(item['rate_bps']))}/s",
            left if item["state"] != "paused" else "paused",
        )
    parts.append(table)
    return Group(*parts)


def watch_status(fetch: Callable[[], Any]) -> None:
    """`mountfs status --watch`: redraw the transfers twice a second until Ctrl-C."""
    from rich.live import Live

    try:
        with Live(transfers_view(fetch()), refresh_per_second=4) as live:
            while True:
                time.sleep(0.5)
                live.update(transfers_view(fetch()))
    except KeyboardInterrupt:
        return
