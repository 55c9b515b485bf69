"""The backend's fsck: invariants that must hold after any sequence of accepted changes."""

from __future__ import annotations

from sqlalchemy import text

from backend.db.engine import Database

CHECKS = {
    "journal seqs are gap-free, 1..last_seq per namespace": """
        SELECT n.id FROM namespace n
        WHERE (SELECT count(*) FROM journal j WHERE j.namespace_id = n.id) != n.last_seq
           OR (SELECT coalesce(max(seq), 0) FROM journal j WHERE j.namespace_id = n.id)
              != n.last_seq
    """,
    "used_bytes is the sum of live file sizes in the namespaces the account owns": """
        SELECT a.id FROM account a
        WHERE a.used_bytes != (SELECT coalesce(sum(n.size), 0) FROM node n
                               JOIN namespace ns ON ns.id = n.namespace_id
                               WHERE ns.owner_account_id = a.id AND n.kind = 'file'
                                 AND n.deleted = FALSE)
    """,
    "refcount counts revision_chunk rows exactly": """
        SELECT c.object FROM chunk c
        WHERE c.refcount != (SELECT count(*) FROM revision_chunk rc WHERE rc.object = c.object)
    """,
    "every live non-root node has a live directory parent in its namespace": """
        SELECT n.id FROM node n LEFT JOIN node p ON p.id = n.parent_id
        WHERE n.parent_id IS NOT NULL AND n.deleted = FALSE
          AND (p.id IS NULL OR p.kind != 'dir' OR p.deleted = TRUE
               OR (p.namespace_id != n.namespace_id
                   AND NOT EXISTS (SELECT 1 FROM namespace s
                                   WHERE s.id = n.namespace_id AND s.root_id = n.id)))
    """,
    "a share's root is in its namespace, and only a share root has a parent elsewhere": """
        SELECT s.id FROM namespace s LEFT JOIN node r ON r.id = s.root_id
        WHERE s.root_id IS NOT NULL AND (r.id IS NULL OR r.namespace_id != s.id)
    """,
    "a file's size is its head revision's size": """
        SELECT n.id FROM node n JOIN revision r ON r.id = n.head_revision
        WHERE n.size != r.size OR r.node_id != n.id
    """,
    "every revision_chunk object is owned by the committing account": """
        SELECT rc.object FROM revision_chunk rc
        JOIN revision r ON r.id = rc.revision_id
        JOIN device d ON d.id = r.device_id
        LEFT JOIN chunk_owner o ON o.object = rc.object AND o.account_id = d.account_id
        WHERE o.object IS NULL
    """,
    "every folder's tree_bytes/tree_files are its live files below it (a full walk)": """
        WITH RECURSIVE up(size, anc) AS (
            SELECT size, parent_id FROM node WHERE kind = 'file' AND deleted = FALSE
            UNION ALL
            SELECT up.size, n.parent_id FROM up JOIN node n ON n.id = up.anc
            WHERE n.parent_id IS NOT NULL
        )
        SELECT d.id FROM node d
        LEFT JOIN (SELECT anc, sum(size) AS b, count(*) AS f FROM up GROUP BY anc) t
               ON t.anc = d.id
        WHERE d.tree_bytes != coalesce(t.b, 0) OR d.tree_files != coalesce(t.f, 0)
    """,
}


def check(db: Database) -> None:
    """Raise AssertionError naming every invariant that does not hold."""
    broken = {}
    with db.read() as conn:
        for name, query in CHECKS.items():
            rows = conn.execute(text(query)).fetchall()
            if rows:
                broken[name] = rows[:5]
        if conn.dialect.name == "sqlite":
            fk = conn.execute(text("PRAGMA foreign_key_check")).fetchall()
            if fk:
                broken["foreign keys"] = fk[:5]
    assert not broken, broken
