"""The client's SQLite schema: the one place that says what each table and column means.

The state database (`STATE/state.db`) mirrors the account's tree, records which bytes of each
file are cached or changed locally, and queues the namespace changes that the sync engine
has not pushed yet. Every FUSE call is answered from it, so every query on a hot path has an
index below. Invariants that no constraint can express are listed here and checked by
`mountfs.vfs.fsck.check`; the crash-state -> repair table is in `docs/client.md`.

Tables:

`meta` -- key/value facts about the state: `schema_version`, `root_node_id` (the account root
    this state belongs to), and the sync engine's figures (`cursor`, `quota_bytes`,
    `used_bytes`) once it writes them.

`nodes` -- one row per node the mount knows: files, directories, symlinks.
    - `ino`: the FUSE inode number. AUTOINCREMENT, so a number is never handed out twice,
      not even after the highest row is deleted: the kernel finds cached inodes by number
      alone, and a reused number would show a dead file's pages and attributes.
      The account root is always ino 1 (`pyfuse3.ROOT_INODE`).
    - `node_id`: the backend's id (UUIDv7 made by the client, or the server's root id).
    - `parent_ino`, `name`: the node's one name (the backend has no hard links).
      Both NULL for the root, and for an *unlinked* node: one that is still open or still
      known to the kernel (lookup count > 0), or whose delete is still queued in the outbox
      (a *tombstone*; the sync engine needs its `remote_version`). Names are UTF-8 text,
      compared byte-wise (SQLite's default BINARY collation), at most 255 bytes.
    - `kind`: 'file' | 'dir' | 'symlink'. `mode`: permission bits only (0..0o7777).
    - `uid`, `gid`: local owner; not synced (the backend has no owners).
    - `size`: the logical size in bytes (files: content; symlinks: target length; dirs: 0).
    - `atime_ns`, `mtime_ns`, `ctime_ns`: nanoseconds, stored exactly as the kernel sends them
      (writeback cache: the kernel owns mtime/ctime of files and flushes them by setattr).
    - `target`: symlink target (UTF-8 text), else NULL.
    - `remote_version`: the node's `version` as last acknowledged by the backend.
      NULL = the backend does not know the node yet (its `create` is in the outbox) -- or,
      for the root only, the first pull has not happened yet.
    - `remote_head_revision`: the head revision the backend last acknowledged (the
      precondition of the next commit). NULL for a file that never had content committed.
    - `remote_size`: size of that head revision: the bytes `chunk_map` can deliver.
    - `complete`: 1 = every byte of [0, size) is valid in the cache file (always true for
      files created here); the `present` extents are then unused and empty.
      0 = only the `present` extents are valid; the rest is fetched on demand.
    - `dirty`: 1 = the content differs from `remote_head_revision` (written, truncated, or
      new with content): the sync engine must commit a revision. The `dirty` extents say
      which byte ranges changed (a truncation may leave the flag set with no extent).
    - `content_gen`: incremented by every content change. The sync engine snapshots it
      before reading the cache file for upload and clears `dirty` only if it is unchanged
      afterwards (`nodes.mark_clean`), so a write racing with an upload is never lost.

`extents` -- interval sets per file: `kind` 0 = *present* (valid in the cache file),
    1 = *dirty* (changed locally since the head revision). Half-open [start, end), disjoint
    and never adjacent within one (ino, kind): inserting merges neighbours.

`chunk_map` -- the manifest (with keys) of each file's `remote_head_revision`, filled by
    the sync engine; the content fetcher reads it to download missing ranges.

`xattrs` -- `user.*` extended attributes, local only (the backend has no xattrs).

`outbox` -- namespace changes not yet acknowledged by the backend, in the order they
    happened. Written in the SAME transaction as the change it describes. `body` is the op
    as `POST /api/v1/changes` takes it (docs/protocol.md), with `base_version` and
    `replace_version` left null: the sync engine fills them at push time from
    `nodes.remote_version` (which it keeps current as results come back).
    `parent_id`/`replace_id` repeat the ids the body names, so coalescing can ask "does any
    other queued op refer to this node?" with an index. `claimed` = 1 while the sync engine
    has the row in flight: coalescing never touches claimed rows, and start-up releases
    them (a replay is safe: the backend answers a repeated `op_id` with its stored result).
    Content is not in the outbox: `nodes.dirty` is the queue of commits.

`pins` -- what the user pinned for offline use (`mountfs pin`), by `node_id`, so a pin
    follows its node through renames and new inode numbers. A pinned folder covers every
    file below it, including files added later. Pinned files are kept complete
    (`mountfs.sync.pinning`) and never evicted (`BlockCache.evict`). A pin whose node is
    gone is dropped by the next pass of the pinner.

`deferred_content` -- a remote revision that arrived for a clean file open for writing
    here (`body`: the revision with its keys and the node's mtime, as JSON). It is applied
    once the last writable handle is closed, if the file is still clean; a local write in
    between makes the local commit meet the remote head as a conflict instead.
"""

