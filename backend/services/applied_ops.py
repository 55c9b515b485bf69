"""Stored results of batched ops, keyed by (device, op_id), for idempotent replays.

`find` and `remember` are called inside the op's own write transaction, so an op and the
memory of its result commit together: a replay either finds the result, or the op was
never applied and is applied now. Only applied ops are remembered (see tables.py).
The result is kept as opaque JSON text: what to store is the API layer's business.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, insert, select, text

from backend.db.tables import applied_op
from backend.services.clock import utcnow
from backend.services.types import DeviceId

__all__ = ["find", "remember"]


_LOCK_OP = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


def find(conn: Connection, device_id: DeviceId, op_id: uuid.UUID) -> str | None:
    """The stored result of `op_id` from this device, or None if it was never applied.

    On PostgreSQL it first takes a transaction-scoped advisory lock on (device, op_id): two
    deliveries of one op at once (a retry racing the original on another connection, or
    another instance) then queue, and the second finds the first's result instead of
    applying the op again and failing on `applied_op`'s key. (SQLite's single writer
    already serialises them.)
    """
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_OP, {"key": f"{device_id}/{op_id}"})
    result: str | None = conn.execute(
        select(applied_op.c.result).where(
            applied_op.c.device_id == device_id, applied_op.c.op_id == str(op_id)
        )
    ).scalar_one_or_none()
    return result


def remember(conn: Connection, device_id: DeviceId, op_id: uuid.UUID, result: str) -> None:
    conn.execute(
        insert(applied_op).values(
            device_id=device_id, op_id=str(op_id), result=result, created_at=utcnow()
        )
    )
