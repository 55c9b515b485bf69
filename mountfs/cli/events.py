"""`mountfs events`: what other devices changed, listed or followed live (`mountfs.events`).

It needs only the device's login in the state directory, not a mount: it reads the
journal through the API and, with `--follow`, holds the push channel (`sync.listen`) open
and reads the journal again whenever the backend says there is news.
"""

from __future__ import annotations

import sys
from collections import deque
from pathlib import Path

import click
import trio

from mountfs.cli.common import device_of, json_option, run_async, state_option
from mountfs.cli.core import main
from mountfs.events import Change, DeviceNames, Replay, format_change, read_changes
from mountfs.sync.listen import Listener
from mountfs.transport.api import ApiClient, open_api
from mountfs.transport.retry import RetryPolicy, is_temp_failure

__all__ = ["events"]

SAFETY_POLL_S = 60.0
"""With --follow, the journal is also read this often even without news."""
RETRY = RetryPolicy(attempts=None, base=0.5, cap=15.0)


@main.command()
@state_option
@json_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing changes as they happen.")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="How many past changes to print first.",
)
@click.option("--mine", is_flag=True, help="Also list the changes this device made.")
def events(state_dir: Path | None, as_json: bool, follow: bool, limit: int, mine: bool) -> None:
    """Print what other devices added, edited, moved, renamed and deleted.

    One line per change: local time, what happened, the path and the device. With --json,
    one JSON object per line (seq, at, action, kind, path, from_path, device_id, device,
    size). Works without a mount.
    """
    device = device_of(state_dir)

    async def run() -> None:
        async with open_api(device.server, device.token) as api:
            names = DeviceNames(api)
            await names.refresh()
            replay = Replay(device.root_id)
            past: deque[Change] = deque(maxlen=limit)

            def keep(change: Change) -> None:
                if mine or change.device_id != device.device_id:
                    past.append(change)

            await read_changes(api, device.namespace_id, replay, keep)
            await _print(names, past, as_json)
            if follow:
                await _follow(
                    api, device.namespace_id, device.device_id, replay, names, mine, as_json
                )

    try:
        run_async(run)
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseExceptionGroup as group:  # Ctrl-C while following, from inside the nursery
        if group.split(KeyboardInterrupt)[1] is not None:
            raise
        sys.exit(130)


async def _print(names: DeviceNames, changes: deque[Change] | list[Change], as_json: bool) -> None:
    await names.learn(c.device_id for c in changes)
    for change in changes:
        click.echo(format_change(change, names.label(change.device_id), as_json))
    sys.stdout.flush()


async def _follow(
    api: ApiClient,
    namespace_id: str,
    own_device_id: str,
    replay: Replay,
    names: DeviceNames,
    mine: bool,
    as_json: bool,
) -> None:
    """Print new changes as the push channel announces them, until interrupted."""
    news = trio.Event()

    def on_news() -> None:
        news.set()

    listener = Listener(api, namespace_id, cursor=lambda: replay.cursor, on_news=on_news)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.run)
        failures = 0
        while True:
            with trio.move_on_after(SAFETY_POLL_S):
                await news.wait()
            news = trio.Event()
            fresh: list[Change] = []
            try:
                await read_changes(api, namespace_id, replay, fresh.append)
            except Exception as exc:
                if not is_temp_failure(exc):
                    raise
                failures += 1
                await trio.sleep(RETRY.delay(failures))
                news.set()  # try again
                continue
            failures = 0
            shown = [c for c in fresh if mine or c.device_id != own_device_id]
            await _print(names, shown, as_json)
