"""Tiers (SPEC §9): scoring_profiles.tiers, score_results.tier / previous_tier, and the index
of ranked reads and distributions

`ix_score_results_rank` is (organization, profile, dimension, score, object_id, tier): a page
of a ranked read is a range of it in either direction (scores/service.py), and a
distribution is one scan of it that reads no table row (score and tier are in the key).
Existing profiles have no tiers, so existing rows keep a NULL tier, which is correct.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column(
        "scoring_profiles",
        sa.Column(
            "tiers",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Ties of a ranked read go by objectId in code point order, as on SQLite, whatever
        # the database's default collation (en_US would put "a-b.com" after "ab.com").
        op.alter_column(
            "score_results",
            "object_id",
            type_=sa.String(500, collation="C"),
            existing_type=sa.String(500),
            existing_nullable=False,
        )
    op.add_column("score_results", sa.Column("tier", sa.String(50), nullable=True))
    op.add_column("score_results", sa.Column("previous_tier", sa.String(50), nullable=True))
    op.create_index(
        "ix_score_results_rank",
        "score_results",
        ["organization_id", "profile_id", "dimension", "score", "object_id", "tier"],
    )


def downgrade() -> None:
    op.drop_index("ix_score_results_rank", table_name="score_results")
    with op.batch_alter_table("score_results") as batch:
        batch.drop_column("previous_tier")
        batch.drop_column("tier")
    with op.batch_alter_table("scoring_profiles") as batch:
        batch.drop_column("tiers")
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "score_results",
            "object_id",
            type_=sa.String(500),
            existing_type=sa.String(500, collation="C"),
            existing_nullable=False,
        )
