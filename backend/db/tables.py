"""The metadata schema: SQLAlchemy Core tables on one MetaData, the single authority.

The Alembic migrations in `backend/db/migrations/versions/` must produce exactly this
(`tests/backend_unit/test_migrations.py` compares them). Every constraint has a
deterministic name (the naming convention below) so that later migrations can drop it.

Conventions:
- Ids are UUID strings in canonical lower-case form (36 chars); account, device, namespace
  and tombstone ids are made by the server, node and revision ids by clients.
- Hex digests are 64 lower-case hex digits.
- `*_at` columns are timezone-aware UTC timestamps; `*_ns` are client nanoseconds.
- Names compare byte-exactly: SQLite's default BINARY collation, `COLLATE "C"` on
  PostgreSQL, so uniqueness and listing order agree on both.
- Circular references (account ⇄ namespace/root node, node ⇄ revision) are created with
  `use_alter`; the account ones are DEFERRABLE INITIALLY DEFERRED because an account, its
  namespace and its root are inserted together in one transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

__all__ = [
    "account",
    "applied_op",
    "chunk",
    "chunk_owner",
    "device",
    "held_upload",
    "journal",
    "link",
    "metadata",
    "namespace",
    "node",
    "rate_limit",
    "revision",
    "revision_chunk",
    "share",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _id(name: str = "id") -> Column[str]:
    return Column(name, String(36), primary_key=True)


def _hex(name: str, *, primary_key: bool = False, unique: bool = False) -> Column[str]:
    """A 64-hex-digit SHA-256 column (NOT NULL)."""
    return Column(name, String(64), primary_key=primary_key, unique=unique, nullable=False)


def _at(name: str, nullable: bool = False) -> Column[datetime]:
    return Column(name, DateTime(timezone=True), nullable=nullable)


Name = Text().with_variant(Text(collation="C"), "postgresql")
"""A node name: compared and sorted by bytes on every database."""


# account: one user.
#   password_hash: argon2id PHC string.
#   quota_bytes: NULL = unlimited.
#   used_bytes: sum of `size` over the account's live file nodes, maintained in the same
#     transaction as every commit and delete (never recomputed on the fly).
#   namespace_id/root_id: the account's own tree; NOT NULL, deferred FKs (see module doc).
#   auto_accept_shares: shares offered to this account are accepted at once.
#   deleted_at: the account was deleted: no login, every device revoked, its shares and
#     links revoked; the rows stay (history, name reserved) until garbage collection.
account = Table(
    "account",
    metadata,
    _id(),
    Column("name", String(64), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("quota_bytes", BigInteger, nullable=True),
    Column("used_bytes", BigInteger, nullable=False, server_default=text("0")),
    Column("namespace_id", String(36), nullable=False),
    Column("root_id", String(36), nullable=False),
    _at("created_at"),
    Column("auto_accept_shares", Boolean, nullable=False, server_default=false()),
    _at("deleted_at", nullable=True),
    ForeignKeyConstraint(
        ["namespace_id"],
        ["namespace.id"],
        use_alter=True,
        deferrable=True,
        initially="DEFERRED",
    ),
    ForeignKeyConstraint(
        ["root_id"], ["node.id"], use_alter=True, deferrable=True, initially="DEFERRED"
    ),
    CheckConstraint("used_bytes >= 0", name="used_bytes_non_negative"),
    CheckConstraint("quota_bytes IS NULL OR quota_bytes >= 0", name="quota_non_negative"),
    comment="One user; owns one namespace (its tree).",
)

# namespace: a totally ordered change feed and the nodes in it: an account's tree, or a
# shared folder or file (then `root_id` is that node, whose parent stays in the owner's
# tree; NULL for an account's namespace, whose root is `account.root_id`).
#   last_seq: seq of the newest journal entry. Every change locks this row first
#     (SELECT ... FOR UPDATE on PostgreSQL; BEGIN IMMEDIATE serialises SQLite) and bumps
#     it in its own transaction, so seqs are gap-free and commit in seq order.
namespace = Table(
    "namespace",
    metadata,
    _id(),
    Column("owner_account_id", String(36), ForeignKey("account.id"), nullable=False),
    Column("last_seq", BigInteger, nullable=False, server_default=text("0")),
    _at("created_at"),
    Column("root_id", String(36), nullable=True),
    comment="A change feed and the nodes in it.",
)

# device: one login. token_hash is the SHA-256 hex of the bearer token (the token itself is
# never stored). revoked_at set = the token is refused from the next request on.
# last_seen_at is refreshed at most once a minute (avoids a write per request).
device = Table(
    "device",
    metadata,
    _id(),
    Column("account_id", String(36), ForeignKey("account.id"), nullable=False, index=True),
    Column("label", String(200), nullable=False),
    _hex("token_hash", unique=True),
    _at("created_at"),
    _at("last_seen_at", nullable=True),
    _at("revoked_at", nullable=True),
    comment="One login of an account, holding one bearer token.",
)

# node: a file, directory or symlink.
#   parent_id NULL and name '' exactly for a namespace root.
#   version: starts at 1, +1 on every accepted change; the precondition for metadata ops.
#   head_revision: the file's current revision; NULL for a new empty file, dirs, symlinks.
#     After a delete it is the file's tombstone revision.
#   size: size of the head revision (0 for non-files and deleted files).
#   target: symlink target, NULL for any other kind.
#   deleted: the row stays for history; the partial unique index keeps live names unique.
#   tree_bytes/tree_files: a directory's live files anywhere below it (sizes, count), kept
#     in the transaction of every change that moves bytes or files (services/usage.py);
#     0 for files and symlinks.
#   deleted_at/deleted_by: when and by which device the node was last deleted (the trash;
#     NULL while live). purged_at: the trash was emptied of it (or retention expired it):
#     its revisions are gone for good and it is listed nowhere (services/versions.py).
node = Table(
    "node",
    metadata,
    _id(),
    Column("namespace_id", String(36), ForeignKey("namespace.id"), nullable=False),
    Column("parent_id", String(36), ForeignKey("node.id"), nullable=True),
    Column("name", Name, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("mode", Integer, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False, server_default=text("0")),
    Column("version", BigInteger, nullable=False, server_default=text("1")),
    Column("head_revision", String(36), nullable=True),
    Column("target", Text, nullable=True),
    Column("deleted", Boolean, nullable=False, server_default=false()),
    _at("created_at"),
    _at("deleted_at", nullable=True),
    Column("deleted_by", String(36), ForeignKey("device.id"), nullable=True),
    _at("purged_at", nullable=True),
    Column("tree_bytes", BigInteger, nullable=False, server_default=text("0")),
    Column("tree_files", BigInteger, nullable=False, server_default=text("0")),
    ForeignKeyConstraint(["head_revision"], ["revision.id"], use_alter=True),
    CheckConstraint("kind IN ('file', 'dir', 'symlink')", name="kind"),
    CheckConstraint("mode >= 0 AND mode <= 4095", name="mode"),
    CheckConstraint("size >= 0", name="size"),
    CheckConstraint("version >= 1", name="version"),
    CheckConstraint("(kind = 'symlink') = (target IS NOT NULL)", name="target_iff_symlink"),
    CheckConstraint("(parent_id IS NULL) = (name = '')", name="root_iff_no_parent"),
    comment="Files, directories and symlinks; deleted rows stay for history.",
)
Index(
    "uq_node_live_name",
    node.c.parent_id,
    node.c.name,
    unique=True,
    sqlite_where=node.c.deleted == false(),
    postgresql_where=node.c.deleted == false(),
)

# revision: an immutable version of a file.
#   id: chosen by the client (commit) or the server (tombstone of a delete).
#   seq: the namespace journal seq of the change that made it (orders history exactly).
#   manifest: JSON list of {offset,size,hash,object,stored_size} ('[]' for tombstones);
#     keys are never stored, they are derived from `hash` when answering.
#   damaged_at: scrub --repair found one of its chunks missing or corrupt (it cannot be
#     read or restored any more); NULL for a sound revision.
revision = Table(
    "revision",
    metadata,
    _id(),
    Column("node_id", String(36), ForeignKey("node.id"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("base_revision_id", String(36), ForeignKey("revision.id"), nullable=True),
    Column("device_id", String(36), ForeignKey("device.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("manifest", Text, nullable=False),
    _at("created_at"),
    _at("damaged_at", nullable=True),
    CheckConstraint("kind IN ('content', 'tombstone')", name="kind"),
    CheckConstraint("size >= 0", name="size"),
    Index("ix_revision_node_id_seq", "node_id", "seq"),
    comment="Immutable file versions; a delete adds a tombstone, nothing is erased.",
)

# chunk: one stored object, global across accounts.
#   stored_size: ciphertext bytes, as observed by the block store (not as claimed).
#   refcount: number of revision_chunk rows naming it (exact; GC deletes at 0 after a grace).
#   released_at: when a purge last took its refcount to 0; the GC's grace period runs from
#     max(created_at, released_at) (services/gc.py). Stale (ignored) while refcount > 0.
chunk = Table(
    "chunk",
    metadata,
    _hex("object", primary_key=True),
    Column("stored_size", BigInteger, nullable=False),
    Column("refcount", BigInteger, nullable=False, server_default=text("0")),
    _at("created_at"),
    _at("released_at", nullable=True),
    CheckConstraint("refcount >= 0", name="refcount"),
    comment="Content-addressed ciphertext objects in the block store.",
)

# chunk_owner: invariant 5 — the account may skip uploading `object` (and read it).
#   A row is written once the store has confirmed that this account uploaded the object.
#   hash/plain_size are the plaintext hash and size *this account* claimed for it; they are
#   per account because the backend cannot verify them (it never sees plaintext), so one
#   account's wrong claim can never steer another account's dedup.
chunk_owner = Table(
    "chunk_owner",
    metadata,
    Column("account_id", String(36), ForeignKey("account.id"), nullable=False),
    Column("object", String(64), ForeignKey("chunk.object"), nullable=False),
    _hex("hash"),
    Column("plain_size", BigInteger, nullable=False),
    _at("created_at"),
    PrimaryKeyConstraint("account_id", "object"),
    Index("ix_chunk_owner_account_id_hash", "account_id", "hash"),
    comment="Which account has proven possession of which object (invariant 5).",
)

# held_upload: chunks an account has PUT (the store confirmed them, durable) that no commit
#   has named yet: an upload in progress, or one cut off by a network drop, a restart or a
#   kill. `prepare` answers them as present *for this account only*, so a resumed upload
#   sends only what is missing, while nobody else can reference or read them (invariant 5:
#   only `chunk_owner` makes an object readable; a commit turns the hold into ownership and
#   deletes the row). `object` has no foreign key: the `chunk` row is made at commit.
#   held_at: when the account last confirmed the upload (a re-hold refreshes it). Garbage
#   collection must not delete an object with a hold younger than its grace period, and may
#   drop holds (then the objects, if unreferenced) older than that.
held_upload = Table(
    "held_upload",
    metadata,
    Column("account_id", String(36), ForeignKey("account.id"), nullable=False),
    Column("object", String(64), nullable=False),
    _hex("hash"),
    Column("plain_size", BigInteger, nullable=False),
    Column("stored_size", BigInteger, nullable=False),
    _at("held_at"),
    PrimaryKeyConstraint("account_id", "object"),
    Index("ix_held_upload_account_id_hash", "account_id", "hash"),
    Index("ix_held_upload_held_at", "held_at"),
    comment="Uploaded but not yet committed chunks of each account (resumable uploads).",
)

# revision_chunk: the manifest as rows, for exact refcounts and "which revisions use X".
revision_chunk = Table(
    "revision_chunk",
    metadata,
    Column("revision_id", String(36), ForeignKey("revision.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("object", String(64), ForeignKey("chunk.object"), nullable=False, index=True),
    PrimaryKeyConstraint("revision_id", "seq"),
    comment="Manifest entries of each revision (seq = position in the manifest).",
)

# journal: the change feed. One row per node change, gap-free seq per namespace.
#   node: JSON snapshot of the node after the change (what the client applies).
#   revision_id: the commit's revision, or the tombstone of a deleted file; NULL once
#     retention or an emptied trash purged that revision.
#   device_id: the device whose change it is; NULL for a change the service made on the
#     account's behalf (a restore): every device, the asking one included, applies those.
#   share: for op 'share' (a share offered to, changed for or taken from the journal's
#     account, backend/services/shares.py), a JSON snapshot of the share then; else NULL.
journal = Table(
    "journal",
    metadata,
    Column("namespace_id", String(36), ForeignKey("namespace.id"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("op", String(8), nullable=False),
    Column("node_id", String(36), ForeignKey("node.id"), nullable=False),
    Column("node", Text, nullable=False),
    Column("revision_id", String(36), ForeignKey("revision.id"), nullable=True),
    Column("device_id", String(36), ForeignKey("device.id"), nullable=True),
    _at("at"),
    Column("share", Text, nullable=True),
    PrimaryKeyConstraint("namespace_id", "seq"),
    CheckConstraint("op IN ('create', 'update', 'delete', 'commit', 'share')", name="op"),
    comment="Append-only, totally ordered change feed per namespace.",
)

# applied_op: results of applied batched ops, so a replayed (device, op_id) is answered
# from here instead of being applied twice. Written in the op's own transaction; refused
# ops are not remembered (a retry after fixing the cause, e.g. uploading missing chunks,
# must be evaluated afresh).
applied_op = Table(
    "applied_op",
    metadata,
    Column("device_id", String(36), ForeignKey("device.id"), nullable=False),
    Column("op_id", String(36), nullable=False),
    Column("result", Text, nullable=False),
    _at("created_at"),
    PrimaryKeyConstraint("device_id", "op_id"),
    comment="Stored results of applied batched ops, for idempotent replays.",
)

# share: an ACL entry giving `account_id` a role on a shared folder or file of another
# account (docs/backend.md, "Shares"). The shared node and everything below it live in their
# own namespace (`namespace_id`, whose `root_id` is `node_id`); every share of that node
# names the same namespace.
#   accepted_at: NULL while the recipient has not accepted (a pending share grants nothing).
#   mount_parent_id/mount_name: where the share appears in the recipient's own tree (a
#     directory of the recipient's namespace, and the name shown there); set on accept.
#   revoked_at: set when the owner unshares or the recipient leaves; the row stays so that
#     the recipient's devices learn of the removal, and is re-armed by a new share.
#   changed_at: last change of the row (offered, accepted, role changed, revoked).
share = Table(
    "share",
    metadata,
    _id(),
    Column("node_id", String(36), ForeignKey("node.id"), nullable=False),
    Column("namespace_id", String(36), ForeignKey("namespace.id"), nullable=False, index=True),
    Column("account_id", String(36), ForeignKey("account.id"), nullable=False, index=True),
    Column("role", String(8), nullable=False),
    Column("created_by", String(36), ForeignKey("account.id"), nullable=False),
    _at("created_at"),
    _at("accepted_at", nullable=True),
    Column("mount_parent_id", String(36), nullable=True),
    Column("mount_name", Name, nullable=True),
    _at("revoked_at", nullable=True),
    _at("changed_at"),
    UniqueConstraint("node_id", "account_id"),
    CheckConstraint("role IN ('viewer', 'editor')", name="role"),
    comment="Shares of a folder or file (its own namespace) with other accounts.",
)

# link: a public link (unguessable token, stored as SHA-256 hex) to a file or folder, with
# an optional expiry, argon2id password and download limit.
#   downloads: download requests counted so far (with a limit every request counts;
#     without, those that start at byte 0); `max_downloads` NULL = unlimited.
link = Table(
    "link",
    metadata,
    _id(),
    Column("node_id", String(36), ForeignKey("node.id"), nullable=False, index=True),
    _hex("token_hash", unique=True),
    Column("password_hash", Text, nullable=True),
    Column("created_by", String(36), ForeignKey("account.id"), nullable=False, index=True),
    _at("created_at"),
    _at("expires_at", nullable=True),
    _at("revoked_at", nullable=True),
    Column("max_downloads", BigInteger, nullable=True),
    Column("downloads", BigInteger, nullable=False, server_default=text("0")),
    CheckConstraint("max_downloads IS NULL OR max_downloads >= 1", name="max_downloads"),
    comment="Public links to a file or folder.",
)

# rate_limit: failed password attempts per key ("login:<name>", "link:<id>",
# "addr:<ip>") in a fixed window; shared by every backend instance (nothing in memory).
rate_limit = Table(
    "rate_limit",
    metadata,
    Column("key", String(200), primary_key=True),
    _at("window_start"),
    Column("failures", Integer, nullable=False),
    comment="Failed password attempts per account, link and source address.",
)
