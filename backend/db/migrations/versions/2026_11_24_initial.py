"""Initial schema: accounts, devices, namespaces, nodes, revisions, chunks, journal.

Revision ID: 2026_11_24_initial
Revises:
Create Date: 2026-11-24

Mirrors `backend/db/tables.py` (see its comments for the meaning of every column). CHECK
constraints are given their short names: the naming convention of `target_metadata`
expands them to `ck_<table>_<name>`, exactly as in tables.py. The
circular foreign keys (account → namespace/root node, node → head revision) are declared
with `use_alter`: SQLite writes them inline in CREATE TABLE (it accepts forward
references), PostgreSQL gets them from the ALTERs at the end of `upgrade()`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "2026_11_24_initial"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _id() -> sa.Column[str]:
    return sa.Column("id", sa.String(36), nullable=False)


def _at(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


NAME = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")

# (table, constraint name, column, referred table, deferred) — added by ALTER on PostgreSQL.
CIRCULAR_FKS = [
    ("account", "fk_account_namespace_id_namespace", "namespace_id", "namespace", True),
    ("account", "fk_account_root_id_node", "root_id", "node", True),
    ("node", "fk_node_head_revision_revision", "head_revision", "revision", False),
]


def _circular_fk(table: str) -> list[sa.ForeignKeyConstraint]:
    return [
        sa.ForeignKeyConstraint(
            [column],
            [f"{referred}.id"],
            name=name,
            use_alter=True,
            deferrable=True if deferred else None,
            initially="DEFERRED" if deferred else None,
        )
        for owner, name, column, referred, deferred in CIRCULAR_FKS
        if owner == table
    ]


def upgrade() -> None:
    op.create_table(
        "account",
        _id(),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("quota_bytes", sa.BigInteger(), nullable=True),
        sa.Column("used_bytes", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("namespace_id", sa.String(36), nullable=False),
        sa.Column("root_id", sa.String(36), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_account"),
        sa.UniqueConstraint("name", name="uq_account_name"),
        sa.CheckConstraint("used_bytes >= 0", name="used_bytes_non_negative"),
        sa.CheckConstraint("quota_bytes IS NULL OR quota_bytes >= 0", name="quota_non_negative"),
        *_circular_fk("account"),
        comment="One user; owns one namespace (its tree).",
    )
    op.create_table(
        "namespace",
        _id(),
        sa.Column("owner_account_id", sa.String(36), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_namespace"),
        sa.ForeignKeyConstraint(
            ["owner_account_id"], ["account.id"], name="fk_namespace_owner_account_id_account"
        ),
        comment="A change feed and the nodes in it.",
    )
    op.create_table(
        "device",
        _id(),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        _at("created_at"),
        _at("last_seen_at", nullable=True),
        _at("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_device"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name="fk_device_account_id_account"
        ),
        sa.UniqueConstraint("token_hash", name="uq_device_token_hash"),
        comment="One login of an account, holding one bearer token.",
    )
    op.create_index("ix_device_account_id", "device", ["account_id"])
    op.create_table(
        "node",
        _id(),
        sa.Column("namespace_id", sa.String(36), nullable=False),
        sa.Column("parent_id", sa.String(36), nullable=True),
        sa.Column("name", NAME, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("mode", sa.Integer(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("version", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("head_revision", sa.String(36), nullable=True),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_node"),
        sa.ForeignKeyConstraint(
            ["namespace_id"], ["namespace.id"], name="fk_node_namespace_id_namespace"
        ),
        sa.ForeignKeyConstraint(["parent_id"], ["node.id"], name="fk_node_parent_id_node"),
        sa.CheckConstraint("kind IN ('file', 'dir', 'symlink')", name="kind"),
        sa.CheckConstraint("mode >= 0 AND mode <= 4095", name="mode"),
        sa.CheckConstraint("size >= 0", name="size"),
        sa.CheckConstraint("version >= 1", name="version"),
        sa.CheckConstraint("(kind = 'symlink') = (target IS NOT NULL)", name="target_iff_symlink"),
        sa.CheckConstraint("(parent_id IS NULL) = (name = '')", name="root_iff_no_parent"),
        *_circular_fk("node"),
        comment="Files, directories and symlinks; deleted rows stay for history.",
    )
    live = sa.column("deleted", sa.Boolean()) == sa.false()
    op.create_index(
        "uq_node_live_name",
        "node",
        ["parent_id", "name"],
        unique=True,
        sqlite_where=live,
        postgresql_where=live,
    )
    op.create_table(
        "revision",
        _id(),
        sa.Column("node_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("base_revision_id", sa.String(36), nullable=True),
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("manifest", sa.Text(), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_revision"),
        sa.ForeignKeyConstraint(["node_id"], ["node.id"], name="fk_revision_node_id_node"),
        sa.ForeignKeyConstraint(
            ["base_revision_id"], ["revision.id"], name="fk_revision_base_revision_id_revision"
        ),
        sa.ForeignKeyConstraint(["device_id"], ["device.id"], name="fk_revision_device_id_device"),
        sa.CheckConstraint("kind IN ('content', 'tombstone')", name="kind"),
        sa.CheckConstraint("size >= 0", name="size"),
        comment="Immutable file versions; a delete adds a tombstone, nothing is erased.",
    )
    op.create_index("ix_revision_node_id_seq", "revision", ["node_id", "seq"])
    op.create_table(
        "chunk",
        sa.Column("object", sa.String(64), nullable=False),
        sa.Column("stored_size", sa.BigInteger(), nullable=False),
        sa.Column("refcount", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("object", name="pk_chunk"),
        sa.CheckConstraint("refcount >= 0", name="refcount"),
        comment="Content-addressed ciphertext objects in the block store.",
    )
    op.create_table(
        "chunk_owner",
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("object", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("plain_size", sa.BigInteger(), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("account_id", "object", name="pk_chunk_owner"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name="fk_chunk_owner_account_id_account"
        ),
        sa.ForeignKeyConstraint(["object"], ["chunk.object"], name="fk_chunk_owner_object_chunk"),
        comment="Which account has proven possession of which object (invariant 5).",
    )
    op.create_index("ix_chunk_owner_account_id_hash", "chunk_owner", ["account_id", "hash"])
    op.create_table(
        "revision_chunk",
        sa.Column("revision_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("object", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("revision_id", "seq", name="pk_revision_chunk"),
        sa.ForeignKeyConstraint(
            ["revision_id"], ["revision.id"], name="fk_revision_chunk_revision_id_revision"
        ),
        sa.ForeignKeyConstraint(
            ["object"], ["chunk.object"], name="fk_revision_chunk_object_chunk"
        ),
        comment="Manifest entries of each revision (seq = position in the manifest).",
    )
    op.create_index("ix_revision_chunk_object", "revision_chunk", ["object"])
    op.create_table(
        "journal",
        sa.Column("namespace_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("node_id", sa.String(36), nullable=False),
        sa.Column("node", sa.Text(), nullable=False),
        sa.Column("revision_id", sa.String(36), nullable=True),
        sa.Column("device_id", sa.String(36), nullable=False),
        _at("at"),
        sa.PrimaryKeyConstraint("namespace_id", "seq", name="pk_journal"),
        sa.ForeignKeyConstraint(
            ["namespace_id"], ["namespace.id"], name="fk_journal_namespace_id_namespace"
        ),
        sa.ForeignKeyConstraint(["node_id"], ["node.id"], name="fk_journal_node_id_node"),
        sa.ForeignKeyConstraint(
            ["revision_id"], ["revision.id"], name="fk_journal_revision_id_revision"
        ),
        sa.ForeignKeyConstraint(["device_id"], ["device.id"], name="fk_journal_device_id_device"),
        sa.CheckConstraint("op IN ('create', 'update', 'delete', 'commit')", name="op"),
        comment="Append-only, totally ordered change feed per namespace.",
    )
    op.create_table(
        "applied_op",
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("op_id", sa.String(36), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("device_id", "op_id", name="pk_applied_op"),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name="fk_applied_op_device_id_device"
        ),
        comment="Stored results of applied batched ops, for idempotent replays.",
    )
    op.create_table(
        "share",
        _id(),
        sa.Column("node_id", sa.String(36), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("created_by", sa.String(36), nullable=False),
        _at("created_at"),
        _at("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_share"),
        sa.ForeignKeyConstraint(["node_id"], ["node.id"], name="fk_share_node_id_node"),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"], name="fk_share_account_id_account"),
        sa.ForeignKeyConstraint(["created_by"], ["account.id"], name="fk_share_created_by_account"),
        sa.UniqueConstraint("node_id", "account_id", name="uq_share_node_id_account_id"),
        sa.CheckConstraint("role IN ('viewer', 'editor')", name="role"),
        comment="Folder/file shares (not used by routes yet).",
    )
    op.create_table(
        "link",
        _id(),
        sa.Column("node_id", sa.String(36), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(36), nullable=False),
        _at("created_at"),
        _at("expires_at", nullable=True),
        _at("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_link"),
        sa.ForeignKeyConstraint(["node_id"], ["node.id"], name="fk_link_node_id_node"),
        sa.ForeignKeyConstraint(["created_by"], ["account.id"], name="fk_link_created_by_account"),
        sa.UniqueConstraint("token_hash", name="uq_link_token_hash"),
        comment="Public links (not used by routes yet).",
    )
    if op.get_bind().dialect.name != "sqlite":
        for table, name, column, referred, deferred in CIRCULAR_FKS:
            op.create_foreign_key(
                name,
                table,
                referred,
                [column],
                ["id"],
                deferrable=True if deferred else None,
                initially="DEFERRED" if deferred else None,
            )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        for table, name, *_ in CIRCULAR_FKS:
            op.drop_constraint(name, table, type_="foreignkey")
    for table in (
        "link",
        "share",
        "applied_op",
        "journal",
        "revision_chunk",
        "chunk_owner",
        "chunk",
        "revision",
        "node",
        "device",
        "namespace",
        "account",
    ):
        op.drop_table(table)
