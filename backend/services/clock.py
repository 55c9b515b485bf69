"""Wall-clock time for `*_at` columns, always timezone-aware UTC.

SQLite hands back naive datetimes (it stores no zone); `as_utc` restores the zone that was
written, so the rest of the code only ever sees aware UTC values.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["as_utc", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """`value` as an aware UTC datetime (naive values are taken to be UTC already)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
