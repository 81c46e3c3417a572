"""Time decay (SPEC §13): scoring_rules.decay, score_results.next_change_at and the sweep's
index, and every scored profile queued once

Score rows now explain each rule's `observedAt` and `decayFactor` in their contributions, so
every stored row differs from a computation made now. Recording a fan-out for every profile
that has rules (as a rule change does: the workers queue its objects in chunks, background
lane) brings them all up to date after the upgrade, so the invariant of SPEC §7 holds again
once the queue drains.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from signalscore.db.types import UTCDateTime, utcnow

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column(
        "scoring_rules",
        sa.Column(
            "decay",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True), "postgresql"
            ),
            nullable=True,
        ),
    )
    op.add_column("score_results", sa.Column("next_change_at", sa.DateTime(), nullable=True))
    op.create_index(
        "ix_score_results_next_change",
        "score_results",
        ["next_change_at"],
        postgresql_where=sa.text("next_change_at IS NOT NULL"),
        sqlite_where=sa.text("next_change_at IS NOT NULL"),
    )
    # A fan-out from the start ('', '') for every profile with rules; one already recorded
    # restarts, as a rule change would restart it.
    # (`WHERE true`: SQLite needs it to read ON CONFLICT after a SELECT.)
    op.execute(
        sa.text(
            "INSERT INTO recompute_profiles"
            " (organization_id, profile_id, cursor_type, cursor_id, enqueued_at)"
            " SELECT DISTINCT organization_id, profile_id, '', '', :now"
            " FROM scoring_rules WHERE true"
            " ON CONFLICT (organization_id, profile_id)"
            " DO UPDATE SET cursor_type = '', cursor_id = ''"
        ).bindparams(sa.bindparam("now", utcnow(), type_=UTCDateTime()))
    )


def downgrade() -> None:
    op.drop_index("ix_score_results_next_change", table_name="score_results")
    with op.batch_alter_table("score_results") as batch:
        batch.drop_column("next_change_at")
    with op.batch_alter_table("scoring_rules") as batch:
        batch.drop_column("decay")
