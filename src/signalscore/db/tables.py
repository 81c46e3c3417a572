"""Every table, in one place. Migrations are written against these definitions and a test
checks the migrated schema against them (no drift).

Every tenant-owned table is keyed by organisation first so that a distributed PostgreSQL
(Citus, sharded by organisation) can take it further.
"""

from __future__ import annotations

import sqlalchemy as sa

from signalscore.db.types import UTCDateTime

# Stable constraint names on both backends, so migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

ORG_ID = sa.String(24)

organizations = sa.Table(
    "organizations",
    metadata,
    sa.Column("id", ORG_ID, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column(
        "organization_id",
        ORG_ID,
        sa.ForeignKey("organizations.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    # What listings show: `sk_live_` plus the first characters of the secret.
    sa.Column("prefix", sa.String(20), nullable=False),
    # SHA-256 hex of the whole key. Keys carry 238 bits of entropy, so a fast hash is the
    # right tool: it makes the stored value useless to a thief without slowing every request.
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
)
