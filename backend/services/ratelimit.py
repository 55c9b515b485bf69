"""Slowing down password guessing: failed attempts per account, per link and per address.

Keys are `login:<account name>`, `link:<link id>` and `addr:<source address>`. Each key
counts *failures* in a fixed window (`Limits.window_s`, from the first failure); once a key
has reached its limit, every attempt that involves it is refused with `RateLimited` (429,
`Retry-After` = the seconds left in the window) *before* the password is checked, so
refused guesses cost the attacker a round trip and teach nothing. A success does not
reset the counters: resetting would let a legitimate login launder an attacker's
failures on the same address.

The counters live in the database (`rate_limit` table), so every backend instance and
worker process sees the same ones. The trade-off of a per-account limit is that anyone
can lock an account's logins for one window by failing on purpose; the per-address limit
alone would not stop a distributed guesser, so both apply (as the issue asks). Existing
devices keep working during a lock-out: only password checks are limited.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from sqlalchemy import select, update
from starlette.requests import Request

from backend.db.engine import Database, upsert_ignore
from backend.db.tables import rate_limit
from backend.services.clock import as_utc, utcnow
from backend.services.errors import RateLimited

__all__ = ["Limits", "address_key", "check", "limits_of", "record_failure"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Failures allowed per window: `per_key` for an account or link, `per_address` for a
    source address."""

    per_key: int
    per_address: int
    window_s: int

    def limit(self, key: str) -> int:
        return self.per_address if key.startswith("addr:") else self.per_key


class _LimitSettings(Protocol):
    @property
    def auth_failures(self) -> int: ...
    @property
    def auth_failures_per_address(self) -> int: ...
    @property
    def auth_window(self) -> int: ...


def limits_of(settings: _LimitSettings) -> Limits:
    """The limits configured for this server (`--auth-failures*`, `--auth-window`)."""
    return Limits(settings.auth_failures, settings.auth_failures_per_address, settings.auth_window)


def address_key(request: Request) -> str:
    """The key of the request's source address (the peer of the connection: behind a
    proxy that is the proxy, unless uvicorn is told to trust its forwarding headers)."""
    return f"addr:{request.client.host if request.client else 'unknown'}"


def check(db: Database, keys: Sequence[str], limits: Limits) -> None:
    """Raise `RateLimited` if any key has used up its failures in its current window."""
    now = utcnow()
    window = timedelta(seconds=limits.window_s)
    with db.read() as conn:
        rows = conn.execute(select(rate_limit).where(rate_limit.c.key.in_(list(keys)))).all()
    wait = 0.0
    for row in rows:
        ends = as_utc(row.window_start) + window
        if ends > now and row.failures >= limits.limit(row.key):
            wait = max(wait, (ends - now).total_seconds())
    if wait > 0:
        raise RateLimited(
            "too many failed password attempts; try again later", max(1, math.ceil(wait))
        )


def record_failure(db: Database, keys: Sequence[str], limits: Limits) -> None:
    """Count one failure on each key (starting a new window where the old one ended)."""
    now = utcnow()
    window = timedelta(seconds=limits.window_s)
    with db.write() as conn:
        upsert_ignore(
            conn,
            rate_limit,
            [{"key": k, "window_start": now, "failures": 0} for k in sorted(set(keys))],
            ["key"],
        )
        for key in sorted(set(keys)):
            row = conn.execute(select(rate_limit).where(rate_limit.c.key == key)).one()
            if as_utc(row.window_start) + window <= now:
                values = {"window_start": now, "failures": 1}
            else:
                values = {"failures": row.failures + 1}
            conn.execute(update(rate_limit).where(rate_limit.c.key == key).values(**values))
