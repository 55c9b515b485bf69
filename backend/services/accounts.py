"""Accounts, logins (devices), bearer-token authentication and revocation.

Password hashing is deliberately slow (argon2id), so it runs *outside* any transaction:
holding SQLite's write lock while hashing would stall every other writer.

Authentication looks the token up by its SHA-256 digest among non-revoked devices, so a
revocation takes effect at the very next request. `last_seen_at` is refreshed at most once
per `SEEN_INTERVAL`, which keeps ordinary reads free of writes.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

from sqlalchemy import Connection, bindparam, exc, insert, select, update

from backend.db.engine import Database
from backend.db.tables import account, device, namespace, node
from backend.security import hash_password, new_token, token_digest, verify_password
from backend.services.clock import as_utc, utcnow
from backend.services.errors import Forbidden, NameExists, NotFound, Unauthorized
from backend.services.types import (
    Account,
    AccountId,
    Device,
    DeviceId,
    Me,
    NamespaceId,
    NewLogin,
    NodeId,
    NodeKind,
    Principal,
)

__all__ = [
    "ROOT_MODE",
    "SEEN_INTERVAL",
    "authenticate",
    "create_account",
    "delete_account",
    "list_devices",
    "login",
    "me",
    "revoke_device",
]

ROOT_MODE = 0o755
SEEN_INTERVAL = timedelta(minutes=1)

_DEVICE_BY_TOKEN = (
    select(
        device.c.id,
        device.c.last_seen_at,
        account.c.id.label("account_id"),
        account.c.namespace_id,
        account.c.root_id,
    )
    .join(account, account.c.id == device.c.account_id)
    .where(device.c.token_hash == bindparam("b_digest"), device.c.revoked_at.is_(None))
)
"""Every authenticated request runs it: built once (see backend.services.tree)."""


def create_account(db: Database, name: str, password: str, quota_bytes: int | None) -> Account:
    """Register `name` with its own namespace and empty root directory."""
    password_hash = hash_password(password)
    account_id = AccountId(str(uuid.uuid4()))
    namespace_id = NamespaceId(str(uuid.uuid4()))
    root_id = NodeId(str(uuid.uuid4()))
    now = utcnow()
    try:
        with db.write() as conn:
            if conn.execute(select(account.c.id).where(account.c.name == name)).first():
                raise NameExists("an account with this name exists")
            # account's FKs to namespace and root are deferred to commit (see tables.py)
            conn.execute(
                insert(account).values(
                    id=account_id,
                    name=name,
                    password_hash=password_hash,
                    quota_bytes=quota_bytes,
                    used_bytes=0,
                    namespace_id=namespace_id,
                    root_id=root_id,
                    created_at=now,
                )
            )
            conn.execute(
                insert(namespace).values(
                    id=namespace_id, owner_account_id=account_id, last_seq=0, created_at=now
                )
            )
            conn.execute(
                insert(node).values(
                    id=root_id,
                    namespace_id=namespace_id,
                    parent_id=None,
                    name="",
                    kind=NodeKind.DIR.value,
                    mode=ROOT_MODE,
                    mtime_ns=time.time_ns(),
                    size=0,
                    version=1,
                    deleted=False,
                    created_at=now,
                )
            )
    except exc.IntegrityError as error:  # a concurrent registration of the same name
        raise NameExists("an account with this name exists") from error
    return Account(id=account_id, name=name)


def login(db: Database, name: str, password: str, label: str) -> NewLogin:
    """Check the password and make a new device with a fresh token."""
    with db.read() as conn:
        row = conn.execute(
            select(account.c.id, account.c.password_hash).where(
                account.c.name == name, account.c.deleted_at.is_(None)
            )
        ).first()
    matches = verify_password(row.password_hash if row else None, password)
    if row is None or not matches:
        raise Unauthorized("wrong name or password")
    token = new_token()
    device_id = DeviceId(str(uuid.uuid4()))
    with db.write() as conn:
        conn.execute(
            insert(device).values(
                id=device_id,
                account_id=row.id,
                label=label,
                token_hash=token_digest(token),
                created_at=utcnow(),
            )
        )
    return NewLogin(account_id=AccountId(row.id), device_id=device_id, token=token)


def authenticate(db: Database, token: str) -> Principal:
    """The live device holding `token`; Unauthorized if unknown or revoked."""
    with db.read() as conn:
        row = conn.execute(_DEVICE_BY_TOKEN, {"b_digest": token_digest(token)}).first()
    if row is None:
        raise Unauthorized("unknown or revoked token")
    now = utcnow()
    if row.last_seen_at is None or now - as_utc(row.last_seen_at) > SEEN_INTERVAL:
        with db.write() as conn:
            conn.execute(update(device).where(device.c.id == row.id).values(last_seen_at=now))
    return Principal(
        account_id=AccountId(row.account_id),
        device_id=DeviceId(row.id),
        namespace_id=NamespaceId(row.namespace_id),
        root_id=NodeId(row.root_id),
    )


def me(conn: Connection, who: Principal) -> Me:
    row = conn.execute(
        select(account.c.name, account.c.quota_bytes, account.c.used_bytes, device.c.label)
        .join(device, device.c.account_id == account.c.id)
        .where(account.c.id == who.account_id, device.c.id == who.device_id)
    ).one()
    return Me(
        account_id=who.account_id,
        name=row.name,
        device_id=who.device_id,
        device_label=row.label,
        root_id=who.root_id,
        namespace_id=who.namespace_id,
        quota_bytes=row.quota_bytes,
        used_bytes=int(row.used_bytes),
    )


def list_devices(conn: Connection, who: Principal) -> list[Device]:
    rows = conn.execute(
        select(device)
        .where(device.c.account_id == who.account_id)
        .order_by(device.c.created_at, device.c.id)
    ).all()
    return [
        Device(
            id=DeviceId(r.id),
            label=r.label,
            created_at=as_utc(r.created_at),
            last_seen_at=as_utc(r.last_seen_at) if r.last_seen_at else None,
            revoked_at=as_utc(r.revoked_at) if r.revoked_at else None,
        )
        for r in rows
    ]


def revoke_device(conn: Connection, who: Principal, device_id: DeviceId) -> None:
    """Revoke one of the caller's devices (itself included); NotFound for any other.
    Revoking an already revoked device is accepted and keeps the first revocation time."""
    found = conn.execute(
        select(device.c.revoked_at).where(
            device.c.id == device_id, device.c.account_id == who.account_id
        )
    ).first()
    if found is None:
        raise NotFound("no such device")
    if found.revoked_at is None:
        conn.execute(update(device).where(device.c.id == device_id).values(revoked_at=utcnow()))


def delete_account(db: Database, who: Principal, password: str) -> None:
    """Delete the caller's account, after checking its password (Forbidden if wrong).

    Defined outcome (docs/backend.md "Deleting an account"): in one transaction the account
    is marked deleted (its name stays reserved, it cannot log in), every device of it is
    revoked (the next request of each is 401), every share of its folders and every share
    offered to it is revoked (members' devices get the detach entry in their journal), and
    every public link it made is revoked. Its files stay in the database and the block
    store until garbage collection; nobody can reach them any more.
    """
    from backend.db.tables import link
    from backend.services import shares

    with db.read() as conn:
        stored = conn.execute(
            select(account.c.password_hash).where(account.c.id == who.account_id)
        ).scalar_one()
    if not verify_password(stored, password):
        raise Forbidden("wrong password: the account was not deleted")
    now = utcnow()
    with db.write() as conn:
        owned = conn.execute(
            select(namespace.c.id).where(
                namespace.c.owner_account_id == who.account_id, namespace.c.root_id.is_not(None)
            )
        ).scalars()
        for ns in list(owned):
            shares.end_namespace(conn, NamespaceId(ns), who.device_id)
        shares.end_received(conn, who.account_id, who.device_id)
        conn.execute(
            update(link)
            .where(link.c.created_by == who.account_id, link.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        conn.execute(
            update(device)
            .where(device.c.account_id == who.account_id, device.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        conn.execute(update(account).where(account.c.id == who.account_id).values(deleted_at=now))
