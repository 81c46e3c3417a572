"""score_results fillfactor (PostgreSQL): room on each page for HOT updates

Every recompute rewrites a score row (a new version, or a touch of ``computed_at``). None of
the columns it changes is indexed, so with free space on the row's page PostgreSQL can write
the new version there as a heap-only tuple (HOT) instead of a new tuple plus new entries in
both indexes. Applies to pages written from now on. SQLite has no such setting.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

FILLFACTOR = 50


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE score_results SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE score_results RESET (fillfactor)")
