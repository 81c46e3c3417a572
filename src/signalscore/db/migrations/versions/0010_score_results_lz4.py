"""score_results contributions compressed with lz4 (PostgreSQL)

A score row holds two JSONB documents of about 1.5 kB, so it passes the 2 kB TOAST threshold
and PostgreSQL compresses a document each time a recompute writes a new one: with its default
pglz, that compression was a large part of writing a changed row. lz4 compresses several
times faster (the documents stay about as small). Existing values keep their compression
until rewritten; reads handle both. Needs a PostgreSQL built with lz4 (the Debian and
official packages are); without it the migration leaves the columns as they are. SQLite has
no such setting.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None

COLUMNS = ("contributions", "previous_contributions")


def _has_lz4() -> bool:
    bind = op.get_bind()
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("SET LOCAL default_toast_compression = 'lz4'")
    except Exception:  # built without lz4: the setting is refused
        return False
    return True


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql" or not _has_lz4():
        return
    for column in COLUMNS:
        op.execute(f"ALTER TABLE score_results ALTER COLUMN {column} SET COMPRESSION lz4")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in COLUMNS:
        op.execute(f"ALTER TABLE score_results ALTER COLUMN {column} SET COMPRESSION default")
