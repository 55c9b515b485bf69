"""Folder sizes: `node.tree_bytes` and `node.tree_files`, kept incrementally.

Revision ID: 2026_11_24_folder_sizes
Revises: 2026_11_24_versions
Create Date: 2026-11-24

Mirrors `backend/db/tables.py` (see its comment and `backend/services/usage.py`). Existing
trees get their totals computed once here, from a walk of the live nodes.
"""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from alembic import op

revision: str = "2026_11_24_folder_sizes"
down_revision: str | None = "2026_11_24_versions"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("node") as batch:
        batch.add_column(
            sa.Column("tree_bytes", sa.BigInteger(), nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(
            sa.Column("tree_files", sa.BigInteger(), nullable=False, server_default=sa.text("0"))
        )
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT id, parent_id, kind, size FROM node WHERE deleted = FALSE")
    ).all()
    parent = {r.id: r.parent_id for r in rows}
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        if r.kind != "file":
            continue
        up = r.parent_id
        while up is not None:
            totals[up][0] += int(r.size)
            totals[up][1] += 1
            up = parent.get(up)
    for node_id, (size, files) in totals.items():
        conn.execute(
            sa.text("UPDATE node SET tree_bytes = :b, tree_files = :f WHERE id = :id"),
            {"b": size, "f": files, "id": node_id},
        )


def downgrade() -> None:
    with op.batch_alter_table("node") as batch:
        batch.drop_column("tree_files")
        batch.drop_column("tree_bytes")
