"""Content commits with their precondition, and reading history and manifests.

A commit runs in two steps (`docs/backend.md`, "Commits"):

1. `confirm_uploads` — its own write transaction, before the commit's: every object of the
   manifest that this account does not own yet is offered to `store.finish_upload`, which
   verifies the store's evidence of the upload (S3: and copies the object into place);
   each one the store confirms becomes owned by the account (`chunks.record_uploads`) in
   that same transaction, with the account locked, so two commits naming the same new
   object are serialised (the second finds the ownership the first committed) and the GC,
   which takes every account's lock, sees the object either unconfirmed or owned (gc.py).
   Only after that transaction has committed is the evidence removed
   (`store.discard_upload_evidence`, best effort): a transaction cut in between (database
   restarted, instance killed) leaves the evidence for the client's retry, which then
   confirms the same upload again instead of being refused `missing_chunks`. Evidence a
   failed discard leaves behind is harmless (it proves an upload this account did make)
   and the GC removes it after the grace period. Only a commit naming objects the account
   does not own yet opens this transaction; on SQLite it holds the write lock while the
   store answers (a local stat, or S3 round trips). Ownership recorded here survives even
   if step 2 then refuses the commit, so a client that resolves a conflict and commits the
   same chunks again (e.g. as a conflicted copy) does not upload them twice.
2. `commit` — one write transaction: lock the namespace, check `base_revision` against the
   head, require every object to be owned *now* (else `MissingChunks`, invariant 6), check
   quota, then insert the revision and its `revision_chunk` rows, bump refcounts, move the
   head, adjust `used_bytes` and append the journal entry.

A replay (same `revision_id`) returns the stored result: the revision and the node as the
journal recorded it right after that commit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

from sqlalchemy import Connection, and_, insert, select, update

from backend.db.engine import Database
from backend.db.tables import account, chunk, journal, namespace, revision, revision_chunk
from backend.services import access, chunks, usage
from backend.services import journal as feed
from backend.services.clock import utcnow
from backend.services.errors import (
    BadRequest,
    Conflict,
    IdTaken,
    MissingChunks,
    NotFound,
    QuotaExceeded,
)
from backend.services.rows import manifest_to_json, node_from_json, revision_from_row
from backend.services.tree import add_used_bytes, get_node, write_node
from backend.services.types import (
    ChunkRef,
    JournalOp,
    NamespaceId,
    NodeId,
    NodeKind,
    ObjectName,
    Outcome,
    Principal,
    Revision,
    RevisionId,
    RevisionKind,
)
from backend.services.validation import check_manifest
from backend.store.base import BlockStore

__all__ = ["NewRevision", "commit", "confirm_uploads", "get_revision", "list_revisions"]


@dataclass(frozen=True, slots=True)
class NewRevision:
    revision_id: RevisionId
    base_revision: RevisionId | None
    size: int
    mtime_ns: int
    chunks: tuple[ChunkRef, ...]


def confirm_uploads(
    db: Database, store: BlockStore, who: Principal, new: NewRevision, max_file_bytes: int
) -> None:
    """Step 1: turn this account's completed uploads of the manifest's objects into
    ownership. Validates the manifest first, so nothing is touched for a bad request."""
    check_manifest(new.size, new.chunks, max_file_bytes)
    with db.read() as conn:
        if _stored_revision(conn, new.revision_id) is not None:
            return  # a replay: step 2 answers it from the stored state
        unowned = chunks.unowned(conn, who.account_id, [r.object for r in new.chunks])
    if not unowned:
        return
    from_store: list[ObjectName] = []
    with db.write() as conn:
        # Confirming and recording the ownership is one step per account (the account row
        # locked): a concurrent commit naming the same object waits, then finds the
        # ownership; the GC, which takes every account's lock, either deletes the object
        # before (the confirmation then finds it gone, or on S3 copies it back from the
        # evidence) or sees it owned after (module docstring, gc.py).
        _lock_account(conn, who)
        # Chunks held since an earlier (maybe interrupted) upload: the store confirmed them
        # then, so the hold is the evidence now.
        confirmed = chunks.claim_held(conn, who.account_id, new.chunks)
        held = {ref.object for ref, _ in confirmed}
        still = [o for o in chunks.unowned(conn, who.account_id, unowned) if o not in held]
        for ref in _first_ref_per_object(new.chunks, still):
            stored_size = store.finish_upload(ref.object, who.account_id)
            if stored_size is not None:
                confirmed.append((ref, stored_size))
                from_store.append(ref.object)
        if confirmed:
            chunks.record_uploads(conn, who.account_id, confirmed)
    # Committed: the ownership is the proof now, so the store's evidence may go.
    chunks.discard_evidence(store, who.account_id, from_store)


def _lock_account(conn: Connection, who: Principal) -> None:
    """Serialise this account's upload confirmations (PostgreSQL: a row lock; SQLite's
    write transactions are serialised already)."""
    conn.execute(select(account.c.id).where(account.c.id == who.account_id).with_for_update())


def commit(
    conn: Connection, who: Principal, node_id: NodeId, new: NewRevision, max_file_bytes: int
) -> Outcome:
    """Step 2, inside the caller's write transaction (see the module docstring)."""
    check_manifest(new.size, new.chunks, max_file_bytes)
    ns = access.node_for_write(conn, who, node_id).namespace_id  # own tree or a share
    feed.lock_namespace(conn, ns)
    current = get_node(conn, ns, node_id)
    replay = _replay(conn, ns, node_id, new.revision_id)
    if replay is not None:
        return replay
    if current.kind is not NodeKind.FILE:
        raise BadRequest(f"a {current.kind.value} has no content to commit")
    if current.deleted or current.head_revision != new.base_revision:
        raise Conflict("base_revision is not the file's head revision", current=current)
    objects = [r.object for r in new.chunks]
    missing = chunks.unowned(conn, who.account_id, objects)
    if missing:
        raise MissingChunks(missing)
    chunks.check_stored_sizes(conn, new.chunks)
    _check_quota(conn, who, new.size - current.size, ns)

    seq = feed.next_seq(conn, ns)
    made = Revision(
        id=new.revision_id,
        node_id=node_id,
        base_revision=new.base_revision,
        device_id=who.device_id,
        kind=RevisionKind.CONTENT,
        size=new.size,
        mtime_ns=new.mtime_ns,
        created_at=utcnow(),
        chunks=new.chunks,
    )
    _insert_revision(conn, made, seq)
    add_used_bytes(conn, current.namespace_id, new.size - current.size)
    usage.add(conn, current.parent_id, new.size - current.size, 0)  # folder sizes
    updated = replace(
        current,
        size=new.size,
        mtime_ns=new.mtime_ns,
        head_revision=made.id,
        version=current.version + 1,
    )
    write_node(conn, current, updated)
    feed.record(conn, seq, JournalOp.COMMIT, updated, who.device_id, made.id)
    return Outcome(node=updated, revision=made, cursor=seq)


