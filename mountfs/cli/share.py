"""`mountfs share`, `unshare`, `shares` and `account delete`: sharing with other accounts.

Paths are paths in the account as the mount shows them (`docs/report.pdf`, with or
without a leading `/`), resolved through the API, so every command works without a
mount. A share accepted from someone else is found where it was placed.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import click

from mountfs.cli.common import (
    json_option,
    print_json,
    read_password,
    state_option,
    with_api,
)
from mountfs.cli.core import account, main
from mountfs.transport.api import ApiClient, ApiError
from mountfs.transport.sharing import RemoteShare

__all__ = ["resolve_path"]


async def resolve_path(api: ApiClient, path: str) -> str:
    """The node id of `path` in the caller's tree (accepted shares included), or a
    ClickException naming the first component that does not exist."""
    me = await api.me()
    node_id = me.root_id
    incoming, _ = await api.shares()
    placed = {
        (s.mount_parent_id, s.mount_name): s.node_id for s in incoming if s.state == "accepted"
    }
    walked = PurePosixPath("/")
    for part in PurePosixPath("/", path).parts[1:]:
        walked = walked / part
        found = await _child(api, node_id, part)
        if found is None:
            found = placed.get((node_id, part))
        if found is None:
            raise click.ClickException(f"{walked}: no such file or folder in the account")
        node_id = found
    return node_id


async def _child(api: ApiClient, parent_id: str, name: str) -> str | None:
    cursor: str | None = None
    while True:
        try:
            items, cursor = await api.children(parent_id, cursor)
        except ApiError as exc:
            if exc.code == "not_a_directory":  # a file on the way
                return None
            raise
        for item in items:
            if item.name == name:
                return item.id
        if not cursor:
            return None


def _share_row(s: RemoteShare, *, incoming: bool) -> str:
    who = f"from {s.owner}" if incoming else f"with {s.recipient}"
    where = f" → {s.mount_name}" if incoming and s.mount_name else ""
    return f"{s.id}  {s.state:<8}  {s.role:<6}  {s.kind:<4}  {s.name}  ({who}){where}"


@main.command()
@click.argument("path")
@click.argument("user", required=False)
@click.option(
    "--role",
    type=click.Choice(["viewer", "editor"]),
    default="viewer",
    show_default=True,
    help="What USER may do: read (viewer) or also write (editor).",
)
@state_option
@json_option
def share(path: str, user: str | None, role: str, state_dir: Path | None, as_json: bool) -> None:
    """Share PATH (a folder or file) with USER; without USER, list who has access."""

    async def call(api: ApiClient) -> None:
        node_id = await resolve_path(api, path)
        if user is None:
            members = await api.members(node_id)
            if as_json:
                print_json(
                    {"owner": members.owner, "shares": [_as_dict(s) for s in members.shares]}
                )
                return
            click.echo(f"{members.owner}  owner")
            for s in members.shares:
                pending = "" if s.state == "accepted" else f"  ({s.state})"
                click.echo(f"{s.recipient}  {s.role}{pending}")
            return
        made = await api.share(node_id, user, role)
        if as_json:
            print_json(_as_dict(made))
            return
        click.echo(f"shared {path} with {user} as {made.role} ({made.state}; share {made.id})")

    with_api(state_dir, call)


def _as_dict(s: RemoteShare) -> dict[str, object]:
    return {field: getattr(s, field) for field in RemoteShare.__dataclass_fields__}


@main.command()
@click.argument("path")
@click.argument("user")
@state_option
def unshare(path: str, user: str, state_dir: Path | None) -> None:
    """Stop sharing PATH with USER (or, as USER yourself, leave a share)."""

    async def call(api: ApiClient) -> None:
        node_id = await resolve_path(api, path)
        members = await api.members(node_id)
        match = [s for s in members.shares if s.recipient == user]
        if not match:
            raise click.ClickException(f"{path} is not shared with {user}")
        for s in match:
            await api.revoke_share(s.id)
        click.echo(f"{path} is no longer shared with {user}")

    with_api(state_dir, call)


@main.group(invoke_without_command=True)
@click.option("--all", "show_all", is_flag=True, help="Also list revoked shares.")
@state_option
@json_option
@click.pass_context
def shares(ctx: click.Context, show_all: bool, state_dir: Path | None, as_json: bool) -> None:
    """Shares offered to you (with their ids), and the ones you gave."""
    if ctx.invoked_subcommand is not None:
        return

    async def call(api: ApiClient) -> None:
        incoming, outgoing = await api.shares()
        if not show_all:
            incoming = [s for s in incoming if s.state != "revoked"]
        if as_json:
            print_json(
                {
                    "incoming": [_as_dict(s) for s in incoming],
                    "outgoing": [_as_dict(s) for s in outgoing],
                }
            )
            return
        click.echo("Shared with you:" if incoming else "Nothing is shared with you.")
        for s in incoming:
            click.echo("  " + _share_row(s, incoming=True))
        if outgoing:
            click.echo("Shared by you:")
            for s in outgoing:
                click.echo("  " + _share_row(s, incoming=False))

    with_api(state_dir, call)


@shares.command("accept")
@click.argument("share_id", required=False)
@click.option("--all", "accept_all", is_flag=True, help="Accept every pending share.")
@click.option("--into", "into", default=None, help="Folder of yours to place it in (path).")
@click.option("--name", default=None, help="The name it gets there (default: its own).")
@state_option
def shares_accept(
    share_id: str | None,
    accept_all: bool,
    into: str | None,
    name: str | None,
    state_dir: Path | None,
) -> None:
    """Accept share SHARE_ID (or --all pending ones): it appears in your tree and mount."""
    if (share_id is None) == (not accept_all):
        raise click.UsageError("give a share id or --all")
    if accept_all and name is not None:
        raise click.UsageError("--name names one share; it cannot go with --all")

    async def call(api: ApiClient) -> None:
        parent = await resolve_path(api, into) if into else None
        if share_id is not None:
            wanted = [share_id]
        else:
            incoming, _ = await api.shares()
            wanted = [s.id for s in incoming if s.state == "pending"]
        if not wanted:
            click.echo("no pending shares")
        for one in wanted:
            placed = await api.accept_share(one, parent, name)
            click.echo(f"accepted {placed.name} from {placed.owner} as {placed.mount_name}")

    with_api(state_dir, call)


@shares.command("auto-accept")
@click.argument("choice", type=click.Choice(["on", "off"]), required=False)
@state_option
def shares_auto_accept(choice: str | None, state_dir: Path | None) -> None:
    """Accept every share offered to you at once (on), or ask each time (off)."""

    async def call(api: ApiClient) -> None:
        if choice is None:
            current = await api.preferences()
        else:
            current = await api.set_preferences(choice == "on")
        click.echo("auto-accept: " + ("on" if current["auto_accept_shares"] else "off"))

    with_api(state_dir, call)


@account.command("delete")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@state_option
def account_delete(password_stdin: bool, yes: bool, state_dir: Path | None) -> None:
    """Delete this account: every device is logged out, its shares and links end."""
    if not yes and not password_stdin:
        click.confirm("Delete this account for good?", abort=True)
    password = read_password(password_stdin, confirm=False)

    async def call(api: ApiClient) -> None:
        await api.delete_account(password)
        click.echo("account deleted")

    with_api(state_dir, call)
