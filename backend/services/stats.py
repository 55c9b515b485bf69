"""Storage and dedup figures per account and for the deployment (`mountfs admin stats`).

Terms (bytes):
- `live_bytes`: the current content of live files (what quotas count);
- `logical_bytes`: every version of every file that is still kept (heads, old versions,
  deleted files in the trash): what storage would cost without dedup or compression;
- `unique_plain_bytes`: plaintext of the distinct chunks those versions use;
- `stored_bytes`: ciphertext of those distinct chunks in the block store.

`dedup_ratio` = logical / unique plaintext; `compression_ratio` = unique plaintext /
stored; `versioning_overhead` = logical / live. An account's figures count the chunks its
own versions use (shared with others or not: per account, dedup across accounts is
invisible); the deployment's count each chunk once, so its dedup ratio includes what is
shared between accounts. Plaintext sizes of chunks come from `chunk_owner.plain_size`
(the uploader's claim: the backend never sees plaintext). `garbage_bytes` is what the
next garbage collection may free (chunks no version uses).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, false, func, select

from backend.db.tables import account, chunk, chunk_owner, node, revision, revision_chunk

__all__ = ["StorageStats", "account_stats", "deployment_stats"]


@dataclass(frozen=True, slots=True)
class StorageStats:
    name: str
    live_files: int
    live_bytes: int
    versions: int
    logical_bytes: int
    chunks: int
    unique_plain_bytes: int
    stored_bytes: int
    garbage_bytes: int = 0

    @property
    def dedup_ratio(self) -> float:
        return self.logical_bytes / self.unique_plain_bytes if self.unique_plain_bytes else 1.0

    @property
    def compression_ratio(self) -> float:
        return self.unique_plain_bytes / self.stored_bytes if self.stored_bytes else 1.0

    @property
    def versioning_overhead(self) -> float:
        return self.logical_bytes / self.live_bytes if self.live_bytes else 1.0


def _live(conn: Connection, namespace_id: str | None) -> tuple[int, int]:
    query = select(func.count(), func.coalesce(func.sum(node.c.size), 0)).where(
        node.c.kind == "file", node.c.deleted == false()
    )
    if namespace_id is not None:
        query = query.where(node.c.namespace_id == namespace_id)
    count, size = conn.execute(query).one()
    return int(count), int(size)


def _versions(conn: Connection, namespace_id: str | None) -> tuple[int, int]:
    query = (
        select(func.count(), func.coalesce(func.sum(revision.c.size), 0))
        .join(node, node.c.id == revision.c.node_id)
        .where(revision.c.kind == "content")
    )
    if namespace_id is not None:
        query = query.where(node.c.namespace_id == namespace_id)
    count, size = conn.execute(query).one()
    return int(count), int(size)


def account_stats(conn: Connection) -> list[StorageStats]:
    """One entry per account, by name."""
    out = []
    for acct in conn.execute(
        select(account.c.id, account.c.name, account.c.namespace_id).order_by(account.c.name)
    ):
        live_files, live_bytes = _live(conn, acct.namespace_id)
        versions, logical = _versions(conn, acct.namespace_id)
        used = (
            select(revision_chunk.c.object)
            .join(revision, revision.c.id == revision_chunk.c.revision_id)
            .join(node, node.c.id == revision.c.node_id)
            .where(node.c.namespace_id == acct.namespace_id)
            .distinct()
            .subquery()
        )
        count, plain, stored = conn.execute(
            select(
                func.count(),
                func.coalesce(func.sum(chunk_owner.c.plain_size), 0),
                func.coalesce(func.sum(chunk.c.stored_size), 0),
            )
            .select_from(used)
            .join(chunk, chunk.c.object == used.c.object)
            .outerjoin(
                chunk_owner,
                (chunk_owner.c.object == used.c.object) & (chunk_owner.c.account_id == acct.id),
            )
        ).one()
        out.append(
            StorageStats(
                acct.name,
                live_files,
                live_bytes,
                versions,
                logical,
                int(count),
                int(plain),
                int(stored),
            )
        )
    return out


def deployment_stats(conn: Connection) -> StorageStats:
    """The whole deployment, each chunk counted once."""
    live_files, live_bytes = _live(conn, None)
    versions, logical = _versions(conn, None)
    plain_per_object = (
        select(func.min(chunk_owner.c.plain_size).label("plain"))
        .join(chunk, chunk.c.object == chunk_owner.c.object)
        .where(chunk.c.refcount > 0)
        .group_by(chunk_owner.c.object)
        .subquery()
    )
    plain = conn.execute(select(func.coalesce(func.sum(plain_per_object.c.plain), 0))).scalar_one()
    count, stored = conn.execute(
        select(func.count(), func.coalesce(func.sum(chunk.c.stored_size), 0)).where(
            chunk.c.refcount > 0
        )
    ).one()
    garbage = conn.execute(
        select(func.coalesce(func.sum(chunk.c.stored_size), 0)).where(chunk.c.refcount == 0)
    ).scalar_one()
    return StorageStats(
        "(deployment)",
        live_files,
        live_bytes,
        versions,
        logical,
        int(count),
        int(plain),
        int(stored),
        int(garbage),
    )
