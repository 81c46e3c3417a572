"""recompute_queue lanes: interactive work first, and a fair claim across organisations

Adds `lane` (0 interactive, 1 background; existing entries become interactive) and replaces
the index on `enqueued_at` alone, which only the first-in-first-out claim used, with one on
(lane, organization_id, enqueued_at): the claim walks it to find the organisations with
pending work in a lane and takes each one's oldest entries in order.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # On SQLite a CHECK constraint needs the table rebuilt (batch mode copies it); on
    # PostgreSQL these are plain ALTERs, and a constant default adds the column without a
    # table rewrite.
    with op.batch_alter_table("recompute_queue") as batch:
        batch.add_column(
            sa.Column("lane", sa.SmallInteger(), server_default=sa.text("0"), nullable=False)
        )
        batch.create_check_constraint(op.f("ck_recompute_queue_lane"), "lane IN (0, 1)")
        batch.drop_index("ix_recompute_queue_enqueued_at")
        batch.create_index(
            "ix_recompute_queue_claim", ["lane", "organization_id", "enqueued_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("recompute_queue") as batch:
        batch.drop_index("ix_recompute_queue_claim")
        batch.create_index("ix_recompute_queue_enqueued_at", ["enqueued_at"], unique=False)
        batch.drop_constraint(op.f("ck_recompute_queue_lane"), type_="check")
        batch.drop_column("lane")
