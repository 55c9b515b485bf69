"""Held uploads: chunks an account uploaded that no commit has named yet.

Revision ID: 2026_11_24_held_upload
Revises: 2026_11_24_initial
Create Date: 2026-11-24

Mirrors `held_upload` in `backend/db/tables.py` (see its comment): `prepare` answers these
chunks as present for their account, so an interrupted upload resumes where it stopped.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "2026_11_24_held_upload"
down_revision: str | None = "2026_11_24_initial"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "held_upload",
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("object", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("plain_size", sa.BigInteger(), nullable=False),
        sa.Column("stored_size", sa.BigInteger(), nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "object", name="pk_held_upload"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name="fk_held_upload_account_id_account"
        ),
        comment="Uploaded but not yet committed chunks of each account (resumable uploads).",
    )
    op.create_index("ix_held_upload_account_id_hash", "held_upload", ["account_id", "hash"])
    op.create_index("ix_held_upload_held_at", "held_upload", ["held_at"])


def downgrade() -> None:
    op.drop_index("ix_held_upload_held_at", "held_upload")
    op.drop_index("ix_held_upload_account_id_hash", "held_upload")
    op.drop_table("held_upload")
