"""Sharing in-process: every step keeps the backend's invariants (`consistency.check`),
with shares in the picture: quota charged to the owner, share roots as the only parents
across namespaces, gap-free journals in every namespace, folder sizes through shares."""

from __future__ import annotations

import os
import uuid

import pytest

from backend.db.engine import Database
from backend.services import access, accounts, errors, shares, tree
from backend.services.tree import NewNode, NodeChange
from backend.services.types import NodeId, NodeKind, Principal
from backend.store.local import LocalBlockStore
from tests.backend_unit import consistency
from tests.backend_unit.conftest import PASSWORD, MakeAccount
from tests.backend_unit.test_revisions import Blob, commit, put, revision_of


def mkdir(db: Database, who: Principal, parent: NodeId, name: str) -> NodeId:
    node_id = NodeId(str(uuid.uuid4()))
    with db.write() as conn:
        tree.create_node(conn, who, NewNode(node_id, parent, name, NodeKind.DIR, 0o755, 1))
    return node_id


def mkfile(db: Database, who: Principal, parent: NodeId, name: str) -> NodeId:
    node_id = NodeId(str(uuid.uuid4()))
    with db.write() as conn:
        tree.create_node(conn, who, NewNode(node_id, parent, name, NodeKind.FILE, 0o644, 1))
    return node_id


def used(db: Database, who: Principal) -> int:
    with db.read() as conn:
        return accounts.me(conn, who).used_bytes


def name_of(db: Database, who: Principal) -> str:
    with db.read() as conn:
        return accounts.me(conn, who).name


def test_share_lifecycle_keeps_every_invariant(
    db: Database, store: LocalBlockStore, make_account: MakeAccount
) -> None:
    owner, editor, viewer = make_account(), make_account(), make_account()
    folder = mkdir(db, owner, owner.root_id, "docs")
    inner = mkdir(db, owner, folder, "inner")
    first = mkfile(db, owner, inner, "a.bin")
    blob = Blob(os.urandom(1000))
    put(store, owner, blob)
    commit(db, store, owner, first, revision_of([blob]))
    consistency.check(db)

    with db.write() as conn:
        offer, fresh = shares.share_node(
            conn, owner, folder, name_of(db, editor), access.Role.EDITOR
        )
        seen, _ = shares.share_node(conn, owner, folder, name_of(db, viewer), access.Role.VIEWER)
    assert fresh
    consistency.check(db)
    with db.write() as conn:
        shares.accept(conn, editor, offer.id)
        shares.accept(conn, viewer, seen.id)

    # The editor writes; the owner pays; folder sizes follow through the share root.
    written = mkfile(db, editor, inner, "b.bin")
    more = Blob(os.urandom(2000))
    put(store, editor, more)
    commit(db, store, editor, written, revision_of([more]))
    assert used(db, owner) == 3000
    assert used(db, editor) == 0
    consistency.check(db)

    # The viewer may not; nobody else even sees it.
    with db.write() as conn, pytest.raises(errors.Forbidden):
        tree.create_node(
            conn, viewer, NewNode(NodeId(str(uuid.uuid4())), inner, "x", NodeKind.FILE, 0o644, 1)
        )
    outsider = make_account()
    with db.read() as conn, pytest.raises(errors.NotFound):
        access.node_for_read(conn, outsider, folder)

    # The owner moves the shared folder in its own tree; moves across are refused.
    elsewhere = mkdir(db, owner, owner.root_id, "archive")
    with db.write() as conn:
        root = tree.get_node(conn, offer.namespace_id, folder)
        tree.update_node(conn, owner, folder, NodeChange(root.version, parent_id=elsewhere))
    loose = mkfile(db, owner, owner.root_id, "loose")
    with db.write() as conn, pytest.raises(errors.CrossShare):
        tree.update_node(conn, owner, loose, NodeChange(1, parent_id=inner))
    consistency.check(db)

    # The editor deletes its file; unsharing and the owner's account deletion end it all.
    with db.write() as conn:
        current = tree.get_node(conn, offer.namespace_id, written)
        tree.delete_node(conn, editor, written, current.version)
        shares.revoke(conn, owner, offer.id)
    assert used(db, owner) == 1000
    with db.read() as conn, pytest.raises(errors.NotFound):
        access.node_for_read(conn, editor, folder)
    accounts.delete_account(db, owner, PASSWORD)
    with db.read() as conn:
        assert [s.state for s in shares.incoming(conn, viewer)] == [shares.ShareState.REVOKED]
        with pytest.raises(errors.NotFound):
            access.node_for_read(conn, viewer, folder)
    consistency.check(db)


def test_sharing_a_folder_moves_deleted_history_too(
    db: Database, store: LocalBlockStore, make_account: MakeAccount
) -> None:
    owner, friend = make_account(), make_account()
    folder = mkdir(db, owner, owner.root_id, "photos")
    gone = mkfile(db, owner, folder, "old.jpg")
    blob = Blob(os.urandom(500))
    put(store, owner, blob)
    made = commit(db, store, owner, gone, revision_of([blob]))
    with db.write() as conn:
        tree.delete_node(conn, owner, gone, made.node.version)
        offer, _ = shares.share_node(conn, owner, folder, name_of(db, friend), access.Role.VIEWER)
        assert tree.get_node(conn, offer.namespace_id, gone).deleted
        # The seeded journal names live nodes only: the folder itself.
        followed = shares.followed(conn, owner)
    assert [f.namespace_id for f in followed] == [offer.namespace_id]
    consistency.check(db)
