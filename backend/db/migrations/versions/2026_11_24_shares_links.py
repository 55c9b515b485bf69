"""Shares and public links: share namespaces, share/link columns, rate limits, account flags.

Revision ID: 2026_11_24_shares_links
Revises: 2026_11_24_held_upload
Create Date: 2026-11-24

The `share` and `link` tables of the initial schema were never used by any route (so they
are empty everywhere): they are dropped and created again in their final shape, which
avoids adding NOT NULL columns to existing rows. New columns on `account` and
`namespace` have defaults or are nullable. See `backend/db/tables.py` for their meaning.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "2026_11_24_shares_links"
down_revision: str | None = "2026_11_24_held_upload"
branch_labels: str | None = None
depends_on: str | None = None

NAME = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def _at(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.add_column(
            sa.Column("auto_accept_shares", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(_at("deleted_at", nullable=True))
    with op.batch_alter_table("namespace") as batch:
        batch.add_column(sa.Column("root_id", sa.String(36), nullable=True))
    op.drop_table("share")
    op.drop_table("link")
    op.create_table(
        "share",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("node_id", sa.String(36), nullable=False),
        sa.Column("namespace_id", sa.String(36), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("created_by", sa.String(36), nullable=False),
        _at("created_at"),
        _at("accepted_at", nullable=True),
        sa.Column("mount_parent_id", sa.String(36), nullable=True),
        sa.Column("mount_name", NAME, nullable=True),
        _at("revoked_at", nullable=True),
        _at("changed_at"),
        sa.PrimaryKeyConstraint("id", name="pk_share"),
        sa.ForeignKeyConstraint(["node_id"], ["node.id"], name="fk_share_node_id_node"),
        sa.ForeignKeyConstraint(
            ["namespace_id"], ["namespace.id"], name="fk_share_namespace_id_namespace"
        ),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"], name="fk_share_account_id_account"),
        sa.ForeignKeyConstraint(["created_by"], ["account.id"], name="fk_share_created_by_account"),
        sa.UniqueConstraint("node_id", "account_id", name="uq_share_node_id_account_id"),
        sa.CheckConstraint("role IN ('viewer', 'editor')", name="role"),
        comment="Shares of a folder or file (its own namespace) with other accounts.",
    )
    op.create_index("ix_share_namespace_id", "share", ["namespace_id"])
    op.create_index("ix_share_account_id", "share", ["account_id"])
    op.create_table(
        "link",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("node_id", sa.String(36), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(36), nullable=False),
        _at("created_at"),
        _at("expires_at", nullable=True),
        _at("revoked_at", nullable=True),
        sa.Column("max_downloads", sa.BigInteger(), nullable=True),
        sa.Column("downloads", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("id", name="pk_link"),
        sa.ForeignKeyConstraint(["node_id"], ["node.id"], name="fk_link_node_id_node"),
        sa.ForeignKeyConstraint(["created_by"], ["account.id"], name="fk_link_created_by_account"),
        sa.UniqueConstraint("token_hash", name="uq_link_token_hash"),
        sa.CheckConstraint("max_downloads IS NULL OR max_downloads >= 1", name="max_downloads"),
        comment="Public links to a file or folder.",
    )
    op.create_index("ix_link_node_id", "link", ["node_id"])
    op.create_index("ix_link_created_by", "link", ["created_by"])
    op.create_table(
        "rate_limit",
        sa.Column("key", sa.String(200), nullable=False),
        _at("window_start"),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_rate_limit"),
        comment="Failed password attempts per account, link and source address.",
    )


def downgrade() -> None:
    op.drop_table("rate_limit")
    op.drop_index("ix_link_created_by", table_name="link")
    op.drop_index("ix_link_node_id", table_name="link")
    op.drop_table("link")
    op.drop_index("ix_share_account_id", table_name="share")
    op.drop_index("ix_share_namespace_id", table_name="share")
    op.drop_table("share")
    op.create_table(
        "share",
        sa.Column("id", sa.String(36), nullable=False),
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
        sa.Column("id", sa.String(36), nullable=False),
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
    with op.batch_alter_table("namespace") as batch:
        batch.drop_column("root_id")
    with op.batch_alter_table("account") as batch:
        batch.drop_column("deleted_at")
        batch.drop_column("auto_accept_shares")
