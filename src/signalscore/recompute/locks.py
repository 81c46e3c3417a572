"""Serialising score-affecting writes against each other (PostgreSQL).

Under READ COMMITTED, a write that decides which objects to queue by reading assignments and
rules could miss a structural change committed a moment later (a new rule, a new assignment),
leaving a score stale with an empty queue. Two transaction-scoped advisory locks per
organisation close that gap:

- *structure* changes (rules, assignments, profile deletion) take it exclusively;
- value writes and worker batches take it shared, so they run concurrently with each other.

SQLite needs nothing: every write transaction starts with BEGIN IMMEDIATE and is serialised.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def lock_organization(conn: Connection, org_id: str, *, exclusive: bool) -> None:
    if conn.dialect.name != "postgresql":
        return
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    conn.execute(sa.text(f"SELECT {function}(hashtext(:org))"), {"org": "org:" + org_id})