def _insert_revision(conn: Connection, made: Revision, seq: int) -> None:
    refs = made.chunks or ()
    conn.execute(
        insert(revision).values(
            id=made.id,
            node_id=made.node_id,
            seq=seq,
            base_revision_id=made.base_revision,
            device_id=made.device_id,
            kind=made.kind.value,
            size=made.size,
            mtime_ns=made.mtime_ns,
            manifest=manifest_to_json(refs),
            created_at=made.created_at,
        )
    )
    if not refs:
        return
    conn.execute(
        insert(revision_chunk),
        [{"revision_id": made.id, "seq": i, "object": r.object} for i, r in enumerate(refs)],
    )
    # One UPDATE per distinct object, in sorted order: concurrent commits on PostgreSQL
    # then lock chunk rows in the same order and cannot deadlock.
    for obj, count in sorted(Counter(r.object for r in refs).items()):
        conn.execute(
            update(chunk).where(chunk.c.object == obj).values(refcount=chunk.c.refcount + count)
        )


def _check_quota(
    conn: Connection, who: Principal, growth: int, ns: NamespaceId | None = None
) -> None:
    """Refuse growth beyond the quota of the owner of `ns` (default: the caller's own tree;
    a shared folder's bytes count against its owner, whoever writes them); shrinking is
    always allowed (even when over)."""
    if growth <= 0:
        return
    row = conn.execute(
        select(account.c.quota_bytes, account.c.used_bytes).where(
            account.c.id == access.namespace_info(conn, ns or who.namespace_id).owner
        )
    ).one()
    if row.quota_bytes is not None and row.used_bytes + growth > row.quota_bytes:
        raise QuotaExceeded(
            f"the commit needs {growth} more bytes; {row.quota_bytes - row.used_bytes} left"
        )


def _stored_revision(conn: Connection, revision_id: RevisionId) -> Revision | None:
    row = conn.execute(select(revision).where(revision.c.id == revision_id)).first()
    return revision_from_row(row, with_manifest=True) if row is not None else None


def _replay(
    conn: Connection, current_ns: NamespaceId, node_id: NodeId, revision_id: RevisionId
) -> Outcome | None:
    """The stored result of an earlier commit with this id, or None if there was none."""
    stored = _stored_revision(conn, revision_id)
    if stored is None:
        return None
    if stored.node_id != node_id or stored.kind is not RevisionKind.CONTENT:
        raise IdTaken("a revision with this id already exists")
    # The revision's seq is its commit's journal seq: the entry holds the node as it was.
    # That journal is the node's namespace at commit time, which sharing may have changed
    # since: any namespace of the same owner (a share's nodes move into a new one).
    seq = select(revision.c.seq).where(revision.c.id == revision_id).scalar_subquery()
    owner = access.namespace_info(conn, current_ns).owner
    snapshot = conn.execute(
        select(journal.c.node).where(
            and_(
                journal.c.namespace_id.in_(
                    select(namespace.c.id).where(namespace.c.owner_account_id == owner)
                ),
                journal.c.seq == seq,
                journal.c.revision_id == revision_id,
                journal.c.op == JournalOp.COMMIT.value,
            )
        )
    ).scalar_one()
    return Outcome(node=node_from_json(snapshot), revision=stored, created=False)


def _first_ref_per_object(refs: tuple[ChunkRef, ...], wanted: list[ObjectName]) -> list[ChunkRef]:
    first: dict[ObjectName, ChunkRef] = {}
    for ref in refs:
        first.setdefault(ref.object, ref)
    return [first[obj] for obj in wanted]


def list_revisions(conn: Connection, who: Principal, node_id: NodeId) -> tuple[Revision, ...]:
    """The node's history, newest first, without manifests."""
    access.node_for_read(conn, who, node_id)
    rows = conn.execute(
        select(revision).where(revision.c.node_id == node_id).order_by(revision.c.seq.desc())
    ).all()
    return tuple(revision_from_row(r, with_manifest=False) for r in rows)


def get_revision(conn: Connection, who: Principal, revision_id: RevisionId) -> Revision:
    """One revision with its manifest; NotFound unless its node is in the caller's tree."""
    stored = _stored_revision(conn, revision_id)
    if stored is None:
        raise NotFound("no such revision")
    access.node_for_read(conn, who, stored.node_id)
    return stored
