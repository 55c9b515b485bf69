"""`mountfs link create|list|revoke`: public links to a file or folder.

The URL (with its token) is printed once, when the link is made: the server keeps only a
hash of the token, so `link list` shows ids and states, not URLs.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from mountfs.cli.common import json_option, print_json, read_password, state_option, with_api
from mountfs.cli.core import main
from mountfs.cli.share import resolve_path
from mountfs.transport.api import ApiClient
from mountfs.transport.sharing import RemoteLink

__all__ = ["parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """`90`, `90s`, `30m`, `12h`, `7d`, `2w` → seconds (ClickException otherwise)."""
    found = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", text)
    if found is None or int(found.group(1)) == 0:
        raise click.BadParameter(f"{text!r}: give a duration like 30m, 12h, 7d or 2w")
    return int(found.group(1)) * _UNITS[found.group(2) or "s"]


def _as_dict(link: RemoteLink) -> dict[str, object]:
    return {field: getattr(link, field) for field in RemoteLink.__dataclass_fields__}


@main.group()
def link() -> None:
    """Public links: anyone with the URL can open or download (limit them if you like)."""


@link.command("create")
@click.argument("path")
@click.option("--expires", default=None, help="Lifetime, e.g. 30m, 12h, 7d (default: none).")
@click.option("--password", "with_password", is_flag=True, help="Ask for a password to set.")
@click.option("--password-stdin", is_flag=True, help="Read the link's password from stdin.")
@click.option("--max-downloads", type=click.IntRange(min=1), default=None, help="Limit.")
@state_option
@json_option
def link_create(
    path: str,
    expires: str | None,
    with_password: bool,
    password_stdin: bool,
    max_downloads: int | None,
    state_dir: Path | None,
    as_json: bool,
) -> None:
    """Make a public link to PATH and print its URL (shown this once)."""
    seconds = parse_duration(expires) if expires else None
    password = (
        read_password(password_stdin, confirm=True) if with_password or password_stdin else None
    )

    async def call(api: ApiClient) -> None:
        node_id = await resolve_path(api, path)
        made = await api.create_link(node_id, seconds, password, max_downloads)
        if as_json:
            print_json(_as_dict(made))
            return
        click.echo(made.url)

    with_api(state_dir, call)


@link.command("list")
@state_option
@json_option
def link_list(state_dir: Path | None, as_json: bool) -> None:
    """Your links: id, state, downloads, expiry, and what they point at."""

    async def call(api: ApiClient) -> None:
        found = await api.links()
        if as_json:
            print_json([_as_dict(x) for x in found])
            return
        if not found:
            click.echo("no links")
        for x in found:
            limit = f"/{x.max_downloads}" if x.max_downloads is not None else ""
            expiry = f"  expires {x.expires_at}" if x.expires_at else ""
            lock = "  password" if x.has_password else ""
            click.echo(
                f"{x.id}  {x.state:<9}  {x.kind:<4}  {x.name}  "
                f"downloads {x.downloads}{limit}{expiry}{lock}"
            )

    with_api(state_dir, call)


@link.command("revoke")
@click.argument("link_id")
@state_option
def link_revoke(link_id: str, state_dir: Path | None) -> None:
    """Revoke link LINK_ID: its URL answers "not found" from now on."""

    async def call(api: ApiClient) -> None:
        ended = await api.revoke_link(link_id)
        click.echo(f"revoked link {ended.id} ({ended.name})")

    with_api(state_dir, call)
