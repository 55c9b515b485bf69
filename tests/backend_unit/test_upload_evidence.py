"""Upload evidence outlives a cut confirmation, and only the GC's grace ends a leftover.

A confirmation (`revisions.confirm_uploads`, `chunks.hold_uploads`) asks the store to
verify an upload and records the ownership (or hold) in a write transaction; the store's
evidence is removed only after that transaction commits. Here the transaction is cut
after the store confirmed (the database fails as a PostgreSQL restart makes it fail), and
the client's retry must succeed without uploading again. The failure is injected into our
own code on purpose: this is a unit test of the backend's internals; the same fault runs
end to end in tests/cluster/test_faults.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from backend.db.engine import Database, upsert_ignore
from backend.services import chunks, errors, gc, revisions
from backend.services.types import Principal
from backend.services.validation import MIN_CHUNK_BYTES
from backend.store.local import LocalBlockStore
from tests.backend_unit import consistency
from tests.backend_unit.test_revisions import (
    MAX_FILE,
    Blob,
    commit,
    new_file,
    put,
    revision_of,
)

DAY = timedelta(days=1)


def cut(real: Callable[..., None]) -> Callable[..., None]:
    """`real`, then the failure a database restart causes before the transaction commits."""

    def failing(*args: Any) -> None:
        real(*args)
        raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    return failing


def markers(store: LocalBlockStore) -> set[tuple[str, str]]:
    return {(e.account_id, e.object) for e in store.list_upload_evidence()}


def test_a_commit_cut_after_the_store_confirmed_succeeds_on_retry_without_reupload(
    db: Database, store: LocalBlockStore, alice: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = Blob(os.urandom(300))
    obj = blob.ref(0).object
    put(store, alice, blob)
    node_id = new_file(db, alice)
    new = revision_of([blob])
    with monkeypatch.context() as patch:
        patch.setattr(chunks, "record_uploads", cut(chunks.record_uploads))
        with pytest.raises(OperationalError):
            revisions.confirm_uploads(db, store, alice, new, MAX_FILE)
    with db.read() as conn:
        assert chunks.unowned(conn, alice.account_id, [obj]) == [obj]  # nothing recorded
    assert markers(store) == {(alice.account_id, obj)}  # ...and nothing consumed
    done = commit(db, store, alice, node_id, new)  # the client's retry, no upload between
    assert done.revision is not None
    assert [r.object for r in done.revision.chunks or ()] == [obj]
    assert markers(store) == set()  # discarded once the ownership was committed
    assert store.finish_upload(obj, alice.account_id) is None
    consistency.check(db)


def test_a_hold_cut_after_the_store_confirmed_holds_on_retry(
    db: Database, store: LocalBlockStore, alice: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = Blob(os.urandom(400))
    ref = blob.ref(0)
    put(store, alice, blob)
    wanted = [chunks.HeldChunk(ref.hash, ref.object, ref.size)]
    with monkeypatch.context() as patch:
        patch.setattr(chunks, "upsert_ignore", cut(upsert_ignore))
        with pytest.raises(OperationalError):
            chunks.hold_uploads(db, store, alice, wanted)
    assert markers(store) == {(alice.account_id, ref.object)}
    again = chunks.hold_uploads(db, store, alice, wanted)
    assert again.held == {ref.object: ref.stored_size}
    assert again.missing == []
    assert markers(store) == set()
    commit(db, store, alice, new_file(db, alice), revision_of([blob]))  # from the hold
    consistency.check(db)


def test_without_evidence_a_commit_is_still_refused(
    db: Database, store: LocalBlockStore, alice: Principal, make_account: Callable[[], Principal]
) -> None:
    """Keeping the evidence longer never credits an upload to an account that did not make
    it, nor an account whose upload was discarded."""
    bob = make_account()
    blob = Blob(os.urandom(500))
    put(store, bob, blob)
    with pytest.raises(errors.MissingChunks):
        commit(db, store, alice, new_file(db, alice), revision_of([blob]))
    commit(db, store, bob, new_file(db, bob), revision_of([blob]))
    assert markers(store) == set()
    consistency.check(db)


def test_a_failed_discard_leaves_harmless_evidence_that_the_gc_removes_after_the_grace(
    db: Database, store: LocalBlockStore, alice: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = [Blob(os.urandom(MIN_CHUNK_BYTES)), Blob(os.urandom(700))]
    for blob in blobs:
        put(store, alice, blob)

    def store_away(self: LocalBlockStore, object: str, account_id: str) -> None:
        raise OSError("the store is away")

    with monkeypatch.context() as patch:
        patch.setattr(LocalBlockStore, "discard_upload_evidence", store_away)
        commit(db, store, alice, new_file(db, alice, "a"), revision_of(blobs))  # answered
    left = {(alice.account_id, b.ref(0).object) for b in blobs}
    assert markers(store) == left
    # An owned object's evidence is never looked at again: the same chunks commit as usual.
    commit(db, store, alice, new_file(db, alice, "b"), revision_of(blobs))
    assert markers(store) == left
    young = gc.collect(db, store, grace=timedelta(hours=1))
    assert (young.evidence_discarded, young.objects_deleted) == (0, 0)
    assert markers(store) == left
    later = gc.collect(db, store, grace=timedelta(hours=1), now=datetime.now(UTC) + 2 * DAY)
    assert (later.evidence_discarded, later.objects_deleted) == (2, 0)  # referenced: kept
    assert markers(store) == set()
    assert all(store.exists(b.ref(0).object) for b in blobs)
    consistency.check(db)


def test_the_gc_discards_stale_evidence_of_uploads_never_committed(
    db: Database, store: LocalBlockStore, alice: Principal
) -> None:
    stale, fresh = Blob(os.urandom(800)), Blob(os.urandom(900))
    for blob in (stale, fresh):
        put(store, alice, blob)
    old = (datetime.now(UTC) - 3 * DAY).timestamp()
    os.utime(store.object_path(stale.ref(0).object), (old, old))
    os.utime(store.marker_path(stale.ref(0).object, alice.account_id), (old, old))
    report = gc.collect(db, store, grace=DAY)
    assert report.evidence_discarded == 1
    assert report.objects_deleted == 1  # the stale upload's orphan object too
    assert markers(store) == {(alice.account_id, fresh.ref(0).object)}
    commit(db, store, alice, new_file(db, alice), revision_of([fresh]))
    with pytest.raises(errors.MissingChunks):  # its commit never came within the grace
        commit(db, store, alice, new_file(db, alice, "late"), revision_of([stale]))
    consistency.check(db)


def test_a_repeated_upload_renews_its_evidence(
    db: Database, store: LocalBlockStore, alice: Principal
) -> None:
    """A re-upload of a chunk whose marker is still pending dates the marker anew, so the
    GC does not take the fresh upload for a stale one and discard its evidence."""
    blob = Blob(os.urandom(1000))
    put(store, alice, blob)
    marker = store.marker_path(blob.ref(0).object, alice.account_id)
    old = (datetime.now(UTC) - 3 * DAY).timestamp()
    os.utime(marker, (old, old))
    put(store, alice, blob)
    assert gc.collect(db, store, grace=DAY).evidence_discarded == 0
    commit(db, store, alice, new_file(db, alice), revision_of([blob]))
    consistency.check(db)
