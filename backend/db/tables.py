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
    "journal",
    "link",
    "metadata",
    "namespace",
    "node",
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

# namespace: a totally ordered change feed and the nodes in it (an account's tree; shared
# folders will get their own later).
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
    CheckConstraint("kind IN ('content', 'tombstone')", name="kind"),
    CheckConstraint("size >= 0", name="size"),
    Index("ix_revision_node_id_seq", "node_id", "seq"),
    comment="Immutable file versions; a delete adds a tombstone, nothing is erased.",
)

# chunk: one stored object, global across accounts.
#   stored_size: ciphertext bytes, as observed by the block store (not as claimed).
#   refcount: number of revision_chunk rows naming it (exact; GC deletes at 0 after a grace).
chunk = Table(
    "chunk",
    metadata,
    _hex("object", primary_key=True),
    Column("stored_size", BigInteger, nullable=False),
    Column("refcount", BigInteger, nullable=False, server_default=text("0")),
    _at("created_at"),
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
#   revision_id: the commit's revision, or the tombstone of a deleted file.
journal = Table(
    "journal",
    metadata,
    Column("namespace_id", String(36), ForeignKey("namespace.id"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("op", String(8), nullable=False),
    Column("node_id", String(36), ForeignKey("node.id"), nullable=False),
    Column("node", Text, nullable=False),
    Column("revision_id", String(36), ForeignKey("revision.id"), nullable=True),
    Column("device_id", String(36), ForeignKey("device.id"), nullable=False),
    _at("at"),
    PrimaryKeyConstraint("namespace_id", "seq"),
    CheckConstraint("op IN ('create', 'update', 'delete', 'commit')", name="op"),
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

# share: an ACL entry giving `account_id` a role on a folder or file of another namespace.
# NOT YET USED by any route (a later issue adds sharing); created now so it only needs
# additive migrations.
share = Table(
    "share",
    metadata,
    _id(),
    Column("node_id", String(36), ForeignKey("node.id"), nullable=False),
    Column("account_id", String(36), ForeignKey("account.id"), nullable=False),
    Column("role", String(8), nullable=False),
    Column("created_by", String(36), ForeignKey("account.id"), nullable=False),
    _at("created_at"),
    _at("revoked_at", nullable=True),
    UniqueConstraint("node_id", "account_id"),
    CheckConstraint("role IN ('viewer', 'editor')", name="role"),
    comment="Folder/file shares (not used by routes yet).",
)

# link: a public link (unguessable token, stored as SHA-256 hex) to a file or folder, with
# an optional expiry and argon2id password. NOT YET USED by any route.
link = Table(
    "link",
    metadata,
    _id(),
    Column("node_id", String(36), ForeignKey("node.id"), nullable=False),
    _hex("token_hash", unique=True),
    Column("password_hash", Text, nullable=True),
    Column("created_by", String(36), ForeignKey("account.id"), nullable=False),
    _at("created_at"),
    _at("expires_at", nullable=True),
    _at("revoked_at", nullable=True),
    comment="Public links (not used by routes yet).",
)
