"""Counts for distributions (SPEC §9) without a scan: score_counts and assignment_counts,
filled from the score rows and the assignments

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "score_counts",
        sa.Column("organization_id", sa.String(24), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("dimension", sa.String(16), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("tier", sa.String(50), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_score_counts_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "organization_id",
            "profile_id",
            "dimension",
            "score",
            "tier",
            name=op.f("pk_score_counts"),
        ),
    )
    op.execute(
        "INSERT INTO score_counts"
        " (organization_id, profile_id, dimension, score, tier, count)"
        " SELECT organization_id, profile_id, dimension, score, COALESCE(tier, ''), count(*)"
        " FROM score_results"
        " GROUP BY organization_id, profile_id, dimension, score, tier"
    )
    op.create_table(
        "assignment_counts",
        sa.Column("organization_id", sa.String(24), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("assigned", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id", "profile_id"],
            ["scoring_profiles.organization_id", "scoring_profiles.id"],
            name="fk_assignment_counts_profile",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_assignment_counts_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", "profile_id", name=op.f("pk_assignment_counts")),
    )
    op.execute(
        "INSERT INTO assignment_counts (organization_id, profile_id, assigned)"
        " SELECT organization_id, profile_id, count(*) FROM profile_assignments"
        " GROUP BY organization_id, profile_id"
    )


def downgrade() -> None:
    op.drop_table("assignment_counts")
    op.drop_table("score_counts")