from __future__ import annotations

__all__ = ["CURRENT_VERSION", "DDL", "EXTENT_DIRTY", "EXTENT_PRESENT", "KINDS", "ROOT_INO"]

CURRENT_VERSION = 1
"""Bumped on any incompatible change; `db.open_state` refuses a newer file and migrates older."""

ROOT_INO = 1
"""Inode number of the account root (FUSE's fixed root id)."""

KINDS = ("file", "dir", "symlink")

EXTENT_PRESENT = 0
"""`extents.kind` of byte ranges that are valid in the cache file."""

EXTENT_DIRTY = 1
"""`extents.kind` of byte ranges changed locally and not yet committed."""

DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS nodes (
    ino                  INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id              TEXT NOT NULL UNIQUE,
    parent_ino           INTEGER REFERENCES nodes(ino),
    name                 TEXT,
    kind                 TEXT NOT NULL CHECK (kind IN ('file', 'dir', 'symlink')),
    mode                 INTEGER NOT NULL CHECK (mode BETWEEN 0 AND 4095),
    uid                  INTEGER NOT NULL,
    gid                  INTEGER NOT NULL,
    size                 INTEGER NOT NULL DEFAULT 0 CHECK (size >= 0),
    atime_ns             INTEGER NOT NULL,
    mtime_ns             INTEGER NOT NULL,
    ctime_ns             INTEGER NOT NULL,
    target               TEXT,
    remote_version       INTEGER,
    remote_head_revision TEXT,
    remote_size          INTEGER NOT NULL DEFAULT 0,
    complete             INTEGER NOT NULL DEFAULT 1 CHECK (complete IN (0, 1)),
    dirty                INTEGER NOT NULL DEFAULT 0 CHECK (dirty IN (0, 1)),
    content_gen          INTEGER NOT NULL DEFAULT 0,
    CHECK ((parent_ino IS NULL) = (name IS NULL))
);
-- lookup(parent, name): unique live name per directory.
CREATE UNIQUE INDEX IF NOT EXISTS nodes_by_name ON nodes(parent_ino, name)
    WHERE parent_ino IS NOT NULL;
-- readdir: children of a directory in ino order (the rowid is the implicit last column),
-- so `ino > :offset` resumes a listing at a stable key.
CREATE INDEX IF NOT EXISTS nodes_children ON nodes(parent_ino);
-- st_nlink of a directory = 2 + its subdirectories.
CREATE INDEX IF NOT EXISTS nodes_subdirs ON nodes(parent_ino) WHERE kind = 'dir';
-- the sync engine's commit queue.
CREATE INDEX IF NOT EXISTS nodes_dirty ON nodes(ino) WHERE dirty = 1;
-- start-up purge of unlinked nodes.
CREATE INDEX IF NOT EXISTS nodes_unlinked ON nodes(ino) WHERE parent_ino IS NULL;

CREATE TABLE IF NOT EXISTS extents (
    ino   INTEGER NOT NULL REFERENCES nodes(ino) ON DELETE CASCADE,
    kind  INTEGER NOT NULL CHECK (kind IN (0, 1)),
    start INTEGER NOT NULL CHECK (start >= 0),
    end   INTEGER NOT NULL,
    CHECK (end > start),
    PRIMARY KEY (ino, kind, start)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS chunk_map (
    ino         INTEGER NOT NULL REFERENCES nodes(ino) ON DELETE CASCADE,
    offset      INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    object      TEXT NOT NULL,
    stored_size INTEGER NOT NULL,
    key         BLOB NOT NULL,
    PRIMARY KEY (ino, offset)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS xattrs (
    ino   INTEGER NOT NULL REFERENCES nodes(ino) ON DELETE CASCADE,
    name  BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (ino, name)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    op_id      TEXT NOT NULL UNIQUE,
    op         TEXT NOT NULL CHECK (op IN ('create', 'update', 'delete')),
    node_id    TEXT NOT NULL,
    parent_id  TEXT,
    replace_id TEXT,
    body       TEXT NOT NULL,
    claimed    INTEGER NOT NULL DEFAULT 0 CHECK (claimed IN (0, 1)),
    created_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_by_node ON outbox(node_id);
CREATE INDEX IF NOT EXISTS outbox_by_parent ON outbox(parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_by_replace ON outbox(replace_id) WHERE replace_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS pins (
    node_id    TEXT PRIMARY KEY,
    created_ns INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS deferred_content (
    node_id TEXT PRIMARY KEY,
    body    TEXT NOT NULL
) WITHOUT ROWID;
"""
