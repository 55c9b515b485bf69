"""Share entries in the journal: op `share` and the `journal.share` snapshot column.

Revision ID: 2026_11_24_share_entries
Revises: 2026_11_24_folder_sizes
Create Date: 2026-11-24

Mirrors `backend/db/tables.py`: a share offered to an account, its role changed or the
share taken away is journalled in the recipient's own journal (op `share`, with a JSON
snapshot of the share), so the push channel tells the recipient's devices at once
(`backend/services/shares.py`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "2026_11_24_share_entries"
down_revision: str | None = "2026_11_24_folder_sizes"
branch_labels: str | None = None
depends_on: str | None = None

_OLD = "op IN ('create', 'update', 'delete', 'commit')"
_NEW = "op IN ('create', 'update', 'delete', 'commit', 'share')"


def upgrade() -> None:
    with op.batch_alter_table("journal") as batch:
        batch.drop_constraint(op.f("ck_journal_op"), type_="check")
        batch.add_column(sa.Column("share", sa.Text(), nullable=True))
        batch.create_check_constraint(op.f("ck_journal_op"), _NEW)


def downgrade() -> None:
    op.execute("DELETE FROM journal WHERE op = 'share'")
    with op.batch_alter_table("journal") as batch:
        batch.drop_constraint(op.f("ck_journal_op"), type_="check")
        batch.drop_column("share")
        batch.create_check_constraint(op.f("ck_journal_op"), _OLD)
