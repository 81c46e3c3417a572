"""score_results.contributions_hash: a fingerprint of the contributions

The worker compares each new result with the stored row. It used to load every stored row's
contributions (two 1 kB JSON documents per object) to do so; it now compares a 64-bit
fingerprint written with the row (`db.dialect.contributions_fingerprint`). Existing rows
keep NULL and are compared by their document until their next change. A nullable column
without a default: no table rewrite on PostgreSQL.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("score_results", sa.Column("contributions_hash", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("score_results") as batch:
        batch.drop_column("contributions_hash")
