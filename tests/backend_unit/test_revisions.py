"""Commits: ownership of uploads (invariants 5, 6), preconditions, quota, replays."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest
from sqlalchemy import select

from backend.db.engine import Database
from backend.db.tables import chunk
from backend.services import chunks, errors, revisions, tree
from backend.services.revisions import NewRevision
from backend.services.tree import NewNode
from backend.services.types import (
    ChunkRef,
    NodeId,
    NodeKind,
    ObjectName,
    Outcome,
    PlainHash,
    Principal,
    RevisionId,
)
from backend.services.validation import MIN_CHUNK_BYTES
from backend.store.local import LocalBlockStore
from tests.backend_unit import consistency
from tests.backend_unit.conftest import MakeAccount

MAX_FILE = 10 * 1024**3


class Blob:
    """A chunk as a client makes it: plaintext, and fake 'ciphertext' named by its hash."""

    def __init__(self, plaintext: bytes) -> None:
        self.plaintext = plaintext
        self.ciphertext = b"ct:" + plaintext

    def ref(self, offset: int) -> ChunkRef:
        return ChunkRef(
            offset=offset,
            size=len(self.plaintext),
            hash=PlainHash(hashlib.sha256(self.plaintext).hexdigest()),
            object=ObjectName(hashlib.sha256(self.ciphertext).hexdigest()),
            stored_size=len(self.ciphertext),
        )


def put(store: LocalBlockStore, who: Principal, blob: Blob) -> None:
    upload = store.begin_upload(blob.ref(0).object, who.account_id)
    upload.write(blob.ciphertext)
    upload.complete()


def new_file(db: Database, who: Principal, name: str = "f") -> NodeId:
    node_id = NodeId(str(uuid.uuid4()))
    with db.write() as conn:
        tree.create_node(conn, who, NewNode(node_id, who.root_id, name, NodeKind.FILE, 0o644, 1))
    return node_id


def revision_of(blobs: list[Blob], base: RevisionId | None = None) -> NewRevision:
    refs, offset = [], 0
    for blob in blobs:
        refs.append(blob.ref(offset))
        offset += len(blob.plaintext)
    return NewRevision(RevisionId(str(uuid.uuid4())), base, offset, 5, tuple(refs))


def commit(
    db: Database, store: LocalBlockStore, who: Principal, node_id: NodeId, new: NewRevision
) -> Outcome:
    revisions.confirm_uploads(db, store, who, new, MAX_FILE)
    with db.write() as conn:
        return revisions.commit(conn, who, node_id, new, MAX_FILE)


def test_commit_needs_this_accounts_upload(
    db: Database, store: LocalBlockStore, alice: Principal, make_account: MakeAccount
) -> None:
    bob = make_account()
    blob = Blob(os.urandom(100))
    put(store, bob, blob)  # bob has uploaded it: the object exists in the store
    node_id = new_file(db, alice)
    with pytest.raises(errors.MissingChunks) as caught:
        commit(db, store, alice, node_id, revision_of([blob]))
    assert caught.value.missing == (blob.ref(0).object,)
    put(store, alice, blob)  # identical bytes again, now attributed to alice
    outcome = commit(db, store, alice, node_id, revision_of([blob]))
    assert outcome.node.size == 100
    assert outcome.node.version == 2
    with db.read() as conn:
        (prepared,) = chunks.prepare(conn, alice, [blob.ref(0).hash])
        (for_bob,) = chunks.prepare(conn, bob, [blob.ref(0).hash])
    assert (prepared.object, prepared.stored_size) == (blob.ref(0).object, len(blob.ciphertext))
    assert (for_bob.object, for_bob.stored_size) == (
        None,
        None,
    )  # bob uploaded but never committed: not owned
    consistency.check(db)


def test_ownership_survives_a_refused_commit(
    db: Database, store: LocalBlockStore, alice: Principal
) -> None:
    """A conflict after the upload was confirmed must not force a second upload."""
    blob = Blob(b"content")
    put(store, alice, blob)
    node_id = new_file(db, alice)
    with pytest.raises(errors.Conflict):
        commit(db, store, alice, node_id, revision_of([blob], RevisionId(str(uuid.uuid4()))))
    other = new_file(db, alice, "conflicted copy")
    assert commit(db, store, alice, other, revision_of([blob])).created
    consistency.check(db)


def test_refcounts_are_exact_and_history_keeps_them(
    db: Database, store: LocalBlockStore, alice: Principal
) -> None:
    a, b = Blob(b"a" * MIN_CHUNK_BYTES), Blob(b"b" * 10)
    for blob in (a, b):
        put(store, alice, blob)
    node_id = new_file(db, alice)
    first = commit(db, store, alice, node_id, revision_of([a, a]))
    assert first.revision is not None
    second = commit(db, store, alice, node_id, revision_of([b], first.revision.id))
    with db.write() as conn:
        tree.delete_node(conn, alice, node_id, second.node.version)
    with db.read() as conn:
        rows = conn.execute(select(chunk.c.object, chunk.c.refcount)).all()
    counts = {obj: refcount for obj, refcount in rows}
    assert counts == {a.ref(0).object: 2, b.ref(0).object: 1}
    consistency.check(db)


def test_replay_returns_the_stored_result(
    db: Database, store: LocalBlockStore, alice: Principal
) -> None:
    blob = Blob(b"replayed")
    put(store, alice, blob)
    node_id = new_file(db, alice)
    new = revision_of([blob])
    first = commit(db, store, alice, node_id, new)
    with db.write() as conn:
        tree.update_node(conn, alice, node_id, tree.NodeChange(first.node.version, name="moved"))
    again = commit(db, store, alice, node_id, new)
    assert not again.created
    assert again.node == first.node
    assert again.revision == first.revision
    consistency.check(db)


def test_quota_counts_live_heads_only(
    db: Database, store: LocalBlockStore, make_account: MakeAccount
) -> None:
    carol = make_account(quota_bytes=150)
    big, small = Blob(b"x" * 100), Blob(b"y" * 60)
    for blob in (big, small):
        put(store, carol, blob)
    one, two = new_file(db, carol, "one"), new_file(db, carol, "two")
    first = commit(db, store, carol, one, revision_of([big]))
    with pytest.raises(errors.QuotaExceeded):
        commit(db, store, carol, two, revision_of([small]))
    with db.write() as conn:
        tree.delete_node(conn, carol, one, first.node.version)
    assert commit(db, store, carol, two, revision_of([small])).node.size == 60
    consistency.check(db)


@pytest.mark.parametrize(
    ("size", "refs", "error"),
    [
        (3, [(0, 2)], errors.BadRequest),  # does not add up
        (4, [(0, 2), (1, 2)], errors.BadRequest),  # overlap
        (4, [(0, 2), (3, 1)], errors.BadRequest),  # gap
        (2 * MIN_CHUNK_BYTES, [(0, 1)] * 4, errors.BadRequest),  # too many refs
        (MAX_FILE + 1, [], errors.FileTooLarge),
    ],
)
def test_manifest_shape(
    db: Database,
    store: LocalBlockStore,
    alice: Principal,
    size: int,
    refs: list[tuple[int, int]],
    error: type[Exception],
) -> None:
    ref = Blob(b"z").ref(0)
    chunk_refs = tuple(
        ChunkRef(offset=o, size=s, hash=ref.hash, object=ref.object, stored_size=1) for o, s in refs
    )
    new = NewRevision(RevisionId(str(uuid.uuid4())), None, size, 0, chunk_refs)
    with pytest.raises(error):
        commit(db, store, alice, new_file(db, alice), new)


def test_stored_size_must_match_the_store(
    db: Database, store: LocalBlockStore, alice: Principal
) -> None:
    blob = Blob(b"sized")
    put(store, alice, blob)
    ref = blob.ref(0)
    lying = NewRevision(
        RevisionId(str(uuid.uuid4())),
        None,
        ref.size,
        0,
        (ChunkRef(ref.offset, ref.size, ref.hash, ref.object, ref.stored_size + 1),),
    )
    with pytest.raises(errors.BadRequest):
        commit(db, store, alice, new_file(db, alice), lying)
    consistency.check(db)
