"""recompute_profiles: rule changes on large profiles queue their objects in chunks

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import signalscore.db.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "recompute_profiles",
        sa.Column("organization_id", sa.String(length=24), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("cursor_type", sa.String(length=16), nullable=False),
        sa.Column("cursor_id", sa.String(length=500), nullable=False),
        sa.Column("enqueued_at", signalscore.db.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id", "profile_id"],
            ["scoring_profiles.organization_id", "scoring_profiles.id"],
            name="fk_recompute_profiles_profile",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_recompute_profiles_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "organization_id", "profile_id", name=op.f("pk_recompute_profiles")
        ),
    )


def downgrade() -> None:
    op.drop_table("recompute_profiles")
