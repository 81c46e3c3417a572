"""scoring configuration

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 09:08:50.469213
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import signalscore.db.types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:

    op.create_table(
        "recompute_queue",
        sa.Column("organization_id", sa.String(length=24), nullable=False),
        sa.Column("object_type", sa.String(length=16), nullable=False),
        sa.Column("object_id", sa.String(length=500), nullable=False),
        sa.Column("enqueued_at", signalscore.db.types.UTCDateTime(), nullable=False),
        sa.Column("lease_until", signalscore.db.types.UTCDateTime(), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("rerun", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_recompute_queue_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "organization_id", "object_type", "object_id", name=op.f("pk_recompute_queue")
        ),
    )
    op.create_index(
        "ix_recompute_queue_enqueued_at", "recompute_queue", ["enqueued_at"], unique=False
    )
    op.create_table(
        "scoring_profiles",
        sa.Column("organization_id", sa.String(length=24), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=True),
        sa.Column("created_at", signalscore.db.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", signalscore.db.types.UTCDateTime(), nullable=False),
        sa.CheckConstraint("type IN ('company', 'contact')", name=op.f("ck_scoring_profiles_type")),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_scoring_profiles_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", "id", name=op.f("pk_scoring_profiles")),
    )
    op.create_table(
        "signal_templates",
        sa.Column("organization_id", sa.String(length=24), nullable=False),
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=True),
        sa.Column("object_type", sa.String(length=16), nullable=False),
        sa.Column("answer_type", sa.String(length=16), nullable=False),
        sa.Column("created_at", signalscore.db.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", signalscore.db.types.UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "answer_type IN ('boolean', 'number', 'percentage', 'currency', 'list')",
            name=op.f("ck_signal_templates_answer_type"),
        ),
        sa.CheckConstraint(
            "object_type IN ('company', 'contact')", name=op.f("ck_signal_templates_object_type")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_signal_templates_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", "id", name=op.f("pk_signal_templates")),
    )
    op.create_table(
        "profile_assignments",
        sa.Column("organization_id", sa.String(length=24), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("object_type", sa.String(length=16), nullable=False),
        sa.Column("object_id", sa.String(length=500), nullable=False),
        sa.Column("assigned_at", signalscore.db.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id", "profile_id"],
            ["scoring_profiles.organization_id", "scoring_profiles.id"],
            name="fk_profile_assignments_profile",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_profile_assignments_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", "id", name=op.f("pk_profile_assignments")),
        sa.UniqueConstraint(
            "organization_id",
            "profile_id",
            "object_type",
            "object_id",
            name="uq_profile_assignments_profile_object",
        ),
    )
    op.create_index(
        "ix_profile_assignments_object",
        "profile_assignments",
        ["organization_id", "object_type", "object_id"],
        unique=False,
    )
    op.create_table(
        "scoring_rules",
        sa.Column("organization_id", sa.String(length=24), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("signal_template_id", sa.String(length=100), nullable=False),
        sa.Column("dimension", sa.String(length=16), nullable=False),
        sa.Column("answer_type", sa.String(length=16), nullable=False),
        sa.Column(
            "point_values",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", signalscore.db.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", signalscore.db.types.UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "dimension IN ('fit', 'urgency')", name=op.f("ck_scoring_rules_dimension")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id", "profile_id"],
            ["scoring_profiles.organization_id", "scoring_profiles.id"],
            name="fk_scoring_rules_profile",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id", "signal_template_id"],
            ["signal_templates.organization_id", "signal_templates.id"],
            name="fk_scoring_rules_template",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_scoring_rules_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", "id", name=op.f("pk_scoring_rules")),
        sa.UniqueConstraint(
            "organization_id",
            "profile_id",
            "signal_template_id",
            "dimension",
            name="uq_scoring_rules_profile_template_dimension",
        ),
    )
    op.create_index(
        "ix_scoring_rules_template",
        "scoring_rules",
        ["organization_id", "signal_template_id"],
        unique=False,
    )
    op.create_table(
        "signal_values",
        sa.Column("organization_id", sa.String(length=24), nullable=False),
        sa.Column("object_type", sa.String(length=16), nullable=False),
        sa.Column("object_id", sa.String(length=500), nullable=False),
        sa.Column("signal_template_id", sa.String(length=100), nullable=False),
        sa.Column(
            "value",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("observed_at", signalscore.db.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", signalscore.db.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id", "signal_template_id"],
            ["signal_templates.organization_id", "signal_templates.id"],
            name="fk_signal_values_template",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_signal_values_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "organization_id",
            "object_type",
            "object_id",
            "signal_template_id",
            name=op.f("pk_signal_values"),
        ),
    )
    op.create_index(
        "ix_signal_values_template",
        "signal_values",
        ["organization_id", "signal_template_id"],
        unique=False,
    )


def downgrade() -> None:

    op.drop_index("ix_signal_values_template", table_name="signal_values")
    op.drop_table("signal_values")
    op.drop_index("ix_scoring_rules_template", table_name="scoring_rules")
    op.drop_table("scoring_rules")
    op.drop_index("ix_profile_assignments_object", table_name="profile_assignments")
    op.drop_table("profile_assignments")
    op.drop_table("signal_templates")
    op.drop_table("scoring_profiles")
    op.drop_index("ix_recompute_queue_enqueued_at", table_name="recompute_queue")
    op.drop_table("recompute_queue")
