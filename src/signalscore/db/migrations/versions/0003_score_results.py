"""score results

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 09:18:44.868467
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import signalscore.db.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:

    op.create_table(
        "score_results",
        sa.Column("organization_id", sa.String(length=24), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("object_type", sa.String(length=16), nullable=False),
        sa.Column("object_id", sa.String(length=500), nullable=False),
        sa.Column("dimension", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("previous_score", sa.Float(), nullable=True),
        sa.Column(
            "contributions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "previous_contributions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("signal_coverage", sa.Integer(), nullable=False),
        sa.Column("total_rules", sa.Integer(), nullable=False),
        sa.Column("computed_at", signalscore.db.types.UTCDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id", "profile_id"],
            ["scoring_profiles.organization_id", "scoring_profiles.id"],
            name="fk_score_results_profile",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_score_results_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", "id", name=op.f("pk_score_results")),
        sa.UniqueConstraint(
            "organization_id",
            "object_type",
            "object_id",
            "profile_id",
            "dimension",
            name="uq_score_results_object_profile_dimension",
        ),
    )


def downgrade() -> None:

    op.drop_table("score_results")
