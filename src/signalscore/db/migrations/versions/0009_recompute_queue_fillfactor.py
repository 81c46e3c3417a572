"""recompute_queue fillfactor (PostgreSQL): room on each page for HOT updates

Every queue entry is written three times: inserted (by a write or a fan-out step), leased
by a claim (`lease_until`, `claimed_by`), then deleted (or released). The lease changes no
indexed column, so with free space on the entry's page PostgreSQL writes the leased version
there as a heap-only tuple (HOT) instead of a new tuple plus new entries in both indexes. As
migration 0005 did for score_results. SQLite has no such setting.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

FILLFACTOR = 50


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE recompute_queue SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE recompute_queue RESET (fillfactor)")
