"""Versions, trash, retention (with a controllable clock), GC and scrub, in process.

The services run over a real migrated SQLite database and a real local block store; time
is controlled by passing `now` (retention, GC) and by back-dating `created_at` columns,
which is what the passage of time would have written.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from backend.db.engine import Database
from backend.db.tables import chunk, node, revision
from backend.services import errors, gc, scrub, tree, versions
from backend.services.tree import NewNode
from backend.services.types import NodeId, NodeKind, Principal, RevisionId
from backend.services.validation import MIN_CHUNK_BYTES
from backend.store.local import LocalBlockStore
from tests.backend_unit import consistency
from tests.backend_unit.test_revisions import MAX_FILE, Blob, commit, new_file, put, revision_of

DAY = timedelta(days=1)


def write(
    db: Database, store: LocalBlockStore, who: Principal, node_id: NodeId, data: bytes
) -> RevisionId:
    """Commit `data` as the file's new head (one chunk); the new revision's id."""
    with db.read() as conn:
        head = tree.get_node(conn, who.namespace_id, node_id).head_revision
    blob = Blob(data)
    put(store, who, blob)
    outcome = commit(db, store, who, node_id, revision_of([blob], head))
    assert outcome.revision is not None
    return outcome.revision.id


def back_date(db: Database, revision_id: RevisionId, at: datetime) -> None:
    with db.write() as conn:
        conn.execute(update(revision).where(revision.c.id == revision_id).values(created_at=at))


def delete(db: Database, who: Principal, node_id: NodeId) -> None:
    with db.write() as conn:
        version = tree.get_node(conn, who.namespace_id, node_id).version
        tree.delete_node(conn, who, node_id, version)


def mkdir(db: Database, who: Principal, parent: NodeId, name: str) -> NodeId:
    node_id = NodeId(str(uuid.uuid4()))
    with db.write() as conn:
        tree.create_node(conn, who, NewNode(node_id, parent, name, NodeKind.DIR, 0o755, 1))
    return node_id


def file_in(db: Database, who: Principal, parent: NodeId, name: str) -> NodeId:
    node_id = NodeId(str(uuid.uuid4()))
    with db.write() as conn:
        tree.create_node(conn, who, NewNode(node_id, parent, name, NodeKind.FILE, 0o644, 1))
    return node_id


def test_thinning_keeps_recent_all_then_one_per_day_and_always_the_head() -> None:
    now = datetime(2026, 11, 24, 12, tzinfo=UTC)
    policy = versions.RetentionPolicy(keep_all_days=30, keep_daily_days=90, trash_days=30)
    revs = [
        (RevisionId("recent-1"), now - timedelta(days=1, hours=1), False),
        (RevisionId("recent-2"), now - timedelta(days=1), False),
        (RevisionId("day40-early"), now - timedelta(days=40, hours=3), False),
        (RevisionId("day40-late"), now - timedelta(days=40, hours=1), False),
        (RevisionId("day100"), now - timedelta(days=100), False),
        (RevisionId("head-ancient"), now - timedelta(days=400), True),
    ]
    assert sorted(versions.thinning_victims(revs, policy, now)) == ["day100", "day40-early"]


def test_retention_thins_purges_expired_trash_and_releases_chunks(
    db: Database, store: LocalBlockStore, alice: Principal
) -> None:
    now = datetime.now(UTC)
    doc = new_file(db, alice, "doc")
    old_a = write(db, store, alice, doc, b"version a" * 100)
    old_b = write(db, store, alice, doc, b"version b" * 100)
    head = write(db, store, alice, doc, b"version c" * 100)
    back_date(db, old_a, now - 40 * DAY - timedelta(hours=2))
    back_date(db, old_b, now - 40 * DAY)  # same day, later: the one that stays
    gone = new_file(db, alice, "gone")
    write(db, store, alice, gone, b"deleted long ago")
    delete(db, alice, gone)
    with db.write() as conn:
        conn.execute(update(node).where(node.c.id == gone).values(deleted_at=now - 31 * DAY))
    policy = versions.RetentionPolicy(keep_all_days=30, keep_daily_days=365, trash_days=30)
    report = versions.apply_retention(db, policy, now)
    assert report.revisions_removed == 3  # old_a + the deleted file's content and tombstone
    assert report.nodes_purged == 1
    assert report.chunks_released == 2
    with db.read() as conn:
        left = [v.revision_id for v in versions.list_versions(conn, alice, doc)]
        assert left == [head, old_b]
        assert versions.list_trash(conn, alice) == ()
        with pytest.raises(errors.NotFound):
            versions.list_versions(conn, alice, gone)
    consistency.check(db)


def test_restore_version_then_deleted_file_with_name_clash(
    db: Database, store: LocalBlockStore, alice: Principal
) -> None:
    doc = new_file(db, alice, "report.pdf")
    first = write(db, store, alice, doc, b"first draft")
    write(db, store, alice, doc, b"second draft")
    with db.write() as conn:
        result = versions.restore(conn, alice, doc, revision_id=first, max_file_bytes=MAX_FILE)
    assert result.revision is not None
    assert result.revision.id != first
    assert result.node.size == len(b"first draft")
    with db.read() as conn:
        history = versions.list_versions(conn, alice, doc)
    assert len(history) == 3
    assert history[0].head
    delete(db, alice, doc)
    file_in(db, alice, alice.root_id, "report.pdf")  # the name is taken now
    with db.write() as conn:
        back = versions.restore(conn, alice, doc, max_file_bytes=MAX_FILE)
    assert not back.node.deleted
    assert back.renamed_to == "report (restored).pdf"
    assert back.node.size == len(b"first draft")
    consistency.check(db)


def test_restore_deleted_folder_brings_back_what_was_deleted_with_it(
    db: Database, store: LocalBlockStore, alice: Principal
) -> None:
    top = mkdir(db, alice, alice.root_id, "project")
    sub = mkdir(db, alice, top, "src")
    main = file_in(db, alice, sub, "main.c")
    write(db, store, alice, main, b"int main;")
    empty = file_in(db, alice, top, "empty")
    earlier = file_in(db, alice, top, "deleted-last-month")
    write(db, store, alice, earlier, b"old")
    delete(db, alice, earlier)
    with db.write() as conn:
        when = datetime.now(UTC) - 20 * DAY
        conn.execute(update(node).where(node.c.id == earlier).values(deleted_at=when))
    for victim in (main, sub, empty, top):  # rm -r: bottom-up
        delete(db, alice, victim)
    with db.read() as conn:
        items = {i.path: i for i in versions.list_trash(conn, alice)}
    assert set(items) == {"project", "project/deleted-last-month"}
    assert (items["project"].files, items["project"].size) == (2, len(b"int main;"))
    with db.write() as conn:
        result = versions.restore(conn, alice, top, max_file_bytes=MAX_FILE)
    assert result.undeleted == 4
    with db.read() as conn:
        live = {n.name for n in tree.list_children(conn, alice, top, 100, None).items}
        assert live == {"src", "empty"}
        (back,) = tree.list_children(conn, alice, sub, 100, None).items
        assert (back.name, back.size) == ("main.c", len(b"int main;"))
        assert [i.path for i in versions.list_trash(conn, alice)] == ["project/deleted-last-month"]
    consistency.check(db)


def test_purge_then_gc_deletes_only_unreferenced_old_chunks(
    db: Database, store: LocalBlockStore, alice: Principal
) -> None:
    shared_blob, own_blob = Blob(b"s" * MIN_CHUNK_BYTES), Blob(b"o" * 50)
    keep, drop = new_file(db, alice, "keep"), new_file(db, alice, "drop")
    for node_id, blobs in ((keep, [shared_blob]), (drop, [shared_blob, own_blob])):
        for blob in blobs:
            put(store, alice, blob)
        commit(db, store, alice, node_id, revision_of(blobs))
    delete(db, alice, drop)
    with db.write() as conn:
        report = versions.purge(conn, alice, [drop])
    assert (report.nodes, report.chunks_released) == (1, 1)
    own = own_blob.ref(0).object
    young = gc.collect(db, store, grace=timedelta(hours=1))
    assert young.objects_deleted == 0
    assert store.exists(own)
    later = gc.collect(db, store, grace=timedelta(hours=1), now=datetime.now(UTC) + 2 * DAY)
    assert later.objects_deleted == 1
    assert later.bytes_deleted == len(own_blob.ciphertext)
    assert not store.exists(own)
    assert store.exists(shared_blob.ref(0).object)
    with db.read() as conn:
        assert conn.execute(select(chunk.c.object)).scalars().all() == [shared_blob.ref(0).object]
    consistency.check(db)


def test_gc_never_deletes_an_upload_in_flight(
    db: Database, store: LocalBlockStore, alice: Principal
) -> None:
    blob = Blob(os.urandom(200))
    put(store, alice, blob)  # PUT done, not committed: no chunk row yet
    assert gc.collect(db, store, grace=timedelta(hours=1)).objects_deleted == 0
    node_id = new_file(db, alice)
    commit(db, store, alice, node_id, revision_of([blob]))
    assert store.exists(blob.ref(0).object)
    consistency.check(db)


def test_scrub_finds_corrupt_missing_orphaned_and_repairs(
    db: Database, store: LocalBlockStore, alice: Principal
) -> None:
    good, bad, lost = (Blob(c * MIN_CHUNK_BYTES) for c in (b"g", b"b", b"l"))
    doc = new_file(db, alice, "doc")
    for blob in (good, bad, lost):
        put(store, alice, blob)
    committed = commit(db, store, alice, doc, revision_of([good, bad, lost]))
    stray = Blob(b"stray")
    put(store, alice, stray)  # never committed
    path = store.object_path(bad.ref(0).object)
    data = bytearray(path.read_bytes())
    data[5] ^= 0xFF
    path.write_bytes(bytes(data))
    store.object_path(lost.ref(0).object).unlink()
    report = scrub.scrub(db, store, grace=timedelta(hours=1))
    assert report.corrupt == [bad.ref(0).object]
    assert report.missing == [lost.ref(0).object]
    assert report.orphaned == [stray.ref(0).object]
    assert report.bad_manifests == []
    assert report.manifests_checked == 1
    later = datetime.now(UTC) + DAY
    repaired = scrub.scrub(db, store, repair=True, grace=timedelta(hours=1), now=later)
    assert repaired.repair is not None
    assert repaired.repair.orphans_deleted == 1
    assert repaired.repair.revisions_damaged == 1
    assert not store.exists(bad.ref(0).object)
    assert not store.exists(stray.ref(0).object)
    with db.read() as conn:
        (head,) = versions.list_versions(conn, alice, doc)
    assert head.damaged
    assert committed.revision is not None
