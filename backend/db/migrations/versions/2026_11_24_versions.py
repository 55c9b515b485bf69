"""Versions, trash and storage hygiene: deletion times, purges, chunk release times.

Revision ID: 2026_11_24_versions
Revises: 2026_11_24_shares_links
Create Date: 2026-11-24

Mirrors `backend/db/tables.py` (see its comments): `node.deleted_at/deleted_by/purged_at`
(the trash), `revision.damaged_at` (scrub --repair), `chunk.released_at` (the GC's grace
period runs from it) and a nullable `journal.device_id` (entries the service makes on an
account's behalf, e.g. restores). Nodes deleted before this migration get their deletion
time and device from their last `delete` journal entry.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "2026_11_24_versions"
down_revision: str | None = "2026_11_24_shares_links"
branch_labels: str | None = None
depends_on: str | None = None


def _at(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def upgrade() -> None:
    with op.batch_alter_table("node") as batch:
        batch.add_column(_at("deleted_at"))
        batch.add_column(sa.Column("deleted_by", sa.String(36), nullable=True))
        batch.add_column(_at("purged_at"))
        batch.create_foreign_key("fk_node_deleted_by_device", "device", ["deleted_by"], ["id"])
    with op.batch_alter_table("revision") as batch:
        batch.add_column(_at("damaged_at"))
    with op.batch_alter_table("chunk") as batch:
        batch.add_column(_at("released_at"))
    with op.batch_alter_table("journal") as batch:
        batch.alter_column("device_id", existing_type=sa.String(36), nullable=True)
    last_delete = (
        "SELECT {col} FROM journal j WHERE j.namespace_id = node.namespace_id "
        "AND j.node_id = node.id AND j.op = 'delete' ORDER BY j.seq DESC LIMIT 1"
    )
    op.execute(
        f"UPDATE node SET deleted_at = ({last_delete.format(col='j.at')}), "
        f"deleted_by = ({last_delete.format(col='j.device_id')}) WHERE deleted = TRUE"
    )


def downgrade() -> None:
    op.execute("DELETE FROM journal WHERE device_id IS NULL")
    with op.batch_alter_table("journal") as batch:
        batch.alter_column("device_id", existing_type=sa.String(36), nullable=False)
    with op.batch_alter_table("chunk") as batch:
        batch.drop_column("released_at")
    with op.batch_alter_table("revision") as batch:
        batch.drop_column("damaged_at")
    with op.batch_alter_table("node") as batch:
        batch.drop_constraint("fk_node_deleted_by_device", type_="foreignkey")
        batch.drop_column("purged_at")
        batch.drop_column("deleted_by")
        batch.drop_column("deleted_at")
